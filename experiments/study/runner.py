"""The study's runs: each (configuration, seed) pre-trained (or built: the reference rows)
and probed, in this process or in spawned workers, resumably; then the report."""

from __future__ import annotations

import gc
import json
import os
import platform
import shlex
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from experiments.study.budgets import (BUILTIN_TASKS, CONFIG_BY_KEY, CONFIGURATIONS, PLOT_DIR,
                                       REAL_TASKS, RUN_RESULT, STUDY_FILE, Budget,
                                       Configuration, read_run_result, run_dir,
                                       select_configurations)
from experiments.study.report import clock, write_report
from msss_tf.atomic import write_json_atomically
from msss_tf.runs import portable_command


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
    from msss_tf.embedding import Embedder, LogMelStatsEmbedder

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
            from msss_tf.embedding import calibrate_batch_norm

            passes = calibrate_batch_norm(embedder.encoder, embedder.frontend, calibration,
                                          passes=budget.calibration_passes)
        return embedder, {"pretrain_seconds": 0.0, "calibration_passes": passes,
                          "calibration_segments": 0 if calibration is None else len(calibration)}
    from msss_tf.training.pretrain import pretrain

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
    from msss_tf.evaluation.probe import ProbeSettings, probe_task, result_rows

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
              f"{clock(result['seconds'])} (pre-train {clock(result['pretrain_seconds'])}, "
              f"probes {clock(result['probe_seconds'])}; CPU {clock(result['cpu_seconds'])}): "
              f"{scores}", flush=True)
        eta = None if eta is None else eta / jobs
        print(f"    elapsed {clock(elapsed)}, ETA {clock(eta) if eta is not None else '?'}",
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
