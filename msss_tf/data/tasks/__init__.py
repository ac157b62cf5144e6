"""Downstream tasks: labelled audio on which frozen embeddings are probed.

    load_task(name_or_path, data_dir=None, **options) -> Task

    name                source                                    kind   metrics
    speech_commands     tfds speech_commands (prepared, offline)  scene  top1_acc
    nsynth_pitch        tfds nsynth/full, else gansynth_subset    scene  pitch_acc, chroma_acc
    dcase2016_task2     HEAR 2021 folder dcase2016_task2-hear2021-full under data_dir
                                                                  event  event_onset_fscore
    synthetic_scene     built in, rendered from a seed            scene  top1_acc
    synthetic_pitch     built in                                  scene  pitch_acc, chroma_acc
    synthetic_events    built in                                  event  event_onset_fscore
    realistic_keywords  built in, eSpeak NG (corpus extra)        scene  top1_acc
    realistic_pitch     built in, GM SoundFont (corpus extra)     scene  pitch_acc, chroma_acc
    realistic_events    built in, all three renderers             event  event_onset_fscore
    <a folder path>     any task in the HEAR 2021 layout          as its task_metadata.json

Nothing here downloads anything: tfds is called with download=False, and data that is not
on the machine raises `TaskDataNotFoundError` naming what to fetch and where to put it.

Every task streams `Example(id, waveform float32 [n] at 16 kHz, label)` per split
("train", "valid", "test") in a fixed order; see `base.Task` for the attributes, and
`Task.report()` for what was padded, cropped or skipped. `write_hear_task` writes any task
in the HEAR layout.
"""

from __future__ import annotations

import os
from typing import Optional

from msss_tf.data.tasks.base import (
    METRIC_NAMES,
    SPLITS,
    Example,
    InMemoryTask,
    Task,
)
from msss_tf.data.tasks.hear import (
    DCASE2016_FOLDER,
    HearTask,
    MissingTaskFilesError,
    dcase2016_task2_task,
    load_hear_task,
)
from msss_tf.data.tasks.hear_writer import write_hear_task
from msss_tf.data.tasks.realistic_tasks import REALISTIC_TASK_NAMES, realistic_task
from msss_tf.data.tasks.synthetic_tasks import SYNTHETIC_TASK_NAMES, synthetic_task
from msss_tf.data.tasks.tfds_tasks import (
    NSynthPitchTask,
    SpeechCommandsTask,
    TaskDataNotFoundError,
    nsynth_pitch_task,
    speech_commands_task,
)

TASK_NAMES = ("speech_commands", "nsynth_pitch", "dcase2016_task2", "synthetic_scene",
              "synthetic_pitch", "synthetic_events") + REALISTIC_TASK_NAMES

# The keyword options each task accepts (besides data_dir).
_OPTIONS = {
    "speech_commands": (),
    "nsynth_pitch": ("config",),
    "dcase2016_task2": ("test_fold",),
    "synthetic_scene": ("scale", "seed", "size"),
    "synthetic_pitch": ("scale", "seed", "size"),
    "synthetic_events": ("scale", "seed", "size"),
    **{name: ("scale", "seed", "size") for name in REALISTIC_TASK_NAMES},
    "<folder>": ("test_fold",),
}


def load_task(name_or_path: str, data_dir: Optional[str] = None, **options) -> Task:
    """Loads a downstream task by name, or a HEAR-layout task folder by path.

    Args:
      name_or_path: one of `TASK_NAMES`, or a folder holding task_metadata.json.
      data_dir: speech_commands / nsynth_pitch: the TFDS data directory (None: TFDS's
        default, $TFDS_DATA_DIR or ~/tensorflow_datasets); dcase2016_task2: the folder
        holding dcase2016_task2-hear2021-full (or that folder itself). Ignored otherwise.
      **options: nsynth_pitch: config ("full" | "gansynth_subset"; default: full if
        prepared, else gansynth_subset). Synthetic tasks: scale (float, or "small" |
        "medium" | "large"), seed (int, default 0). HEAR folders and dcase2016_task2:
        test_fold (k-fold tasks; default 0).

    Returns:
      A `Task`.

    Raises:
      TaskDataNotFoundError: the task's data is not on this machine (the message says what
        to fetch, the command that builds it, and where to put it).
      MissingTaskFilesError: a HEAR folder lacks files (named in the message).
      ValueError: unknown task name, bad options, malformed metadata or labels.
    """
    name = str(name_or_path)
    key = name if name in TASK_NAMES else "<folder>"
    unknown = sorted(set(options) - set(_OPTIONS[key]))
    if unknown:
        allowed = ", ".join(_OPTIONS[key]) or "none"
        raise TypeError(f"load_task({name!r}): unexpected option(s) {', '.join(unknown)}; "
                        f"allowed: {allowed}")
    if name == "speech_commands":
        return speech_commands_task(data_dir)
    if name == "nsynth_pitch":
        return nsynth_pitch_task(data_dir, **options)
    if name == "dcase2016_task2":
        return dcase2016_task2_task(data_dir, **options)
    if name in SYNTHETIC_TASK_NAMES:
        return synthetic_task(name, **options)
    if name in REALISTIC_TASK_NAMES:
        return realistic_task(name, **options)
    if os.path.isdir(name):
        return load_hear_task(name, **options)
    raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASK_NAMES)}, or a "
                     "task folder in the HEAR 2021 layout (with task_metadata.json)"
                     + (" -- no such folder" if os.path.sep in name else ""))


__all__ = [
    "DCASE2016_FOLDER",
    "Example",
    "HearTask",
    "InMemoryTask",
    "METRIC_NAMES",
    "MissingTaskFilesError",
    "NSynthPitchTask",
    "SPLITS",
    "SpeechCommandsTask",
    "TASK_NAMES",
    "Task",
    "TaskDataNotFoundError",
    "load_hear_task",
    "load_task",
    "synthetic_task",
    "write_hear_task",
]
