#!/usr/bin/env bash
# Fits PNBTR's learned mixing model and writes bridge-core/src/pnbtr/weights.json.
#
# 1. Renders the corpus (scripts/corpus/make_corpus.py: FluidSynth + GM
#    soundfont + espeak-ng, seeded) into target/plc-corpus; only its train/
#    half (seeds 1xx) is used here, plc-eval measures on eval/ (seeds 2xx).
# 2. Runs every train clip through the real concealer with loss traces
#    (packets 128/240/512, Gilbert-Elliott 10% bursts and iid 10%), records
#    each gap's predictability features and candidate continuations, and
#    solves the ridge-regularised least-squares problem for the 45 weights in
#    closed form (two passes: the second pass's history contains the first
#    pass's concealment, as in use). Deterministic; ~15 s in a debug build.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 scripts/corpus/make_corpus.py target/plc-corpus
cargo run -p toaster -- plc-eval --corpus target/plc-corpus --train-out bridge-core/src/pnbtr/weights.json
git diff --stat bridge-core/src/pnbtr/weights.json || true
