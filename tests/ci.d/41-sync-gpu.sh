#!/usr/bin/env bash
# GpuCpuSyncBridge on lavapipe (mesa-vulkan-drivers, tests/deps/apt-clock.txt):
# wgpu timestamp queries paired with CLOCK_MONOTONIC readings must work here
# (JAMNET_REQUIRE_GPU=1 turns "no adapter / no timestamps", otherwise a clean
# typed fallback, into a failure), and on lavapipe every GPU timestamp must
# fall inside its CPU bracket (its GPU clock is CLOCK_MONOTONIC).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/jamnet-xdg}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
# --workspace keeps the feature resolution of the main test build: no rebuild.
JAMNET_REQUIRE_GPU=1 cargo test -q --workspace --lib -- clock::gpu_bridge --nocapture
