#!/usr/bin/env python3
"""Builds JAMNet's concealment corpus: real instrument audio, reproducibly.

Writes seeded MIDI files (standard library only), renders them with FluidSynth
and the Debian General MIDI soundfont at 48 kHz, and adds espeak-ng speech.
Two disjoint sets come out: `train/` (seeds 1xx, for scripts/train) and
`eval/` (seeds 2xx, what `toaster plc-eval` measures). Nothing here is
committed: the WAVs are regenerated in CI (a few MB, a few seconds).

Usage: make_corpus.py OUT_DIR [--quick] [--seconds S]
Needs: fluidsynth, fluid-soundfont-gm, espeak-ng (tests/deps/apt-pnbtr.txt).
"""
import argparse
import os
import random
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

SOUNDFONTS = ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2"]
PPQ = 480


def vlq(n):
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def write_midi(path, events, bpm):
    """events: list of (tick, bytes) absolute ticks; one track, format 0."""
    events = sorted(events, key=lambda e: (e[0], e[1][0] & 0xF0 != 0x80))
    data = bytearray()
    tempo = int(60_000_000 / bpm)
    data += vlq(0) + bytes([0xFF, 0x51, 3]) + tempo.to_bytes(3, "big")
    last = 0
    for tick, msg in events:
        data += vlq(tick - last) + msg
        last = tick
    data += vlq(0) + bytes([0xFF, 0x2F, 0])
    with open(path, "wb") as f:
        f.write(b"MThd" + struct.pack(">IHHH", 6, 0, 1, PPQ))
        f.write(b"MTrk" + struct.pack(">I", len(data)) + data)


class Song:
    def __init__(self, bpm):
        self.bpm = bpm
        self.events = []

    def program(self, ch, prog):
        self.events.append((0, bytes([0xC0 | ch, prog])))

    def note(self, ch, start_beats, len_beats, key, vel):
        t0 = int(start_beats * PPQ)
        t1 = int((start_beats + len_beats) * PPQ)
        self.events.append((t0, bytes([0x90 | ch, key, vel])))
        self.events.append((max(t1, t0 + 1), bytes([0x80 | ch, key, 0])))

    def beats(self, seconds):
        return seconds * self.bpm / 60.0


SCALE = [0, 2, 4, 5, 7, 9, 11]


def chord_roots(rng, n):
    prog = [0, 5, 3, 4, 0, 3, 4, 0]
    start = rng.randrange(len(prog))
    return [prog[(start + i) % len(prog)] for i in range(n)]


def scale_note(tonic, degree):
    octave, d = divmod(degree, 7)
    return tonic + 12 * octave + SCALE[d]


def melody(song, rng, ch, tonic, total, step_choices, vel=(70, 110), legato=0.95):
    t, deg = 0.0, rng.randrange(7, 12)
    while t < total:
        step = rng.choice(step_choices)
        deg = max(0, min(20, deg + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3])))
        song.note(ch, t, step * legato, scale_note(tonic, deg), rng.randint(*vel))
        t += step


def chords(song, rng, ch, tonic, total, bar=4.0, vel=(60, 90), arpeggio=None, octave=0):
    roots = chord_roots(rng, int(total / bar) + 1)
    for i, r in enumerate(roots):
        t0 = i * bar
        if t0 >= total:
            break
        notes = [scale_note(tonic + 12 * octave, r + k) for k in (0, 2, 4)]
        if arpeggio:
            t = t0
            j = 0
            while t < t0 + bar:
                song.note(ch, t, arpeggio * 1.5, notes[j % 3] + 12 * ((j // 3) % 2), rng.randint(*vel))
                t += arpeggio
                j += 1
        else:
            for n in notes:
                song.note(ch, t0, bar * 0.98, n, rng.randint(*vel))


def bassline(song, rng, ch, tonic, total, bar=4.0):
    roots = chord_roots(rng, int(total / bar) + 1)
    for i, r in enumerate(roots):
        for b in range(4):
            t = i * bar + b
            if t >= total:
                return
            key = scale_note(tonic - 24, r + rng.choice([0, 0, 4, 7]))
            song.note(ch, t, 0.9, key, rng.randint(80, 110))


def drums(song, rng, total):
    t = 0.0
    while t < total:
        beat = int(round(t * 2)) % 8
        if beat in (0, 4) or rng.random() < 0.15:
            song.note(9, t, 0.2, 36, rng.randint(90, 120))  # kick
        if beat in (2, 6):
            song.note(9, t, 0.2, 38, rng.randint(90, 120))  # snare
        song.note(9, t, 0.1, 42 if rng.random() < 0.85 else 46, rng.randint(50, 90))  # hats
        t += 0.5


# name -> builder(song, rng, total_beats, tonic)
def build_piano(s, rng, tot, k):
    s.program(0, 0)
    melody(s, rng, 0, k + 12, tot, [0.5, 0.5, 1.0, 0.25])
    chords(s, rng, 0, k - 12, tot, arpeggio=None)


def build_guitar(s, rng, tot, k):
    s.program(0, rng.choice([24, 25]))
    chords(s, rng, 0, k - 12, tot, arpeggio=0.25, vel=(60, 100))


def build_strings(s, rng, tot, k):
    s.program(0, rng.choice([48, 40]))
    melody(s, rng, 0, k, tot, [1.0, 2.0, 1.5], legato=1.0)
    s.program(1, 48)
    chords(s, rng, 1, k - 12, tot, vel=(50, 70))


def build_bass(s, rng, tot, k):
    s.program(0, rng.choice([33, 34, 32]))
    bassline(s, rng, 0, k, tot)


def build_drums(s, rng, tot, k):
    drums(s, rng, tot)


def build_pad(s, rng, tot, k):
    s.program(0, rng.choice([52, 53, 89, 91]))
    melody(s, rng, 0, k, tot, [1.0, 2.0], legato=1.0, vel=(70, 100))


def build_mix(s, rng, tot, k):
    s.program(0, 0)
    melody(s, rng, 0, k + 12, tot, [0.5, 0.25, 0.5, 1.0])
    s.program(1, 48)
    chords(s, rng, 1, k - 12, tot, vel=(45, 65))
    s.program(2, 33)
    bassline(s, rng, 2, k, tot)
    drums(s, rng, tot)


def build_band(s, rng, tot, k):
    s.program(0, 25)
    chords(s, rng, 0, k - 12, tot, arpeggio=0.5, vel=(60, 90))
    s.program(1, rng.choice([65, 71, 56]))  # sax / clarinet / trumpet
    melody(s, rng, 1, k + 12, tot, [0.5, 1.0, 1.0], legato=1.0)
    s.program(2, 33)
    bassline(s, rng, 2, k, tot)


INSTRUMENTS = {
    "piano": build_piano,
    "guitar": build_guitar,
    "strings": build_strings,
    "bass": build_bass,
    "drums": build_drums,
    "pad": build_pad,
    "mix": build_mix,
    "band": build_band,
}

SPEECH = [
    "The quick brown fox jumps over the lazy dog while the band keeps playing.",
    "Packet loss concealment fills the gaps when the network drops audio.",
    "Please count from one to ten, slowly and clearly, for the recording.",
    "Jamming over the internet needs low latency and a steady clock.",
]


def render(job):
    kind, name, mid, wav, sf2, extra = job
    if kind == "midi":
        cmd = ["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", "48000", "-F", wav, sf2, mid]
    else:
        cmd = ["espeak-ng", "-w", wav] + extra
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--quick", action="store_true", help="eval set only, fewer and shorter clips")
    ap.add_argument("--seconds", type=float, default=None)
    args = ap.parse_args()
    sf2 = next((p for p in SOUNDFONTS if os.path.exists(p)), None)
    if sf2 is None:
        sys.exit("no General MIDI soundfont found (apt-get install fluid-soundfont-gm)")
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    jobs = []
    sets = [("eval", 200)] if args.quick else [("train", 100), ("eval", 200)]
    for set_name, seed_base in sets:
        d = os.path.join(args.out, set_name)
        os.makedirs(d, exist_ok=True)
        for i, (inst, build) in enumerate(INSTRUMENTS.items()):
            if args.quick and inst not in ("piano", "guitar", "strings", "mix", "bass", "pad"):
                continue
            rng = random.Random(seed_base * 100 + i)
            song = Song(bpm=rng.choice([90, 100, 110, 120, 133]))
            tonic = 48 + rng.randrange(12)
            build(song, rng, song.beats(seconds), tonic)
            mid = os.path.join(d, f"{inst}.mid")
            write_midi(mid, song.events, song.bpm)
            jobs.append(("midi", f"{set_name}/{inst}", mid, os.path.join(d, f"{inst}.wav"), sf2, None))
        if not args.quick or set_name == "eval":
            idx = 0 if set_name == "train" else 2
            for j in range(1 if args.quick else 2):
                text = SPEECH[idx + j]
                voice = ["-v", "en-us" if j == 0 else "en"]
                jobs.append(("speech", f"{set_name}/speech{j}", None,
                             os.path.join(d, f"speech{j}.wav"), None, voice + ["-s", "150", text]))
    with ThreadPoolExecutor(max_workers=2) as ex:
        for name in ex.map(render, jobs):
            print("rendered", name)


if __name__ == "__main__":
    main()
