"""The ablation study of the paper (Table 1, Table 2), offline, with seeds, and its report.

    run_study(out_dir, budget, seeds, configs, tasks) -> study directory
    write_report(out_dir)           -> results.csv, results.md, one PNG per task/metric
    render_docs(out_dir, docs_path) -> docs/results.md (+ plots copied beside it)

Rows (`CONFIGURATIONS`, named as in method.md's results table): COLA (clip only),
clip + frame, clip + pitch, all three (the proposed method), all three with cosine
similarity; and two reference rows that are not pre-trained: a randomly initialised
encoder of the same architecture, and the log-mel front end alone (`LogMelStatsEmbedder`:
mean and standard deviation over time of the log-mel frames).

Every pre-trained row uses the same budget (`BUDGETS`: steps, batch, learning rate, encoder
size, probe epochs, task size; every training hyper-parameter of the study is there) and
the same seeds; seed s sets the model initialisation, the pre-training data order and views,
and the probe initialisation. Each (configuration, seed) pre-trains on the built-in
synthetic corpus, then probes the downstream tasks on the frozen encoder.

Layout of a study directory:

    study.json                         budget, seeds, configurations, tasks, invocations
    runs/<config>/seed-<s>/pretrain/   the pre-training run directory (`msss_tf.pretrain`)
    runs/<config>/seed-<s>/run_result.json   probe results and timings: the run is done
    results.csv, results.md            mean +- std over seeds per task / metric and row
    plots/<task>-<metric>.png          one bar chart per task / metric (error bar: std)

Resuming: a (configuration, seed) whose `run_result.json` exists is neither trained nor
probed again; an interrupted pre-training resumes through `pretrain`'s own resume (one
epoch granularity); an interrupted probe stage is redone.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import platform
import re
import shlex
import shutil
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from msss_tf.runs import portable_command, portable_path
from msss_tf.config import MSSSConfig
from msss_tf.data.audio import write_json_atomically
from msss_tf.embed import as_audio_batch

STUDY_FILE = "study.json"
RUN_RESULT = "run_result.json"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
PLOT_DIR = "plots"
BUILTIN_TASKS = ("synthetic_scene", "synthetic_pitch", "synthetic_events")
REAL_TASKS = ("speech_commands", "nsynth_pitch", "dcase2016_task2")


# ------------------------------------------------------------------------- budgets
@dataclasses.dataclass(frozen=True)
class Budget:
    """Every training hyper-parameter of the study, in one place.

    train_steps / steps_per_epoch: pre-training optimiser steps per run (the same for
        every configuration) and steps between checkpoints (the resume granularity).
    synthetic_clips: clips in the built-in pre-training corpus.
    config: `MSSSConfig` fields shared by every row (batch_size, learning_rate,
        width_coefficient, depth_coefficient, lambda_frame, ...); each configuration sets
        only `losses` and `similarity` on top, and the seed.
    task_scale: size of the built-in downstream tasks (1 = "small", see
        `msss_tf.data.tasks.synthetic_tasks`).
    probe_*: the linear probe (`msss_tf.probe.ProbeSettings`): epochs, early-stopping
        patience, learning-rate grid (chosen on the validation split), batch size (32:
        at the paper's 1024 an epoch of a built-in task is a single optimiser step, and
        the probe stops undertrained).
    eager: pre-train (and calibrate batch norm) eagerly (`tf.config.run_functions_eagerly`
        around those steps; tf.data stays a graph). Tracing the train step costs 30-140 s
        per run on a CPU; for a step or two on a tiny encoder (the smoke budget) eager
        execution is far cheaper. Embedding and the probes' fits stay compiled: an eager
        Keras fit pays ~0.05-0.15 s per step even for one Dense layer. Same code, same
        numbers up to float rounding.
    default_seeds: seeds 0..N-1 when the command line does not say.
    calibration_segments: the random-init row's batch-norm statistics are estimated on
        this many segments of the pre-training corpus (`msss_tf.embed.calibrate_batch_norm`);
        the row "random init, BN at init" keeps the initial statistics.
        calibration_passes: batches of that calibration (0: enough for the moving averages
        to forget their initial values, 66 at momentum 0.9).
    """

    name: str
    train_steps: int
    steps_per_epoch: int
    synthetic_clips: int
    config: Dict[str, object]
    task_scale: float
    probe_epochs: int
    probe_patience: int
    probe_learning_rates: Tuple[float, ...]
    probe_batch_size: int = 32  # the paper's 1024 makes an epoch of a small task one step
    eager: bool = False
    default_seeds: int = 3  # seeds when --seeds is not given
    calibration_segments: int = 256  # random init: 0.96 s corpus segments for batch norm
    calibration_passes: int = 0  # training-mode calls; 0: as many as the momentum needs

    def __post_init__(self):
        object.__setattr__(self, "config", dict(self.config))
        object.__setattr__(self, "probe_learning_rates",
                           tuple(float(x) for x in self.probe_learning_rates))
        for field in ("losses", "similarity", "seed"):
            if field in self.config:
                raise ValueError(f"budget {self.name}: config must not set {field!r} "
                                 "(each configuration / seed sets it)")
        MSSSConfig.from_dict(self.config)  # unknown or invalid fields fail here
        if self.train_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError(f"budget {self.name}: train_steps and steps_per_epoch must be >= 1")
        if not self.task_scale > 0:
            raise ValueError(f"budget {self.name}: task_scale must be positive")
        if self.probe_epochs < 1 or not self.probe_learning_rates:
            raise ValueError(f"budget {self.name}: needs probe_epochs >= 1 and a learning rate")

    def msss_config(self, **changes) -> MSSSConfig:
        return MSSSConfig.from_dict({**self.config, **changes})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["probe_learning_rates"] = list(self.probe_learning_rates)
        return d


BUDGETS: Dict[str, Budget] = {
    # The runner end to end in a minute or two (CI): a tiny encoder, a handful of eager
    # steps, tiny tasks. Its numbers mean nothing.
    "smoke": Budget(
        name="smoke", train_steps=1, steps_per_epoch=1, synthetic_clips=16,
        config=dict(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4,
                    learning_rate=1e-3),
        task_scale=0.1, probe_epochs=5, probe_patience=5, probe_learning_rates=(1e-3,),
        eager=True, default_seeds=1, calibration_segments=8, calibration_passes=2),
    # 5 configurations x 3 seeds + the two reference rows on 2 CPU cores. The encoder is
    # the quarter-width, quarter-depth member of the EfficientNet family (B0 is 1.0 / 1.0;
    # the demo's is 0.5 / 0.5), which the issue allows for the CPU budget: at 0.5 / 0.5 the
    # study takes ~65-70 min of CPU time (CPU seconds measured at that size, 2 cores, Nov
    # 2026: per pre-trained run ~70 s tracing the train step + ~8 s set-up/saving + 0.55 s
    # per step at batch 16 + ~77 s of probes; random init ~80 s; log-mel ~33 s). Pitch
    # target in semitones as in the demo (the authors' rho - 1 barely trains in a few
    # hundred steps). On a machine shared with other jobs, wall time was 2.5-4x CPU time.
    "default": Budget(
        name="default", train_steps=150, steps_per_epoch=50, synthetic_clips=256,
        config=dict(width_coefficient=0.25, depth_coefficient=0.25, batch_size=16,
                    learning_rate=1e-3, pitch_target="semitones"),
        task_scale=1.0, probe_epochs=60, probe_patience=8, probe_learning_rates=(1e-3,)),
}


def load_budget(spec: str) -> Budget:
    """A budget by name ("smoke", "default") or from a JSON file.

    The file holds `Budget` fields; with "base": NAME it starts from that budget and
    overrides only what it lists ("config" is merged field by field), e.g.
    {"base": "default", "train_steps": 300, "config": {"lambda_frame": 0.1}}.
    """
    if spec in BUDGETS:
        return BUDGETS[spec]
    if not os.path.isfile(spec):
        raise ValueError(f"--budget={spec!r}: expected one of {sorted(BUDGETS)} or a JSON file")
    with open(spec) as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{spec}: not valid JSON ({e})") from e
    base = d.pop("base", None)
    if base is not None:
        if base not in BUDGETS:
            raise ValueError(f"{spec}: base {base!r} is not one of {sorted(BUDGETS)}")
        merged = BUDGETS[base].to_dict()
        merged["config"] = {**merged["config"], **d.pop("config", {})}
        merged.pop("name")  # a file's budget is named after the file unless it says
        merged.update(d)
        d = merged
    names = {f.name for f in dataclasses.fields(Budget)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{spec}: unknown budget field(s) {unknown}; known: {sorted(names)}")
    d.setdefault("name", os.path.splitext(os.path.basename(spec))[0])
    return Budget(**d)


# ------------------------------------------------------------------ configurations
@dataclasses.dataclass(frozen=True)
class Configuration:
    key: str  # directory and --configs name
    label: str  # as in method.md's results table
    kind: str  # "pretrained" | "random_init" | "logmel"
    losses: Tuple[str, ...] = ("clip", "frame", "pitch")
    similarity: str = "bilinear"
    paper_row: Optional[str] = None  # the row of PAPER_RESULTS
    calibrate: bool = True  # random_init: batch-norm statistics estimated on the corpus
    default: bool = True  # in a study when --configs does not say


CONFIGURATIONS: Tuple[Configuration, ...] = (
    Configuration("clip", "COLA (L_clip)", "pretrained", ("clip",), paper_row="COLA (L_clip)"),
    Configuration("clip_frame", "L_clip + L_frame", "pretrained", ("clip", "frame"),
                  paper_row="L_clip + L_frame"),
    Configuration("clip_pitch", "L_clip + L_pitch", "pretrained", ("clip", "pitch"),
                  paper_row="L_clip + L_pitch"),
    Configuration("all", "all three (proposed)", "pretrained", paper_row="all three (proposed)"),
    Configuration("all_cosine", "all three, cosine similarity", "pretrained",
                  similarity="cosine", paper_row="all three, cosine similarity"),
    # Like for like with a trained encoder: random weights, batch-norm statistics
    # estimated on the pre-training corpus.
    Configuration("random_init", "random init (reference)", "random_init"),
    # Batch norm at its initial statistics (mean 0, variance 1): in effect a random linear
    # map of the log-mel patch (see Embedder.random_init). Only with --configs.
    Configuration("random_init_bn_at_init", "random init, BN at init (reference)",
                  "random_init", calibrate=False, default=False),
    Configuration("logmel", "log-mel mean+std (reference)", "logmel"),
)
CONFIG_BY_KEY = {c.key: c for c in CONFIGURATIONS}

# The paper's Table 1 / Table 2 (method.md), on its REAL tasks: Speech Commands v2 top-1,
# DCASE 2016 task 2 onset F-measure, NSynth pitch and chroma accuracy. Not our tasks.
PAPER_COLUMNS = (
    ("speech_commands", "top1_acc", "Speech Commands acc"),
    ("dcase2016_task2", "event_onset_fscore", "DCASE 2016 T2 onset F"),
    ("nsynth_pitch", "pitch_acc", "NSynth pitch acc"),
    ("nsynth_pitch", "chroma_acc", "NSynth chroma acc"),
)
PAPER_RESULTS = {
    "PANNs (supervised, full AudioSet)": (0.083, 0.754, 0.012, 0.096),
    "COLA (L_clip)": (0.459, 0.232, 0.434, 0.470),
    "L_clip + L_frame": (0.535, 0.344, 0.424, 0.462),
    "L_clip + L_pitch": (0.585, 0.244, 0.428, 0.463),
    "all three (proposed)": (0.572, 0.278, 0.452, 0.487),
    "all three, cosine similarity": (0.401, 0.094, 0.212, 0.238),
}
# Which of our tasks plays the part of which real task (same shape of problem).
TASK_ANALOGUE = {"synthetic_scene": "speech_commands", "synthetic_pitch": "nsynth_pitch",
                 "synthetic_events": "dcase2016_task2"}


def paper_table() -> Dict[str, Dict[Tuple[str, str], float]]:
    """{paper row: {(real task, metric): value}}."""
    return {row: {(t, m): v for (t, m, _), v in zip(PAPER_COLUMNS, values)}
            for row, values in PAPER_RESULTS.items()}


def select_configurations(keys: Optional[Sequence[str]] = None) -> List[Configuration]:
    if not keys:
        return [c for c in CONFIGURATIONS if c.default]
    unknown = [k for k in keys if k not in CONFIG_BY_KEY]
    if unknown:
        raise ValueError(f"--configs: unknown {unknown}; choose from {list(CONFIG_BY_KEY)}")
    return [c for c in CONFIGURATIONS if c.key in keys]


# ------------------------------------------------------- reference: log-mel alone
class LogMelStatsEmbedder:
    """The reference row "log-mel front end alone": no encoder, no training.

    Same interface as `msss_tf.embed.Embedder` where the probes use it. An embedding is
    the mean and the standard deviation over time of the log-mel frames (2 x n_mels = 128
    values): for `scene_embeddings` over the whole clip; for `timestamp_embeddings` over
    the frames whose centres lie within +-160 ms of each timestamp (the span of one
    320 ms encoder frame), timestamps at the Embedder's hop (0, 40, 80, ... ms, never past
    the end of the audio: T = samples // hop_samples + 1). A clip shorter than one STFT
    window is zero-padded to one window.
    """

    def __init__(self, config: Optional[MSSSConfig] = None, hop_ms: float = 40.0,
                 context_ms: float = 320.0):
        from msss_tf.embed import WindowPlan
        from msss_tf.frontend import LogMelFrontEnd

        self.config = config or MSSSConfig()
        plan = WindowPlan(self.config, hop_ms)  # the same hop rules as Embedder
        self.hop_ms = plan.hop_ms
        self.hop_samples = plan.hop_samples
        self.context_ms = float(context_ms)
        self.frontend = LogMelFrontEnd.from_msss_config(self.config)
        self.sample_rate = self.config.sample_rate
        self.scene_embedding_size = self.timestamp_embedding_size = 2 * self.config.n_mels

    def _log_mel(self, audio) -> np.ndarray:
        audio = as_audio_batch(audio)
        short = self.config.stft_window - audio.shape[1]
        if short > 0:
            audio = np.pad(audio, ((0, 0), (0, short)))
        return np.asarray(self.frontend(audio), np.float64)  # [n, F, mels]

    def scene_embeddings(self, audio, batch_size: int = 16) -> np.ndarray:
        mel = self._log_mel(audio)
        return np.concatenate([mel.mean(1), mel.std(1)], axis=-1).astype(np.float32)

    def frame_centres_ms(self, num_frames: int) -> np.ndarray:
        c = self.config
        return 1000.0 * (np.arange(num_frames) * c.stft_hop + c.stft_window / 2) / c.sample_rate

    def timestamp_embeddings(self, audio, batch_size: int = 8):
        audio = np.asarray(audio, np.float32)
        if audio.ndim == 1:
            audio = audio[None, :]
        mel = self._log_mel(audio)  # [n, F, M]
        n, frames, _ = mel.shape
        num_timestamps = audio.shape[1] // self.hop_samples + 1
        stamps = np.arange(num_timestamps, dtype=np.float64) * self.hop_ms
        centres = self.frame_centres_ms(frames)
        half = self.context_ms / 2
        lo = np.searchsorted(centres, stamps - half, side="left")
        hi = np.searchsorted(centres, stamps + half, side="left")
        # Never empty: the nearest frame when no centre falls inside (short clips).
        nearest = np.clip(np.searchsorted(centres, stamps), 0, frames - 1)
        empty = hi <= lo
        lo = np.where(empty, nearest, lo)
        hi = np.where(empty, nearest + 1, hi)
        zero = np.zeros((n, 1, mel.shape[2]))
        s1 = np.concatenate([zero, np.cumsum(mel, axis=1)], axis=1)
        s2 = np.concatenate([zero, np.cumsum(mel * mel, axis=1)], axis=1)
        count = (hi - lo)[None, :, None].astype(np.float64)
        mean = (s1[:, hi] - s1[:, lo]) / count
        var = np.maximum((s2[:, hi] - s2[:, lo]) / count - mean * mean, 0.0)
        emb = np.concatenate([mean, np.sqrt(var)], axis=-1).astype(np.float32)
        return emb, np.tile(stamps.astype(np.float32)[None, :], (n, 1))


# ----------------------------------------------------------------------- the runs
def run_dir(out_dir: str, key: str, seed: int) -> str:
    return os.path.join(out_dir, "runs", key, f"seed-{seed}")


def load_tasks(names: Sequence[str], budget: Budget, data_dir: Optional[str] = None):
    from msss_tf.data.tasks import load_task

    tasks = []
    for name in names:
        if name in BUILTIN_TASKS:
            tasks.append(load_task(name, scale=budget.task_scale))
        else:
            tasks.append(load_task(name, data_dir=data_dir))
    return tasks


def available_real_tasks(data_dir: Optional[str]) -> List[str]:
    """The real tasks whose data is under `data_dir` (nothing is downloaded)."""
    if not data_dir:
        return []
    from msss_tf.data.tasks import load_task

    found = []
    for name in REAL_TASKS:
        try:
            load_task(name, data_dir=data_dir)
        except Exception as e:  # absent or incomplete: say so and go on
            print(f"  {name}: not used ({type(e).__name__}: {str(e).splitlines()[0]})")
        else:
            found.append(name)
    return found


CALIBRATION_SEED_OFFSET = 10_007  # calibration segments: another draw than training's


def make_embedder(configuration: Configuration, budget: Budget, seed: int, out: str):
    """Returns (embedder, info): pre-trains first for a pre-trained configuration."""
    from msss_tf.embed import Embedder

    if configuration.kind == "logmel":
        return LogMelStatsEmbedder(budget.msss_config(seed=seed)), {"pretrain_seconds": 0.0}
    config = budget.msss_config(losses=configuration.losses,
                                similarity=configuration.similarity, seed=seed)
    if configuration.kind == "random_init":
        calibration = None
        if configuration.calibrate and budget.calibration_segments > 0:
            from msss_tf.data.pipeline import sample_segments

            calibration = sample_segments("synthetic", config, count=budget.calibration_segments,
                                          seed=seed + CALIBRATION_SEED_OFFSET,
                                          num_clips=budget.synthetic_clips)
        embedder = Embedder.random_init(config, seed=seed)
        passes = 0
        if calibration is not None:
            from msss_tf.embed import calibrate_batch_norm

            passes = calibrate_batch_norm(embedder.encoder, embedder.frontend, calibration,
                                          passes=budget.calibration_passes)
        return embedder, {"pretrain_seconds": 0.0, "calibration_passes": passes,
                          "calibration_segments": 0 if calibration is None else len(calibration)}
    from msss_tf.pretrain import pretrain

    started = time.time()
    model_dir = os.path.join(out, "pretrain")
    result = pretrain(
        config, data="synthetic", model_dir=model_dir, train_steps=budget.train_steps,
        steps_per_epoch=budget.steps_per_epoch, synthetic_clips=budget.synthetic_clips,
        verbose=0)
    final = {k: round(float(v[-1]), 6) for k, v in result.history.items() if v}
    info = {"pretrain_seconds": time.time() - started, "train_steps": result.steps,
            "epochs_this_run": result.epochs_run, "final_pretrain_metrics": final}
    return Embedder.from_model(result.model), info


def probe_all(embedder, tasks, budget: Budget, seed: int, encoder_name: str) -> List[dict]:
    from msss_tf.probe import ProbeSettings, probe_task, result_rows

    settings = ProbeSettings(learning_rates=budget.probe_learning_rates,
                             max_epochs=budget.probe_epochs, patience=budget.probe_patience,
                             batch_size=budget.probe_batch_size,
                             seed=seed)
    rows = []
    for task in tasks:
        result = probe_task(task, embedder, settings, cache_dir=None, progress=False)
        rows.extend(result_rows(result, encoder_name, settings))
    return rows


def run_one(configuration: Configuration, seed: int, budget: Budget, tasks,
            out_dir: str) -> dict:
    """Pre-trains (if needed) and probes one (configuration, seed); writes run_result.json."""
    import tensorflow as tf

    out = run_dir(out_dir, configuration.key, seed)
    os.makedirs(out, exist_ok=True)
    started, cpu_started = time.time(), _cpu_seconds()
    eager_before = tf.config.functions_run_eagerly()
    # Eager only where tracing costs more than it saves: the few pre-training steps of a
    # tiny budget. The probes' Keras fits stay compiled (eagerly, each step of even a
    # one-Dense-layer probe costs ~0.15 s; the smoke study spent 2/3 of its time there).
    tf.config.run_functions_eagerly(budget.eager or eager_before)
    try:
        embedder, info = make_embedder(configuration, budget, seed, out)
    finally:
        tf.config.run_functions_eagerly(eager_before)
    probe_started = time.time()
    rows = probe_all(embedder, tasks, budget, seed, configuration.key)
    result = {
        "configuration": configuration.key, "label": configuration.label,
        "kind": configuration.kind, "seed": seed, "budget": budget.name,
        "tasks": [t.name for t in tasks], "rows": rows,
        "probe_seconds": time.time() - probe_started,
        "seconds": time.time() - started, "cpu_seconds": _cpu_seconds() - cpu_started, **info,
    }
    write_json_atomically(os.path.join(out, RUN_RESULT), result)
    return result


def _cpu_seconds() -> float:
    """CPU time of this process (user + system, all threads): on a shared machine a
    steadier measure of a run's cost than wall time."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def read_run_result(out_dir: str, key: str, seed: int) -> Optional[dict]:
    path = os.path.join(run_dir(out_dir, key, seed), RUN_RESULT)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _eta(pending: List[Configuration], done_seconds: Dict[str, List[float]]) -> Optional[float]:
    """Remaining time: per run, the mean time of finished runs of its kind (pre-trained,
    random init, log-mel) this session, else of all finished runs."""
    every = [s for v in done_seconds.values() for s in v]
    if not every:
        return None
    total = 0.0
    for c in pending:
        same = done_seconds.get(c.kind)
        total += float(np.mean(same if same else every))
    return total


def _load_average() -> Optional[float]:
    """The 1-minute load average: wall times on a shared machine depend on it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_cores": _usable_cores(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version()}


def _check_same_budget(saved: dict, budget: Budget, out_dir: str) -> None:
    asked = budget.to_dict()
    clashes = [f"{k}: saved {saved.get(k)!r}, asked {asked[k]!r}"
               for k in sorted(asked) if k != "name" and saved.get(k) != asked[k]]
    if clashes:
        raise ValueError(f"{out_dir} already holds a study with another budget "
                         f"({'; '.join(clashes)}): every row must share one budget. "
                         "Use a new --out_dir.")


# Runs at a time by default. The smoke budget's tiny tensors keep TensorFlow on about one
# core: on 2 idle cores its 7 rows took 90 s with two workers, 151 s with one (same
# numbers). Larger budgets already use every core in one process.
DEFAULT_JOBS = {"smoke": 2}


def default_jobs(budget: Budget) -> int:
    """The budget's default number of parallel runs, capped by the usable cores."""
    return max(1, min(DEFAULT_JOBS.get(budget.name, 1), _usable_cores()))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_WORKER_TASKS: Dict[tuple, list] = {}


def _worker_init(threads: int) -> None:
    """A fresh (spawned) worker: TensorFlow's thread pools sized to its share of cores."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _worker_run(key: str, seed: int, budget: Budget, task_names: Tuple[str, ...],
                data_dir: Optional[str], out_dir: str) -> dict:
    """One (configuration, seed) in a worker; the tasks are built once per worker."""
    cache_key = (budget.name, budget.task_scale, task_names, data_dir)
    if cache_key not in _WORKER_TASKS:
        _WORKER_TASKS[cache_key] = load_tasks(list(task_names), budget, data_dir)
    return _run_and_release(CONFIG_BY_KEY[key], seed, budget, _WORKER_TASKS[cache_key],
                            out_dir)


def _run_and_release(configuration: Configuration, seed: int, budget: Budget, tasks,
                     out_dir: str) -> dict:
    """`run_one`, then the finished run's models freed (Keras session, garbage)."""
    import keras

    result = run_one(configuration, seed, budget, tasks, out_dir)
    keras.backend.clear_session()
    gc.collect()
    return result


def _run_in_workers(pending, budget, task_names, data_dir, out_dir, jobs, finished) -> None:
    """Runs `pending` in `jobs` spawned worker processes (TensorFlow does not survive a
    fork); calls finished(i, configuration, seed, result) as each run ends. A failed run
    is reported, the others finish, and the first failure is raised at the end."""
    import concurrent.futures
    import multiprocessing

    threads = max(1, _usable_cores() // jobs)
    print(f"    {len(pending)} runs in {jobs} worker processes ({threads} thread(s) each)",
          flush=True)
    failures = []
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init, initargs=(threads,)) as pool:
        futures = {pool.submit(_worker_run, c.key, s, budget, tuple(task_names), data_dir,
                               out_dir): (c, s) for c, s in pending}
        for i, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            configuration, seed = futures[future]
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 - reported, raised after the others
                print(f"[{i}/{len(pending)}] {configuration.key} seed {seed} FAILED: "
                      f"{type(error).__name__}: {error}", flush=True)
                failures.append((configuration.key, seed, error))
                continue
            finished(i, configuration, seed, result)
    if failures:
        key, seed, error = failures[0]
        raise RuntimeError(f"{len(failures)} run(s) failed; first: {key} seed {seed}: "
                           f"{type(error).__name__}: {error}") from error


def run_study(out_dir: str, budget: Budget, seeds: int = 3,
              configs: Optional[Sequence[str]] = None, tasks: Optional[Sequence[str]] = None,
              data_dir: Optional[str] = None, command: Optional[str] = None,
              report: bool = True, jobs: Optional[int] = None) -> dict:
    """Runs every (configuration, seed) not finished yet, seed by seed, then the report.

    Args:
        out_dir: the study directory (see the module docstring); resumed when it exists.
        budget: a `Budget` (`BUDGETS[name]` or `load_budget`).
        seeds: seeds 0 .. seeds-1.
        configs: keys of `CONFIGURATIONS` (default: all).
        tasks: task names (default: the three built-in ones, plus the real ones whose
            data is under `data_dir`).
        command: the command line recorded in study.json (default: sys.argv).
        jobs: runs at a time, each in its own worker process (`default_jobs`: the
            budget's default, capped by the usable cores). Runs are independent and
            every one is seeded, so the numbers do not depend on it; only wall time does.

    Returns the study record (study.json's content).
    """
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    chosen = select_configurations(configs)
    os.makedirs(out_dir, exist_ok=True)
    study_path = os.path.join(out_dir, STUDY_FILE)
    record = {}
    if os.path.exists(study_path):
        with open(study_path) as f:
            record = json.load(f)
        _check_same_budget(record["budget"], budget, out_dir)
    if tasks is None:
        tasks = list(BUILTIN_TASKS) + available_real_tasks(data_dir)
    task_list = load_tasks(tasks, budget, data_dir)
    runs = [(c, s) for s in range(seeds) for c in chosen]  # seed-major: a full table early
    record.setdefault("created", time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    record["budget"] = budget.to_dict()
    record["seeds"] = sorted(set(record.get("seeds", [])) | set(range(seeds)))
    record["configurations"] = [c.key for c in CONFIGURATIONS
                                if c.key in set(record.get("configurations", []))
                                | {x.key for x in chosen}]
    record["tasks"] = list(dict.fromkeys(list(record.get("tasks", [])) + list(tasks)))
    record["machine"] = machine_info()
    invocation = {"command": portable_command(shlex.split(command) if command else sys.argv),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs_done": 0,
                  "load_average_start": _load_average()}
    record.setdefault("invocations", []).append(invocation)
    write_json_atomically(study_path, record)

    pending = [(c, s) for c, s in runs if read_run_result(out_dir, c.key, s) is None]
    print(f"study {out_dir}: budget {budget.name}, {len(chosen)} rows x {seeds} seed(s), "
          f"tasks {', '.join(t.name for t in task_list)}; {len(runs) - len(pending)} of "
          f"{len(runs)} runs already done", flush=True)
    jobs = default_jobs(budget) if not jobs else int(jobs)
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    jobs = min(jobs, max(1, len(pending)))
    started = time.time()
    done_seconds: Dict[str, List[float]] = {}

    finished_runs = set()

    def finished(i, configuration, seed, result):
        done_seconds.setdefault(configuration.kind, []).append(result["seconds"])
        finished_runs.add((configuration.key, seed))
        elapsed = time.time() - started
        remaining = [c for c, s in pending if (c.key, s) not in finished_runs]
        eta = _eta(remaining, done_seconds)
        scores = ", ".join(f"{r['task']} {r['metric']} {r['value']:.3f}"
                           for r in result["rows"] if r["split"] == "test")
        print(f"[{i}/{len(pending)}] {configuration.key} seed {seed} done in "
              f"{_clock(result['seconds'])} (pre-train {_clock(result['pretrain_seconds'])}, "
              f"probes {_clock(result['probe_seconds'])}; CPU {_clock(result['cpu_seconds'])}): "
              f"{scores}", flush=True)
        eta = None if eta is None else eta / jobs
        print(f"    elapsed {_clock(elapsed)}, ETA {_clock(eta) if eta is not None else '?'}",
              flush=True)
        invocation["runs_done"] = i
        invocation["wall_seconds"] = time.time() - started
        write_json_atomically(study_path, record)

    invocation["jobs"] = jobs
    if jobs == 1:
        for i, (configuration, seed) in enumerate(pending):
            print(f"[{i + 1}/{len(pending)}] {configuration.label}, seed {seed} ...", flush=True)
            result = _run_and_release(configuration, seed, budget, task_list, out_dir)
            finished(i + 1, configuration, seed, result)
    elif pending:
        _run_in_workers(pending, budget, [t.name for t in task_list], data_dir, out_dir,
                        jobs, finished)
    invocation["wall_seconds"] = time.time() - started
    invocation["ended"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    invocation["load_average_end"] = _load_average()
    record["wall_seconds"] = sum(inv.get("wall_seconds", 0.0) for inv in record["invocations"])
    write_json_atomically(study_path, record)
    if report:
        paths = write_report(out_dir)
        print(f"report: {paths['md']}, {paths['csv']}, {len(paths['plots'])} plot(s) in "
              f"{os.path.join(out_dir, PLOT_DIR)}")
    return record


# ---------------------------------------------------------------------- the report
def collect_results(out_dir: str, split: str = "test") -> List[dict]:
    """Per-run result rows of every finished run of the study: dicts with configuration,
    seed, task, metric, value."""
    with open(os.path.join(out_dir, STUDY_FILE)) as f:
        record = json.load(f)
    rows = []
    for key in record["configurations"]:
        for seed in record["seeds"]:
            result = read_run_result(out_dir, key, seed)
            if result is None:
                continue
            for r in result["rows"]:
                if r["split"] == split:
                    rows.append({"configuration": key, "seed": seed, "task": r["task"],
                                 "metric": r["metric"], "value": float(r["value"])})
    return rows


def aggregate(rows: Iterable[dict]) -> List[dict]:
    """Mean and standard deviation over seeds per (configuration, task, metric).

    std is the sample standard deviation (n - 1 in the denominator); 0.0 for one seed.
    Rows keep the order of `CONFIGURATIONS`, then the order tasks/metrics first appear.
    """
    groups: Dict[Tuple[str, str, str], List[Tuple[int, float]]] = {}
    for r in rows:
        groups.setdefault((r["configuration"], r["task"], r["metric"]), []).append(
            (int(r["seed"]), float(r["value"])))
    order = {c.key: i for i, c in enumerate(CONFIGURATIONS)}
    task_order = {}
    for key in groups:
        task_order.setdefault(key[1:], len(task_order))
    out = []
    for (config, task, metric), pairs in sorted(
            groups.items(), key=lambda kv: (order.get(kv[0][0], 99), task_order[kv[0][1:]])):
        pairs.sort()
        values = np.array([v for _, v in pairs], np.float64)
        out.append({
            "configuration": config,
            "label": CONFIG_BY_KEY[config].label if config in CONFIG_BY_KEY else config,
            "task": task, "metric": metric, "n": len(values),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "seeds": [s for s, _ in pairs], "values": [float(v) for v in values],
        })
    return out


def _task_metrics(summary: List[dict]) -> List[Tuple[str, str]]:
    return list(dict.fromkeys((r["task"], r["metric"]) for r in summary))


def _paper_value(config_key: str, task: str, metric: str) -> Optional[float]:
    row = CONFIG_BY_KEY[config_key].paper_row if config_key in CONFIG_BY_KEY else None
    if row is None:
        return None
    real = TASK_ANALOGUE.get(task, task)
    return paper_table()[row].get((real, metric))


def write_results_csv(summary: List[dict], path: str) -> str:
    import csv

    fields = ("configuration", "label", "task", "metric", "n", "mean", "std", "values",
              "paper_real_task", "paper_value")
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in summary:
            paper = _paper_value(r["configuration"], r["task"], r["metric"])
            writer.writerow({
                "configuration": r["configuration"], "label": r["label"], "task": r["task"],
                "metric": r["metric"], "n": r["n"], "mean": f"{r['mean']:.6f}",
                "std": f"{r['std']:.6f}", "values": ";".join(f"{v:.6f}" for v in r["values"]),
                "paper_real_task": TASK_ANALOGUE.get(r["task"], r["task"]) if paper is not None else "",
                "paper_value": "" if paper is None else f"{paper:.3f}",
            })
    os.replace(tmp, path)
    return path


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table_md(summary: List[dict]) -> str:
    """Our table: one row per configuration, one column per task / metric, mean +- std."""
    columns = _task_metrics(summary)
    cell = {(r["configuration"], r["task"], r["metric"]): r for r in summary}
    configs = list(dict.fromkeys(r["configuration"] for r in summary))
    body = []
    for key in configs:
        cells = []
        for task, metric in columns:
            r = cell.get((key, task, metric))
            cells.append("" if r is None else f"{r['mean']:.3f} ± {r['std']:.3f}")
        n = {cell[(key, t, m)]["n"] for t, m in columns if (key, t, m) in cell}
        body.append([CONFIG_BY_KEY[key].label if key in CONFIG_BY_KEY else key, *cells,
                     "/".join(str(x) for x in sorted(n))])
    return _md_table(["configuration", *(f"{t} {m}" for t, m in columns), "seeds"], body)


def paper_table_md() -> str:
    body = [[row, *(f"{v:.3f}" for v in values)] for row, values in PAPER_RESULTS.items()]
    return _md_table(["pre-training (paper, AudioSet)", *(label for _, _, label in PAPER_COLUMNS)],
                     body)


def plot_results(summary: List[dict], plot_dir: str) -> List[str]:
    """One bar chart per task / metric: mean over seeds, error bar = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    paths = []
    for task, metric in _task_metrics(summary):
        chosen = [r for r in summary if r["task"] == task and r["metric"] == metric]
        labels = [r["label"] for r in chosen]
        colours = ["#4c72b0" if CONFIG_BY_KEY.get(r["configuration"]) is None
                   or CONFIG_BY_KEY[r["configuration"]].kind == "pretrained" else "#999999"
                   for r in chosen]
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        x = np.arange(len(chosen))
        ax.bar(x, [r["mean"] for r in chosen], yerr=[r["std"] for r in chosen], capsize=4,
               color=colours)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
        n = sorted({r["n"] for r in chosen})
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {metric} (test; mean ± std over {'/'.join(map(str, n))} seed(s))",
                     fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = os.path.join(plot_dir, f"{task}-{metric}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------- claims
def _compare(a: Optional[dict], b: Optional[dict]) -> Optional[dict]:
    """a vs b (summary cells): difference of means and whether it exceeds the spread,
    sqrt(std_a^2 + std_b^2) (None when either has a single seed)."""
    if a is None or b is None:
        return None
    diff = a["mean"] - b["mean"]
    spread = math.hypot(a["std"], b["std"])
    exceeds = None if min(a["n"], b["n"]) < 2 else abs(diff) > spread
    return {"a": a["mean"], "b": b["mean"], "diff": diff, "spread": spread, "exceeds": exceeds}


def _cells(summary: List[dict]) -> Dict[Tuple[str, str, str], dict]:
    return {(r["configuration"], r["task"], r["metric"]): r for r in summary}


def _metrics_of(summary, task_kind_filter=None):
    return [tm for tm in _task_metrics(summary)
            if task_kind_filter is None or task_kind_filter(tm[0])]


def _is_events(task):
    return "event" in task or task.startswith("dcase")


def _is_keywords(task):
    return task in ("synthetic_scene", "speech_commands")


def _is_pitch(task, metric):
    return (task in ("synthetic_pitch", "nsynth_pitch")) and metric == "pitch_acc"


def evaluate_claims(summary: List[dict]) -> List[dict]:
    """Each claim of the paper, evaluated on `summary` (the output of `aggregate`).

    Returns dicts: claim, holds (True / False / None when the rows it needs are absent),
    comparisons [{task, metric, a_label, b_label, a, b, diff, spread, exceeds}], note.
    "exceeds": |difference of means| > sqrt(std_a^2 + std_b^2) over seeds (None: 1 seed).
    """
    cells = _cells(summary)
    metrics = _task_metrics(summary)

    def cmp(a_key, b_key, task, metric):
        c = _compare(cells.get((a_key, task, metric)), cells.get((b_key, task, metric)))
        if c is not None:
            c.update(task=task, metric=metric, a_label=a_key, b_label=b_key)
        return c

    def all_better(claim, a_key, b_key, note=""):
        comps = [c for c in (cmp(a_key, b_key, t, m) for t, m in metrics) if c is not None]
        holds = None if not comps else all(c["diff"] > 0 for c in comps)
        return {"claim": claim, "holds": holds, "comparisons": comps, "note": note}

    claims = [all_better("all three losses beat clip-only (COLA) on every task", "all", "clip")]

    # L_frame helps event detection most.
    gains = [c for c in (cmp("clip_frame", "clip", t, m) for t, m in metrics) if c is not None]
    event_gains = [c for c in gains if _is_events(c["task"])]
    pitch_on_events = [c for c in (cmp("clip_pitch", "clip", t, m) for t, m in metrics
                                   if _is_events(t)) if c is not None]
    if event_gains and len(gains) > 1:
        best = max(gains, key=lambda c: c["diff"])
        holds = (best in event_gains and best["diff"] > 0
                 and all(e["diff"] > p["diff"] for e in event_gains for p in pitch_on_events))
    else:
        holds = None
    claims.append({
        "claim": "the frame loss helps event detection most",
        "holds": holds, "comparisons": gains + pitch_on_events,
        "note": "holds when the gain of clip+frame over clip-only is positive and largest on "
                "the event task, and larger there than the gain of clip+pitch",
    })
    for name, keep in (("keywords", lambda t, m: _is_keywords(t)),
                       ("pitch", lambda t, m: _is_pitch(t, m))):
        comps = [c for c in (cmp("clip_pitch", "clip", t, m) for t, m in metrics if keep(t, m))
                 if c is not None]
        claims.append({
            "claim": f"the pitch loss helps {name} (clip+pitch beats clip-only)",
            "holds": None if not comps else all(c["diff"] > 0 for c in comps),
            "comparisons": comps, "note": "",
        })
    claims.append(all_better("bilinear similarity beats cosine (all three losses)", "all",
                             "all_cosine"))
    claims.append(all_better("pre-training (all three) beats a randomly initialised encoder",
                             "all", "random_init", note="not in the paper: our sanity check"))
    claims.append(all_better("pre-training (all three) beats the log-mel front end alone",
                             "all", "logmel", note="not in the paper: our sanity check"))
    return claims


def paper_summary() -> List[dict]:
    """The paper's table as a one-seed summary (for evaluating its own claims)."""
    key_of_row = {c.paper_row: c.key for c in CONFIGURATIONS if c.paper_row}
    out = []
    for row, values in PAPER_RESULTS.items():
        if row not in key_of_row:
            continue
        for (task, metric, _), v in zip(PAPER_COLUMNS, values):
            out.append({"configuration": key_of_row[row], "label": row, "task": task,
                        "metric": metric, "n": 1, "mean": v, "std": 0.0, "seeds": [0],
                        "values": [v]})
    return out


def _verdict(holds) -> str:
    return {True: "holds", False: "does not hold", None: "not measured"}[holds]


def claims_md(claims: List[dict], paper_claims: Optional[List[dict]] = None) -> str:
    paper_by_claim = {c["claim"]: c for c in (paper_claims or [])}
    lines = []
    for c in claims:
        paper = paper_by_claim.get(c["claim"])
        paper_note = (f" (in the paper's own table: {_verdict(paper['holds'])})"
                      if paper is not None and paper["holds"] is not None else "")
        lines.append(f"* **{c['claim']}**: {_verdict(c['holds'])}{paper_note}."
                     + (f" {c['note'][0].upper()}{c['note'][1:]}." if c["note"] else ""))
        for comp in c["comparisons"]:
            exceeds = ("one seed: no spread" if comp["exceeds"] is None else
                       f"{'exceeds' if comp['exceeds'] else 'within'} the spread "
                       f"{comp['spread']:.3f}")
            lines.append(
                f"  * {comp['task']} {comp['metric']}: {comp['a_label']} {comp['a']:.3f} vs "
                f"{comp['b_label']} {comp['b']:.3f}, difference {comp['diff']:+.3f} "
                f"({exceeds})")
    return "\n".join(lines)


def write_report(out_dir: str) -> dict:
    """results.csv, results.md and the plots of a study directory, from its run results."""
    summary = aggregate(collect_results(out_dir))
    if not summary:
        raise ValueError(f"{out_dir}: no finished runs to report")
    csv_path = write_results_csv(summary, os.path.join(out_dir, RESULTS_CSV))
    plots = plot_results(summary, os.path.join(out_dir, PLOT_DIR))
    with open(os.path.join(out_dir, STUDY_FILE)) as f:
        record = json.load(f)
    md = [
        f"# Ablation study: budget `{record['budget']['name']}`",
        "",
        "Linear probes on frozen embeddings, test split, mean ± sample standard deviation "
        "over seeds (higher is better).",
        "",
        results_table_md(summary),
        "",
        "## The paper's numbers (its REAL tasks, not ours)",
        "",
        "Table 1 / Table 2 of the paper (method.md): pre-training on AudioSet, then Speech "
        "Commands, DCASE 2016 task 2 and NSynth. Our built-in tasks play the same parts "
        "(synthetic_scene ~ keywords, synthetic_events ~ DCASE events, synthetic_pitch ~ "
        "NSynth pitch) but are different data: compare directions, not values.",
        "",
        paper_table_md(),
        "",
        "## The paper's claims on these numbers",
        "",
        claims_md(evaluate_claims(summary), evaluate_claims(paper_summary())),
        "",
    ]
    md_path = os.path.join(out_dir, RESULTS_MD)
    tmp = md_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(md))
    os.replace(tmp, md_path)
    return {"csv": csv_path, "md": md_path, "plots": plots, "summary": summary}


# --------------------------------------------------------------- docs/results.md
NOTES_BEGIN = "<!-- BEGIN LEAD NOTES (kept when this page is re-rendered) -->"
NOTES_END = "<!-- END LEAD NOTES -->"
NOTES_PLACEHOLDER = "_(The lead's reading of these results goes here.)_"


def read_notes(path: str) -> str:
    """The hand-written block between NOTES_BEGIN and NOTES_END of an existing page."""
    if not os.path.exists(path):
        return NOTES_PLACEHOLDER
    with open(path) as f:
        text = f.read()
    match = re.search(re.escape(NOTES_BEGIN) + r"\n?(.*?)\n?" + re.escape(NOTES_END), text, re.S)
    return match.group(1) if match else NOTES_PLACEHOLDER


def task_descriptions() -> str:
    from msss_tf.data.tasks import synthetic_tasks

    doc = synthetic_tasks.__doc__ or ""
    # From the first task entry to the end of the sizes paragraph.
    start = doc.find("  synthetic_scene")
    end = doc.find("\nDeterminism")
    return doc[start:end if end > 0 else None].rstrip() if start >= 0 else doc.strip()


def _load_note(invocations, cores) -> str:
    loads = [inv[k] for inv in invocations for k in ("load_average_start", "load_average_end")
             if inv.get(k) is not None]
    if not loads:
        return ""
    return (f"; 1-minute load average {min(loads):g}-{max(loads):g} (above the core count: "
            "other jobs shared the CPU and stretched the wall time)"
            if max(loads) > (cores or 1) + 0.5 else f"; 1-minute load average {min(loads):g}-{max(loads):g}")


def render_docs(out_dir: str, docs_path: str = "docs/results.md") -> str:
    """Writes `docs_path` from a finished study directory; plots are copied into
    `<docs dir>/results/`. The block between the lead-notes markers of an existing page
    is kept."""
    report = write_report(out_dir)
    summary = report["summary"]
    with open(os.path.join(out_dir, STUDY_FILE)) as f:
        record = json.load(f)
    docs_dir = os.path.dirname(os.path.abspath(docs_path))
    image_dir = os.path.join(docs_dir, "results")
    os.makedirs(image_dir, exist_ok=True)
    images = []
    for path in report["plots"]:
        target = os.path.join(image_dir, os.path.basename(path))
        shutil.copyfile(path, target)
        images.append(os.path.relpath(target, docs_dir))
    notes = read_notes(docs_path)
    budget = record["budget"]
    machine = record.get("machine", {})
    invocations = record.get("invocations", [])
    first = invocations[0] if invocations else {}
    last = invocations[-1] if invocations else {}
    wall = sum(inv.get("wall_seconds", 0.0) for inv in invocations)
    config = budget["config"]
    encoder = (f"EfficientNet width x{config.get('width_coefficient', 1.0)}, depth "
               f"x{config.get('depth_coefficient', 1.0)}"
               + (" (B0)" if config.get("width_coefficient", 1.0) == 1.0
                  and config.get("depth_coefficient", 1.0) == 1.0 else
                  " (a reduced member of the B0 family, to fit the CPU budget; B0 is x1, x1)"))
    lines = [
        "# Results: the paper's ablations on the built-in tasks",
        "",
        "Generated by `msss_tf.study.render_docs` from the study directory "
        f"`{portable_path(out_dir)}`; every number below comes from its run results.",
        "",
        *([f"**This page comes from the `{budget['name']}` budget, a check of the runner "
           f"({budget['train_steps']} pre-training steps): its numbers say nothing about the "
           "method. The default-budget study replaces it.**", ""]
          if budget["name"] == "smoke" else []),
        NOTES_BEGIN,
        notes,
        NOTES_END,
        "",
        "## How it was run",
        "",
        "```bash",
        portable_command(shlex.split(first["command"])) if "command" in first else "?",
        "```",
        "",
        f"* Budget `{budget['name']}`: {budget['train_steps']} pre-training steps of batch "
        f"{config.get('batch_size')} at learning rate {config.get('learning_rate')} on the "
        f"built-in synthetic corpus ({budget['synthetic_clips']} clips), {encoder}; "
        f"configuration fields shared by every row: `{json.dumps(config, sort_keys=True)}`; "
        f"linear probes: batch {budget.get('probe_batch_size', 1024)}, up to "
        f"{budget['probe_epochs']} epochs (patience "
        f"{budget['probe_patience']}), learning rates {budget['probe_learning_rates']}; task "
        f"scale {budget['task_scale']}.",
        f"* Seeds: {', '.join(map(str, record['seeds']))} (model initialisation, pre-training "
        "data and views, probe initialisation).",
        f"* Machine: {machine.get('cpu_cores')} usable CPU core(s) of {machine.get('cpu_model')} "
        f"({machine.get('platform')}, Python {machine.get('python')}).",
        f"* Date: started {first.get('started', '?')}, last finished "
        f"{last.get('ended', last.get('started', '?'))}; wall time of the study "
        f"{_clock(wall)} over {len(invocations)} invocation(s)"
        + (" (resumed)" if len(invocations) > 1 else "")
        + _load_note(invocations, machine.get("cpu_cores")) + ".",
        "",
        "## Measured (built-in tasks, linear probe, test split, mean ± std over seeds)",
        "",
        results_table_md(summary),
        "",
        *[f"![{os.path.splitext(os.path.basename(p))[0]}]({p})" for p in images],
        "",
        "## The paper's numbers (real tasks after AudioSet pre-training, not comparable "
        "in value)",
        "",
        paper_table_md(),
        "",
        "Our synthetic_scene plays the part of Speech Commands (keywords), synthetic_pitch "
        "of NSynth pitch, synthetic_events of DCASE 2016 task 2.",
        "",
        "## Discussion: the paper's claims, evaluated on the measured numbers",
        "",
        "A difference \"exceeds the spread\" when |difference of means| > sqrt(std_a² + "
        "std_b²), the standard deviations over seeds. The verdict in brackets applies the "
        "same test to the paper's own table.",
        "",
        claims_md(evaluate_claims(summary), evaluate_claims(paper_summary())),
        "",
        "What testing the claims at the paper's scale needs: EfficientNet-B0 (x1, x1), "
        "pre-training on AudioSet's balanced train set (18,939 10 s clips) for 250 epochs "
        "at batch 1024, learning rate 1e-4, and probing on the real tasks (Speech Commands "
        "v2, NSynth pitch, DCASE 2016 task 2 from HEAR 2021) with the same seeds; the "
        "recipes are in WORKSPACE.md (\"The real scale\"). On one CPU this is out of "
        "reach; it needs an accelerator.",
        "",
        "## The built-in tasks",
        "",
        "From `msss_tf/data/tasks/synthetic_tasks.py` (the study uses task scale "
        f"{budget['task_scale']}):",
        "",
        "```text",
        task_descriptions(),
        "```",
        "",
        "The reference rows: *random init* is the same encoder untrained (inference-mode "
        "batch norm); *log-mel mean+std* is no encoder at all: the mean and standard "
        "deviation over time of the 64 log-mel bands (over the clip for scene tasks, over "
        "±160 ms around each 40 ms timestamp for events).",
        "",
    ]
    os.makedirs(docs_dir, exist_ok=True)
    tmp = docs_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, docs_path)
    return docs_path
