"""pedalboard (PyPI) hosts each JAMNet VST3: loads it, lists its parameters,
processes audio, and round-trips its state.

pedalboard passes no transport (tempo 120, stopped, position 0), so this test
checks loading, parameters, audio path and state, not transport.
Exit status 0 only if every check passed.
"""
import sys

import re
import time

import numpy as np
import pedalboard

from jamnet_bundles import teach_pedalboard_vst3_midi_params, vst3

teach_pedalboard_vst3_midi_params()

SR = 48000
FAILED = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILED.append(what)


def sine(seconds=1.0, channels=2):
    t = np.arange(int(SR * seconds)) / SR
    rows = [0.5 * np.sin(2 * np.pi * 440.0 * (1 + 0.5 * c) * t) for c in range(channels)]
    return np.stack(rows).astype(np.float32)


EXPECTED_PARAMS = {
    "JAMNet Send": {"send", "format", "jellie_mono", "send_midi", "midi_burst"},
    "JAMNet Receive": {"jitter_mode", "jitter_buffer_ms", "concealment", "output_gain_db", "midi_out"},
    "JAMNet Transport": {"mode", "announce_every_ms", "midi_clock_out", "song_position_out",
                         "mtc_out", "mtc_rate", "host_transport_control"},
}


def load(name):
    # pedalboard renders an instrument until it makes sound, for up to
    # initialization_timeout s; an unconnected Receive is (rightly) silent.
    return pedalboard.load_plugin(vst3(name), initialization_timeout=0.1)


def same(a, b):
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def run(p, name, seconds):
    if name == "JAMNet Receive":
        return p([], duration=seconds, sample_rate=SR, num_channels=2)
    return p(sine(seconds), SR, buffer_size=64)


def test_plugin(name):
    t0 = time.time()
    p = load(name)
    print(f"{name}: loaded in {time.time() - t0:.2f} s")
    params = set(p.parameters.keys())
    print(f"{name}: {sorted(params)}")
    missing = EXPECTED_PARAMS[name] - params
    check(not missing, f"{name}: parameters listed (missing {sorted(missing)})")

    x = sine()
    if name == "JAMNet Receive":
        check(p.is_instrument, f"{name}: loads as an instrument")
        y = p([], duration=1.0, sample_rate=SR, num_channels=2)
        check(y.shape == (2, SR), f"{name}: renders 2 x {SR} samples (got {y.shape})")
        check(bool(np.all(np.isfinite(y))), f"{name}: output finite")
        # No stream is connected in this test: the honest output is silence.
        check(float(np.max(np.abs(y))) == 0.0, f"{name}: silent without a stream")
    else:
        check(p.is_effect, f"{name}: loads as an effect")
        y = p(x, SR, buffer_size=64)
        check(y.shape == x.shape, f"{name}: output shape {y.shape}")
        check(bool(np.array_equal(y, x)), f"{name}: audio passes through bit-exactly")

    # Settings persist: change a parameter, copy the state into a fresh instance.
    if name == "JAMNet Send":
        p.midi_burst = 6
        key, want = "midi_burst", 6
    elif name == "JAMNet Receive":
        p.concealment = "Repeat"
        key, want = "concealment", "Repeat"
    else:
        p.mode = "Follow"
        key, want = "mode", "Follow"
    # A VST3 edit reaches the processor (whose state is saved) in process().
    run(p, name, 0.05)
    state = p.raw_state
    q = load(name)
    before = getattr(q, key)
    q.raw_state = state
    run(q, name, 0.05)
    after = getattr(q, key)
    check(not same(before, want) and same(after, want),
          f"{name}: state restores {key} ({before} -> {after}, want {want})")


def main():
    for name in EXPECTED_PARAMS:
        try:
            test_plugin(name)
        except Exception as e:  # report and continue with the next plugin
            check(False, f"{name}: {type(e).__name__}: {e}")
    if FAILED:
        print(f"{len(FAILED)} check(s) failed")
        sys.exit(1)
    print("pedalboard: all checks passed")


if __name__ == "__main__":
    main()
