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


def teach_pedalboard_vst3_midi_params():
    """VST3 has no MIDI CC events: nice-plug exposes 16 x 130 hidden
    "MIDI Ch. N CC M" parameters for the host's MIDI mapping (JAMNet Send
    forwards CCs). pedalboard already skips JUCE's spelling of these
    ("MIDI CC "); teach it nice-plug's, or its O(n^2) parameter wrapping takes
    ~50 s per load."""
    import re

    import pedalboard._pedalboard as _pb

    _pb.PARAMETER_NAME_REGEXES_TO_IGNORE.add(re.compile(r"MIDI Ch\. \d+ "))
