"""Three built-in downstream tasks rendered with the realistic corpus's renderers
(`msss_tf.data.realistic`: eSpeak NG speech, the GM SoundFont, procedural sounds).

They need the `corpus` extra (docs/corpus.md).

  realistic_keywords  12 spoken English keywords (yes, no, up, down, left, right, on, off,
                      stop, go, one, seven) in 1 s clips, like speech_commands. A speaker
                      is an English accent, a voice variant, a pitch and a pitch range;
                      the voice variants are split between train, valid and test, so no
                      speaker of one split speaks in another (held-out speakers). Speaking
                      rate, placement, reverb, noise (SNR 5-35 dB) and level vary per clip.
                      Multiclass, metric top1_acc.
  realistic_pitch     48 classes, MIDI 36..83 (C2..B5; class i = MIDI 36 + i): one 1 s note
                      of a General MIDI instrument, as in NSynth. The tonal GM programs
                      (0-111) are split between train, valid and test (held-out
                      instruments); every (pitch, instrument) pair of a split occurs once,
                      with a random velocity, light noise and level. Metrics pitch_acc,
                      chroma_acc.
  realistic_events    6 s scenes with 2-5 events each of 8 classes (speech, music, knock,
                      door, siren, bird, dog, engine), overlapping freely, over a background
                      (noise, wind, hum, rain), with room reverb for some scenes. Labels are
                      {"label", "onset", "offset"} in seconds, the span where the event is
                      within 40 dB of its peak. Multilabel event detection, metric
                      event_onset_fscore (as DCASE 2016 task 2).

Sizes (scale 1, "small"): keywords 24 / 8 / 8 speakers per split (12 clips each);
pitch 10 / 4 / 4 instruments (48 clips each); events 120 / 30 / 30 clips. `scale`
multiplies them ("medium" = 4, "large" = 16), within the speakers and instruments there are.

Every example is rendered from its own generator seeded by (a tag, the task, the split,
seed, index), never equal to the pre-training corpus's (seed, clip index, tag) streams.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from msss_tf.data.tasks.base import SPLITS, Example, InMemoryTask, resolve_scale

REALISTIC_TASK_NAMES = ("realistic_keywords", "realistic_pitch", "realistic_events")
SAMPLE_RATE = 16000

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "one",
            "seven")
PITCH_MIDI = tuple(range(36, 84))
# GM 112-127 are percussive and sound effects; 65, 67 and 78 have keys without samples in
# TimGM6mb.sf2 within PITCH_MIDI.
TONAL_PROGRAMS = tuple(p for p in range(112) if p not in (65, 67, 78))
EVENT_CLASSES = ("speech", "music", "knock", "door", "siren", "bird", "dog", "engine")
_EVENT_SOURCE = {"knock": "knocks", "door": "door", "siren": "siren", "bird": "chirps",
                 "dog": "animal_call", "engine": "engine"}
_EVENT_SECONDS = {"speech": (0.5, 2.5), "music": (0.5, 2.5), "knock": (0.4, 1.5),
                  "door": (0.4, 1.5), "siren": (1.0, 3.0), "bird": (0.4, 2.0),
                  "dog": (0.4, 2.0), "engine": (1.0, 3.0)}

# Fractions of the voice variants and tonal programs given to train / valid / test.
_HOLDOUT_FRACTIONS = (0.6, 0.2, 0.2)
_KEYWORD_SPEAKERS = {"train": 24, "valid": 8, "test": 8}
_PITCH_INSTRUMENTS = {"train": 10, "valid": 4, "test": 4}
_EVENT_CLIPS = {"train": 120, "valid": 30, "test": 30}

_TAG = 0x2EA1_7A5C  # first seed word of every realistic-task stream
_TASK_CODE = {name: i + 1 for i, name in enumerate(REALISTIC_TASK_NAMES)}
_SPLIT_CODE = {split: i for i, split in enumerate(SPLITS)}


def _rng(task: str, split: str, seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(
        [_TAG, _TASK_CODE[task], _SPLIT_CODE[split], seed % 2**64, *keys])


def _scaled(base: int, scale: float, limit: int) -> int:
    return int(min(limit, max(1, int(base * scale + 0.5))))


def _partition(items, task: str, seed: int) -> Dict[str, Tuple]:
    """Splits `items` into disjoint train / valid / test groups (by `_HOLDOUT_FRACTIONS`),
    the same for every scale."""
    order = np.random.default_rng([_TAG, _TASK_CODE[task], 99, seed % 2**64]).permutation(
        len(items))
    bounds = np.cumsum([0] + [int(round(f * len(items))) for f in _HOLDOUT_FRACTIONS])
    bounds[-1] = len(items)
    return {split: tuple(items[i] for i in sorted(order[bounds[k]:bounds[k + 1]]))
            for k, split in enumerate(SPLITS)}


def _finish(rng, x: np.ndarray, reverb_prob: float, noise_prob: float) -> np.ndarray:
    from msss_tf.data.realistic.variation import apply_variation, check_clip, to_pcm16

    y, _ = apply_variation(rng, x, SAMPLE_RATE, reverb_prob=reverb_prob, noise_prob=noise_prob)
    check_clip(to_pcm16(y), "task clip")
    return y.astype(np.float32)


# ------------------------------------------------------------------------- keywords
def keyword_speakers(split: str, scale: float = 1.0, seed: int = 0) -> List:
    """The split's speakers (`msss_tf.data.realistic.speech.Speaker`s), drawn from its
    own voice variants: no variant, hence no speaker, is shared between splits."""
    from msss_tf.data.realistic import speech

    variants = _partition(speech.VARIANTS, "realistic_keywords", seed)[split]
    count = _scaled(_KEYWORD_SPEAKERS[split], scale, limit=10 * len(variants))
    rng = _rng("realistic_keywords", split, seed, 1)
    order = rng.permutation(len(variants))
    speakers = []
    for k in range(count):
        variant = variants[order[k % len(variants)]]
        speakers.append(speech.Speaker(
            language=str(rng.choice(speech.ENGLISH)), variant=variant,
            pitch=int(rng.integers(15, 86)), pitch_range=int(rng.integers(10, 91)), rate=175))
    return speakers


def _keywords_split(split: str, scale: float, seed: int) -> List[Example]:
    from msss_tf.data.realistic import speech

    renderer = speech.EspeakRenderer(SAMPLE_RATE)
    n = SAMPLE_RATE  # 1 s clips
    examples = []
    for s, speaker in enumerate(keyword_speakers(split, scale, seed)):
        rng = _rng("realistic_keywords", split, seed, 0, s)
        items = [(word, dataclasses.replace(speaker, rate=int(rng.integers(130, 231))))
                 for word in KEYWORDS]
        # One eSpeak process per speaker: its 12 words are rendered in a fixed order.
        for cls, wave in enumerate(renderer.render(items)):
            wave = speech.trim_silence(wave)[:n - 160]
            clip = np.zeros(n, np.float32)
            start = int(rng.integers(0, n - len(wave) - 80 + 1))
            clip[start:start + len(wave)] = wave
            index = s * len(KEYWORDS) + cls
            clip = _finish(rng, clip, reverb_prob=0.3, noise_prob=0.7)
            examples.append(Example(f"{split}/{index:05d}", clip, [cls]))
    return examples


# ---------------------------------------------------------------------------- pitch
def pitch_programs(split: str, scale: float = 1.0, seed: int = 0) -> Tuple[int, ...]:
    """The split's GM programs (instruments); disjoint between splits."""
    programs = _partition(TONAL_PROGRAMS, "realistic_pitch", seed)[split]
    count = _scaled(_PITCH_INSTRUMENTS[split], scale, limit=len(programs))
    order = _rng("realistic_pitch", split, seed, 1).permutation(len(programs))
    return tuple(programs[i] for i in sorted(order[:count]))


def _pitch_split(split: str, scale: float, seed: int) -> List[Example]:
    from msss_tf.data.realistic import music

    renderer = music.MidiRenderer(SAMPLE_RATE)
    examples = []
    for p, program in enumerate(pitch_programs(split, scale, seed)):
        for cls, key in enumerate(PITCH_MIDI):
            index = p * len(PITCH_MIDI) + cls
            rng = _rng("realistic_pitch", split, seed, 0, index)
            onset = float(rng.uniform(0.0, 0.05))
            clip = renderer.render([(onset, float(rng.uniform(0.5, 0.8)), 0, key,
                                     int(rng.integers(40, 128)))], {0: program}, 1.0)
            clip = _finish(rng, clip, reverb_prob=0.2, noise_prob=0.5)
            examples.append(Example(f"{split}/{index:05d}", clip, [cls]))
    return examples


# --------------------------------------------------------------------------- events
def _active_span(x: np.ndarray, floor_db: float = -40.0) -> Tuple[int, int]:
    """[begin, end) of the samples whose 10 ms envelope is within `floor_db` of its peak."""
    hop = SAMPLE_RATE // 100
    frames = np.sqrt(np.convolve(x.astype(np.float64) ** 2, np.ones(hop) / hop, "same"))
    active = np.nonzero(frames >= frames.max() * 10 ** (floor_db / 20))[0]
    return int(active[0]), int(active[-1]) + 1


def _events_clip(rng, first_class: int, seconds: float, speech_renderer, midi_renderer):
    from msss_tf.data.realistic import music, sounds, speech

    n = int(round(seconds * SAMPLE_RATE))
    classes = [first_class] + [int(rng.integers(len(EVENT_CLASSES)))
                               for _ in range(int(rng.integers(1, 5)))]
    sources = []
    speech_items = []
    for cls in classes:
        name = EVENT_CLASSES[cls]
        length = float(rng.uniform(*_EVENT_SECONDS[name]))
        if name == "speech":
            speaker = speech.random_speaker(rng, languages=speech.ENGLISH)
            speech_items.append((speech.english_sentence(rng) if length > 1.2 else
                                 speech.single_words(rng, "en"), speaker))
            sources.append((name, None, length))
        elif name == "music":
            program = int(rng.choice(TONAL_PROGRAMS))
            lo, hi = music.key_range(program)
            events, t = [], 0.0
            while t < length - 0.1:
                step = float(rng.uniform(0.12, 0.5))
                key = music.playable_key(program, int(rng.integers(lo, hi + 1)))
                events.append((t, step, 0, key, int(rng.integers(60, 120))))
                t += step
            sources.append((name, midi_renderer.render(events, {0: program}, length + 0.3), length))
        else:
            sources.append((name, sounds.EVENTS[_EVENT_SOURCE[name]](rng, length, SAMPLE_RATE),
                            length))
    spoken = iter(speech_renderer.render(speech_items)) if speech_items else iter(())
    mix = np.zeros(n, np.float64)
    labels = []
    for name, wave, _ in sources:
        if wave is None:
            wave = speech.trim_silence(next(spoken))
        wave = wave[:n - SAMPLE_RATE // 10]
        begin, end = _active_span(wave)
        wave = wave[begin:end] / (np.max(np.abs(wave[begin:end])) + 1e-12)
        onset = int(rng.integers(0, n - len(wave) + 1))
        mix[onset:onset + len(wave)] += wave * 10 ** (-rng.uniform(0, 12) / 20)
        labels.append({"label": name, "onset": round(onset / SAMPLE_RATE, 3),
                       "offset": round((onset + len(wave)) / SAMPLE_RATE, 3)})
    background, _ = sounds.background(rng, seconds, SAMPLE_RATE)
    background = np.pad(background[:n], (0, n - len(background[:n])))
    mix += background * np.max(np.abs(mix)) * 10 ** (-rng.uniform(20, 35) / 20)
    clip = _finish(rng, mix.astype(np.float32), reverb_prob=0.4, noise_prob=0.0)
    labels.sort(key=lambda e: (e["onset"], e["offset"], e["label"]))
    return clip, labels


def _events_split(split: str, scale: float, seed: int) -> List[Example]:
    from msss_tf.data.realistic import music, speech

    speech_renderer = speech.EspeakRenderer(SAMPLE_RATE)
    midi_renderer = music.MidiRenderer(SAMPLE_RATE)
    count = max(len(EVENT_CLASSES), _scaled(_EVENT_CLIPS[split], scale, limit=10**9))
    examples = []
    for index in range(count):
        rng = _rng("realistic_events", split, seed, 0, index)
        clip, labels = _events_clip(rng, index % len(EVENT_CLASSES), 6.0, speech_renderer,
                                    midi_renderer)
        examples.append(Example(f"{split}/{index:05d}", clip, labels))
    return examples


# -------------------------------------------------------------------------- builder
def _check_packages(name: str) -> None:
    """Fails at load time, not at the first split, when a renderer the task needs is missing."""
    from msss_tf.data.realistic.deps import require, soundfont_path

    if name in ("realistic_keywords", "realistic_events"):
        require("espeakng_loader", "espeakng-loader")
    if name in ("realistic_pitch", "realistic_events"):
        require("tinysoundfont", "tinysoundfont")
        soundfont_path()


def realistic_task(name: str, scale=1.0, seed: int = 0, size=None) -> InMemoryTask:
    """Builds one of the realistic built-in tasks (see the module docstring).

    Each split is rendered on first use and kept in memory.

    Args:
      name: "realistic_keywords", "realistic_pitch" or "realistic_events".
      scale: multiplies the per-split sizes (a float > 0), or "small" (1), "medium" (4),
        "large" (16).
      seed: any integer; the same (name, scale, seed) gives bit-identical data.
      size: an alias of `scale` for its named values.

    Returns:
      An `InMemoryTask`.

    Raises:
      MissingCorpusPackageError: when a split is built without the corpus extra.
    """
    scale = resolve_scale(name, scale, size)
    seed = int(seed)
    _check_packages(name)
    source = f"built-in realistic task (scale={scale:g}, seed={seed})"
    if name == "realistic_keywords":
        task = InMemoryTask(
            name=name, kind="scene", prediction_type="multiclass", label_names=list(KEYWORDS),
            metrics=["top1_acc"], clip_seconds=1.0, source=source,
            build_split=lambda split: _keywords_split(split, scale, seed))
        task.notes.append("speakers (voice variants) held out between train, valid and test")
        return task
    if name == "realistic_pitch":
        task = InMemoryTask(
            name=name, kind="scene", prediction_type="multiclass",
            label_names=[str(m) for m in PITCH_MIDI], metrics=["pitch_acc", "chroma_acc"],
            clip_seconds=1.0, midi_of_label=np.array(PITCH_MIDI), source=source,
            build_split=lambda split: _pitch_split(split, scale, seed))
        task.notes.append("instruments (GM programs) held out between train, valid and test")
        return task
    if name == "realistic_events":
        return InMemoryTask(
            name=name, kind="event", prediction_type="multilabel",
            label_names=list(EVENT_CLASSES), metrics=["event_onset_fscore"], clip_seconds=6.0,
            source=source, build_split=lambda split: _events_split(split, scale, seed))
    raise ValueError(f"unknown realistic task {name!r}; expected one of {REALISTIC_TASK_NAMES}")
