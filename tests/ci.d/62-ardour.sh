#!/usr/bin/env bash
# JAMNet Send / Receive / Transport (VST3) in Ardour 7, a real DAW, headless.
#
# Needs the Debian package `ardour` (tests/deps/apt-ardour.txt; run-all.sh
# installs it). Builds the DEBUG bundles like 60-hosts-plugins.sh and
# `toaster`, scans the bundles with ardour-vst3-scanner into a scratch
# XDG config/cache (the user's Ardour setup is never touched), then
# tests/hosts/ardour/check.py drives two ardour7-lua processes:
#   1. session.lua: new 48 kHz session (Dummy backend), tempo 133 BPM, three
#      tracks with JAMNet Send, Receive and Transport inserted, non-default
#      parameter values set on each (Transport announce interval 100 ms,
#      Receive Manual jitter 42 ms + Burg + -6 dB, Send 32-bit float, ...),
#      the Send track monitoring the Dummy backend's sine input, a 4 s
#      freewheel export (float WAV, no analysis: tests/hosts/ardour/export/),
#      save. Meanwhile check.py listens on the default group
#      239.255.77.77:47700 and decodes the Transport plugin's frames with
#      `toaster decode`: 133 BPM, 4/4, PLAY from position 0, positions
#      advancing sample-exactly to the export's end, re-announced
#      every 100 ms of *host* time (freewheel runs ~10-40x real time, so
#      the frames' wall-clock timestamps only have to be ordered), a STOP
#      after the export; the exported WAV has the exported length, is
#      finite and carries the sine that went through JAMNet Send.
#   2. reload.lua (a new process): the saved session reloads with 133 BPM
#      and every plugin's parameters at the values set in step 1.
# Everything in step 1 and 2 runs in a private network namespace
# (`unshare --net`, needs root like the netns steps).
# Each check prints ok/FAIL with expected and seen values; any FAIL, a
# missing ardour7-lua or a crashed ardour7-lua makes this step exit 1.
# Ardour 7.3's luasession itself corrupts its heap in ~1 of 4 exports (also
# with no JAMNet plugin loaded): check.py retries a session.lua run that was
# killed by a signal, up to 5 attempts, with a RETRY line each time.
# About 11 s after the build (measured 10.8-12.9 s). Details: docs/plugins.md, "Ardour 7".
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
PY=${JAMNET_PYTHON:-python3}
[ -x "$PY" ] || PY=python3
SCANNER=/usr/lib/ardour7/ardour-vst3-scanner

if ! command -v ardour7-lua >/dev/null || [ ! -x "$SCANNER" ]; then
  echo "FAIL: Ardour 7 is not installed (need ardour7-lua and $SCANNER):" \
       "apt-get install --no-install-recommends ardour (tests/deps/apt-ardour.txt)"
  exit 1
fi

if ! unshare --net true 2>/dev/null; then
  echo "FAIL: cannot create a network namespace (unshare --net): run as root, as CI does"
  exit 1
fi

cargo xtask bundle jamnet-send jamnet-receive jamnet-transport
cargo build -p toaster

# Private copies: a concurrent bundle build must not change the files under
# test, and backdating them (below) must not touch target/bundled.
WORK=$(mktemp -d /tmp/jamnet-ardour.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/vst3" "$WORK/xdg/config" "$WORK/xdg/cache"
for p in "JAMNet Send" "JAMNet Receive" "JAMNet Transport"; do
  cp -r "$TARGET/bundled/$p.vst3" "$WORK/vst3/"
done
cp "$TARGET/debug/toaster" "$WORK/toaster"
# The export format session.lua uses (32-bit float WAV, no analysis).
mkdir -p "$WORK/xdg/config/ardour7/export"
cp tests/hosts/ardour/export/jamnet-f32.format tests/hosts/ardour/export/jamnet-f32.preset "$WORK/xdg/config/ardour7/export/"
export XDG_CONFIG_HOME="$WORK/xdg/config" XDG_CACHE_HOME="$WORK/xdg/cache" VST3_PATH="$WORK/vst3"
export JAMNET_ARDOUR_WORK="$WORK" JAMNET_TOASTER="$WORK/toaster"

# Ardour trusts its scan cache only if the plugin file is older than the
# cache file in whole seconds: backdate the fresh copies before scanning.
find "$WORK/vst3" -exec touch -h -d "@$(( $(date +%s) - 2 ))" {} +
for b in "$WORK"/vst3/*.vst3; do
  if ! LD_LIBRARY_PATH=/usr/lib/ardour7 "$SCANNER" -q -f "$b"; then
    echo "FAIL: ardour-vst3-scanner rejected $b"; exit 1
  fi
done
n=$(find "$XDG_CACHE_HOME/ardour7/vst" -name '*.v3i' | wc -l)
if [ "$n" -ne 3 ]; then echo "FAIL: expected 3 VST3 scan cache entries, got $n"; exit 1; fi
echo "ok   ardour-vst3-scanner: 3 bundles scanned"

# Ardour, its plugins and the listener run in a private network namespace
# (only lo, multicast routed to it): nothing else publishing on the default
# group (another test, another DAW) can mix into the frames checked, and
# this test publishes nothing outside.
set +e
unshare --net bash -c 'ip link set lo up && ip link set lo multicast on &&
  ip route add 224.0.0.0/4 dev lo && exec "$0" tests/hosts/ardour/check.py' "$PY"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  for f in session reload; do
    [ -f "$WORK/$f.log" ] && { echo "--- tail of ardour7-lua $f.lua log"; tail -n 25 "$WORK/$f.log"; }
  done
fi
exit "$rc"
