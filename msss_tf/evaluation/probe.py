"""Linear and MLP probes on frozen embeddings, scored with each task's metrics.

The encoder never trains here: each split's embeddings come from
`msss_tf.evaluation.embeddings.embed_split` (computed once, cached on disk).

Scene tasks use scene embeddings [n, D]; event tasks train a frame-wise multilabel probe
on timestamp embeddings [n, T, D] (a frame's target: the classes with an event covering
its timestamp) and turn its outputs into events by median filtering and thresholding.

Model selection: every learning rate of the grid trains with early stopping on the
validation split; the best by the task's main validation metric is kept; event
post-processing (threshold, median filter) is tuned on validation too. The test split
is scored once, with the chosen probe.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from typing import Dict, List

import keras
import numpy as np

from msss_tf.atomic import atomic_path, write_json_atomically
from msss_tf.embedding import Embedder
from msss_tf.evaluation import metrics as metric_lib
from msss_tf.evaluation.embeddings import embed_split
from msss_tf.outputs import ensure_writable_folder, writing_to


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How a probe is trained.

    probe: "linear" (the paper: one Dense layer after dropout) or "mlp" (HEAR's kit:
        `hidden_layers` hidden layers of `hidden_units`, ReLU).
    learning_rates: the grid searched on the validation split.
    max_epochs / patience: early stopping on the validation main metric.
    """

    probe: str = "linear"
    hidden_layers: int = 1
    hidden_units: int = 1024
    dropout: float = 0.1
    learning_rates: tuple = (1e-3, 1e-4)
    batch_size: int = 1024
    max_epochs: int = 250
    patience: int = 20
    seed: int = 0

    def __post_init__(self):
        if self.probe not in ("linear", "mlp"):
            raise ValueError(f"--probe must be 'linear' or 'mlp', got {self.probe!r}")
        if self.probe == "mlp" and self.hidden_layers not in (1, 2):
            raise ValueError(f"hidden_layers must be 1 or 2, got {self.hidden_layers}")


# ---------------------------------------------------------------------- targets
def multi_hot(labels: List[List[int]], num_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), num_classes), np.float32)
    for i, classes in enumerate(labels):
        out[i, list(classes)] = 1.0
    return out


def frame_targets(events, timestamps_ms, label_names) -> np.ndarray:
    """[T, C]: 1 where an event of class c covers the timestamp (onset <= t < offset)."""
    index = {name: i for i, name in enumerate(label_names)}
    seconds = np.asarray(timestamps_ms, np.float64) / 1000.0
    out = np.zeros((len(seconds), len(label_names)), np.float32)
    for event in events:
        active = (seconds >= event["onset"]) & (seconds < event["offset"])
        out[active, index[event["label"]]] = 1.0
    return out


# ------------------------------------------------------------------------ probes
def build_probe(input_dim: int, num_classes: int, settings: ProbeSettings,
                multilabel: bool, train_x: np.ndarray) -> keras.Model:
    """Standardise (train statistics) -> [hidden ReLU layers] -> dropout -> Dense."""
    inputs = keras.Input(shape=(input_dim,), name="embedding")
    norm = keras.layers.Normalization(name="standardise")
    norm.adapt(train_x)
    x = norm(inputs)
    if settings.probe == "mlp":
        for i in range(settings.hidden_layers):
            x = keras.layers.Dense(settings.hidden_units, activation="relu", name=f"hidden{i}")(x)
    x = keras.layers.Dropout(settings.dropout)(x)
    activation = "sigmoid" if multilabel else "softmax"
    outputs = keras.layers.Dense(num_classes, activation=activation, name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"{settings.probe}_probe")


def train_probe(train_x, train_y, valid_x, valid_y, valid_score_fn, num_classes,
                settings: ProbeSettings, multilabel: bool):
    """Trains one probe per learning rate of the grid, each with early stopping on the
    validation loss (restoring its best epoch), and keeps the one whose task metric
    `valid_score_fn(model)` (higher is better) is best on validation.

    Returns (model, validation score, learning rate).
    """
    best = (None, -np.inf, None)
    loss = "binary_crossentropy" if multilabel else "sparse_categorical_crossentropy"
    batch_size = min(settings.batch_size, len(train_x))
    for lr in settings.learning_rates:
        keras.utils.set_random_seed(settings.seed)
        model = build_probe(train_x.shape[-1], num_classes, settings, multilabel, train_x)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings.patience, restore_best_weights=True)
        model.fit(train_x, train_y, batch_size=batch_size, epochs=settings.max_epochs,
                  validation_data=(valid_x, valid_y), callbacks=[stopper], verbose=0)
        score = float(valid_score_fn(model))
        if score > best[1]:
            best = (model, score, lr)
    return best


def _predict(model, x):
    return model.predict(x, batch_size=4096, verbose=0)


def _scene_scores(task, metric, labels, probs):
    if metric == "mAP":
        return metric_lib.multilabel_mean_average_precision(multi_hot(labels, len(task.label_names)), probs)
    y = np.array([l[0] for l in labels])
    if metric == "top1_acc":
        return metric_lib.top1_accuracy(y, probs)
    if metric == "pitch_acc":
        return metric_lib.pitch_accuracy(y, probs)
    if metric == "chroma_acc":
        return metric_lib.chroma_accuracy(y, probs, task.midi_of_label)
    raise ValueError(f"metric {metric!r} does not apply to scene task {task.name}")


@dataclasses.dataclass
class ProbeResult:
    task: str
    metrics: Dict[str, float]  # test split
    valid_metrics: Dict[str, float]
    learning_rate: float
    probe: keras.Model
    extras: dict  # e.g. chosen event post-processing


def probe_scene_task(task, embedder, settings, cache_dir=None, progress=True) -> ProbeResult:
    splits = {s: embed_split(embedder, task, s, cache_dir, progress=progress) for s in task.splits}
    multilabel = task.prediction_type == "multilabel"
    num_classes = len(task.label_names)

    def targets(split):
        labels = splits[split]["labels"]
        return multi_hot(labels, num_classes) if multilabel else np.array([l[0] for l in labels])

    main = task.metrics[0]
    valid = splits["valid"]
    valid_fn = lambda m: _scene_scores(task, main, valid["labels"], _predict(m, valid["x"]))
    model, _, lr = train_probe(splits["train"]["x"], targets("train"), valid["x"],
                               targets("valid"), valid_fn, num_classes, settings, multilabel)
    score = lambda split: {
        metric: float(_scene_scores(task, metric, splits[split]["labels"],
                                    _predict(model, splits[split]["x"])))
        for metric in task.metrics
    }
    return ProbeResult(task.name, score("test"), score("valid"), lr, model, {})


def probe_event_task(task, embedder, settings, cache_dir=None, progress=True) -> ProbeResult:
    splits = {s: embed_split(embedder, task, s, cache_dir, progress=progress) for s in task.splits}
    names = task.label_names

    def frames(split):
        d = splits[split]
        x = np.concatenate(d["x"])
        y = np.concatenate([frame_targets(ev, ts, names)
                            for ev, ts in zip(d["labels"], d["timestamps_ms"])])
        return x, y

    def probs_by_file(model, split):
        d = splits[split]  # one predict call for the whole split, then cut per file
        probs = _predict(model, np.concatenate(d["x"]))
        ends = np.cumsum([len(x) for x in d["x"]])
        return dict(zip(d["ids"], np.split(probs, ends[:-1])))

    def reference(split):
        d = splits[split]
        return {i: list(ev) for i, ev in zip(d["ids"], d["labels"])}

    def stamps(split):
        d = splits[split]
        return {i: t for i, t in zip(d["ids"], d["timestamps_ms"])}

    def valid_fn(model):
        scores = metric_lib.event_detection_scores(
            probs_by_file(model, "valid"), stamps("valid"), reference("valid"), names)
        return scores["onset_fmeasure"]

    train_x, train_y = frames("train")
    valid_x, valid_y = frames("valid")
    model, _, lr = train_probe(train_x, train_y, valid_x, valid_y, valid_fn, len(names),
                               settings, multilabel=True)
    chosen = metric_lib.tune_event_postprocessing(
        probs_by_file(model, "valid"), stamps("valid"), reference("valid"), names)
    post = {k: chosen[k] for k in ("threshold", "median_filter_ms")}
    result = {}
    for split in ("valid", "test"):
        scores = metric_lib.event_detection_scores(
            probs_by_file(model, split), stamps(split), reference(split), names, **post)
        result[split] = {"event_onset_fscore": float(scores["onset_fmeasure"])}
    return ProbeResult(task.name, result["test"], result["valid"], lr, model, post)


def probe_task(task, embedder, settings: ProbeSettings, cache_dir=None, progress=True):
    if task.kind == "scene":
        return probe_scene_task(task, embedder, settings, cache_dir, progress)
    if task.kind == "event":
        return probe_event_task(task, embedder, settings, cache_dir, progress)
    raise ValueError(f"task {task.name}: unknown kind {task.kind!r}")


# ----------------------------------------------------------------------- results
RESULT_FIELDS = ("task", "metric", "value", "split", "encoder", "probe", "learning_rate",
                 "seed", "extras")


def result_rows(result: ProbeResult, encoder: str, settings: ProbeSettings) -> List[dict]:
    rows = []
    for split, values in (("test", result.metrics), ("valid", result.valid_metrics)):
        for metric, value in values.items():
            rows.append({
                "task": result.task, "metric": metric, "value": round(float(value), 6),
                "split": split, "encoder": encoder, "probe": settings.probe,
                "learning_rate": result.learning_rate, "seed": settings.seed,
                "extras": json.dumps(result.extras, sort_keys=True),
            })
    return rows


def write_results(rows: List[dict], out_dir: str) -> Dict[str, str]:
    """Writes results.json and results.csv into `out_dir`; returns their paths. A folder
    that cannot be written is an `OutputFolderError` naming it."""
    json_path = os.path.join(out_dir, "results.json")
    csv_path = os.path.join(out_dir, "results.csv")
    with writing_to(out_dir, "the probe results (--out_dir)"):
        os.makedirs(out_dir, exist_ok=True)
        write_json_atomically(json_path, {"results": rows,
                                          "written": time.strftime("%Y-%m-%d %H:%M:%S")})
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return {"json": json_path, "csv": csv_path}


def format_table(rows, headers) -> str:
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line([str(h) for h in headers]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line([_fmt(c) for c in r]) for r in rows]
    return "\n".join(out)


def _fmt(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def format_results_table(rows: List[dict], split: str = "test") -> str:
    chosen = [r for r in rows if r["split"] == split]
    table = [(r["task"], r["metric"], float(r["value"]), r["encoder"], r["probe"]) for r in chosen]
    return format_table(table, ("task", "metric", split, "encoder", "probe"))


# -------------------------------------------------------------------------- job
def export_classifier(embedder, probe, task, export_dir: str) -> dict:
    """The scene probe's classifier .tflite for MediaPipe's AudioClassifier, beside its
    SavedModel in `export_dir`, and its top-class agreement with that SavedModel on the
    test split, written to `export_dir`/export_summary.json and returned."""
    from msss_tf.export import SUMMARY_FILENAME, export_probe_classifier
    from msss_tf.evaluation.tflite_classifier import classifier_agreement

    path = export_probe_classifier(embedder, probe, task.label_names, task.name, export_dir)
    agreement = classifier_agreement(path, export_dir, task, split="test")
    summary = {"classifier_tflite": os.path.relpath(path, export_dir),
               "labels": list(task.label_names), "test_agreement": agreement}
    write_json_atomically(os.path.join(export_dir, SUMMARY_FILENAME), summary)
    a = agreement
    print(f"  classifier {path}: top class as the SavedModel's on {a['windows_agree']}/"
          f"{a['windows']} test windows and {a['agree']}/{a['clips']} whole clips "
          f"(accuracy {a['tflite_top1_acc']:.3f} vs {a['saved_model_top1_acc']:.3f})")
    return summary


def run_probes(model, tasks, settings: ProbeSettings, out_dir: str, data_dir=None,
               export_dir=None, encoder_name=None, progress=True, print_table=True):
    """Probes each task on a frozen encoder; writes results (and exports).

    Returns (result rows, {task: export path}, {task: ProbeResult}).

    Args:
        model: a run directory or .keras path, or an `Embedder` (or an object with its
            `scene_embeddings` / `timestamp_embeddings` methods).
        tasks: task names or HEAR folders (see `msss_tf.data.tasks.load_task`), or `Task`
            objects (a built-in task rendered once serves several encoders).
        export_dir: base folder for probe SavedModels (`<task>_<probe>/<version>`), or None.
    """
    from msss_tf.data.tasks import Task, load_task
    from msss_tf.export import export_probe, next_version

    if isinstance(model, (str, os.PathLike)):
        embedder = Embedder.from_path(model)
        name = encoder_name or os.path.basename(os.path.normpath(model))
    else:  # an Embedder, or anything with its scene/timestamp methods (log-mel statistics)
        embedder, name = model, encoder_name or "embedder"
    from msss_tf.packages import require_modules

    loaded = [t if isinstance(t, Task) else load_task(t, data_dir=data_dir)
              for t in tasks]  # fail early on a bad name
    # A read-only output folder fails now, not after the embeddings are computed.
    ensure_writable_folder(out_dir, "the probe results (--out_dir)")
    if export_dir:
        ensure_writable_folder(export_dir, "the probe exports (--export_dir)")
    events = [t.name for t in loaded if t.kind == "event"]
    if events:  # before any embedding: the event metric is sed_eval's
        require_modules(("sed_eval", "dcase_util"), f"probing {', '.join(events)}")
    rows, exports, results = [], {}, {}
    for task in loaded:
        print(f"probing {task.name} ({task.kind}, {len(task.label_names)} classes) "
              f"with a {settings.probe} probe on {name}")
        result = probe_task(task, embedder, settings, os.path.join(out_dir, "embeddings"),
                            progress=progress)
        print(task.report())  # sizes, padding, skipped files
        rows.extend(result_rows(result, name, settings))
        results[task.name] = result
        if export_dir:
            base = os.path.join(export_dir, f"{task.name}_{settings.probe}")
            path = os.path.join(base, str(next_version(base)))
            exports[task.name] = export_probe(embedder, result.probe, task.label_names,
                                              task.kind, path)
            print(f"  exported {path}")
            if task.kind == "scene" and hasattr(embedder, "window_frames_tf"):
                export_classifier(embedder, result.probe, task, path)
        paths = write_results(rows, out_dir)  # after every task: a later failure keeps these
    if not loaded:
        paths = write_results(rows, out_dir)
    if print_table:
        print("\n" + format_results_table(rows))
        print(f"results: {paths['json']} and {paths['csv']}")
    return rows, exports, results
