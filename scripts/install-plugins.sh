#!/usr/bin/env bash
# Build the JAMNet plugins (release) and install them for the current user
# into the standard Linux plugin folders: ~/.vst3 and ~/.clap.
#
#   scripts/install-plugins.sh            build + install
#   JAMNET_PLUGIN_PREFIX=/tmp/x scripts/install-plugins.sh   install under /tmp/x/.vst3, /tmp/x/.clap
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
PREFIX=${JAMNET_PLUGIN_PREFIX:-$HOME}

cargo xtask bundle jamnet-send jamnet-receive jamnet-transport --release

mkdir -p "$PREFIX/.vst3" "$PREFIX/.clap"
for name in "JAMNet Send" "JAMNet Receive" "JAMNet Transport"; do
  rm -rf "$PREFIX/.vst3/$name.vst3"
  cp -r "$TARGET/bundled/$name.vst3" "$PREFIX/.vst3/"
  install -m 0755 "$TARGET/bundled/$name.clap" "$PREFIX/.clap/$name.clap"
  echo "installed $name: $PREFIX/.vst3/$name.vst3, $PREFIX/.clap/$name.clap"
done
