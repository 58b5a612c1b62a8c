"""JAMNet Send -> JAMNet Receive across two host processes on loopback, each
a pedalboard (PyPI) hosting the VST3 in real time (10 ms buffers, paced by
the clock, `reset=False` so the plugin keeps running between buffers).

Both use the plugins' default settings: session "jamnet", multicast group
239.255.77.77:47700. As in a DAW, the Send's track runs before anything is
played on it: 1 s of silence, then the test signal (a 2 s noise-modulated
sweep), which must arrive intact: normalised correlation >= 0.99 after
alignment, and no 64-sample stretch off by more than 0.01. Run three
times: the Receive in its default automatic jitter mode (no splice, but
the buffer may grow once: one hold of whole blocks is found, cut out and
reported), then in manual mode at 30 ms
(`JAMNET_TEST_PLAYOUT_MS=auto|MS` runs one), then with the Send's host at
44.1 kHz and the Receive's at 48 kHz (manual 30 ms; `30@44100`, or
`auto@44100`): the Receive converts the rate, the reference is the
sender's signal band-limited resampled to 48 kHz, and no 100 ms window
may move (a splice); last, automatic again with the Send's host handing
one buffer over 6 ms late (`auto!6`). Also reports the end-to-end delay
(receiver output vs sender input, host block included). Exit status 0 only
if every check passed.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SR = 48000
BLOCK = 480  # 10 ms host buffers
SEND_S = 2.0
PRE_S = 1.0  # silence the Send's track plays before the signal


def signal(sr=SR):
    rng = np.random.default_rng(7)
    t = np.arange(int(sr * SEND_S)) / sr
    sweep = np.sin(2 * np.pi * (200 * t + 900 * t * t))
    env = 0.3 + 0.2 * np.abs(rng.standard_normal(t.size)).clip(0, 2)
    x = (0.4 * sweep * env).astype(np.float32)
    return np.stack([x, -x])


def resampled(x, sr_from, sr_to):
    """`x` (channels x samples) at `sr_to`: band-limited (FFT) resampling."""
    if sr_from == sr_to:
        return x
    n = x.shape[1]
    m = int(round(n * sr_to / sr_from))
    spec = np.fft.rfft(x, axis=1)
    keep = min(spec.shape[1], m // 2 + 1)
    out = np.zeros((x.shape[0], m // 2 + 1), complex)
    out[:, :keep] = spec[:, :keep]
    return (np.fft.irfft(out, n=m, axis=1) * (m / n)).astype(np.float32)


def delayed(x, d):
    """`x` (last axis: samples) delayed by `d` samples (any fraction), by a
    linear phase in the frequency domain."""
    n = x.shape[-1]
    w = np.fft.rfftfreq(n)
    return np.fft.irfft(np.fft.rfft(x, axis=-1) * np.exp(-2j * np.pi * w * d), n=n, axis=-1).astype(np.float32)


def low_passed(x, hz):
    """`x` (last axis: samples at SR) with everything above `hz` removed."""
    n = x.shape[-1]
    spec = np.fft.rfft(x, axis=-1)
    spec[..., np.fft.rfftfreq(n, 1 / SR) > hz] = 0
    return np.fft.irfft(spec, n=n, axis=-1).astype(np.float32)


def aligned(x, y, tx_sr):
    """`y` (received, channels x samples) aligned to the reference `x`:
    lag, correlation, 64-sample stretches off by > 0.01, samples compared,
    the lag of every 100 ms window relative to the global one, and the
    fraction of a sample a converted stream sits off."""
    # Align on channel 0, then check both (the sender's right is -left).
    a, b = x[0], y[0]
    corr = np.correlate(b, a[: SR // 2], mode="valid")
    lag = int(np.argmax(np.abs(corr)))
    seg = y[:, lag:lag + a.size]
    m = min(seg.shape[1], a.size)
    xs, seg = x[:, :m], seg[:, :m]
    frac = 0.0
    if tx_sr != SR:
        # A converted stream lands between samples (the converter's delay is
        # a fraction of an output sample): align the reference to it too.
        frac = max(np.arange(-1.0, 1.0, 0.01), key=lambda d: float(np.sum(seg[0] * delayed(xs[0], d))))
        # A converter's anti-aliasing filter rolls off above ~19.5 kHz (the
        # test signal is noise-modulated: it has energy up to Nyquist):
        # compare the audio band, below 18 kHz.
        xs, seg = low_passed(delayed(xs, frac), 18_000), low_passed(seg, 18_000)
        # The windows below then look for moves from there (at a fraction
        # near ±0.5 whole-sample lags would flip between 0 and 1).
        a = delayed(a, frac)
    rho = float(np.sum(seg * xs) / (np.linalg.norm(seg) * np.linalg.norm(xs) + 1e-12))
    err = seg - xs * (np.sum(seg * xs) / np.sum(xs * xs))
    bad = [i for i in range(0, m - BLOCK, 64) if np.max(np.abs(err[:, i:i + 64])) > 0.01]
    # Where the timeline moved: for every 100 ms of the signal, the lag
    # (relative to the global alignment) at which 20 ms of it match best.
    # A constant 0 is a clean stream; steps are splices, ramps resampling.
    local_shifts = []
    for i in range(0, a.size - 960, 4800):
        w = a[i:i + 960]
        best = max(range(-600, 601), key=lambda d: float(np.dot(b[lag + i + d:lag + i + d + 960], w))
                   if 0 <= lag + i + d and lag + i + d + 960 <= b.size else -1e9)
        local_shifts.append(best)
    return {"lag": lag, "rho": rho, "bad": bad, "m": m, "local_shifts": local_shifts, "frac": frac, "a": a}


def hold_in(found, y):
    """(output sample where the held blocks start, their length) if the
    windows step once, later by 1 to 8 whole 64-sample blocks (up to
    10.7 ms: `auto!6` makes 4 or 5), and nowhere else; None otherwise."""
    shifts = found["local_shifts"]
    steps = [i for i in range(1, len(shifts)) if shifts[i] != shifts[i - 1]]
    if len(steps) != 1:
        return None
    k = steps[0]
    held = shifts[k] - shifts[k - 1]
    if held <= 0 or held % 64 or held > 8 * 64:
        return None
    # Where in the 100 ms before the step (to the sample: the receiver's
    # blocks need not line up with the signal's): the point after which
    # the later alignment matches better than the earlier.
    a, b = found["a"], y[0]
    lag0 = found["lag"] + shifts[k - 1]
    lo, hi = (k - 1) * 4800, min(k * 4800 + 960, a.size, b.size - lag0 - held)
    before = np.cumsum(np.concatenate([[0.0], (b[lag0 + lo:lag0 + hi] - a[lo:hi]) ** 2]))
    after = np.cumsum(np.concatenate([[0.0], (b[lag0 + held + lo:lag0 + held + hi] - a[lo:hi]) ** 2]))
    p = lo + int(np.argmin(before + (after[-1] - after)))
    return lag0 + p, held


def aligned_but_one_hold(x, y, tx_sr):
    """As `aligned`, after cutting out one hold if `hold_in` finds one:
    (what `aligned` returns, the hold or None, `y` without it)."""
    found = aligned(x, y, tx_sr)
    hold = hold_in(found, y)
    if hold is not None:
        at, n = hold
        y = np.concatenate([y[:, :at], y[:, at + n:]], axis=1)
        found = aligned(x, y, tx_sr)
    return found, hold, y


def role_send(t0, late_path, sr):
    import pedalboard
    from jamnet_bundles import teach_pedalboard_vst3_midi_params, vst3
    teach_pedalboard_vst3_midi_params()
    p = pedalboard.load_plugin(vst3("JAMNet Send"))
    block = sr // 100  # 10 ms
    x = np.concatenate([np.zeros((2, int(PRE_S * sr)), np.float32), signal(sr)], axis=1)
    zeros = np.zeros((2, block), np.float32)
    # Activate and let the worker start before the start time.
    p(zeros, sr, buffer_size=block, reset=False)
    t0 -= PRE_S
    while time.time() < t0:
        time.sleep(0.001)
    n = 0
    late = 0.0
    # JAMNET_TEST_SEND_STALL_MS: the Send's host hands one buffer over that
    # much late, 0.75 s into the signal (to see the automatic buffer grow).
    stall = float(os.environ.get("JAMNET_TEST_SEND_STALL_MS", "0")) / 1000.0
    stall_at = int((PRE_S + 0.75) * sr) // block * block
    for i in range(0, x.shape[1], block):
        if stall and i == stall_at:
            time.sleep(stall)
        p(x[:, i:i + block], sr, buffer_size=block, reset=False)
        n += block
        # pace at real time
        ahead = t0 + n / sr - time.time()
        if ahead > 0:
            time.sleep(ahead)
        late = max(late, time.time() - (t0 + n / sr))
    with open(late_path, "w") as f:
        f.write(str(late))
    time.sleep(0.3)
    del p
    import gc
    gc.collect()


def role_recv(t0, seconds, out_path, playout, late_path):
    import pedalboard
    from jamnet_bundles import vst3
    p = pedalboard.load_plugin(vst3("JAMNet Receive"), initialization_timeout=0.1)
    # Two Python processes pacing 10 ms buffers with sleep() on a shared,
    # busy CI machine jitter by several ms: give the playout buffer room.
    if playout != "auto":
        p.jitter_mode = "Manual"
        p.jitter_buffer_ms = float(playout)
    chunks = []
    p([], duration=BLOCK / SR, sample_rate=SR, num_channels=2, buffer_size=BLOCK, reset=False)
    start = t0 - PRE_S - 0.2
    while time.time() < start:
        time.sleep(0.001)
    n = 0
    late = 0.0
    while n < seconds * SR:
        y = p([], duration=BLOCK / SR, sample_rate=SR, num_channels=2, buffer_size=BLOCK, reset=False)
        chunks.append(y)
        n += BLOCK
        ahead = start + n / SR - time.time()
        if ahead > 0:
            time.sleep(ahead)
        late = max(late, time.time() - (start + n / SR))
    with open(late_path, "w") as f:
        f.write(str(late))
    np.save(out_path, np.concatenate(chunks, axis=1))
    if os.environ.get("JAMNET_STREAM_DUMP"):  # keep the received audio for a closer look
        np.save(os.environ["JAMNET_STREAM_DUMP"], np.concatenate(chunks, axis=1))
    # Unload the plugin (its worker stops; with JAMNET_DEBUG_REPORT=DIR it
    # leaves its report there).
    del p
    import gc
    gc.collect()


def run(mode):
    """One Send -> Receive run with the Receive's jitter mode `mode`
    ("auto" or a manual delay in ms, then optionally "@" and the Send's
    host rate); True if the signal arrived intact."""
    mode, _, stall_ms = mode.partition("!")
    playout, _, tx_sr = mode.partition("@")
    tx_sr = int(tx_sr or SR)
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"jamnet-recv-{os.getpid()}.npy")
    t0 = time.time() + 3.0
    env = dict(os.environ, PYTHONPATH=HERE)
    if stall_ms:
        env["JAMNET_TEST_SEND_STALL_MS"] = stall_ms
    recv = subprocess.Popen([sys.executable, __file__, "recv", str(t0), str(PRE_S + SEND_S + 1.0), out, playout,
                             out + ".recv-late"], env=env)
    send = subprocess.Popen([sys.executable, __file__, "send", str(t0), out + ".send-late", str(tx_sr)], env=env)
    rs, ss = recv.wait(timeout=60), send.wait(timeout=60)
    if rs or ss:
        print(f"FAIL host processes exited {rs} (recv) / {ss} (send)")
        return False, 0.0
    y = np.load(out)
    # The longest either host handed a buffer over after its due time.
    host_late_ms = 1000.0 * max(float(open(out + e).read()) for e in (".recv-late", ".send-late"))
    for e in ("", ".recv-late", ".send-late"):
        os.unlink(out + e)
    x = resampled(signal(tx_sr), tx_sr, SR)
    held = []
    if playout == "auto":
        # An automatic buffer may grow once while it learns: a hold, which
        # plays k concealed 64-sample blocks and delays everything after
        # by as much (a step of +64 k in the windows). Cut the held blocks
        # out and check the rest as if they had not been there.
        found, hold, y = aligned_but_one_hold(x, y, tx_sr)
        if hold is not None:
            at, samples = hold
            held.append({"at_ms_of_signal": round(1000.0 * (at - found["lag"]) / SR, 1), "samples": samples})
    else:
        found = aligned(x, y, tx_sr)
    lag, rho, bad, m, local_shifts, frac = (found[k] for k in ("lag", "rho", "bad", "m", "local_shifts", "frac"))
    a = found["a"]
    # The receiver started PRE_S + 0.2 s before the signal.
    delay_ms = (lag / SR - PRE_S - 0.2) * 1000.0
    result = {"jitter_mode": playout, "send_rate": tx_sr, "fraction_of_a_sample": frac, "correlation": rho, "local_shifts_per_100ms": local_shifts,
              "held_while_learning": held,
              "host_late_ms_max": host_late_ms,
              "bad_64_blocks": len(bad), "first_bad": bad[:40], "aligned_samples": m,
              "end_to_end_ms_incl_host_block": delay_ms, "received_peak": float(np.max(np.abs(y)))}
    print(json.dumps(result))
    # Manual delay: sample-exact. Automatic: the buffer learns during the
    # silence and may grow once more (a hold of at most 8 blocks, cut out
    # above and reported); otherwise no splice (every 100 ms of the signal
    # where it belongs) and correlation >= 0.99, but samples may carry a fractional-sample
    # phase from the delay correction resampling briefly while it learnt.
    # A converted stream is not bit-exact either (the converter's filter):
    # no splice is its criterion in both modes.
    exact = not bad if playout != "auto" and tx_sr == SR else all(d == 0 for d in local_shifts)
    ok = rho >= 0.99 and m >= 0.9 * a.size and exact
    mode = "auto jitter buffer" if playout == "auto" else f"manual {playout} ms"
    if tx_sr != SR:
        mode += f", Send at {tx_sr} Hz into Receive at {SR} Hz"
    if stall_ms:
        mode += f", the Send's host {stall_ms} ms late once"
    print(("ok   " if ok else "FAIL ") + f"Send -> Receive across two pedalboard processes ({mode}): "
          f"correlation {rho:.5f}, {len(bad)} stretches off by > 0.01, "
          f"{sum(1 for d in local_shifts if d)} of {len(local_shifts)} 100 ms windows moved, end to end {delay_ms:.1f} ms"
          + "".join(f"; held {h['samples']} samples at {h['at_ms_of_signal']} ms (the buffer grew)" for h in held))
    return ok, host_late_ms


def check_the_checker():
    """The automatic mode's leniency, checked on made-up captures: one hold
    of whole blocks is found and cut out to the sample; two holds, a dropped
    block, a hold of a fraction of a block or of more than 8 blocks are
    not excused."""
    x = signal()
    lead = np.zeros((2, 12_345), np.float32)

    def capture(*edits):
        y = np.concatenate([lead, x, np.zeros((2, 9_000), np.float32)], axis=1)
        for at, n in edits:  # n > 0: n samples held (zeros) at `at`; n < 0: -n samples dropped
            at += lead.shape[1]
            y = (np.concatenate([y[:, :at], np.zeros((2, n), np.float32), y[:, at:]], axis=1) if n > 0
                 else np.concatenate([y[:, :at], y[:, at - n:]], axis=1))
        return y

    def verdict(y):
        found, hold, _ = aligned_but_one_hold(x, y, SR)
        clean = found["rho"] >= 0.99 and not found["bad"] and all(d == 0 for d in found["local_shifts"])
        return hold, clean

    cases = [
        ("one 3-block hold 1.3 s in", capture((62_437, 192)), (12_345 + 62_437, 192), True),
        ("one block held 0.2 s in", capture((9_600, 64)), (12_345 + 9_600, 64), True),
        ("an 8-block hold 1.9 s in", capture((91_203, 512)), (12_345 + 91_203, 512), True),
        ("no hold", capture(), None, True),
        ("two holds", capture((30_016, 64), (70_016, 64)), None, False),
        ("a dropped block", capture((30_016, -64)), None, False),
        ("a 40-sample hold", capture((30_016, 40)), None, False),
        ("a 9-block hold", capture((30_016, 576)), None, False),
    ]
    ok = True
    for name, y, want_hold, want_clean in cases:
        hold, clean = verdict(y)
        good = hold == want_hold and clean == want_clean
        ok &= good
        print(("ok   " if good else "FAIL ") + f"checker, {name}: hold {hold}, clean after cutting it {clean}")
    return ok


def main():
    if len(sys.argv) > 1:
        role = sys.argv[1]
        if role == "send":
            role_send(float(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        else:
            role_recv(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6])
        return
    modes = os.environ.get("JAMNET_TEST_PLAYOUT_MS")
    results = [check_the_checker()]
    # Converted in manual mode: in automatic mode the buffer splices a block
    # as it grows in about 1 run of 7 (docs/plugins.md, "Sample-rate
    # conversion (measured)"; `JAMNET_TEST_PLAYOUT_MS=auto@44100` runs it).
    # "auto!6": the Send's host hands one buffer over 6 ms late, 0.75 s
    # into the signal, 3 ms beyond anything the buffer has seen: it grows
    # (one hold, excused and reported) or absorbs it, and nothing else moves.
    for mode in [modes] if modes else ["auto", "30", "30@44100", "auto!6"]:
        # Retried (at most twice) only when the machine broke the premise:
        # a Python host handed a buffer over more than 5 ms late (a busy
        # 2-core CI machine); any other failure counts.
        for attempt in range(3):
            ok, host_late_ms = run(mode)
            if ok or host_late_ms <= 5.0 or attempt == 2:
                break
            print(f"info a host was {host_late_ms:.1f} ms late handing over a buffer: retrying")
        results.append(ok)
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
