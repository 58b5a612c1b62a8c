"""JAMNet Send -> JAMNet Receive across two host processes on loopback, each
a pedalboard (PyPI) hosting the VST3 in real time (10 ms buffers, paced by
the clock, `reset=False` so the plugin keeps running between buffers).

Both use the plugins' default settings: session "jamnet", multicast group
239.255.77.77:47700. The test signal (a 2 s noise-modulated sweep) must
arrive intact: normalised correlation >= 0.99 after alignment. Also reports
the end-to-end delay (receiver output vs sender input, host block included).
Exit status 0 only if the check passed.
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


def signal():
    rng = np.random.default_rng(7)
    t = np.arange(int(SR * SEND_S)) / SR
    sweep = np.sin(2 * np.pi * (200 * t + 900 * t * t))
    env = 0.3 + 0.2 * np.abs(rng.standard_normal(t.size)).clip(0, 2)
    x = (0.4 * sweep * env).astype(np.float32)
    return np.stack([x, -x])


def role_send(t0):
    import pedalboard
    from jamnet_bundles import teach_pedalboard_vst3_midi_params, vst3
    teach_pedalboard_vst3_midi_params()
    p = pedalboard.load_plugin(vst3("JAMNet Send"))
    x = signal()
    zeros = np.zeros((2, BLOCK), np.float32)
    # Activate and let the worker start before the start time.
    p(zeros, SR, buffer_size=BLOCK, reset=False)
    while time.time() < t0:
        time.sleep(0.001)
    n = 0
    for i in range(0, x.shape[1], BLOCK):
        p(x[:, i:i + BLOCK], SR, buffer_size=BLOCK, reset=False)
        n += BLOCK
        # pace at real time
        ahead = t0 + n / SR - time.time()
        if ahead > 0:
            time.sleep(ahead)
    time.sleep(0.3)
    del p
    import gc
    gc.collect()


def role_recv(t0, seconds, out_path):
    import pedalboard
    from jamnet_bundles import vst3
    p = pedalboard.load_plugin(vst3("JAMNet Receive"), initialization_timeout=0.1)
    # Two Python processes pacing 10 ms buffers with sleep() on a shared,
    # busy CI machine jitter by several ms: give the playout buffer room.
    p.jitter_mode = "Manual"
    p.jitter_buffer_ms = float(os.environ.get("JAMNET_TEST_PLAYOUT_MS", "30"))
    chunks = []
    p([], duration=BLOCK / SR, sample_rate=SR, num_channels=2, buffer_size=BLOCK, reset=False)
    start = t0 - 0.2
    while time.time() < start:
        time.sleep(0.001)
    n = 0
    while n < seconds * SR:
        y = p([], duration=BLOCK / SR, sample_rate=SR, num_channels=2, buffer_size=BLOCK, reset=False)
        chunks.append(y)
        n += BLOCK
        ahead = start + n / SR - time.time()
        if ahead > 0:
            time.sleep(ahead)
    np.save(out_path, np.concatenate(chunks, axis=1))
    if os.environ.get("JAMNET_STREAM_DUMP"):  # keep the received audio for a closer look
        np.save(os.environ["JAMNET_STREAM_DUMP"], np.concatenate(chunks, axis=1))
    # Unload the plugin (its worker stops; with JAMNET_DEBUG_REPORT=DIR it
    # leaves its report there).
    del p
    import gc
    gc.collect()


def main():
    if len(sys.argv) > 1:
        role = sys.argv[1]
        if role == "send":
            role_send(float(sys.argv[2]))
        else:
            role_recv(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        return
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"jamnet-recv-{os.getpid()}.npy")
    t0 = time.time() + 3.0
    env = dict(os.environ, PYTHONPATH=HERE)
    recv = subprocess.Popen([sys.executable, __file__, "recv", str(t0), str(SEND_S + 1.0), out], env=env)
    send = subprocess.Popen([sys.executable, __file__, "send", str(t0)], env=env)
    rs, ss = recv.wait(timeout=60), send.wait(timeout=60)
    if rs or ss:
        print(f"FAIL host processes exited {rs} (recv) / {ss} (send)")
        sys.exit(1)
    y = np.load(out)
    os.unlink(out)
    x = signal()
    # Align: the receiver started 0.2 s before the sender.
    a, b = x[0], y[0]
    corr = np.correlate(b, a[: SR // 2], mode="valid")
    lag = int(np.argmax(np.abs(corr)))
    seg = b[lag:lag + a.size]
    m = min(seg.size, a.size)
    rho = float(np.dot(seg[:m], a[:m]) / (np.linalg.norm(seg[:m]) * np.linalg.norm(a[:m]) + 1e-12))
    delay_ms = (lag / SR - 0.2) * 1000.0
    err = seg[:m] - a[:m] * (np.dot(seg[:m], a[:m]) / np.dot(a[:m], a[:m]))
    bad = [i for i in range(0, m - BLOCK, 64) if np.max(np.abs(err[i:i + 64])) > 0.01]
    # Where the timeline moved: for every 100 ms of the signal, the lag
    # (relative to the global alignment) at which 20 ms of it match best.
    # A constant 0 is a clean stream; steps are splices, ramps resampling.
    local_shifts = []
    for i in range(0, a.size - 960, 4800):
        w = a[i:i + 960]
        best = max(range(-600, 601), key=lambda d: float(np.dot(b[lag + i + d:lag + i + d + 960], w))
                   if 0 <= lag + i + d and lag + i + d + 960 <= b.size else -1e9)
        local_shifts.append(best)
    result = {"correlation": rho, "local_shifts_per_100ms": local_shifts, "bad_64_blocks": len(bad), "first_bad": bad[:40], "aligned_samples": m, "end_to_end_ms_incl_host_block": delay_ms,
              "received_peak": float(np.max(np.abs(y)))}
    print(json.dumps(result))
    ok = rho >= 0.99 and m >= 0.9 * a.size
    print(("ok   " if ok else "FAIL ") + f"Send -> Receive across two pedalboard processes: correlation {rho:.4f}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
