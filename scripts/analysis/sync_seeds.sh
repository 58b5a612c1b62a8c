#!/usr/bin/env bash
# Median (worst) over the followers of `toaster sync` under 5 ± 2 ms jitter
# and 2 % loss, 3 peers, seeds 1..N: offset error p99, drift error, |start|.
# The figures of docs/sync.md "Drift under jitter" come from this.
#
#   bash scripts/analysis/sync_seeds.sh SECONDS SEEDS [toaster sync options…]
#   bash scripts/analysis/sync_seeds.sh 10 32                  # clock messages only
#   bash scripts/analysis/sync_seeds.sh 10 32 --stream-fps 375 # with an audio stream
#   bash scripts/analysis/sync_seeds.sh 10 32 --burst-hz 0     # without the start-up burst
#
# TOASTER picks the binary (default: a release build of this checkout).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:?seconds}
seeds=${2:?number of seeds}
shift 2
if [ -z "${TOASTER:-}" ]; then
  cargo build -q --release -p toaster
  TOASTER=target/release/toaster
fi
for seed in $(seq 1 "$seeds"); do
  "$TOASTER" sync --seconds "$seconds" --delay-ms 5 --jitter-ms 2 --loss 0.02 --seed "$seed" --json "$@"
done | python3 -c '
import json, statistics, sys
p99, drift, start = [], [], []
for line in sys.stdin:
    for p in json.loads(line)["peers"]:
        if not p["is_master"]:
            p99.append(p["offset_error_us_p99"])
            drift.append(abs(p["drift_error_ppm"]))
            start.append(abs(p["start_error_samples"]))
m = statistics.median
print("%d followers | offset p99 %.0f us (%.0f) | drift %.2f ppm (%.2f) | |start| %.2f samples (%.2f)"
      % (len(drift), m(p99), max(p99), m(drift), max(drift), m(start), max(start)))
'
