#!/usr/bin/env bash
# Fuzz smoke run: every cargo-fuzz target replays its seed corpus (made from
# the protocol vectors) and then fuzzes briefly, so targets keep compiling and
# stay crash-free. Stable toolchain: `-s none` (no sanitizer), see TOOLCHAIN.md.
# FUZZ_SECONDS (default 20) sets each target's fuzzing time.
set -euo pipefail
cd "$(dirname "$0")/../../bridge-core/fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz --version 0.13.2
fi
secs=${FUZZ_SECONDS:-20}
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  echo "--- fuzz $t (${secs}s)"
  log=$(mktemp)
  if ! cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"; echo "fuzz target $t FAILED"; exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|INFO: seed corpus)" "$log" || tail -3 "$log"
done
