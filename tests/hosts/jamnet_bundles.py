"""Where the JAMNet plugin bundles are, for the host tests.

JAMNET_BUNDLE_DIR overrides the default `target/bundled` (as written by
`cargo xtask bundle ...`, debug profile in CI so that nice-plug's
assert_process_allocs is armed).
"""
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUNDLE_DIR = pathlib.Path(
    os.environ.get("JAMNET_BUNDLE_DIR")
    or os.path.join(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"), "bundled")
)
NAMES = ["JAMNet Send", "JAMNet Receive", "JAMNet Transport"]


def vst3(name: str) -> str:
    p = BUNDLE_DIR / f"{name}.vst3"
    if not p.is_dir():
        raise SystemExit(f"missing bundle {p}: run cargo xtask bundle first")
    return str(p)


def clap(name: str) -> str:
    return str(BUNDLE_DIR / f"{name}.clap")
