#!/usr/bin/env bash
# Runs tests/ci.d/42-sync-netns.sh N times (root) and summarises the JSON
# line each run prints: every follower's offset error p99, the trend of its
# error (error_drift_ppm) and the largest transport start error per run.
# The session-20 figures of docs/sync.md come from `... 6`.
#
#   sudo bash scripts/analysis/netns_sync_runs.sh 6
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-6}
for _ in $(seq 1 "$runs"); do
  bash tests/ci.d/42-sync-netns.sh | grep '^{"master"'
done | python3 -c '
import json, statistics, sys
p99, trend, start = [], [], []
for line in sys.stdin:
    d = json.loads(line)
    p99 += [p["offset_error_us_p99"] for p in d["peers"]]
    trend += [p["error_drift_ppm"] for p in d["peers"]]
    start.append(d["transport"]["error_vs_master_us_max"])
print("%d followers: offset p99 median %.1f us, worst %.1f us; %s" % (len(p99), statistics.median(p99), max(p99), sorted(p99)))
print("error trend %.2f to %.2f ppm, median %.2f" % (min(trend), max(trend), statistics.median(trend)))
print("largest |start - master start| per run (us): %s" % start)
'
