"""The pre-training job: data -> `MSSSModel.fit` -> checkpoints, with exact resume.

Layout of a `model_dir` (also in WORKSPACE.md):

    msss_config.json          the MSSSConfig of the run (read on resume)
    pretrain_run.json         the run's settings outside the config: steps_per_epoch (the
                              epoch length resumes keep), last train_steps asked, data
    backup/                   AtomicBackupAndRestore: weights + optimiser + epoch counter +
                              step counts, committed atomically (msss_tf.training.reliability)
    train_log.jsonl           start / epoch_end / nonfinite events, one JSON line each
    checkpoints/epoch-NNNN.keras   full model (config, weights, optimiser) per epoch
    model.keras               the final model, written atomically at the end
    logs/train/               TensorBoard scalars: loss and one per enabled loss
    skipped.json              audio files skipped, with reasons
    summary.json              the latest invocation (status, steps, final metrics, time,
                              skips) and "invocations", the list of every one

Nothing is written into `model_dir` before the inputs are checked (data source, config,
step budget, strategy): a start that fails leaves the folder as it was.

Every file above is written under a temporary name and renamed. A kill during a write
leaves that temporary file behind (`model.tmp.keras`, `summary.json.tmp-PID`,
`backup/training_metadata.json.tmp-PID`, `checkpoints/epoch-NNNN.tmp.keras`, ...); no
reader ever opens one (`latest_checkpoint` skips them) and the next start removes them
(`remove_leftovers`). Folders of others inside `model_dir` (e.g. long_run's `kept/`) are
not touched.

Steps are exact: `train_steps` is the optimiser step count the run holds at the end
(`optimizer.iterations`). A resumed run continues from the step its backup holds to
exactly `train_steps`; the last epoch is shorter when `train_steps` is not a whole number
of epochs; a `train_steps` below what the run holds is refused. Starting the same command
again resumes from `backup/`: weights, optimiser state and step counters come back, and
the data pipeline is re-seeded with the epoch counter so resumed epochs draw new segments
instead of replaying the first ones. A run killed (SIGKILL) mid-epoch redoes that epoch
from its start; a run stopped by SIGINT/SIGTERM commits the state of its last whole step
first (`msss_tf.training.reliability.GracefulStop`) and loses nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from typing import Optional

import keras

from msss_tf.config import MSSSConfig
from msss_tf.data import SkipReport, pretrain_dataset
from msss_tf.atomic import write_json_atomically
from msss_tf.training.distribute import check_global_batch, make_strategy, writable_model_dir
from msss_tf.model.msss_model import MSSSModel, build_optimizer
from msss_tf.training.reliability import (NONFINITE_POLICIES, TRAIN_LOG, AtomicBackupAndRestore,
                                 AtomicModelCheckpoint, GracefulStop, NonFiniteGuard,
                                 NonFiniteLossError, RunLog, StopAtStep, TrainingAborted,
                                 TrainingInterrupted, install_nonfinite_skip,
                                 read_backup_metadata,
                                 save_model_atomically, signal_name, test_hook_callbacks)
from msss_tf.rundir import CHECKPOINT_DIR, CONFIG_FILENAME, FINAL_MODEL, last_good_checkpoint

BACKUP_DIR = "backup"
LOG_DIR = "logs"
RUN_RECORD = "pretrain_run.json"
SUMMARY = "summary.json"
DEFAULT_STEPS_PER_EPOCH = 100


# What a write killed before its rename leaves, per folder of a run ("" is `model_dir`):
# the temporary names of the atomic writes above (PID: the writer's process id).
_LEFTOVERS = {
    # (msss_config.json.tmp without a PID: what versions before msss_tf.atomic left)
    "": re.compile(r"(model\.tmp\.keras|msss_config\.json\.tmp"
                   r"|(msss_config|summary|pretrain_run|skipped)\.json\.tmp-\d+)"),
    BACKUP_DIR: re.compile(r"(\.tmp-epoch-\d+\.weights\.h5|training_metadata\.json\.tmp-\d+)"),
    CHECKPOINT_DIR: re.compile(r"epoch-\d+\.tmp\.keras"),
}


def remove_leftovers(model_dir: str) -> list:
    """Deletes the temporary files that writes killed before their rename left in
    `model_dir` (a SIGKILL during a save: see the module docstring); returns their paths.
    Only pretrain's own temporary names, in its own folders: nothing else is touched. None
    of them is ever read (the complete file, or the previous one, is always in place)."""
    removed = []
    for folder, pattern in _LEFTOVERS.items():
        directory = os.path.join(model_dir, folder)
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if pattern.fullmatch(name) and os.path.isfile(path):
                try:
                    os.remove(path)
                except FileNotFoundError:
                    continue
                removed.append(path)
    return removed


def holds_trained_state(model_dir: str) -> bool:
    """Whether `model_dir` holds anything trained: a committed backup, an epoch checkpoint
    or a final model. (A folder with only msss_config.json never trained.)"""
    return bool(os.path.exists(os.path.join(model_dir, BACKUP_DIR, "training_metadata.json"))
                or os.path.exists(os.path.join(model_dir, FINAL_MODEL))
                or last_good_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR)))


def resolve_config(model_dir: str, config: MSSSConfig, explicit: Optional[set] = None):
    """The config to train with: the one saved in `model_dir` if any, else `config`.

    When `model_dir` already holds a trained run, every field in `explicit` (the settings
    the user asked for) must agree with the saved config; otherwise the resume would
    silently train something else, so this raises ValueError naming the fields. When it
    holds a config but nothing trained (a start that failed or was stopped before its
    first step was saved), the fields in `explicit` replace the saved ones.
    """
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if not os.path.exists(path):
        return config
    saved = MSSSConfig.load(path)
    explicit = set(explicit or ())
    if not holds_trained_state(model_dir):
        return MSSSConfig.from_dict({**saved.to_dict(),
                                     **{name: getattr(config, name) for name in explicit}})
    clashes = [
        f"{name}: saved {getattr(saved, name)!r}, asked {getattr(config, name)!r}"
        for name in sorted(explicit)
        if getattr(saved, name) != getattr(config, name)
    ]
    if clashes:
        raise ValueError(
            f"{model_dir} already holds a run with a different configuration "
            f"({'; '.join(clashes)}). Use a new --model_dir, or drop those flags to resume."
        )
    return saved


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def read_run_record(model_dir: str) -> dict:
    """`pretrain_run.json` of `model_dir` ({} if none)."""
    return _read_json(os.path.join(model_dir, RUN_RECORD))


def read_summary(model_dir: str) -> dict:
    """`summary.json` of `model_dir` ({} if none or unreadable)."""
    return _read_json(os.path.join(model_dir, SUMMARY))


def write_summary(model_dir: str, record: dict) -> dict:
    """Appends `record` (one invocation) to `summary.json`'s "invocations" and puts its
    fields at the top level; "final_metrics" there are the newest non-empty ones (an
    invocation that trained nothing keeps the previous ones). Returns the summary."""
    previous = read_summary(model_dir)
    invocations = list(previous.get("invocations") or [])
    if previous and not invocations:  # written before invocations were kept
        invocations = [previous]
    invocations.append(record)
    final = record.get("final_metrics") or previous.get("final_metrics") or {}
    summary = {**record, "final_metrics": final, "invocations": invocations}
    write_json_atomically(os.path.join(model_dir, SUMMARY), summary)
    return summary


# AtomicModelCheckpoint and save_model_atomically live in msss_tf.training.reliability.


@dataclasses.dataclass
class PretrainResult:
    model: MSSSModel
    history: dict
    steps: int  # optimiser steps the run holds at the end (= train_steps)
    epochs_run: int
    skipped: SkipReport
    seconds: float
    model_path: str
    steps_this_run: int = 0
    initial_step: int = 0
    steps_per_epoch: int = DEFAULT_STEPS_PER_EPOCH
    final_metrics: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _RunState:
    """What `model_dir` holds before this start (read-only)."""
    epoch: int = 0  # committed epochs
    step: Optional[int] = 0  # optimiser steps (None: a legacy backup that did not say)
    batches: int = 0  # batches run in all (undone ones included)
    steps_per_epoch: Optional[int] = None  # recorded epoch length


def _run_state(model_dir: str) -> _RunState:
    meta = read_backup_metadata(os.path.join(model_dir, BACKUP_DIR))
    record = read_run_record(model_dir)
    recorded = record.get("steps_per_epoch")
    state = _RunState(steps_per_epoch=int(recorded) if recorded else None)
    if meta:
        state.epoch = int(meta["epoch"])
        state.step = None if meta.get("step") is None else int(meta["step"])
        if state.step is None and state.steps_per_epoch:  # a legacy Keras backup
            state.step = state.epoch * state.steps_per_epoch
        state.batches = int(meta.get("batches", state.step or 0))
    return state


def _steps_per_epoch(asked: Optional[int], state: _RunState, model_dir: str) -> int:
    """The epoch length: `asked`, else the recorded one, else the default. A change on a
    run that already trained is exact (steps are counted, not epochs) and said."""
    if asked is None:
        return state.steps_per_epoch or DEFAULT_STEPS_PER_EPOCH
    if asked < 1:
        raise ValueError(f"--steps_per_epoch must be >= 1, got {asked}")
    if state.steps_per_epoch and asked != state.steps_per_epoch and state.step:
        print(f"note: {model_dir} recorded --steps_per_epoch={state.steps_per_epoch}; from "
              f"step {state.step} on, epochs (checkpoints) are {asked} steps long")
    return asked


def _check_budget(train_steps: int, state: _RunState, model_dir: str) -> None:
    if state.step is not None and state.step > train_steps:
        raise ValueError(
            f"{model_dir} already holds {state.step} optimizer steps ({state.epoch} epoch(s)); "
            f"--train_steps={train_steps} is below that and steps cannot be undone. Ask for "
            f"--train_steps={state.step} or more to continue this run, or use a new "
            f"--model_dir (or copy a checkpoint) to train a shorter one.")


def pretrain(
    config: MSSSConfig,
    data: str,
    model_dir: str,
    train_steps: int,
    steps_per_epoch: Optional[int] = None,
    synthetic_clips: int = 256,
    log_every: int = 10,
    verbose="auto",
    extra_callbacks=(),
    strategy: str = "default",
    jit_compile="auto",
    mixed_precision=None,
    view_batching: str = "separate",
    sync_batch_norm: bool = True,
    on_nonfinite: str = "stop",
    command: Optional[str] = None,
    handle_signals: bool = True,
) -> PretrainResult:
    """Pre-trains an `MSSSModel` on `data` into `model_dir`; resumes if it holds a run.

    Args:
        config: the configuration (use `resolve_config` first when resuming).
        data: "synthetic", a folder of audio, or a folder written by `prepare_corpus`.
        model_dir: where config, checkpoints, logs and the final model go.
        train_steps: the optimiser steps the run holds at the end, exactly (the last
            epoch is shorter if needed). Below what `model_dir` holds: ValueError.
        steps_per_epoch: steps between checkpoints and epoch-level logs; None: the value
            recorded in `model_dir` (pretrain_run.json), else 100. Another value on a
            resumed run applies from its step on (the count stays exact).
        synthetic_clips: size of the built-in corpus when `data == "synthetic"`.
        log_every: TensorBoard logs every this many steps.
        verbose: Keras `fit` verbosity ("auto": a progress bar).
        strategy: "default" (one device), "mirrored" (this host's GPUs) or "multi_worker"
            (hosts in TF_CONFIG; only the chief writes `model_dir`, the other workers a
            temporary folder). `config.batch_size` is the global batch. See
            `msss_tf.training.distribute`.
        jit_compile: XLA for the train step: True, False or "auto" (Keras: on with a GPU).
        mixed_precision: None, "mixed_float16" or "mixed_bfloat16" for the encoder.
        view_batching: "separate" (three encoder calls) or "concat" (one call on 3B).
        sync_batch_norm: with several replicas, global-batch batch-norm statistics.
        on_nonfinite: a step with a non-finite loss (or non-finite weights after it):
            "stop" raises `NonFiniteLossError` naming the step before anything of that
            epoch is saved (the last checkpoint and backup/ stay good); "skip" undoes the
            step and goes on (10 in a row still stop; undone steps do not count towards
            `train_steps`). See `msss_tf.training.reliability`.
        command: the command line, recorded in summary.json.
        handle_signals: SIGINT/SIGTERM (main thread only) stop at the next step boundary,
            commit that step's state, write summary.json (status "interrupted") and raise
            `TrainingInterrupted`; a second signal raises `TrainingAborted` at once.

    Raises:
        ValueError: bad arguments, an unusable data source, or `train_steps` below the
            steps `model_dir` holds; nothing is written then.
    """
    with GracefulStop(enabled=handle_signals) as stop:
        return _pretrain(config, data, model_dir, train_steps, steps_per_epoch,
                         synthetic_clips, log_every, verbose, extra_callbacks, strategy,
                         jit_compile, mixed_precision, view_batching, sync_batch_norm,
                         on_nonfinite, command, stop)


def _pretrain(config, data, model_dir, train_steps, steps_per_epoch, synthetic_clips,
              log_every, verbose, extra_callbacks, strategy, jit_compile, mixed_precision,
              view_batching, sync_batch_norm, on_nonfinite, command, stop):
    started_at = time.time()
    # 1. Check everything; write nothing.
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"--on_nonfinite={on_nonfinite!r}: must be one of {NONFINITE_POLICIES}")
    if train_steps < 1:
        raise ValueError(f"--train_steps must be >= 1, got {train_steps}")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"--steps_per_epoch must be >= 1, got {steps_per_epoch}")
    distribution = make_strategy(strategy)  # first: before any other TensorFlow op
    check_global_batch(config.batch_size, distribution)
    model_dir = writable_model_dir(model_dir, distribution)
    state = _run_state(model_dir)
    _check_budget(train_steps, state, model_dir)
    steps_per_epoch = _steps_per_epoch(steps_per_epoch, state, model_dir)

    # Seed first: the pipeline's seeded shuffles also read TF's global seed, so a second
    # pretrain() in one process would otherwise see another data order than a fresh one.
    keras.utils.set_random_seed(config.seed)
    skipped = SkipReport()

    def dataset_from(epoch):
        return pretrain_dataset(data, config, seed=config.seed + 1_000_003 * epoch,
                                report=skipped, num_clips=synthetic_clips)

    dataset = dataset_from(state.epoch)  # raises here for a missing or unusable source
    keras.utils.set_random_seed(config.seed)  # the same seed, the same initial weights
    with distribution.scope():
        model = MSSSModel(config, view_batching=view_batching, mixed_precision=mixed_precision)
        if sync_batch_norm and distribution.num_replicas_in_sync > 1:
            model.set_batch_norm_synchronized(True)
        model.compile(optimizer=build_optimizer(config, mixed_precision),
                      jit_compile=jit_compile)
    if on_nonfinite == "skip":
        install_nonfinite_skip(model)
    if stop.requested:  # a signal during the set-up: leave the folder as it was
        raise TrainingInterrupted(stop.signum, state.step or 0, train_steps, model_dir,
                                  committed=False)

    # 2. The inputs are good: now write.
    os.makedirs(model_dir, exist_ok=True)
    remove_leftovers(model_dir)  # of writes a kill cut short: never read, now deleted
    config.save(model_dir)
    write_json_atomically(os.path.join(model_dir, RUN_RECORD), {
        "steps_per_epoch": steps_per_epoch, "train_steps": train_steps, "data": data,
        "synthetic_clips": synthetic_clips})

    # Order matters at an epoch's end: the guard refuses a non-finite state before the
    # checkpoint and the backup (the commit point) are written; the log records the commit;
    # StopAtStep (after the test hooks) ends fit at the step budget or on a signal.
    run_log = RunLog(os.path.join(model_dir, TRAIN_LOG), initial_step=state.batches)
    guard = NonFiniteGuard(on_nonfinite, os.path.join(model_dir, CHECKPOINT_DIR),
                           run_log=run_log, initial_step=state.batches)
    callbacks = [
        guard,
        AtomicModelCheckpoint(os.path.join(model_dir, CHECKPOINT_DIR), marker_dir=model_dir),
        AtomicBackupAndRestore(os.path.join(model_dir, BACKUP_DIR),
                               initial_batches=state.batches),
        run_log,
        keras.callbacks.TensorBoard(os.path.join(model_dir, LOG_DIR), update_freq=log_every),
        *test_hook_callbacks(model_dir, initial_step=state.batches),
        StopAtStep(train_steps, stop),
        *extra_callbacks,
    ]
    record = {"status": None, "command": command, "data": data,
              "train_steps_requested": train_steps, "steps_per_epoch": steps_per_epoch,
              "steps_at_start": state.step, "resumed_from_epoch": state.epoch,
              "started": round(started_at, 3)}

    def finish(status, held, **fields):
        skipped.write(os.path.join(model_dir, "skipped.json"))
        return write_summary(model_dir, {
            **record, "status": status, "train_steps": held,
            "steps_this_run": None if held is None or state.step is None
            else held - state.step,
            "nonfinite_skipped_steps": guard.skipped_steps, **fields,
            "seconds": time.time() - started_at, "skipped": skipped.to_dict()})

    def optimizer_step():
        return int(model.optimizer.iterations.numpy())

    history, epochs_run, epoch = {}, 0, state.epoch
    started = time.time()
    try:
        # Usually one fit. Another one only if steps were undone (on_nonfinite="skip", or
        # mixed_float16's loss scaling) so that the epochs planned ran out early.
        while True:
            done = optimizer_step() if epochs_run else (state.step or 0)
            remaining = train_steps - done
            fit_steps = min(steps_per_epoch, remaining) if remaining > 0 else steps_per_epoch
            if epochs_run:
                dataset = dataset_from(epoch)
            fitted = model.fit(
                dataset,
                epochs=epoch + math.ceil(max(remaining, 0) / fit_steps),
                steps_per_epoch=fit_steps,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,  # the pipeline shuffles, with the seed
            )
            for name, values in fitted.history.items():
                history.setdefault(name, []).extend(values)
            epochs_run += len(fitted.epoch)
            epoch = int(read_backup_metadata(os.path.join(model_dir, BACKUP_DIR))
                        .get("epoch", epoch))
            if stop.requested or not fitted.epoch or optimizer_step() >= train_steps:
                break
    except NonFiniteLossError as e:
        finish("stopped", _committed_step(model_dir, state), error=str(e),
               stopped_at_step=e.step, last_good_checkpoint=e.checkpoint,
               epochs_this_run=epochs_run, final_metrics={})
        raise
    except TrainingAborted as e:
        finish("aborted", _committed_step(model_dir, state), signal=signal_name(e.signum),
               epochs_this_run=epochs_run, final_metrics={})
        raise
    seconds = time.time() - started
    held = optimizer_step()
    final = {k: float(v[-1]) for k, v in history.items() if v}
    if held < train_steps:  # stopped by a signal; the epoch-end callbacks committed `held`
        if not stop.requested:
            raise RuntimeError(f"training ended at optimizer step {held} of {train_steps}")
        finish("interrupted", held, signal=signal_name(stop.signum),
               epochs_this_run=epochs_run, final_metrics=final)
        raise TrainingInterrupted(stop.signum, held, train_steps, model_dir,
                                  committed=epochs_run > 0)
    model_path = save_model_atomically(model, os.path.join(model_dir, FINAL_MODEL))
    summary = finish("completed", held, epochs_this_run=epochs_run, final_metrics=final)
    return PretrainResult(
        model=model,
        history=history,
        steps=held,
        epochs_run=epochs_run,
        skipped=skipped,
        seconds=seconds,
        model_path=model_path,
        steps_this_run=held - (state.step or 0),
        initial_step=state.step or 0,
        steps_per_epoch=steps_per_epoch,
        final_metrics=summary["final_metrics"],
    )


def _committed_step(model_dir: str, state: _RunState) -> Optional[int]:
    """The optimiser step of the last committed backup (what a resume starts from)."""
    meta = read_backup_metadata(os.path.join(model_dir, BACKUP_DIR))
    return int(meta["step"]) if meta.get("step") is not None else state.step
