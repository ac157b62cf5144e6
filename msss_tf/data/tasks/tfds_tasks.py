"""Speech Commands and NSynth pitch, read from prepared TensorFlow Datasets (never downloaded).

Both loaders call `tfds.load(..., download=False, data_dir=...)`. When the prepared data
is not there, `TaskDataNotFoundError` says which TFDS dataset (name, config, version) to
build on a machine with internet access, the command that builds it, and where to put it.
`tensorflow_datasets` is imported only when one of these tasks is loaded.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, Optional, Sequence

import numpy as np

from msss_tf.data.tasks.base import Example, Task, fit_length

SPEECH_COMMANDS = "speech_commands"
SPEECH_COMMANDS_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
NSYNTH = "nsynth"
NSYNTH_CONFIGS = ("full", "gansynth_subset")  # tried in this order
NSYNTH_SPLITS = {"train": "train", "valid": "valid", "test": "test"}
NSYNTH_MIDI_MIN, NSYNTH_MIDI_MAX = 21, 108  # the 88 piano keys, A0..C8

# From the TFDS catalogue, for the "what to fetch" messages.
_SIZES = {
    SPEECH_COMMANDS: "about 2.4 GiB to download, 9 GiB prepared",
    "nsynth/full": "about 73 GiB to download and 73 GiB prepared; needs apache-beam",
    "nsynth/gansynth_subset": ("the same 73 GiB download, about 21 GiB prepared; "
                               "needs apache-beam"),
}


class TaskDataNotFoundError(FileNotFoundError):
    """The data of a task is not on this machine; the message says what to fetch and where."""


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("the speech_commands and nsynth_pitch tasks need "
                          "tensorflow-datasets: pip install tensorflow-datasets") from e
    return tfds


class _DataAbsent(Exception):
    """tfds found no prepared data for a dataset (its own message kept in args[0])."""


def _load(tfds_name: str, split: str, data_dir: Optional[str]):
    """`tfds.load` that never downloads; raises `_DataAbsent` when tfds finds no data."""
    tfds = _tfds()
    try:
        return tfds.load(tfds_name, split=split, data_dir=data_dir, download=False,
                         shuffle_files=False)
    except AssertionError as e:
        # tfds 4.9: "Dataset X: could not find data in DIR. Please make sure to call
        # dataset_builder.download_and_prepare(), or pass download=True ..."
        raise _DataAbsent(str(e)) from e


def _effective_data_dir(data_dir: Optional[str]) -> str:
    if data_dir:
        return data_dir
    tfds = _tfds()
    return os.environ.get("TFDS_DATA_DIR") or str(tfds.core.constants.DATA_DIR)


def _missing_error(task: str, tfds_names: Sequence[str], data_dir: Optional[str],
                   details: Sequence[str]) -> TaskDataNotFoundError:
    """The "what to fetch" error for tfds datasets absent from `data_dir`."""
    tfds = _tfds()
    root = _effective_data_dir(data_dir)
    looked, versions = [], []
    for name in tfds_names:
        builder = tfds.builder(name, data_dir=data_dir)
        looked.append(str(builder.data_dir))
        versions.append(f"{name} (version {builder.version})")
    first = tfds_names[0]
    lines = [
        f"{task}: no prepared TFDS data for {' or '.join(versions)} under data_dir={root!r}",
        f"(looked in {', '.join(looked)}). msss-tf never downloads data.",
        "On a machine with internet access, build it with",
        f"    tfds build {first} --data_dir=DIR",
        "or, in Python,",
        f"    tfds.builder({first!r}, data_dir='DIR').download_and_prepare()",
        f"({_SIZES.get(first, 'see the TFDS catalogue for its size')}),",
        f"then copy DIR/{first.split('/')[0]} into a folder D on this machine (keeping its "
        f"{first.split('/')[0]}/... layout) and pass --data_dir D (data_dir=D in Python).",
    ]
    if details:
        lines.append("tfds said: " + " | ".join(details))
    return TaskDataNotFoundError("\n".join(lines))


class TfdsTask(Task):
    """A task streamed from a prepared TFDS dataset. Subclasses set the fields below."""

    tfds_name: str = ""
    split_map: Dict[str, str] = {}

    def __init__(self, *args, data_dir: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_dir = data_dir

    def _dataset(self, split: str):
        try:
            return _load(self.tfds_name, self.split_map[split], self.data_dir)
        except _DataAbsent as e:  # deleted since load_task checked
            raise _missing_error(self.name, [self.tfds_name], self.data_dir, [str(e)]) from e

    def _info_num_examples(self, split: str) -> Optional[int]:
        """The split size recorded in the prepared dataset's metadata, if any."""
        try:
            builder = _tfds().builder(self.tfds_name, data_dir=self.data_dir)
            n = builder.info.splits[self.split_map[split]].num_examples
        except Exception:  # no metadata (e.g. under tfds.testing.mock_data): unknown
            return None
        return int(n) if n else None


class SpeechCommandsTask(TfdsTask):
    """Speech Commands v0.0.2 keyword spotting (tfds `speech_commands`), 12 classes.

    Labels are tfds's: the 10 words down, go, left, no, off, on, right, stop, up, yes, then
    _silence_ and _unknown_. Audio: int16 / 32768 -> float32, then zero-padded at the end or
    cropped to exactly 1 s (16000 samples); how many clips were padded (or cropped) is
    counted in `stats[split]["padded"]` / `padded_count`. Splits train / validation / test
    map to train / valid / test. Metric: top-1 accuracy. Example ids: "split/index".
    """

    tfds_name = SPEECH_COMMANDS
    split_map = SPEECH_COMMANDS_SPLITS

    def _iter_split(self, split, counts) -> Iterator[Example]:
        tfds = _tfds()
        ds = self._dataset(split).map(lambda x: (x["audio"], x["label"])).prefetch(64)
        num_samples = self.clip_samples
        for index, (audio, label) in enumerate(tfds.as_numpy(ds)):
            waveform = audio.astype(np.float32) / np.float32(32768.0)
            waveform = fit_length(waveform.reshape(-1), num_samples, counts)
            yield Example(f"{split}/{index:06d}", waveform, [int(label)])

    def num_examples(self, split: str) -> Optional[int]:
        split = self.check_split(split)
        known = self._completed_count(split)
        return known if known is not None else self._info_num_examples(split)


class NSynthPitchTask(TfdsTask):
    """NSynth pitch classification (tfds `nsynth`, config full or gansynth_subset).

    88 classes, class i = MIDI note 21 + i (A0..C8); notes whose pitch lies outside are
    skipped and counted in `stats[split]["out_of_range"]`. Audio: 64000 float samples
    (4 s at 16 kHz). tfds splits train / valid / test. Metrics: pitch accuracy, then chroma
    accuracy. `config` says which tfds config is read; ids are "split/<note id>".
    `num_examples` is None until a split has been streamed once (the pitch filter is only
    known then).
    """

    split_map = NSYNTH_SPLITS

    def __init__(self, *args, config: str = "full", **kwargs):
        super().__init__(*args, **kwargs)
        self.config = config
        self.tfds_name = f"{NSYNTH}/{config}"

    def _iter_split(self, split, counts) -> Iterator[Example]:
        tfds = _tfds()
        ds = self._dataset(split).map(
            lambda x: (x["id"], x["audio"], x["pitch"])).prefetch(16)
        num_samples = self.clip_samples
        for note_id, audio, pitch in tfds.as_numpy(ds):
            midi = int(pitch)
            if not NSYNTH_MIDI_MIN <= midi <= NSYNTH_MIDI_MAX:
                counts["out_of_range"] += 1
                continue
            waveform = fit_length(np.asarray(audio, np.float32).reshape(-1), num_samples,
                                  counts)
            note = note_id.decode("utf-8", "replace") if isinstance(note_id, bytes) else note_id
            yield Example(f"{split}/{note}", waveform, [midi - NSYNTH_MIDI_MIN])


def speech_commands_task(data_dir: Optional[str] = None) -> SpeechCommandsTask:
    """Loads the Speech Commands task; raises `TaskDataNotFoundError` if it is not prepared."""
    try:
        _load(SPEECH_COMMANDS, "train", data_dir)  # fail now, not at the first example
    except _DataAbsent as e:
        raise _missing_error(SPEECH_COMMANDS, [SPEECH_COMMANDS], data_dir, [str(e)]) from None
    tfds = _tfds()
    builder = tfds.builder(SPEECH_COMMANDS, data_dir=data_dir)
    return SpeechCommandsTask(
        name=SPEECH_COMMANDS, kind="scene", prediction_type="multiclass",
        label_names=list(builder.info.features["label"].names), metrics=["top1_acc"],
        clip_seconds=1.0, source=f"tfds:{builder.info.full_name} (data_dir={data_dir})",
        data_dir=data_dir)


def nsynth_pitch_task(data_dir: Optional[str] = None,
                      config: Optional[str] = None) -> NSynthPitchTask:
    """Loads the NSynth pitch task from tfds `nsynth/full`, else `nsynth/gansynth_subset`.

    Args:
      data_dir: the TFDS data directory.
      config: "full" or "gansynth_subset" to insist on one; None tries them in that order.

    Raises:
      TaskDataNotFoundError: none of the configs tried is prepared under `data_dir`.
    """
    configs = NSYNTH_CONFIGS if config is None else (config,)
    unknown = [c for c in configs if c not in NSYNTH_CONFIGS]
    if unknown:
        raise ValueError(f"nsynth_pitch: unknown tfds config {unknown[0]!r}; "
                         f"expected one of {NSYNTH_CONFIGS}")
    absent = []
    for candidate in configs:
        try:
            _load(f"{NSYNTH}/{candidate}", "train", data_dir)
        except _DataAbsent as e:
            absent.append(str(e))
            continue
        tfds = _tfds()
        builder = tfds.builder(f"{NSYNTH}/{candidate}", data_dir=data_dir)
        task = NSynthPitchTask(
            name="nsynth_pitch", kind="scene", prediction_type="multiclass",
            label_names=[str(m) for m in range(NSYNTH_MIDI_MIN, NSYNTH_MIDI_MAX + 1)],
            metrics=["pitch_acc", "chroma_acc"], clip_seconds=4.0,
            midi_of_label=np.arange(NSYNTH_MIDI_MIN, NSYNTH_MIDI_MAX + 1),
            source=f"tfds:{builder.info.full_name} (data_dir={data_dir})",
            data_dir=data_dir, config=candidate)
        if len(configs) > 1 and candidate != configs[0]:
            task.notes.append(f"nsynth/{configs[0]} is not prepared; using "
                              f"nsynth/{candidate}")
        return task
    names = [f"{NSYNTH}/{c}" for c in configs]
    raise _missing_error("nsynth_pitch", names, data_dir, absent[:1]) from None


__all__ = [
    "NSynthPitchTask",
    "SpeechCommandsTask",
    "TaskDataNotFoundError",
    "nsynth_pitch_task",
    "speech_commands_task",
]
