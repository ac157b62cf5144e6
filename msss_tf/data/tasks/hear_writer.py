"""Writes any task in the HEAR 2021 folder layout (`write_hear_task`), the layout
`msss_tf.data.tasks.hear` reads: a task made here can be scored by HEAR's tools, and a
HEAR task folder can be built from synthetic data in tests.
"""

from __future__ import annotations

import csv
import os
from typing import Optional, Sequence

import numpy as np
import soundfile as sf

from msss_tf.atomic import write_json_atomically
from msss_tf.data.audio import AUDIO_EXTENSIONS
from msss_tf.data.tasks.base import Task
from msss_tf.data.tasks.hear import METADATA_FILE, OURS_TO_HEAR, VOCABULARY_FILE


def _file_name(example_id: str) -> str:
    name = example_id.replace("/", "_").replace(os.sep, "_")
    stem, ext = os.path.splitext(name)
    if ext.lower() in AUDIO_EXTENSIONS:
        name = stem
    return name + ".wav"


def write_hear_task(task: Task, out_dir: str, splits: Optional[Sequence[str]] = None) -> str:
    """Writes `task` in the HEAR 2021 layout, readable by `load_task(out_dir)` and HEAR tools.

    Writes 16-bit WAV files under out_dir/<sample rate>/<split>/ (file names from the example
    ids, "/" replaced by "_"), <split>.json label files (event times in milliseconds),
    labelvocabulary.csv, and task_metadata.json last, so a folder whose writing was
    interrupted does not load. Waveforms are clipped to [-1, 1] before quantisation.

    Args:
      task: any `Task`.
      out_dir: the task folder to write (created if missing; files in it are overwritten).
      splits: which splits to write (default: all of the task's splits).

    Returns:
      `out_dir`.
    """
    splits = [task.check_split(s) for s in (splits or task.splits)]
    os.makedirs(out_dir, exist_ok=True)
    stale = os.path.join(out_dir, METADATA_FILE)
    if os.path.exists(stale):
        os.remove(stale)
    for split in splits:
        audio_dir = os.path.join(out_dir, str(task.sample_rate), split)
        os.makedirs(audio_dir, exist_ok=True)
        labels = {}
        for example in task.examples(split):
            name = _file_name(example.id)
            if name in labels:
                raise ValueError(f"write_hear_task: ids {example.id!r} and another one map to "
                                 f"the same file name {name!r}")
            waveform = np.clip(np.asarray(example.waveform, np.float32), -1.0, 1.0)
            sf.write(os.path.join(audio_dir, name), waveform, task.sample_rate,
                     subtype="PCM_16")
            if task.kind == "event":
                labels[name] = [{"label": str(e["label"]),
                                 "start": round(float(e["onset"]) * 1000.0, 6),
                                 "end": round(float(e["offset"]) * 1000.0, 6)}
                                for e in example.label]
            else:
                labels[name] = [task.label_names[int(i)] for i in example.label]
        write_json_atomically(os.path.join(out_dir, f"{split}.json"), labels)
    with open(os.path.join(out_dir, VOCABULARY_FILE), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["idx", "label"])
        for i, label in enumerate(task.label_names):
            writer.writerow([i, label])
    write_json_atomically(stale, {
        "task_name": task.name,
        "version": "msss-tf",
        "embedding_type": task.kind,
        "prediction_type": task.prediction_type,
        "split_mode": "trainvaltest",
        "sample_duration": task.clip_seconds,
        "evaluation": [OURS_TO_HEAR[m] for m in task.metrics if m in OURS_TO_HEAR],
        "mode": "full",
        "sample_rate": task.sample_rate,
        "source": task.source,
    })
    return out_dir

