#!/usr/bin/env bash
# PNBTR on the GPU through lavapipe: the CPU/GPU twin test, and the
# streams-per-dispatch measurement running end to end (lavapipe numbers prove
# it works, not speed; real-GPU figures come from the same command on an H100).
set -euo pipefail
cd "$(dirname "$0")/../.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/jamnet-xdg}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# --workspace keeps the feature resolution of the main test build: no rebuild.
cargo test --workspace --lib pnbtr::tests::gpu_kernel_matches_cpu_twin_on_random_histories -- --nocapture
cargo build -p toaster
TOASTER="${CARGO_TARGET_DIR:-target}/debug/toaster"
"$TOASTER" plc-eval --gpu-bench --json > target/plc-gpu-bench.json
python3 -c "
import json; r = json.load(open('target/plc-gpu-bench.json'))
assert [x['streams'] for x in r['rows']] == [1, 16, 64, 256, 1024]
assert all(x['gpu_ms_median'] > 0 and x['cpu_ms_median'] > 0 for x in r['rows'])
print(r['adapter'], [(x['streams'], round(x['gpu_ms_median'], 3), round(x['cpu_ms_median'], 3)) for x in r['rows']])
"
