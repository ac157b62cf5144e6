"""`Example` and `Task`: what every downstream task loader returns.

A task is a named, labelled audio data set with three splits (train, valid, test), a kind
("scene": one label set per clip; "event": timed events inside a clip), a prediction type
and the metrics it is scored with. `Task.examples(split)` streams `Example`s in a fixed
order, so a 300k-clip data set never sits in memory.

Bookkeeping is never silent: what a loader changed or dropped while streaming (clips padded
or cropped to the task's clip length, NSynth notes outside the 88-key range, corrupt audio
files) is counted per split in `Task.stats`, files are listed in `Task.skipped` (a
`SkipReport`), and `Task.report()` words all of it.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from msss_tf.data.files import SkipReport

logger = logging.getLogger("msss_tf.data.tasks")

SPLITS: Tuple[str, ...] = ("train", "valid", "test")
SPLIT_ALIASES = {"validation": "valid", "val": "valid", "dev": "valid"}
KINDS = ("scene", "event")
PREDICTION_TYPES = ("multiclass", "multilabel")
# Metric names, as the probes and metrics modules know them.
METRIC_NAMES = ("top1_acc", "pitch_acc", "chroma_acc", "mAP", "event_onset_fscore")


@dataclasses.dataclass
class Example:
    """One labelled clip.

    Attributes:
      id: unique within the task: a file name (HEAR folders) or "split/index" (tfds and
        synthetic tasks; NSynth uses "split/<note id>").
      waveform: float32 [n], mono, at the task's `sample_rate` (16 kHz).
      label: scene tasks: list[int] of class indices (multiclass: exactly one);
        event tasks: list of {"label": str, "onset": float seconds, "offset": float seconds},
        sorted by onset.
    """

    id: str
    waveform: np.ndarray
    label: object


@dataclasses.dataclass
class Task:
    """A downstream task. Subclasses implement `_iter_split` (and `num_examples`).

    Attributes:
      name: the task's name ("speech_commands", "nsynth_pitch", the HEAR task_name, ...).
      kind: "scene" or "event".
      prediction_type: "multiclass" or "multilabel" (event tasks: "multilabel").
      label_names: class names; class index i is label_names[i].
      metrics: names from `METRIC_NAMES`; the first is the main one.
      splits: ("train", "valid", "test").
      sample_rate: of every `Example.waveform` (16000).
      clip_seconds: every waveform is exactly this long, if not None.
      midi_of_label: pitch tasks: int array, the MIDI note number of each class index.
      source: where the data comes from, in words (tfds name/config/version, a folder, a seed).
      skipped: files (or records) left out while streaming, with reasons.
      stats: {split: {counter: n}} for the latest pass over each split; counters include
        "examples" (yielded), "padded", "cropped", "out_of_range", "skipped".
      notes: remarks made while loading (metrics dropped, fold assignment, ...).
    """

    name: str
    kind: str
    prediction_type: str
    label_names: List[str]
    metrics: List[str]
    splits: Tuple[str, ...] = SPLITS
    sample_rate: int = 16000
    clip_seconds: Optional[float] = None
    midi_of_label: Optional[np.ndarray] = None
    source: str = ""
    skipped: SkipReport = dataclasses.field(default_factory=SkipReport, repr=False)
    stats: Dict[str, Dict[str, int]] = dataclasses.field(default_factory=dict, repr=False)
    notes: List[str] = dataclasses.field(default_factory=list, repr=False)
    _complete: set = dataclasses.field(default_factory=set, init=False, repr=False,
                                       compare=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind={self.kind!r}, expected one of {KINDS}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"task {self.name}: prediction_type={self.prediction_type!r}, "
                             f"expected one of {PREDICTION_TYPES}")
        unknown = [m for m in self.metrics if m not in METRIC_NAMES]
        if unknown or not self.metrics:
            raise ValueError(f"task {self.name}: metrics {self.metrics} must be a non-empty "
                             f"list of names from {METRIC_NAMES}")
        self.label_names = [str(n) for n in self.label_names]
        self.splits = tuple(self.splits)
        if self.midi_of_label is not None:
            self.midi_of_label = np.asarray(self.midi_of_label, dtype=np.int64)
            if self.midi_of_label.shape != (len(self.label_names),):
                raise ValueError(f"task {self.name}: midi_of_label has shape "
                                 f"{self.midi_of_label.shape}, expected ({len(self.label_names)},)")

    # ----------------------------------------------------------------- public
    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def clip_samples(self) -> Optional[int]:
        """Samples per clip when `clip_seconds` is set, else None."""
        if self.clip_seconds is None:
            return None
        return int(round(self.clip_seconds * self.sample_rate))

    def examples(self, split: str) -> Iterator[Example]:
        """Streams the split's examples in a fixed order (the same on every call).

        Args:
          split: "train", "valid" or "test" ("validation" is accepted for "valid").

        Yields:
          `Example`s. Counters of the pass are kept in `self.stats[split]`; when the pass
          completes, anything padded, cropped or skipped is also logged (a warning on the
          "msss_tf.data.tasks" logger).
        """
        split = self.check_split(split)
        counts = collections.Counter()
        self.stats[split] = counts  # the latest pass; live while it runs
        self._complete.discard(split)
        for example in self._iter_split(split, counts):
            counts["examples"] += 1
            yield example
        self._complete.add(split)
        changed = {k: v for k, v in counts.items() if k != "examples" and v}
        if changed:  # one line per pass over a split; never silent
            logger.warning("%s/%s: %d examples; %s", self.name, split, counts["examples"],
                           ", ".join(f"{k} {v}" for k, v in sorted(changed.items())))

    def num_examples(self, split: str) -> Optional[int]:
        """How many examples `examples(split)` yields, or None where that is unknown until
        the split has been streamed once (after a complete pass it is always known)."""
        split = self.check_split(split)
        return self._completed_count(split)

    def check_split(self, split: str) -> str:
        """Returns the canonical split name; raises ValueError for an unknown one."""
        canonical = SPLIT_ALIASES.get(split, split)
        if canonical not in self.splits:
            raise ValueError(f"task {self.name}: unknown split {split!r}; "
                             f"splits are {self.splits}")
        return canonical

    def count(self, counter: str, split: Optional[str] = None) -> int:
        """A counter of `stats` for one split, or summed over the splits streamed so far."""
        if split is not None:
            return int(self.stats.get(self.check_split(split), {}).get(counter, 0))
        return int(sum(c.get(counter, 0) for c in self.stats.values()))

    @property
    def padded_count(self) -> int:
        """Clips shorter than `clip_seconds` that were zero-padded at the end (latest passes)."""
        return self.count("padded")

    @property
    def cropped_count(self) -> int:
        """Clips longer than `clip_seconds` whose end was cut off (latest passes)."""
        return self.count("cropped")

    def report(self) -> str:
        """A human-readable summary: what the task is, and what streaming changed or dropped."""
        lines = [f"task {self.name} ({self.kind}, {self.prediction_type}, "
                 f"{self.num_classes} classes, metrics {', '.join(self.metrics)})"]
        if self.source:
            lines.append(f"  source: {self.source}")
        for split in self.splits:
            if split not in self.stats:
                continue
            counts = self.stats[split]
            extra = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())
                              if k != "examples" and v)
            lines.append(f"  {split}: {counts.get('examples', 0)} examples"
                         + (f" ({extra})" if extra else ""))
        lines += [f"  note: {note}" for note in self.notes]
        if self.skipped.count:
            lines.append("  " + self.skipped.summary().replace("\n", "\n  "))
        return "\n".join(lines)

    # --------------------------------------------------------- for subclasses
    def _iter_split(self, split: str, counts: collections.Counter) -> Iterator[Example]:
        raise NotImplementedError

    def _completed_count(self, split: str) -> Optional[int]:
        if split in self._complete:
            return int(self.stats[split]["examples"])
        return None


class InMemoryTask(Task):
    """A task whose examples are built by a function, once per split, and kept in memory.

    Used by the small built-in synthetic tasks. `build_split(split) -> list[Example]`.
    """

    def __init__(self, *args, build_split=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._build_split = build_split
        self._cache: Dict[str, List[Example]] = {}

    def split_examples(self, split: str) -> List[Example]:
        """The split's examples as a list (built on first use, then cached)."""
        split = self.check_split(split)
        if split not in self._cache:
            self._cache[split] = list(self._build_split(split))
        return self._cache[split]

    def _iter_split(self, split, counts):
        yield from self.split_examples(split)

    def num_examples(self, split: str) -> int:
        return len(self.split_examples(split))


def fit_length(waveform: np.ndarray, num_samples: int,
               counts: collections.Counter) -> np.ndarray:
    """Zero-pads at the end or crops the end to exactly `num_samples`; counts which."""
    n = waveform.shape[0]
    if n < num_samples:
        counts["padded"] += 1
        return np.pad(waveform, (0, num_samples - n))
    if n > num_samples:
        counts["cropped"] += 1
        return waveform[:num_samples]
    return waveform


def list_some(items, limit: int = 5) -> str:
    """'a, b, c and 4 more' for error messages."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f" and {len(items) - limit} more"
    return shown


# Named sizes of the built-in tasks: multipliers of their per-split sizes.
SIZES = {"small": 1.0, "medium": 4.0, "large": 16.0}


def resolve_scale(name: str, scale, size=None) -> float:
    """A built-in task's size multiplier from `scale` (a number > 0 or a name in SIZES)
    or its alias `size`; ValueError naming the task otherwise."""
    if size is not None:
        scale = size
    if isinstance(scale, str):
        if scale not in SIZES:
            raise ValueError(f"{name}: unknown size {scale!r}; expected one of {list(SIZES)} "
                             "or a positive number")
        scale = SIZES[scale]
    scale = float(scale)
    if not scale > 0:
        raise ValueError(f"{name}: scale={scale} must be positive")
    return scale
