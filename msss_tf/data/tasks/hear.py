"""Tasks in the HEAR 2021 folder layout: reading them (`load_hear_task`). DCASE 2016 task 2
is read this way; `hear_writer.write_hear_task` writes any task in this layout.

The layout (as made by hearpreprocess, hearbenchmark.com):

    <task>/task_metadata.json     task_name, embedding_type ("scene" | "event"),
                                  prediction_type ("multiclass" | "multilabel"), split_mode,
                                  sample_duration (seconds or null), evaluation [metric names],
                                  optionally label_to_idx, nfolds, splits
    <task>/labelvocabulary.csv    columns idx,label (optional here)
    <task>/train.json, valid.json, test.json    (split_mode "trainvaltest")
    <task>/fold00.json, fold01.json, ...        (split_mode "new_split_kfold"/"presplit_kfold")
          scene tasks: {filename: [label, ...]}
          event tasks: {filename: [{"label": str, "start": ms, "end": ms}, ...]}
    <task>/<sample rate>/<split or fold>/<filename>    audio, one folder per sample rate

Reading: the 16000 folder is used when present; otherwise the lowest rate above 16 kHz (else
the highest below) is read and resampled to 16 kHz by `load_audio`. Event times are converted
from milliseconds to seconds. Labels come from labelvocabulary.csv, else from the metadata's
label_to_idx, else they are the sorted set of labels in the label files (numerically sorted
when all are integers). HEAR metric names map to ours: event_onset_200ms_fms ->
event_onset_fscore; top1_acc, mAP, pitch_acc, chroma_acc as they are; others (e.g.
segment_1s_er, d_prime, aucroc) are dropped with a note in `task.notes`.

k-fold tasks follow the HEAR evaluation kit (heareval `data_splits_from_folds`): with the
folds sorted, test = fold t, valid = fold (t + 1) mod k, train = all other folds, where t is
`test_fold` (default 0). Running t = 0..k-1 and averaging reproduces HEAR's protocol.

Missing pieces fail at load time with an error naming them: task_metadata.json, a label
file, or audio files the labels refer to (the first few, with a count). An audio file that
is present but not readable audio is skipped while streaming and recorded in `task.skipped`
(and `stats[split]["skipped"]`). A silent file is still an example (it is kept, counted in
`stats[split]["silent"]`): dropping it would change the benchmark.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from msss_tf.data.audio import (
    AudioError,
    load_audio,
    resample,
)
from msss_tf.data.tasks.base import (
    SPLITS,
    Example,
    Task,
    fit_length,
    list_some,
)
from msss_tf.data.tasks.tfds_tasks import TaskDataNotFoundError

METADATA_FILE = "task_metadata.json"
VOCABULARY_FILE = "labelvocabulary.csv"
HEAR_TO_OURS = {
    "event_onset_200ms_fms": "event_onset_fscore",
    "top1_acc": "top1_acc",
    "mAP": "mAP",
    "pitch_acc": "pitch_acc",
    "chroma_acc": "chroma_acc",
}
OURS_TO_HEAR = {ours: hear for hear, ours in HEAR_TO_OURS.items()}
KFOLD_SPLIT_MODES = ("new_split_kfold", "presplit_kfold")

DCASE2016_TASK2 = "dcase2016_task2"
DCASE2016_FOLDER = "dcase2016_task2-hear2021-full"


class MissingTaskFilesError(FileNotFoundError):
    """Files a task folder needs are missing. `paths` lists all of them."""

    def __init__(self, message: str, paths: Sequence[str]):
        super().__init__(message)
        self.paths = list(paths)


class HearTask(Task):
    """A task read from a HEAR 2021 folder (see the module docstring).

    Extra attributes: `root` (the folder), `audio_dir` (the sample-rate folder read),
    `metadata` (task_metadata.json as a dict), `split_parts` ({split: [label-file stems]}).
    Example ids are the file names, or "part/filename" if a name repeats across parts.
    `num_examples(split)` is the number of files the split lists (fewer are yielded when
    corrupt files are skipped; after a complete pass it is the exact count).
    """

    def __init__(self, *args, root: str, audio_dir: str, metadata: dict,
                 split_parts: Dict[str, List[str]],
                 records: Dict[str, List[Tuple[str, str, object]]], **kwargs):
        super().__init__(*args, **kwargs)
        self.root = root
        self.audio_dir = audio_dir
        self.metadata = metadata
        self.split_parts = split_parts
        self._records = records  # split -> [(id, path, label)]
        self._seen_once = set()

    def files(self, split: str) -> List[str]:
        """The audio paths of a split, in streaming order."""
        return [path for _, path, _ in self._records[self.check_split(split)]]

    def _iter_split(self, split, counts) -> Iterator[Example]:
        first_pass = split not in self._seen_once
        num_samples = self.clip_samples
        for example_id, path, label in self._records[split]:
            if first_pass:
                self.skipped.note_seen()
            try:
                waveform = _read_clip(path, self.sample_rate, counts)
            except AudioError as e:
                self.skipped.add_error(e)
                counts["skipped"] += 1
                continue
            if num_samples is not None:
                waveform = fit_length(waveform, num_samples, counts)
            yield Example(example_id, waveform, _copy_label(label))
        self._seen_once.add(split)

    def num_examples(self, split: str) -> int:
        split = self.check_split(split)
        known = self._completed_count(split)
        return known if known is not None else len(self._records[split])


def _copy_label(label):
    # Callers may mutate what they are given; the task keeps its own copy.
    if label and isinstance(label[0], dict):
        return [dict(event) for event in label]
    return list(label)


def _read_clip(path: str, sample_rate: int, counts) -> np.ndarray:
    """`load_audio`, except that a silent file is returned (and counted), not refused."""
    try:
        return load_audio(path, sample_rate=sample_rate, min_samples=1)
    except AudioError as e:
        if e.reason != "silent":
            raise
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    counts["silent"] += 1
    return resample(data.mean(axis=1, dtype=np.float32), rate, sample_rate)


# -------------------------------------------------------------------------- reading
def _read_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e


def _choose_audio_dir(root: str, sample_rate: int) -> str:
    rates = sorted(int(d) for d in os.listdir(root)
                   if d.isdigit() and os.path.isdir(os.path.join(root, d)))
    if not rates:
        raise MissingTaskFilesError(
            f"HEAR task folder {root} has no audio folder: expected "
            f"{os.path.join(root, str(sample_rate))}/<split>/... (one folder per sample rate)",
            [os.path.join(root, str(sample_rate))])
    if sample_rate in rates:
        rate = sample_rate
    else:
        above = [r for r in rates if r > sample_rate]
        rate = above[0] if above else rates[-1]
    return os.path.join(root, str(rate))


def _split_parts(metadata: dict, root: str, test_fold) -> Tuple[Dict[str, List[str]], str]:
    """{split: [label-file stems]} and a note on how folds were assigned ("" if none)."""
    mode = metadata.get("split_mode", "trainvaltest")
    if mode == "trainvaltest":
        return {split: [split] for split in SPLITS}, ""
    if mode not in KFOLD_SPLIT_MODES and "fold" not in str(mode):
        raise ValueError(f"{os.path.join(root, METADATA_FILE)}: split_mode {mode!r} is not "
                         f"supported; expected 'trainvaltest' or one of {KFOLD_SPLIT_MODES}")
    folds = metadata.get("splits")
    if not folds and metadata.get("nfolds"):
        folds = [f"fold{i:02d}" for i in range(int(metadata["nfolds"]))]
    if not folds:
        folds = [name[:-5] for name in os.listdir(root)
                 if name.startswith("fold") and name.endswith(".json")]
    folds = sorted(str(f) for f in folds)
    if len(folds) < 3:
        raise ValueError(f"HEAR task folder {root}: split_mode {mode!r} needs at least 3 "
                         f"folds (test, valid, train), found {folds}")
    if isinstance(test_fold, str):
        if test_fold not in folds:
            raise ValueError(f"test_fold={test_fold!r}: not one of {folds}")
        t = folds.index(test_fold)
    else:
        t = int(test_fold)
        if not 0 <= t < len(folds):
            raise ValueError(f"test_fold={test_fold}: must be in [0, {len(folds)})")
    test, valid = folds[t], folds[(t + 1) % len(folds)]
    train = [f for f in folds if f not in (test, valid)]
    note = (f"{len(folds)} folds ({mode}): test={test}, valid={valid}, "
            f"train={'+'.join(train)} (HEAR's rule; another test fold: "
            f"test_fold=0..{len(folds) - 1})")
    return {"train": train, "valid": [valid], "test": [test]}, note


def _read_vocabulary(root: str, metadata: dict, seen_labels) -> Tuple[List[str], str]:
    path = os.path.join(root, VOCABULARY_FILE)
    if os.path.isfile(path):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "label" not in rows[0] or "idx" not in rows[0]:
            raise ValueError(f"{path}: expected a CSV with columns idx,label")
        try:
            by_idx = {int(row["idx"]): str(row["label"]) for row in rows}
        except ValueError as e:
            raise ValueError(f"{path}: idx values must be integers ({e})") from e
        if sorted(by_idx) != list(range(len(rows))):
            raise ValueError(f"{path}: idx values must be 0..{len(rows) - 1}, each once")
        return [by_idx[i] for i in range(len(rows))], VOCABULARY_FILE
    label_to_idx = metadata.get("label_to_idx")
    if label_to_idx:
        by_idx = {int(i): str(label) for label, i in label_to_idx.items()}
        if sorted(by_idx) != list(range(len(by_idx))):
            raise ValueError(f"{os.path.join(root, METADATA_FILE)}: label_to_idx values must "
                             f"be 0..{len(by_idx) - 1}, each once")
        return [by_idx[i] for i in range(len(by_idx))], "label_to_idx"
    labels = sorted(set(seen_labels))
    if labels and all(_is_int(label) for label in labels):
        labels = sorted(labels, key=int)
    return labels, "the labels in the label files"


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _label_key(value) -> str:
    # HEAR label files hold strings; numbers (e.g. MIDI pitches) are matched by their text.
    if isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return str(value)


def _map_metrics(evaluation, kind: str, prediction_type: str) -> Tuple[List[str], List[str]]:
    metrics, dropped = [], []
    for name in evaluation or []:
        ours = HEAR_TO_OURS.get(name)
        if ours is None:
            dropped.append(name)
        elif ours not in metrics:
            metrics.append(ours)
    notes = []
    if dropped:
        notes.append(f"HEAR metrics not computed by msss-tf, dropped: {', '.join(dropped)}")
    if not metrics:
        metrics = ["event_onset_fscore" if kind == "event"
                   else "top1_acc" if prediction_type == "multiclass" else "mAP"]
        notes.append(f"no supported metric in 'evaluation'; using {metrics[0]}")
    return metrics, notes


def load_hear_task(path: str, test_fold=0, sample_rate: int = 16000) -> HearTask:
    """Reads a task folder in the HEAR 2021 layout (see the module docstring).

    Args:
      path: the task folder (the one holding task_metadata.json).
      test_fold: k-fold tasks only: the index (or name, "fold03") of the test fold.
      sample_rate: of the waveforms returned (audio at other rates is resampled).

    Returns:
      A `HearTask`.

    Raises:
      MissingTaskFilesError (a FileNotFoundError): the folder, task_metadata.json, a label
        file, the audio folder, or audio files listed in the labels are missing.
      ValueError: malformed metadata or labels.
    """
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise MissingTaskFilesError(f"HEAR task folder not found: {root}", [root])
    meta_path = os.path.join(root, METADATA_FILE)
    if not os.path.isfile(meta_path):
        raise MissingTaskFilesError(
            f"HEAR task folder {root} has no {METADATA_FILE}: missing {meta_path}", [meta_path])
    metadata = _read_json(meta_path, "task metadata")
    if not isinstance(metadata, dict):
        raise ValueError(f"{meta_path}: expected a JSON object")
    kind = metadata.get("embedding_type")
    prediction_type = metadata.get("prediction_type")
    if kind not in ("scene", "event"):
        raise ValueError(f"{meta_path}: embedding_type={kind!r}, expected 'scene' or 'event'")
    if prediction_type not in ("multiclass", "multilabel"):
        raise ValueError(f"{meta_path}: prediction_type={prediction_type!r}, expected "
                         "'multiclass' or 'multilabel'")
    name = str(metadata.get("task_name") or os.path.basename(root))

    split_parts, fold_note = _split_parts(metadata, root, test_fold)
    parts = [p for split in SPLITS for p in split_parts[split]]
    label_paths = {p: os.path.join(root, f"{p}.json") for p in parts}
    missing = [label_paths[p] for p in parts if not os.path.isfile(label_paths[p])]
    if missing:
        raise MissingTaskFilesError(
            f"HEAR task folder {root}: {len(missing)} label file(s) missing: "
            f"{list_some(missing)}", missing)
    audio_dir = _choose_audio_dir(root, sample_rate)

    raw = {}  # part -> {filename: labels}
    seen_labels = set()
    for part in parts:
        content = _read_json(label_paths[part], "label file")
        if not isinstance(content, dict):
            raise ValueError(f"{label_paths[part]}: expected a JSON object "
                             "{filename: labels}")
        for filename, labels in content.items():
            if not isinstance(labels, list):
                raise ValueError(f"{label_paths[part]}: labels of {filename!r} must be a list")
            for item in labels:
                if kind == "event":
                    if not (isinstance(item, dict) and {"label", "start", "end"} <= set(item)):
                        raise ValueError(f"{label_paths[part]}: {filename!r}: event tasks need "
                                         f"{{'label', 'start', 'end'}} items, got {item!r}")
                    seen_labels.add(_label_key(item["label"]))
                else:
                    seen_labels.add(_label_key(item))
        raw[part] = content

    missing = [os.path.join(audio_dir, part, filename)
               for part in parts for filename in raw[part]
               if not os.path.isfile(os.path.join(audio_dir, part, filename))]
    if missing:
        raise MissingTaskFilesError(
            f"HEAR task folder {root}: {len(missing)} audio file(s) listed in the label files "
            f"are missing from {audio_dir}: {list_some(missing)}", missing)

    label_names, vocabulary_source = _read_vocabulary(root, metadata, seen_labels)
    label_to_idx = {label: i for i, label in enumerate(label_names)}
    unknown = sorted(seen_labels - set(label_to_idx))
    if unknown:
        raise ValueError(f"HEAR task folder {root}: labels not in the vocabulary "
                         f"({vocabulary_source}): {list_some(unknown)}")

    counts = {}
    for part in parts:
        for filename in raw[part]:
            counts[filename] = counts.get(filename, 0) + 1
    repeated = any(n > 1 for n in counts.values())
    records = {}
    bad_multiclass = []
    for split in SPLITS:
        records[split] = []
        for part in split_parts[split]:
            for filename, labels in raw[part].items():
                if kind == "event":
                    label = sorted(
                        ({"label": _label_key(e["label"]),
                          "onset": float(e["start"]) / 1000.0,
                          "offset": float(e["end"]) / 1000.0} for e in labels),
                        key=lambda e: (e["onset"], e["offset"], e["label"]))
                    bad = [e for e in label if not e["offset"] >= e["onset"] >= 0]
                    if bad:
                        raise ValueError(f"{label_paths[part]}: {filename!r}: events need "
                                         f"0 <= start <= end, got {bad[0]}")
                else:
                    label = sorted({label_to_idx[_label_key(v)] for v in labels})
                    if prediction_type == "multiclass" and len(label) != 1:
                        bad_multiclass.append(f"{part}/{filename}")
                example_id = f"{part}/{filename}" if repeated else filename
                path = os.path.join(audio_dir, part, filename)
                records[split].append((example_id, path, label))
    if bad_multiclass:
        raise ValueError(f"HEAR task folder {root}: a multiclass task needs exactly one label "
                         f"per file; {len(bad_multiclass)} file(s) have another number: "
                         f"{list_some(bad_multiclass)}")

    metrics, notes = _map_metrics(metadata.get("evaluation"), kind, prediction_type)
    midi_of_label = None
    if ("pitch_acc" in metrics or "chroma_acc" in metrics) and label_names \
            and all(_is_int(label) for label in label_names):
        midi_of_label = np.array([int(label) for label in label_names])
    if fold_note:
        notes.append(fold_note)
    if repeated:
        notes.append("some file names repeat across splits: ids are 'part/filename'")
    duration = metadata.get("sample_duration")
    clip_seconds = float(duration) if isinstance(duration, numbers.Number) else None
    task = HearTask(
        name=name, kind=kind, prediction_type=prediction_type, label_names=label_names,
        metrics=metrics, sample_rate=sample_rate, clip_seconds=clip_seconds,
        midi_of_label=midi_of_label, source=f"HEAR folder {root} (audio from {audio_dir})",
        notes=notes, root=root, audio_dir=audio_dir, metadata=metadata,
        split_parts=split_parts, records=records)
    return task


# -------------------------------------------------------------------------- DCASE 2016
def dcase2016_task2_task(data_dir: Optional[str] = None, **options) -> HearTask:
    """DCASE 2016 task 2 (office sound event detection) in its HEAR 2021 form.

    Looks for `data_dir/dcase2016_task2-hear2021-full`, or `data_dir` itself being that
    folder; 11 event classes, 72 two-minute clips; metric event_onset_fscore (the HEAR
    folder also lists segment_1s_er, which is dropped with a note).

    Raises:
      TaskDataNotFoundError: the folder is not there; the message says what to fetch.
    """
    candidates = []
    if data_dir:
        candidates = [os.path.join(data_dir, DCASE2016_FOLDER), data_dir]
    for candidate in candidates:
        meta_path = os.path.join(candidate, METADATA_FILE)
        if not os.path.isfile(meta_path):
            continue
        if os.path.basename(os.path.normpath(candidate)) == DCASE2016_FOLDER or (
                str(_read_json(meta_path, "task metadata").get("task_name", ""))
                == DCASE2016_TASK2):
            return load_hear_task(candidate, **options)
    where = data_dir if data_dir else "DIR"
    looked = (f"looked for {os.path.join(where, DCASE2016_FOLDER, METADATA_FILE)} and "
              f"{os.path.join(where, METADATA_FILE)}" if data_dir
              else "no --data_dir (data_dir=...) was given")
    raise TaskDataNotFoundError(
        f"{DCASE2016_TASK2}: the HEAR 2021 version of DCASE 2016 task 2 "
        f"({DCASE2016_FOLDER}) was not found ({looked}). msss-tf never downloads data.\n"
        "On a machine with internet access fetch the HEAR 2021 task archive for "
        f"{DCASE2016_FOLDER} (https://hearbenchmark.com/hear-tasks.html: 48 kHz audio on the "
        "Zenodo mirror, 16 kHz in gs://hear2021-archive/tasks/, requester pays; any rate "
        "works, audio is resampled to 16 kHz on loading), or rebuild it with hearpreprocess "
        "(python3 -m hearpreprocess.runner dcase2016_task2 --mode full).\n"
        f"Unpack it so that {os.path.join(where, DCASE2016_FOLDER, METADATA_FILE)} exists "
        f"and pass {where} as --data_dir.")
