"""Three small built-in downstream tasks, rendered offline with NumPy from a seed.

They have the three shapes of the paper's tasks (keyword-like scene classification, pitch
classification, event detection) so that the probing code runs end to end without any
download; the demo and the tests use them. Sounds are rendered with the pre-training
corpus's synthesiser (`msss_tf.data.synthetic`: wavetable notes, coloured noise).

  synthetic_scene   8 classes of 1 s clips that differ in sound character: melody (single
                    notes in sequence), chord (sustained 2-4 note chords), siren (one tone
                    whose pitch swings slowly by 0.25-1 octave), tremolo (one steady tone,
                    amplitude-modulated at 4-12 Hz), bright_noise (white/blue noise),
                    dark_noise (brown noise), click_rhythm (clicks at a steady 3-10 Hz
                    tempo), noise_bursts (2-5 short irregular noise bursts). Within a class,
                    timbre, register (fundamentals ~100-1600 Hz), timing, the colour and level
                    of a quiet background noise and the loudness (peak 0.1-0.9, so loudness
                    says nothing of the class) vary. Multiclass, metric top1_acc.
  synthetic_pitch   36 classes, MIDI 48..83 (C3..B5; class i = MIDI 48 + i); one note per
                    1 s clip (onset 0-0.1 s, 0.5-0.85 s long, velocity 0.15-0.9, slight
                    vibrato for some instruments) over quiet noise. As in NSynth, each split has
                    its own instruments: each instrument is drawn from one of four timbre
                    families (near-pure, reed-like odd harmonics, bright/buzzy, plucked with a
                    fast decay) with random spectral tilt, formant and envelope; train, valid
                    and test instruments are different draws (at scale 1: train 2 of each
                    family, valid reed + bright, test bright + plucked). Every
                    (pitch, instrument) pair of a split occurs once. Metrics pitch_acc,
                    chroma_acc.
  synthetic_events  4 s clips with 2-5 events each of 4 classes: knock (2-5 low decaying
                    impacts), beep (a steady 600-2000 Hz tone), noise_burst (band-passed
                    noise), chirp (a sweep of at least an octave), each 0.1-1 s long at a
                    random onset (events may overlap), over quiet background noise. Labels are
                    {"label", "onset", "offset"} in seconds (to the millisecond), always within
                    [0, 4]. Multilabel event detection, metric event_onset_fscore.

Sizes (scale 1, "small"): scene 40 / 10 / 10 clips per class (train / valid / test);
pitch 8 / 2 / 2 instruments per split (36 clips each); events 80 / 20 / 20 clips. `scale`
multiplies them ("medium" = 4, "large" = 16). Every class occurs in every train split.

Determinism and independence from pre-training data: example i of a split is rendered from
its own generator seeded by (a tag, the task, the split, seed, i), so it does not depend on
the split size, and the streams never coincide with the pre-training corpus's, which are
seeded by (seed, clip index) alone.
"""

from __future__ import annotations

import math
import types
from typing import List

import numpy as np

from msss_tf.data.synthetic import (
    ClipIdentity,
    coloured_noise,
    render_note,
    wavetable,
)
from msss_tf.data.tasks.base import SPLITS, Example, InMemoryTask, resolve_scale

SYNTHETIC_TASK_NAMES = ("synthetic_scene", "synthetic_pitch", "synthetic_events")
SAMPLE_RATE = 16000

SCENE_CLASSES = ("melody", "chord", "siren", "tremolo", "bright_noise", "dark_noise",
                 "click_rhythm", "noise_bursts")
PITCH_MIDI = tuple(range(48, 84))
EVENT_CLASSES = ("knock", "beep", "noise_burst", "chirp")

# Per-split base sizes at scale 1: scene clips per class, pitch instruments, event clips.
_SCENE_PER_CLASS = {"train": 40, "valid": 10, "test": 10}
_PITCH_INSTRUMENTS = {"train": 8, "valid": 2, "test": 2}
_EVENT_CLIPS = {"train": 80, "valid": 20, "test": 20}

_TAG = 0x7A5C_D0E5  # first seed word of every downstream-task stream
_TASK_CODE = {name: i + 1 for i, name in enumerate(SYNTHETIC_TASK_NAMES)}
_SPLIT_CODE = {split: i for i, split in enumerate(SPLITS)}
_TABLE_SIZE = 4096


def _rng(task: str, split: str, seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(
        [_TAG, _TASK_CODE[task], _SPLIT_CODE[split], seed % 2**64, *keys])


def _scaled(base: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, int(base * scale + 0.5))  # half up: 10 * 0.25 -> 3


# ---------------------------------------------------------------------------- helpers
def _noise(rng, alpha: float, num_samples: int) -> np.ndarray:
    """Unit-RMS 1/f^alpha noise (the pre-training corpus's noise generator)."""
    return coloured_noise(rng, types.SimpleNamespace(noise_alpha=alpha), num_samples,
                           SAMPLE_RATE)


def _table_tone(rng, identity, f0_track: np.ndarray) -> np.ndarray:
    """The identity's timbre following an arbitrary fundamental track (Hz per sample)."""
    top = float(f0_track.max())
    table = wavetable(identity, top, top, SAMPLE_RATE)
    phase = rng.random() + np.cumsum(f0_track / SAMPLE_RATE)
    index = (phase * _TABLE_SIZE).astype(np.int64) & (_TABLE_SIZE - 1)
    return table[index]


def _fades(length: int, fade: int) -> np.ndarray:
    """A window of ones with linear fades of `fade` samples at both ends."""
    window = np.ones(length, np.float32)
    fade = min(fade, length // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        window[:fade] = ramp
        window[length - fade:] = ramp[::-1]
    return window


def _add_background(rng, clip: np.ndarray, low: float, high: float) -> np.ndarray:
    level = math.exp(rng.uniform(math.log(low), math.log(high)))
    return clip + np.float32(level) * _noise(rng, rng.uniform(-0.5, 2.0), clip.size)


def _plain_identity(rng) -> ClipIdentity:
    identity = ClipIdentity(rng, SAMPLE_RATE)
    identity.glide_prob = 0.0
    identity.chord_prob = 0.0
    return identity


def _note_f0(rng, identity) -> float:
    semitone = int(identity.scale[rng.integers(identity.scale.size)])
    return float(min(max(identity.centre_f0 * 2 ** (semitone / 12), 80.0), 2000.0))


def _place_note(rng, identity, clip, start_s, duration_s, f0):
    begin = int(start_s * SAMPLE_RATE)
    length = min(int(duration_s * SAMPLE_RATE) + identity.release_ramp.size, clip.size - begin)
    if length > 1:
        clip[begin:begin + length] += render_note(rng, identity, f0, length, SAMPLE_RATE)


# ---------------------------------------------------------------------------- scene
def _scene_clip(rng, cls: int, num_samples: int) -> np.ndarray:
    seconds = num_samples / SAMPLE_RATE
    t = np.arange(num_samples) / SAMPLE_RATE
    clip = np.zeros(num_samples, np.float32)
    name = SCENE_CLASSES[cls]
    if name == "melody":
        identity = _plain_identity(rng)
        start = rng.uniform(0.0, 0.15)
        while start < seconds - 0.05:
            duration = rng.uniform(0.08, 0.3)
            _place_note(rng, identity, clip, start, duration, _note_f0(rng, identity))
            start += duration + (rng.uniform(0.02, 0.1) if rng.random() < 0.3 else 0.0)
    elif name == "chord":
        identity = _plain_identity(rng)
        identity.chord_prob = 1.0
        identity.envelope = np.minimum(identity.envelope, 1.0) ** 0.5  # slower decay
        start = rng.uniform(0.0, 0.15)
        chords = 1 if rng.random() < 0.5 else 2
        for _ in range(chords):
            duration = (seconds - start) / chords * rng.uniform(0.7, 1.0)
            _place_note(rng, identity, clip, start, duration, _note_f0(rng, identity))
            start += (seconds - start) / chords
    elif name == "siren":
        identity = _plain_identity(rng)
        depth = rng.uniform(0.25, 1.0) * (1 if rng.random() < 0.5 else -1)  # octaves
        rate = rng.uniform(0.7, 3.0)
        f0 = identity.centre_f0 * 2 ** (depth * np.sin(2 * np.pi * rate * t
                                                        + rng.uniform(0, 2 * np.pi)))
        f0 = np.clip(f0, 80.0, 2000.0)
        begin = int(rng.uniform(0.0, 0.2) * SAMPLE_RATE)
        end = int(rng.uniform(0.75, 1.0) * num_samples)
        clip[begin:end] = _table_tone(rng, identity, f0[begin:end]) * _fades(end - begin, 160)
    elif name == "tremolo":
        identity = _plain_identity(rng)
        f0 = np.full(num_samples, _note_f0(rng, identity))
        rate, depth = rng.uniform(4.0, 12.0), rng.uniform(0.6, 1.0)
        gain = 1.0 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3)))
        begin = int(rng.uniform(0.0, 0.15) * SAMPLE_RATE)
        end = int(rng.uniform(0.8, 1.0) * num_samples)
        clip[begin:end] = (_table_tone(rng, identity, f0[begin:end]) * gain[begin:end]
                           * _fades(end - begin, 160))
    elif name in ("bright_noise", "dark_noise"):
        alpha = rng.uniform(-0.5, 0.3) if name == "bright_noise" else rng.uniform(1.5, 2.3)
        sway = 1.0 + rng.uniform(0.0, 0.4) * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t
                                                    + rng.uniform(0, 6.3))
        clip[:] = _noise(rng, alpha, num_samples) * sway
    elif name == "click_rhythm":
        period = 1.0 / rng.uniform(3.0, 10.0)
        freq, tau = math.exp(rng.uniform(math.log(500), math.log(5000))), rng.uniform(1e-3, 5e-3)
        click_t = np.arange(int(6 * tau * SAMPLE_RATE) + 1) / SAMPLE_RATE
        click = (np.exp(-click_t / tau) * np.cos(2 * np.pi * freq * click_t)).astype(np.float32)
        when = rng.uniform(0.0, period)
        while when < seconds:
            begin = int(when * SAMPLE_RATE)
            end = min(begin + click.size, num_samples)
            clip[begin:end] += rng.uniform(0.7, 1.0) * click[:end - begin]
            when += period * (1.0 + rng.uniform(-0.03, 0.03))
    elif name == "noise_bursts":
        noise = _noise(rng, rng.uniform(-0.5, 2.0), num_samples)
        for _ in range(int(rng.integers(2, 6))):
            length = int(rng.uniform(0.03, 0.2) * SAMPLE_RATE)
            begin = int(rng.integers(0, num_samples - length))
            clip[begin:begin + length] += (rng.uniform(0.4, 1.0) * np.hanning(length)
                                           * noise[begin:begin + length])
    clip /= max(float(np.max(np.abs(clip))), 1e-9)
    clip = _add_background(rng, clip, 0.003, 0.03)
    return (clip * np.float32(rng.uniform(0.1, 0.9) / np.max(np.abs(clip)))).astype(np.float32)


def _scene_split(split: str, scale: float, seed: int) -> List[Example]:
    per_class = _scaled(_SCENE_PER_CLASS[split], scale)
    num_samples = SAMPLE_RATE  # 1 s
    examples = []
    for index in range(per_class * len(SCENE_CLASSES)):
        cls = index % len(SCENE_CLASSES)
        rng = _rng("synthetic_scene", split, seed, 0, index)
        examples.append(Example(f"{split}/{index:05d}", _scene_clip(rng, cls, num_samples),
                                [cls]))
    return examples


# ---------------------------------------------------------------------------- pitch
def _instrument(rng, family: int) -> ClipIdentity:
    """One instrument of a timbre family: 0 near-pure, 1 reed, 2 bright, 3 plucked."""
    identity = _plain_identity(rng)
    k = np.arange(1, identity.harmonic_amps.size + 1)
    tilt = ((2.5, 4.0), (0.8, 1.5), (0.3, 0.8), (1.0, 2.0))[family]
    amps = k ** -rng.uniform(*tilt)
    if family == 1:
        amps[1::2] *= rng.uniform(0.02, 0.15)  # weak even harmonics
    identity.harmonic_amps = amps * np.exp(rng.normal(0.0, 0.3, amps.size))
    identity.formant_gain = rng.uniform(0.0, 3.0)
    attack = rng.uniform(0.002, 0.01) if family == 3 else rng.uniform(0.01, 0.08)
    decay = rng.uniform(3.0, 7.0) if family == 3 else rng.uniform(0.0, 1.5)
    steps = identity.envelope.size
    env_t = np.arange(steps, dtype=np.float32) / np.float32(SAMPLE_RATE)
    identity.envelope = np.minimum(env_t / attack, 1.0) * np.exp(-decay * env_t)
    identity.vibrato_depth = rng.uniform(0.0, 0.004) if rng.random() < 0.5 else 0.0
    identity.tables = {}
    return identity


def _pitch_split(split: str, scale: float, seed: int) -> List[Example]:
    num_instruments = _scaled(_PITCH_INSTRUMENTS[split], scale)
    # Families cycle from a split-specific start, so that small valid and test splits
    # still differ in family mix from each other: train 0,1,2,3,..., valid 1,2,..., test 2,3,...
    instruments = [_instrument(_rng("synthetic_pitch", split, seed, 1, k),
                               (k + _SPLIT_CODE[split]) % 4)
                   for k in range(num_instruments)]
    num_samples = SAMPLE_RATE  # 1 s
    examples = []
    for index in range(num_instruments * len(PITCH_MIDI)):
        cls, instrument = index % len(PITCH_MIDI), instruments[index // len(PITCH_MIDI)]
        rng = _rng("synthetic_pitch", split, seed, 0, index)
        clip = np.zeros(num_samples, np.float32)
        f0 = 440.0 * 2 ** ((PITCH_MIDI[cls] - 69) / 12)
        _place_note(rng, instrument, clip, rng.uniform(0.0, 0.1), rng.uniform(0.5, 0.85), f0)
        clip *= np.float32(rng.uniform(0.15, 0.9) / max(float(np.max(np.abs(clip))), 1e-9))
        clip = _add_background(rng, clip, 0.002, 0.01)
        examples.append(Example(f"{split}/{index:05d}", clip.astype(np.float32), [cls]))
    return examples


# ---------------------------------------------------------------------------- events
def _event_sound(rng, name: str, length: int) -> np.ndarray:
    """One event's sound, `length` samples, peak about 1."""
    t = np.arange(length) / SAMPLE_RATE
    if name == "knock":
        tail = int(0.05 * SAMPLE_RATE)
        impacts = int(min(5, max(2, (length - tail) // int(0.06 * SAMPLE_RATE) + 1)))
        freq, tau = rng.uniform(150.0, 600.0), rng.uniform(0.006, 0.012)
        knock_t = np.arange(tail) / SAMPLE_RATE
        knock = np.exp(-knock_t / tau) * (np.sin(2 * np.pi * freq * knock_t)
                                          + 0.3 * rng.standard_normal(tail))
        sound = np.zeros(length)
        for j, begin in enumerate(np.linspace(0, max(length - tail, 0), impacts).astype(int)):
            end = min(begin + tail, length)
            sound[begin:end] += (1.0 if j == 0 else rng.uniform(0.6, 1.0)) * knock[:end - begin]
    elif name == "beep":
        f0 = rng.uniform(600.0, 2000.0)
        sound = np.sin(2 * np.pi * f0 * t) + rng.uniform(0, 0.4) * np.sin(4 * np.pi * f0 * t)
        sound *= _fades(length, 80)
    elif name == "noise_burst":
        spectrum = np.fft.rfft(rng.standard_normal(length))
        freqs = np.fft.rfftfreq(length, 1.0 / SAMPLE_RATE)
        centre = math.exp(rng.uniform(math.log(500.0), math.log(4000.0)))
        octaves = np.log2(np.maximum(freqs, 1.0) / centre)
        sound = np.fft.irfft(spectrum * np.exp(-0.5 * (octaves / rng.uniform(0.3, 0.8)) ** 2),
                             length)
        sound *= _fades(length, max(length // 5, 1))
    else:  # chirp: an exponential sweep of 1-2.5 octaves, up or down
        low = math.exp(rng.uniform(math.log(250.0), math.log(900.0)))
        high = min(low * 2 ** rng.uniform(1.0, 2.5), 6000.0)
        start, stop = (low, high) if rng.random() < 0.5 else (high, low)
        f = start * (stop / start) ** (t / max(t[-1], 1e-9))
        sound = np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * _fades(length, 80)
    return (sound / max(float(np.max(np.abs(sound))), 1e-9)).astype(np.float32)


def _events_clip(rng, first_class: int, num_samples: int):
    seconds = num_samples / SAMPLE_RATE
    clip = np.zeros(num_samples, np.float32)
    events = []
    for j in range(int(rng.integers(2, 6))):
        cls = first_class if j == 0 else int(rng.integers(len(EVENT_CLASSES)))
        duration = rng.uniform(0.1, 1.0)
        onset = round(rng.uniform(0.0, seconds - duration), 3)
        offset = round(min(onset + duration, seconds), 3)
        begin, end = int(round(onset * SAMPLE_RATE)), int(round(offset * SAMPLE_RATE))
        clip[begin:end] += rng.uniform(0.3, 1.0) * _event_sound(rng, EVENT_CLASSES[cls],
                                                                end - begin)
        events.append({"label": EVENT_CLASSES[cls], "onset": onset, "offset": offset})
    clip = _add_background(rng, clip, 0.003, 0.01)
    peak = float(np.max(np.abs(clip)))
    if peak > 0.95:  # overlapping events
        clip *= np.float32(0.95 / peak)
    events.sort(key=lambda e: (e["onset"], e["offset"], e["label"]))
    return clip.astype(np.float32), events


def _events_split(split: str, scale: float, seed: int) -> List[Example]:
    num_clips = _scaled(_EVENT_CLIPS[split], scale, minimum=len(EVENT_CLASSES))
    num_samples = 4 * SAMPLE_RATE
    examples = []
    for index in range(num_clips):
        rng = _rng("synthetic_events", split, seed, 0, index)
        clip, events = _events_clip(rng, index % len(EVENT_CLASSES), num_samples)
        examples.append(Example(f"{split}/{index:05d}", clip, events))
    return examples


# ---------------------------------------------------------------------------- builder
def synthetic_task(name: str, scale=1.0, seed: int = 0, size=None) -> InMemoryTask:
    """Builds one of the built-in synthetic tasks (see the module docstring).

    Each split is rendered on first use and then kept in memory (a few MB at scale 1;
    each whole task renders in about a second).

    Args:
      name: "synthetic_scene", "synthetic_pitch" or "synthetic_events".
      scale: multiplies the per-split sizes (a float > 0), or one of "small" (1),
        "medium" (4), "large" (16).
      seed: any integer; the same (name, scale, seed) gives bit-identical data.
      size: an alias of `scale` for its named values ("small", "medium", "large").

    Returns:
      An `InMemoryTask`.
    """
    scale = resolve_scale(name, scale, size)
    seed = int(seed)
    source = f"built-in synthetic task (scale={scale:g}, seed={seed})"
    if name == "synthetic_scene":
        return InMemoryTask(
            name=name, kind="scene", prediction_type="multiclass",
            label_names=list(SCENE_CLASSES), metrics=["top1_acc"], clip_seconds=1.0,
            source=source, build_split=lambda split: _scene_split(split, scale, seed))
    if name == "synthetic_pitch":
        return InMemoryTask(
            name=name, kind="scene", prediction_type="multiclass",
            label_names=[str(m) for m in PITCH_MIDI], metrics=["pitch_acc", "chroma_acc"],
            clip_seconds=1.0, midi_of_label=np.array(PITCH_MIDI), source=source,
            build_split=lambda split: _pitch_split(split, scale, seed))
    if name == "synthetic_events":
        return InMemoryTask(
            name=name, kind="event", prediction_type="multilabel",
            label_names=list(EVENT_CLASSES), metrics=["event_onset_fscore"],
            clip_seconds=4.0, source=source,
            build_split=lambda split: _events_split(split, scale, seed))
    raise ValueError(f"unknown synthetic task {name!r}; expected one of {SYNTHETIC_TASK_NAMES}")
