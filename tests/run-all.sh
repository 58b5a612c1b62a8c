#!/usr/bin/env bash
# Runs every JAMNet test. This is the README's test command and what CI runs.
#
# It installs what it needs itself (as root: apt packages; pip packages in a
# venv under target/), then runs, in order:
#   1. cargo fmt --check, cargo clippy -D warnings
#   2. cargo test for the whole workspace (unit, property, vector, lavapipe GPU tests)
#   3. every tests/ci.d/*.sh step (fuzz smoke runs, real-network namespaces,
#      real plugin hosts, ...), each must exit 0.
#
# Environment:
#   JAMNET_SKIP_INSTALL=1  do not apt-get/pip install (you installed them already)
#   JAMNET_ONLY=PATTERN    run only ci.d steps whose file name matches PATTERN
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# Cold CI builds: incremental artifacts only cost time and disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/jamnet-xdg}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

step() { printf '\n===== %s (%s) =====\n' "$1" "$(date +%T)"; }

if [ "${JAMNET_SKIP_INSTALL:-0}" != 1 ]; then
  step "install system packages"
  mapfile -t APT < <(cat tests/deps/apt-*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' | sort -u)
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT[@]}" >/dev/null
  else
    missing=()
    for p in "${APT[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
      echo "missing Debian packages (run as root, or: sudo apt-get install ${missing[*]})" >&2
      exit 1
    fi
  fi
  step "install python packages"
  mapfile -t PIP < <(cat tests/deps/pip-*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' | sort -u)
  python3 -m venv target/pyenv
  if [ ${#PIP[@]} -gt 0 ]; then
    target/pyenv/bin/pip install -q --disable-pip-version-check "${PIP[@]}"
  fi
fi
export JAMNET_PYTHON="$ROOT/target/pyenv/bin/python"

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo test --workspace"
cargo test --workspace --all-targets
cargo test --workspace --doc

failed=()
for s in tests/ci.d/*.sh; do
  [ -e "$s" ] || continue
  if [ -n "${JAMNET_ONLY:-}" ] && [[ "$(basename "$s")" != *"$JAMNET_ONLY"* ]]; then continue; fi
  step "$s"
  if ! bash "$s"; then failed+=("$s"); echo "FAILED: $s"; fi
done
if [ ${#failed[@]} -gt 0 ]; then
  printf '\nfailed steps:\n'; printf '  %s\n' "${failed[@]}"; exit 1
fi
printf '\nall tests passed (%s)\n' "$(date +%T)"
