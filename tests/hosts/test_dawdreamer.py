"""DawDreamer (PyPI) renders JAMNet Transport (lead mode, its default) with a
playing transport at 133 BPM; the plugin publishes TOAST `transport` frames
on the default multicast group, and `toaster decode` (the project's own
decoder) must find the right tempo, play state and position in them.

Also renders Send and Receive once (they must load and render without
error). Exit status 0 only if every check passed.
"""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import dawdreamer as daw
import numpy as np

from jamnet_bundles import vst3, ROOT

SR, BLOCK, BPM, SECONDS = 44100, 512, 133.0, 4.0
GROUP, PORT = "239.255.77.77", 47700
FAILED = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILED.append(what)


def toaster():
    if os.environ.get("JAMNET_TOASTER"):
        return os.environ["JAMNET_TOASTER"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "debug", "toaster")


def listen(frames, stop):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", PORT))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton("0.0.0.0")))
    s.settimeout(0.1)
    while not stop.is_set():
        try:
            data, _ = s.recvfrom(65535)
            frames.append(data)
        except socket.timeout:
            pass


def decode(data):
    r = subprocess.run([toaster(), "decode", data.hex()], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def main():
    frames, stop = [], threading.Event()
    th = threading.Thread(target=listen, args=(frames, stop), daemon=True)
    th.start()
    time.sleep(0.2)

    engine = daw.RenderEngine(SR, BLOCK)
    engine.set_bpm(BPM)
    t = engine.make_plugin_processor("transport", vst3("JAMNet Transport"))
    check(t.get_num_input_channels() == 2, "Transport: 2 inputs")
    engine.load_graph([(t, [])])
    engine.render(SECONDS)
    time.sleep(0.5)
    stop.set()
    th.join()

    decoded = [d for d in (decode(f) for f in frames) if d and d.get("valid")]
    msgs = [d for d in decoded if d.get("payload", {}).get("type") == "transport"]
    print(f"{len(frames)} datagrams, {len(decoded)} valid, {len(msgs)} transport")
    check(len(msgs) >= 2, "Transport publishes valid transport frames during the render")
    # DawDreamer may instantiate the plugin more than once (a probe instance
    # that never plays): follow the source that announced rolling.
    rolling = {"PLAY", "RECORD"}
    sources = [d["header"]["source"] for d in msgs if d["payload"]["command"] in rolling]
    check(bool(sources), "a PLAY (or RECORD: DawDreamer reports recording) announcement was published")
    if sources:
        src = sources[0]
        plays = [d["payload"] for d in msgs
                 if d["header"]["source"] == src and d["payload"]["command"] in rolling | {"SEEK", "TEMPO"}]
        for b in plays[:3]:
            print(json.dumps(b))
        print(f"... {len(plays)} announcements from {src:08x}")
        check(all(abs(b["bpm"] - BPM) < 1e-6 for b in plays), f"tempo {BPM} BPM in every announcement")
        check(all(b["time_signature"] == [4, 4] for b in plays), "time signature 4/4")
        pos = [b["position"] for b in plays]
        check(abs(pos[0]) < 1000.0 * BLOCK / SR + 1e-6, f"first position ~0 ms (got {pos[0]})")
        check(all(y >= x for x, y in zip(pos, pos[1:])), "positions never go backwards")
        check(max(pos) > 1000.0 * (SECONDS - 1.0),
              f"position advances with the render (last {max(pos):.0f} ms of {SECONDS * 1000:.0f})")
        b = plays[-1]
        check(abs(b["beat"] - b["position"] / 1000.0 * BPM / 60.0) < 0.01,
              f"beat {b['beat']:.3f} matches position {b['position']:.1f} ms at {BPM} BPM")

    # Send and Receive render in DawDreamer too.
    for name in ["JAMNet Send", "JAMNet Receive"]:
        e = daw.RenderEngine(SR, BLOCK)
        p = e.make_plugin_processor("p", vst3(name))
        if name == "JAMNet Send":
            sig = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(SR)) / SR)).astype(np.float32)
            pb = e.make_playback_processor("src", np.stack([sig, sig]))
            e.load_graph([(pb, []), (p, ["src"])])
        else:
            e.load_graph([(p, [])])
        e.render(1.0)
        a = e.get_audio()
        check(a.shape[0] == 2 and np.all(np.isfinite(a)), f"{name}: renders in DawDreamer {a.shape}")
        if name == "JAMNet Send":
            check(np.allclose(a[0, :SR - BLOCK], sig[:SR - BLOCK], atol=1e-6), f"{name}: passes audio through")

    if FAILED:
        print(f"{len(FAILED)} check(s) failed")
        sys.exit(1)
    print("DawDreamer: all checks passed")


if __name__ == "__main__":
    main()
