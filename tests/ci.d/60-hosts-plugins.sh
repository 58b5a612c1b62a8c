#!/usr/bin/env bash
# The JAMNet plugins in real hosts. Builds DEBUG bundles once (debug
# assertions on, so nice-plug's assert_process_allocs aborts the host on any
# allocation inside process()), then:
#   1. jamnet-clap-host check: every .clap loaded, activated, 3000 blocks
#      processed with a moving transport, output checked, a parameter changed
#      through process(), state saved/edited/restored, 6 instances at once
#   1a. jamnet-clap-host live-settings: new session settings restored into
#      active Send and Receive while process() runs in real time; Receive
#      listens on the new port, Send's audio reaches the new destination
#   1b. jamnet-clap-host follow: JAMNet Transport in follow mode fed real UDP
#      `transport` frames (unicast, then a loopback multicast group): MIDI
#      Clock 48/s at 120 BPM, Start/SPP/Continue/Stop, MTC quarter frames,
#      landing sample, all under assert_process_allocs; system messages
#      must arrive as CLAP MIDI events (JAMNet's CLAP shim), not SysEx
#   1c. jamnet-clap-host follow-host: the same timeline with Host transport
#      control on, in a host offering CLAP transport control: the host's own
#      transport must start, relocate on the seek and stop with the session
#   2. negative control: with JAMNET_DEBUG_ALLOC_IN_PROCESS=1 each debug
#      bundle must abort inside process() (proves the checker is armed)
#   3. pedalboard (PyPI) loads each VST3, lists parameters, processes audio,
#      round-trips state
#   4. DawDreamer (PyPI) renders JAMNet Transport with a playing transport at
#      133 BPM; the transport frames it publishes are decoded by `toaster decode`
#   5. Send -> Receive across two real-time pedalboard processes on loopback
#      (default settings; 1 s of silence, then a 2 s sweep): manual 30 ms
#      buffer sample-exact, automatic buffer without a splice, correlation
#      >= 0.99 in both
#   6. jamnet-clap-host latency: Send -> Receive in two CLAP host processes
#      pacing 64-sample blocks in real time: every click once, manual buffer
#      within its latency budget (figures reported, automatic and manual),
#      the low-latency playout within 3 ms beyond the host block; a Send
#      at 44.1 kHz into a Receive at 48 kHz through both playouts
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
PY=${JAMNET_PYTHON:-$PWD/target/pyenv/bin/python}
export JAMNET_BUNDLE_DIR="$TARGET/bundled"

cargo xtask bundle jamnet-send jamnet-receive jamnet-transport
cargo build -p jamnet-clap-host -p toaster
HOST="$TARGET/debug/jamnet-clap-host"
B="$JAMNET_BUNDLE_DIR"

echo "--- CLAP harness (debug bundles: process() runs under assert_process_allocs)"
RUST_BACKTRACE=0 "$HOST" check "$B/JAMNet Send.clap" "$B/JAMNet Receive.clap" "$B/JAMNet Transport.clap"

echo "--- CLAP harness: session settings restored into active Send/Receive apply live"
RUST_BACKTRACE=0 "$HOST" live-settings "$B/JAMNet Send.clap" "$B/JAMNet Receive.clap"

echo "--- CLAP harness: JAMNet Transport follow mode fed real UDP transport frames"
RUST_BACKTRACE=0 "$HOST" follow "$B/JAMNet Transport.clap"
RUST_BACKTRACE=0 "$HOST" follow --multicast "$B/JAMNet Transport.clap"

echo "--- CLAP harness: JAMNet Transport drives the host's transport (CLAP transport control)"
RUST_BACKTRACE=0 "$HOST" follow-host "$B/JAMNet Transport.clap"

echo "--- negative control: an allocation in process() must abort the host"
for p in "JAMNet Send" "JAMNet Receive" "JAMNet Transport"; do
  set +e
  RUST_BACKTRACE=0 JAMNET_DEBUG_ALLOC_IN_PROCESS=1 "$HOST" alloc-probe "$B/$p.clap" >/dev/null 2>&1
  rc=$?
  set -e
  if [ "$rc" -ne 134 ]; then
    echo "FAIL: $p with an allocation in process() exited $rc, expected SIGABRT (134)"; exit 1
  fi
  echo "ok   $p: allocation in process() aborted (rc 134)"
done

echo "--- pedalboard"
"$PY" tests/hosts/test_pedalboard.py

echo "--- DawDreamer"
"$PY" tests/hosts/test_dawdreamer.py

echo "--- Send -> Receive, two pedalboard processes"
"$PY" tests/hosts/test_stream_pedalboard.py

echo "--- Send -> Receive latency, two CLAP host processes, 64-sample blocks in real time"
# Every click must arrive once; a manual buffer's p99 must stay within the
# pipeline's budget (jamnet-clap-host/src/latency.rs). Four phases of the
# receiving host's block clock against the sender's; figures in docs/plugins.md.
for phase in 0 0.25 0.5 0.75; do
  for jitter in auto 1; do
    RUST_BACKTRACE=0 "$HOST" latency --seconds 8 --phase "$phase" --jitter-ms "$jitter" \
      "$B/JAMNet Send.clap" "$B/JAMNet Receive.clap"
  done
done
# Receive's low-latency playout (blocks played as they arrive, no output
# cushion): every click once, and the p99 beyond the host block within 3 ms
# (the buffered playout above sits at 6-7 ms; the plugin issue's target is
# 1 ms, met on an idle machine at most phases: figures in docs/plugins.md;
# on a loaded one a dropout can leave a block more, 1.33 ms each).
for phase in 0 0.25 0.5 0.75; do
  RUST_BACKTRACE=0 "$HOST" latency --seconds 8 --phase "$phase" --jitter-ms 1 --low-latency \
    --max-beyond-block-ms 3.0 "$B/JAMNet Send.clap" "$B/JAMNet Receive.clap"
done
# The Send's host at 44.1 kHz, the Receive's at 48 kHz: both playouts
# convert the rate (every click once, none twice). The low-latency one
# holds what the worst of the sliding block phases needs (0.9 ms beyond
# the block settled here, a block more after a frozen VM, more at start:
# docs/plugins.md, "Sample-rate conversion"); bounded loosely (12 ms: a
# run here kept 6.1 ms from its start), as a rate error would make the
# latency grow without bound or lose clicks.
RUST_BACKTRACE=0 "$HOST" latency --seconds 8 --send-rate 44100 --jitter-ms 1 \
  "$B/JAMNet Send.clap" "$B/JAMNet Receive.clap"
RUST_BACKTRACE=0 "$HOST" latency --seconds 8 --send-rate 44100 --jitter-ms 1 --low-latency \
  --max-beyond-block-ms 12.0 "$B/JAMNet Send.clap" "$B/JAMNet Receive.clap"
# The receiving host's audio clock 200 ppm slow, then fast, against the
# CPU clock (as an audio interface's crystal is): the playout must follow
# it (bridge_core::clock::HostRate) instead of filling or draining the
# output ring (before it did: +4.2 ms in 30 s at -200 ppm, and a dropout
# whenever the cushion ran dry at +200 ppm).
for ppm in -200 200; do
  RUST_BACKTRACE=0 "$HOST" latency --seconds 30 --warmup 12 --receive-ppm "$ppm" --jitter-ms 2 \
    --max-creep-ms 1.0 "$B/JAMNet Send.clap" "$B/JAMNet Receive.clap"
done
