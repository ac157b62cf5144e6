"""Music from the General MIDI SoundFont TimGM6mb.sf2, rendered with tinysoundfont.

The SoundFont ships inside the pretty-midi wheel. Clips are single notes across an
instrument's range, chord progressions, melodies (optionally over chords and a bass),
and drum patterns on the GM percussion bank.
"""

import functools
from typing import Dict, List, Sequence, Tuple

import numpy as np

from msss_tf.data.realistic.deps import require, soundfont_path

# Playable MIDI key range for each GM family (program // 8).
_FAMILY_RANGES = (
    (21, 108), (36, 96), (36, 96), (40, 88),   # piano, chromatic perc., organ, guitar
    (28, 60), (40, 96), (36, 96), (48, 84),    # bass, strings, ensemble, brass
    (52, 90), (55, 96), (48, 84), (36, 96),    # reed, pipe, synth lead, synth pad
    (36, 96), (48, 84), (36, 84), (36, 84))    # synth effects, ethnic, percussive, sfx
# General MIDI percussion keys (channel 10): kicks, snares, hats, toms, cymbals, hand drums.
DRUM_KEYS = tuple(range(35, 82))
_KICKS, _SNARES, _HATS = (35, 36), (38, 40, 37, 39), (42, 44, 46, 51, 53)
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
           "pentatonic": (0, 2, 4, 7, 9), "dorian": (0, 2, 3, 5, 7, 9, 10),
           "blues": (0, 3, 5, 6, 7, 10)}
_CHORDS = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 4, 7, 10), (0, 5, 7),
           (0, 3, 6))
DRUM_CHANNEL = 9
# Keys (within MIDI 21-108) for which TimGM6mb.sf2 has no sample in these programs:
# program -> (lowest sounding key, highest sounding key, keys missing in between).
_SOUNDING = {65: (21, 108, (64,)), 67: (21, 79, ()), 68: (36, 108, ()), 78: (21, 78, ()),
             101: (21, 93, ()), 113: (21, 89, ()), 122: (36, 86, ())}


def playable_key(program: int, key: int) -> int:
    """`key`, moved by octaves into the keys where GM `program` of TimGM6mb.sf2 sounds."""
    lo, hi, missing = _SOUNDING.get(program, (21, 108, ()))
    while key < lo or key in missing:
        key += 12
    while key > hi or key in missing:
        key -= 12
    return key


def key_range(program: int) -> Tuple[int, int]:
    """(lowest, highest) MIDI key that GM `program` (0-127) is played over."""
    return _FAMILY_RANGES[program // 8]


@functools.lru_cache(maxsize=1)
def soundfont_bytes() -> bytes:
    with open(soundfont_path(), "rb") as f:
        return f.read()


class MidiRenderer:
    """Renders timed note events through a fresh tinysoundfont synthesiser per clip.

    A fresh synthesiser per clip keeps voices released at the end of one clip from
    leaking into the next, so a clip depends only on its own events.

    Args:
      sample_rate: output sample rate in Hz.
    """

    def __init__(self, sample_rate: int = 16000):
        self._tsf = require("tinysoundfont", "tinysoundfont")
        self.sample_rate = sample_rate
        soundfont_bytes()

    def preset_name(self, program: int, drums: bool = False) -> str:
        synth = self._tsf.Synth(samplerate=self.sample_rate)
        sfid = synth.sfload(soundfont_bytes())
        return synth.sfpreset_name(sfid, 128 if drums else 0, 0 if drums else program)

    def render(self, events: Sequence[Tuple[float, float, int, int, int]],
               programs: Dict[int, int], seconds: float) -> np.ndarray:
        """Renders note events.

        Args:
          events: (onset_s, duration_s, channel, key, velocity) tuples.
          programs: channel -> GM program (ignored for the drum channel, 9).
          seconds: output length in seconds; notes sounding past it are cut.

        Returns:
          float32 mono waveform, shape [round(seconds * sample_rate)].
        """
        synth = self._tsf.Synth(samplerate=self.sample_rate)
        sfid = synth.sfload(soundfont_bytes())
        for channel, program in programs.items():
            drums = channel == DRUM_CHANNEL
            synth.program_select(channel, sfid, 128 if drums else 0, 0 if drums else program,
                                 is_drums=drums)
        sr = self.sample_rate
        actions = []
        for onset, duration, channel, key, velocity in events:
            actions.append((int(onset * sr), 1, channel, key, velocity))
            actions.append((int((onset + duration) * sr), 0, channel, key, 0))
        actions.sort()
        n = int(round(seconds * sr))
        out = np.zeros((n, 2), np.float32)
        pos = 0
        for at, on, channel, key, velocity in actions + [(n, -1, 0, 0, 0)]:
            at = min(at, n)
            if at > pos:
                out[pos:at] = np.frombuffer(synth.generate(at - pos), np.float32).reshape(-1, 2)
                pos = at
            if on == 1:
                synth.noteon(channel, key, velocity)
            elif on == 0:
                synth.noteoff(channel, key)
        return out.mean(axis=1)


def _program(rng: np.random.Generator, programs: Sequence[int]) -> int:
    return int(rng.choice(programs))


def music_clip(rng: np.random.Generator, seconds: float, renderer: MidiRenderer,
               programs: Sequence[int] = tuple(range(128))) -> Tuple[np.ndarray, Dict]:
    """Renders a music clip: notes, chords, a melody (maybe with backing), or drums.

    Args:
      rng: the clip's random generator.
      seconds: clip length in seconds.
      renderer: a MidiRenderer at the clip's sample rate.
      programs: the GM programs to draw instruments from.

    Returns:
      (waveform float32 [round(seconds * sample_rate)], info) with the style and programs.
    """
    style = str(rng.choice(["notes", "chords", "melody", "band", "drums"],
                           p=[0.25, 0.2, 0.25, 0.15, 0.15]))
    events: List[Tuple[float, float, int, int, int]] = []
    prog: Dict[int, int] = {}
    tempo = rng.uniform(60, 180)
    beat = 60.0 / tempo
    root = int(rng.integers(0, 12))
    scale = _SCALES[str(rng.choice(list(_SCALES)))]

    def melody(channel, program, start=0.0):
        lo, hi = key_range(program)
        centre = int(rng.integers(lo + 6, hi - 6)) if hi - lo > 12 else (lo + hi) // 2
        degree, t = 0, start
        while t < seconds:
            length = beat * float(rng.choice([0.25, 0.5, 0.5, 1, 1, 1.5, 2]))
            degree += int(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3, -3]))
            key = centre + 12 * (degree // len(scale)) + scale[degree % len(scale)] + root % 12 - 6
            if not lo <= key <= hi:
                degree, key = 0, centre
            if rng.random() > 0.1:  # occasional rest
                events.append((t, length * rng.uniform(0.6, 1.0), channel, key,
                               int(rng.integers(50, 120))))
            t += length

    def chords(channel, program, bars_beats=4):
        lo, hi = key_range(program)
        t = 0.0
        while t < seconds:
            base = int(np.clip(rng.integers(lo, hi - 12), 36, 84))
            chord = _CHORDS[int(rng.integers(len(_CHORDS)))]
            length = beat * bars_beats * float(rng.choice([0.5, 1]))
            velocity = int(rng.integers(40, 110))
            if rng.random() < 0.3:  # arpeggio
                step = length / len(chord)
                for i, iv in enumerate(chord):
                    events.append((t + i * step, length - i * step, channel, base + iv, velocity))
            else:
                for iv in chord:
                    events.append((t, length * 0.95, channel, base + iv, velocity))
            t += length

    def drums():
        prog[DRUM_CHANNEL] = 0
        pattern = rng.random((3, 16)) < np.array([[0.35], [0.25], [0.6]])
        pattern[0, 0] = True
        extra = [int(k) for k in rng.choice(DRUM_KEYS, size=int(rng.integers(1, 4)))]
        kick, snare, hat = (int(rng.choice(k)) for k in (_KICKS, _SNARES, _HATS))
        step, t, i = beat / 4, 0.0, 0
        while t < seconds:
            for row, key in enumerate((kick, snare, hat)):
                if pattern[row, i % 16]:
                    events.append((t, step, DRUM_CHANNEL, key, int(rng.integers(60, 127))))
            if rng.random() < 0.08:
                events.append((t, step, DRUM_CHANNEL, extra[int(rng.integers(len(extra)))],
                               int(rng.integers(60, 127))))
            t += step
            i += 1

    if style == "notes":
        program = _program(rng, programs)
        prog[0] = program
        lo, hi = key_range(program)
        t = float(rng.uniform(0, 0.3))
        while t < seconds:
            length = float(rng.uniform(0.3, 2.5))
            events.append((t, length, 0, int(rng.integers(lo, hi + 1)), int(rng.integers(30, 127))))
            t += length + float(rng.uniform(0.0, 0.8))
    elif style == "chords":
        prog[0] = _program(rng, programs)
        chords(0, prog[0])
    elif style == "melody":
        prog[0] = _program(rng, programs)
        melody(0, prog[0])
    elif style == "band":
        prog[0], prog[1] = _program(rng, programs), _program(rng, programs)
        prog[2] = int(rng.integers(32, 40))  # a GM bass
        melody(0, prog[0])
        chords(1, prog[1])
        t = 0.0
        while t < seconds:
            events.append((t, beat * 0.9, 2, 28 + (root + int(rng.choice([0, 0, 5, 7]))) % 12 + 12,
                           int(rng.integers(70, 110))))
            t += beat
        if rng.random() < 0.6:
            drums()
    else:
        drums()
    events = [(t, d, c, k if c == DRUM_CHANNEL else playable_key(prog[c], k), v)
              for t, d, c, k, v in events]
    return renderer.render(events, prog, seconds), {
        "style": style, "programs": sorted(p for c, p in prog.items() if c != DRUM_CHANNEL),
        "drums": DRUM_CHANNEL in prog}
