#!/usr/bin/env bash
# Editors render (issue 6). Opens each plugin's egui editor the way a Linux
# CLAP host does -- `jamnet-clap-host gui`: the CLAP gui extension, X11 API,
# embedded in a window the harness creates -- under Xvfb with Mesa's software
# GL, while the plugin processes in real time. For each editor it waits for a
# rendered frame, lets it settle, captures the window and asserts:
#   - the editor's X window has the size the plugin reported (gui.get_size),
#   - <= 0.5% of it is still the parent window's magenta (the editor painted
#     its whole area),
#   - >= 40 distinct colours, no colour over 97% (not blank or uniform),
#   - >= 8 bands of rows with light pixels (lines of text/widgets drawn),
#   - the same checks FAIL on the bare parent window captured just before
#     the editor is attached (negative control).
# Screenshots go to target/editor-shots/jamnet-{send,receive,transport}.png;
# docs/editor-*.png are copies of them (refresh: run this step, then
# `for p in send receive transport; do cp target/editor-shots/jamnet-$p.png docs/editor-$p.png; done`).
# Reuses the debug bundles and the harness 60-hosts-plugins.sh builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
B="$TARGET/bundled"
OUT="$TARGET/editor-shots"

# The same two commands as 60-hosts-plugins.sh (same feature unification),
# so after it they are no-ops.
cargo xtask bundle jamnet-send jamnet-receive jamnet-transport
cargo build -p jamnet-clap-host -p toaster
HOST="$TARGET/debug/jamnet-clap-host"

# Xvfb on a free display number (-displayfd), 24-bit colour, no TCP.
dfile=$(mktemp)
Xvfb -displayfd 3 -screen 0 1280x1024x24 -nolisten tcp 3>"$dfile" 2>"$TARGET/xvfb.log" &
XVFB_PID=$!
trap 'kill "$XVFB_PID" 2>/dev/null || true; rm -f "$dfile"' EXIT
for _ in $(seq 100); do [ -s "$dfile" ] && break; sleep 0.1; done
if [ ! -s "$dfile" ]; then
  echo "FAIL: Xvfb did not start"; cat "$TARGET/xvfb.log"; exit 1
fi
export DISPLAY=":$(head -n1 "$dfile")"
# No GPU here: Mesa's llvmpipe renders the editors' OpenGL.
export LIBGL_ALWAYS_SOFTWARE=1

echo "--- editors under Xvfb ($DISPLAY)"
rm -rf "$OUT"
RUST_BACKTRACE=0 "$HOST" gui --out "$OUT" \
  "$B/JAMNet Send.clap" "$B/JAMNet Receive.clap" "$B/JAMNet Transport.clap"
ls -l "$OUT"
