"""JAMNet in Ardour 7 (a real DAW, headless through ardour7-lua).

Run by tests/ci.d/62-ardour.sh after the VST3 bundles are built and scanned
into an isolated Ardour cache (XDG_CONFIG_HOME / XDG_CACHE_HOME / VST3_PATH
set by the caller). Steps:

1. listen on the JAMNet default multicast group 239.255.77.77:47700 (what
   the plugins use by default, session "jamnet") for TOAST datagrams;
2. ardour7-lua session.lua: 48 kHz session on the Dummy backend, 133 BPM,
   tracks with JAMNet Send / Receive / Transport (VST3), non-default
   parameter values (Transport announces every 100 ms instead of 250),
   freewheel export of EXPORT_SAMPLES samples, save;
3. decode every `transport` datagram with `toaster decode` (the project's
   own decoder) and check what the Transport plugin published: 133 BPM,
   4/4, PLAY from position 0, positions advancing with the export and
   spaced by the 100 ms announce interval *in host time*;
4. ardour7-lua reload.lua in a new process: every parameter set in step 2
   must come back with the value set, the tempo map with 133 BPM;
5. the exported WAV has the exported length.

Freewheel export runs much faster than real time, so the frames'
`timestamp` (the plugin's wall-clock session time when it published) spans
far less than their `position` (Ardour's musical position, sample-exact):
positions are checked against the export span, timestamps only for order,
and the ratio (the freewheel speed-up) is printed.

Exit status 0 only if every check passed; each check prints `ok` or `FAIL`
with what was expected and what was seen.
"""
import array
import json
import math
import os
import pathlib
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]
GROUP, PORT = "239.255.77.77", 47700
RATE, BPM, BLOCK = 48000, 133.0, 512
EXPORT_SAMPLES = int(os.environ.get("JAMNET_EXPORT_SAMPLES", 4 * RATE))
ANNOUNCE_MS = 100.0  # what session.lua sets on JAMNet Transport
STREAM_TRANSPORT = 4  # PROTOCOL.md: header byte 4 = stream_type, 4 = TRANSPORT
FAILED = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILED.append(what)
    return cond


def toaster():
    if os.environ.get("JAMNET_TOASTER"):
        return os.environ["JAMNET_TOASTER"]
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return os.path.join(target, "debug", "toaster")


def listen(frames, stop, ready):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", PORT))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton("0.0.0.0")))
    s.settimeout(0.05)
    ready.set()
    while not stop.is_set():
        try:
            data, _ = s.recvfrom(65535)
            frames.append((time.monotonic(), data))
        except socket.timeout:
            pass


def decode(data):
    r = subprocess.run([toaster(), "decode", data.hex()], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def run_lua(script, env, log, attempts=1, before_attempt=lambda: None):
    """Run one ardour7-lua script; returns (stdout+stderr, wall seconds).

    Ardour 7.3's luasession corrupts its heap now and then around a
    freewheel export (glibc aborts: "double free or corruption", "corrupted
    size vs. prev_size", or a SIGSEGV), also with no JAMNet plugin loaded
    (JAMNET_ARDOUR_NO_PLUGINS=1 session.lua reproduces it in ~25% of runs).
    With attempts > 1 a run killed by a signal is retried, loudly; a Lua
    error or a non-zero exit is never retried, and every attempt dying
    fails the check."""
    for attempt in range(1, attempts + 1):
        before_attempt()
        t0 = time.monotonic()
        try:
            r = subprocess.run(["ardour7-lua", str(HERE / script)], env=env, capture_output=True,
                               text=True, timeout=120)
        except subprocess.TimeoutExpired as e:
            partial = e.stdout or b""
            partial = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
            r = subprocess.CompletedProcess(e.cmd, 124, partial,
                                            "Error: ardour7-lua did not finish within 120 s (hung?)\n")
        wall = time.monotonic() - t0
        out = r.stdout + r.stderr
        pathlib.Path(log).write_text(out)
        # ardour7-lua reports a Lua error as "Error: ..." (and exits 1).
        errors = [line for line in out.splitlines() if line.startswith("Error")]
        # The shell wrapper execs luasession: a signal shows as rc < 0 (or 128+N via a shell).
        killed = r.returncode < 0 or r.returncode >= 128
        if killed and not errors and attempt < attempts:
            glibc = [line for line in out.splitlines()
                     if re.search(r"corrupt|double free|free\(\)|malloc", line)]
            print(f"RETRY ardour7-lua {script} died (rc {r.returncode}"
                  + (f", glibc: {glibc[-1]}" if glibc else "")
                  + f") on attempt {attempt}/{attempts}: the known Ardour 7.3 export heap bug; log {log}.{attempt}",
                  flush=True)
            pathlib.Path(f"{log}.{attempt}").write_text(out)
            continue
        break
    check(r.returncode == 0 and not errors,
          f"ardour7-lua {script} ran (rc {r.returncode}, {wall:.1f} s, attempt {attempt}"
          + (f", {errors[0]}" if errors else "") + f"; log {log})")
    return out, wall


def wav_info(path):
    """(format tag, channels, rate, bits), frame count and, for 32-bit float,
    the samples of a RIFF WAV (the stdlib `wave` module reads integer PCM
    only; the export is float)."""
    data = pathlib.Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None, 0, []
    fmt, frames_n, samples, off = None, 0, [], 12
    while off + 8 <= len(data):
        cid, size = data[off:off + 4], struct.unpack("<I", data[off + 4:off + 8])[0]
        body = data[off + 8:off + 8 + size]
        if cid == b"fmt ":
            tag, ch, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
            fmt = (tag, ch, rate, bits)
        elif cid == b"data" and fmt:
            frames_n = size // (fmt[1] * fmt[3] // 8)
            if fmt[0] == 3 and fmt[3] == 32:
                samples = array.array("f", body[:size - size % 4])
        off += 8 + size + (size & 1)
    return fmt, frames_n, samples


def jamnet_lines(out, kind):
    return [line.split(" ", 2)[2].split("|") for line in out.splitlines()
            if line.startswith(f"JAMNET {kind} ")]


def close(a, b):
    return abs(a - b) <= 1e-4 * max(1.0, abs(a), abs(b))


def main():
    work = pathlib.Path(os.environ["JAMNET_ARDOUR_WORK"])
    sess_dir, export_dir = work / "session", work / "export"
    shutil.rmtree(sess_dir, ignore_errors=True)
    shutil.rmtree(export_dir, ignore_errors=True)
    export_dir.mkdir(parents=True)
    env = dict(os.environ,
               JAMNET_ARDOUR_SESSION_DIR=str(sess_dir),
               JAMNET_ARDOUR_SESSION_NAME="jamnet-ardour",
               JAMNET_ARDOUR_EXPORT_DIR=str(export_dir),
               JAMNET_EXPORT_SAMPLES=str(EXPORT_SAMPLES))

    frames, stop, ready = [], threading.Event(), threading.Event()
    th = threading.Thread(target=listen, args=(frames, stop, ready), daemon=True)
    th.start()
    ready.wait(5)

    print(f"--- session: create, 133 BPM, 3 VST3s, set parameters, export {EXPORT_SAMPLES} samples, save")
    t_start = time.monotonic()

    def fresh_attempt():
        # Nothing from a crashed attempt counts: new session, export, frames.
        nonlocal t_start
        shutil.rmtree(sess_dir, ignore_errors=True)
        for f in export_dir.glob("*"):
            f.unlink()
        del frames[:]
        t_start = time.monotonic()

    attempts = int(os.environ.get("JAMNET_ARDOUR_ATTEMPTS", "5"))
    out, wall1 = run_lua("session.lua", env, work / "session.log", attempts, fresh_attempt)
    time.sleep(0.3)  # the last datagrams in flight
    stop.set()
    th.join()

    blocks = jamnet_lines(out, "BLOCK")
    block = int(blocks[0][0]) if blocks else BLOCK
    block_ms = 1000.0 * block / RATE
    set_rows = jamnet_lines(out, "SET")
    check(len(set_rows) == 14, f"14 parameters set (got {len(set_rows)})")
    expected = {}
    for track, label, default, value, readback in set_rows:
        default, value, readback = float(default), float(value), float(readback)
        expected[(track, label)] = value
        check(close(readback, value),
              f"{track}: '{label}' set to {value:g} reads back {readback:g}")
        if not (track == "Transport" and label == "Mode"):  # Lead is the default and needed
            check(not close(default, value),
                  f"{track}: '{label}' = {value:g} differs from the default {default:g}")
    exp = jamnet_lines(out, "EXPORT")
    check(bool(exp) and exp[0][0] == "1", f"freewheel export finished ({exp[0] if exp else 'no EXPORT line'})")

    print("--- transport frames from JAMNet Transport (received on the multicast group)")
    tframes = [(t, d) for t, d in frames if len(d) > 4 and d[4] == STREAM_TRANSPORT]
    decoded = [(t, decode(d)) for t, d in tframes]
    msgs = [(t, d) for t, d in decoded
            if d and d.get("valid") and d.get("payload", {}).get("type") == "transport"]
    print(f"{len(frames)} datagrams, {len(tframes)} transport stream, {len(msgs)} valid transport messages")
    check(len(msgs) >= 2, "JAMNet Transport published valid transport frames")
    by_source = {}
    for t, d in msgs:
        by_source.setdefault(d["header"]["source"], []).append((t, d["payload"]["command"]))
    for s_, lst in by_source.items():
        print(f"source {s_:08x}: {len(lst)} messages, first {lst[0][1]} at +{lst[0][0] - t_start:.3f} s, last {lst[-1][1]} at +{lst[-1][0] - t_start:.3f} s")
    sources = [d["header"]["source"] for _, d in msgs if d["payload"]["command"] in ("PLAY", "RECORD")]
    check(bool(sources), "a PLAY announcement was published (Ardour rolled for the export)")
    if sources:
        src = sources[0]
        mine = [d for _, d in msgs if d["header"]["source"] == src]
        cmds = [d["payload"]["command"] for d in mine]
        compact = []
        for c in cmds:
            if compact and compact[-1][0] == c:
                compact[-1][1] += 1
            else:
                compact.append([c, 1])
        print("commands in order: " + ", ".join(f"{c} x{n}" for c, n in compact))
        check(all(abs(d["payload"]["bpm"] - BPM) < 1e-6 for d in mine),
              f"tempo {BPM} BPM in every announcement (got {sorted({d['payload']['bpm'] for d in mine})})")
        check(all(d["payload"]["time_signature"] == [4, 4] for d in mine),
              f"time signature 4/4 (got {sorted({tuple(d['payload']['time_signature']) for d in mine})})")
        # The export's roll: the first run of consecutive PLAY announcements.
        first = cmds.index("PLAY")
        run = []
        for d in mine[first:]:
            if d["payload"]["command"] != "PLAY":
                break
            run.append(d["payload"])
        pos = [p["position"] for p in run]
        ts = [p["timestamp"] for p in run] if run and "timestamp" in run[0] else []
        span_ms = 1000.0 * EXPORT_SAMPLES / RATE
        for p in run[:2] + run[-2:]:
            print(json.dumps(p))
        print(f"... {len(run)} PLAY announcements, positions {pos[0]:.2f} .. {pos[-1]:.2f} ms "
              f"(export span {span_ms:.0f} ms, block {block} = {block_ms:.2f} ms)")
        check(all(p["playing"] for p in run) if "playing" in run[0] else True, "PLAY announcements say playing")
        check(abs(pos[0]) <= block_ms + 1e-6, f"first PLAY position ~0 ms (got {pos[0]:.3f})")
        check(all(y > x for x, y in zip(pos, pos[1:])), "positions strictly increase during the export")
        check(span_ms - ANNOUNCE_MS - block_ms <= pos[-1] <= span_ms,
              f"last PLAY position within one announce interval of the export end "
              f"({span_ms - ANNOUNCE_MS - block_ms:.1f} <= {pos[-1]:.1f} <= {span_ms:.1f} ms)")
        gaps = [y - x for x, y in zip(pos, pos[1:])]
        if gaps:
            med = statistics.median(gaps)
            print(f"position gaps between announcements: median {med:.2f} ms, min {min(gaps):.2f}, max {max(gaps):.2f}")
            check(ANNOUNCE_MS - 1e-6 <= med <= ANNOUNCE_MS + block_ms + 1e-6,
                  f"re-announced every {ANNOUNCE_MS:.0f} ms of host time, the interval set in Ardour "
                  f"(median gap {med:.2f} ms, expected {ANNOUNCE_MS:.0f}..{ANNOUNCE_MS + block_ms:.2f}; default would be 250)")
            want = int(span_ms // (ANNOUNCE_MS + block_ms))
            check(len(run) >= want, f"at least {want} PLAY announcements over the export (got {len(run)})")
        worst = max(abs(p["beat"] - p["position"] / 1000.0 * BPM / 60.0) for p in run)
        check(worst < 0.01, f"beat matches position at {BPM} BPM in every PLAY (worst error {worst:.5f} beats)")
        # Sample-exactness: Ardour's position at a block start is a multiple of the block.
        off = max(abs(p["position"] * RATE / 1000.0 / block - round(p["position"] * RATE / 1000.0 / block)) for p in run)
        check(off < 1e-3, f"every PLAY position is on a {block}-sample block boundary (worst {off:.5f} blocks)")
        if ts:
            check(all(y >= x for x, y in zip(ts, ts[1:])), "timestamps never go backwards")
            wall_ms = (ts[-1] - ts[0]) / 1e6
            print(f"timestamps span {wall_ms:.1f} ms of wall-clock session time while positions span "
                  f"{pos[-1] - pos[0]:.1f} ms: freewheel ran {((pos[-1] - pos[0]) / wall_ms) if wall_ms > 0 else float('inf'):.1f}x real time")
        # Ardour re-activates plugins after a freewheel export; the plugin
        # keeps its source id across that (one instance = one peer), so the
        # STOP must come from the same source as the PLAYs.
        last_play_t = max(t for t, d in msgs if d["header"]["source"] == src and d["payload"]["command"] == "PLAY")
        stops = [(t, d) for t, d in msgs if t > last_play_t and d["payload"]["command"] == "STOP"]
        if check(bool(stops), f"a STOP announcement after the export ({len(stops)} seen)"):
            stop0 = stops[0][1]
            check(abs(stop0["payload"]["bpm"] - BPM) < 1e-6, f"the STOP says {BPM} BPM (got {stop0['payload']['bpm']})")
            check(stop0["header"]["source"] == src,
                  f"the STOP comes from the same source id as the PLAYs (got {stop0['header']['source']:08x}, "
                  f"PLAYs from {src:08x}): the instance keeps its peer id across Ardour's re-activation")

    wavs = list(export_dir.glob("*.wav"))
    check(len(wavs) == 1, f"one exported WAV in {export_dir} (got {[w.name for w in wavs]})")
    if wavs:
        fmt, frames_n, samples = wav_info(wavs[0])
        check(fmt is not None and fmt[0] == 3 and fmt[2] == RATE and frames_n == EXPORT_SAMPLES,
              f"export is float WAV with {EXPORT_SAMPLES} frames at {RATE} Hz "
              f"(got format/channels/rate/bits {fmt}, {frames_n} frames)")
        bad = sum(1 for x in samples if not math.isfinite(x))
        peak = max((abs(x) for x in samples if math.isfinite(x)), default=0.0)
        check(bool(samples) and bad == 0,
              f"exported mix (through Send and Receive) is finite: {bad} NaN/inf of {len(samples)} samples")
        # session.lua monitors the Dummy backend's sine on the Send track.
        check(peak > 0.05, f"the Send track's input (Dummy sine) passed through JAMNet Send into the export "
                           f"(peak {peak:.3f}, expected > 0.05)")

    print("--- reload the saved session in a new ardour7-lua process")
    out2, wall2 = run_lua("reload.lua", env, work / "reload.log")  # no export: never retried
    tempo = jamnet_lines(out2, "TEMPO")
    check(bool(tempo) and abs(float(tempo[0][0]) - BPM) < 1e-6,
          f"reloaded tempo map: {BPM} BPM (got {tempo[0][0] if tempo else 'nothing'})")
    plugins = {row[0]: row[1:] for row in jamnet_lines(out2, "PLUGIN")}
    for track, plugin in [("Send", "JAMNet Send"), ("Receive", "JAMNet Receive"), ("Transport", "JAMNet Transport")]:
        check(plugins.get(track) == [plugin, "VST3"], f"track {track}: {plugin} (VST3) restored (got {plugins.get(track)})")
    got = {(t, label): float(v) for t, label, v in jamnet_lines(out2, "GOT")}
    for (track, label), value in sorted(expected.items()):
        g = got.get((track, label))
        check(g is not None and close(g, value),
              f"reloaded {track}: '{label}' = {value:g} (got {g})")
    # nice-plug's VST3 wrapper warns when a block brings more parameter
    # changes than its preallocated event buffer holds (it then allocates on
    # the audio thread). Counted and shown, not failed: see docs/plugins.md.
    for name, text in [("session", out), ("reload", out2)]:
        n = len(re.findall(r"event buffer filled up", text))
        if n:
            print(f"WARN {name}: nice-plug reported {n}x 'event buffer filled up! This will cause an allocation.'")
    print(f"ardour7-lua wall time: session+export {wall1:.1f} s, reload {wall2:.1f} s")

    if FAILED:
        print(f"Ardour: {len(FAILED)} check(s) failed")
        sys.exit(1)
    print("Ardour: all checks passed")


if __name__ == "__main__":
    main()
