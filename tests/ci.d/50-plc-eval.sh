#!/usr/bin/env bash
# PNBTR concealment: quick evaluation on real instrument audio (FluidSynth +
# GM soundfont + espeak-ng, generated here), with the Opus PLC baseline.
# Fails if PNBTR does not beat zero, repeat and Burg on music SNR and every
# baseline (zero, repeat, Burg, Opus PLC) on music log-spectral distance
# (sliding 512-sample frames over the concealed regions, docs/plc.md), or if
# the CPU and GPU (lavapipe) paths disagree.
set -euo pipefail
cd "$(dirname "$0")/../.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/jamnet-xdg}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
CORPUS=target/plc-corpus-quick
python3 scripts/corpus/make_corpus.py "$CORPUS" --quick
cargo build -p toaster --features opus
TOASTER="${CARGO_TARGET_DIR:-target}/debug/toaster"
start=$(date +%s)
"$TOASTER" plc-eval --quick --corpus "$CORPUS" --check --gpu --plot target/plc-quick.png | tee target/plc-quick.txt
"$TOASTER" plc-eval --quick --corpus "$CORPUS" --json > target/plc-quick.json
echo "plc-eval --quick: $(( $(date +%s) - start )) s (both runs)"
# The JSON is what the table says: check it independently.
python3 - <<'PY'
import json
r = json.load(open("target/plc-quick.json"))
rows = [x for x in r["rows"] if x["category"] == "music"]
conds = {(x["packet"], x["trace"]) for x in rows}
assert conds, "no rows"
for c in sorted(conds):
    get = {x["method"]: x for x in rows if (x["packet"], x["trace"]) == c}
    p = get["pnbtr"]
    for b in ("zero", "repeat", "burg"):
        assert p["snr_db"] > get[b]["snr_db"], (c, b, "snr")
    assert "opus" in get, "opus baseline missing (built without --features opus?)"
    for b in ("zero", "repeat", "burg", "opus"):
        assert p["lsd_db"] < get[b]["lsd_db"], (c, b, "lsd")
    print("ok", c, "pnbtr snr %.2f lsd %.2f" % (p["snr_db"], p["lsd_db"]))
PY
