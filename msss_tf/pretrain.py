"""The pre-training job: data -> `MSSSModel.fit` -> checkpoints, with resume.

Layout of a `model_dir` (also in WORKSPACE.md):

    msss_config.json          the MSSSConfig of the run (written first, read on resume)
    backup/                   AtomicBackupAndRestore: weights + optimiser + epoch counter,
                              committed atomically (msss_tf.reliability)
    train_log.jsonl           start / epoch_end / nonfinite events, one JSON line each
    checkpoints/epoch-NNNN.keras   full model (config, weights, optimiser) per epoch
    model.keras               the final model, written atomically at the end
    logs/train/               TensorBoard scalars: loss and one per enabled loss
    skipped.json              audio files skipped, with reasons
    summary.json              steps, final metrics, wall time, skipped count

Starting the same command again resumes from `backup/`: weights, optimiser state and the
epoch counter are restored (granularity: one epoch; a run killed mid-epoch redoes that
epoch), and the data pipeline is re-seeded with the epoch so the resumed epochs draw
new segments instead of replaying the first ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Optional

import keras

from msss_tf.config import CONFIG_FILENAME, MSSSConfig
from msss_tf.data import SkipReport, pretrain_dataset
from msss_tf.data.audio import write_json_atomically
from msss_tf.distribute import check_global_batch, make_strategy, writable_model_dir
from msss_tf.model import MSSSModel, build_optimizer
from msss_tf.reliability import (NONFINITE_POLICIES, TRAIN_LOG, AtomicBackupAndRestore,
                                 AtomicModelCheckpoint, NonFiniteGuard, NonFiniteLossError,
                                 RunLog, install_nonfinite_skip, read_backup_metadata,
                                 save_model_atomically, test_hook_callbacks)

BACKUP_DIR = "backup"
CHECKPOINT_DIR = "checkpoints"
FINAL_MODEL = "model.keras"
LOG_DIR = "logs"


def resolve_config(model_dir: str, config: MSSSConfig, explicit: Optional[set] = None):
    """The config to train with: the one saved in `model_dir` if any, else `config`.

    When `model_dir` already holds a run, every field in `explicit` (the settings the
    user asked for) must agree with the saved config; otherwise the resume would
    silently train something else, so this raises ValueError naming the fields.
    """
    path = os.path.join(model_dir, CONFIG_FILENAME)
    if not os.path.exists(path):
        return config
    saved = MSSSConfig.load(path)
    explicit = set(explicit or ())
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


def _resumed_epoch(model_dir: str) -> int:
    return int(read_backup_metadata(os.path.join(model_dir, BACKUP_DIR)).get("epoch", 0))


# AtomicModelCheckpoint and save_model_atomically live in msss_tf.reliability.


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The final model if written, else the newest epoch checkpoint, else None."""
    final = os.path.join(model_dir, FINAL_MODEL)
    if os.path.exists(final):
        return final
    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return None
    saved = sorted(f for f in os.listdir(directory)
                   if f.endswith(".keras") and not f.endswith(".tmp.keras"))
    return os.path.join(directory, saved[-1]) if saved else None


@dataclasses.dataclass
class PretrainResult:
    model: MSSSModel
    history: dict
    steps: int
    epochs_run: int
    skipped: SkipReport
    seconds: float
    model_path: str


def pretrain(
    config: MSSSConfig,
    data: str,
    model_dir: str,
    train_steps: int,
    steps_per_epoch: int = 100,
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
) -> PretrainResult:
    """Pre-trains an `MSSSModel` on `data` into `model_dir`; resumes if it holds a run.

    Args:
        config: the configuration (use `resolve_config` first when resuming).
        data: "synthetic", a folder of audio, or a folder written by `prepare_corpus`.
        model_dir: where config, checkpoints, logs and the final model go.
        train_steps: total optimiser steps, rounded up to whole epochs.
        steps_per_epoch: steps between checkpoints and epoch-level logs.
        synthetic_clips: size of the built-in corpus when `data == "synthetic"`.
        log_every: TensorBoard logs every this many steps.
        verbose: Keras `fit` verbosity ("auto": a progress bar).
        strategy: "default" (one device), "mirrored" (this host's GPUs) or "multi_worker"
            (hosts in TF_CONFIG; only the chief writes `model_dir`, the other workers a
            temporary folder). `config.batch_size` is the global batch. See
            `msss_tf.distribute`.
        jit_compile: XLA for the train step: True, False or "auto" (Keras: on with a GPU).
        mixed_precision: None, "mixed_float16" or "mixed_bfloat16" for the encoder.
        view_batching: "separate" (three encoder calls) or "concat" (one call on 3B).
        sync_batch_norm: with several replicas, global-batch batch-norm statistics.
        on_nonfinite: a step with a non-finite loss (or non-finite weights after it):
            "stop" raises `NonFiniteLossError` naming the step before anything of that
            epoch is saved (the last checkpoint and backup/ stay good); "skip" undoes the
            step and goes on (10 in a row still stop). See `msss_tf.reliability`.
    """
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"--on_nonfinite={on_nonfinite!r}: must be one of {NONFINITE_POLICIES}")
    if train_steps < 1:
        raise ValueError(f"--train_steps must be >= 1, got {train_steps}")
    if steps_per_epoch < 1:
        raise ValueError(f"--steps_per_epoch must be >= 1, got {steps_per_epoch}")
    distribution = make_strategy(strategy)  # first: before any other TensorFlow op
    check_global_batch(config.batch_size, distribution)
    model_dir = writable_model_dir(model_dir, distribution)
    steps_per_epoch = min(steps_per_epoch, train_steps)
    epochs = math.ceil(train_steps / steps_per_epoch)
    os.makedirs(model_dir, exist_ok=True)
    config.save(model_dir)

    start_epoch = _resumed_epoch(model_dir)
    # Seed first: the pipeline's seeded shuffles also read TF's global seed, so a second
    # pretrain() in one process would otherwise see another data order than a fresh one.
    keras.utils.set_random_seed(config.seed)
    skipped = SkipReport()
    dataset = pretrain_dataset(
        data,
        config,
        seed=config.seed + 1_000_003 * start_epoch,
        report=skipped,
        num_clips=synthetic_clips,
    )
    keras.utils.set_random_seed(config.seed)  # the same seed, the same initial weights
    with distribution.scope():
        model = MSSSModel(config, view_batching=view_batching, mixed_precision=mixed_precision)
        if sync_batch_norm and distribution.num_replicas_in_sync > 1:
            model.set_batch_norm_synchronized(True)
        model.compile(optimizer=build_optimizer(config, mixed_precision),
                      jit_compile=jit_compile)
    if on_nonfinite == "skip":
        install_nonfinite_skip(model)

    # Order matters at an epoch's end: the guard refuses a non-finite state before the
    # checkpoint and the backup (the commit point) are written; the log records the commit.
    run_log = RunLog(os.path.join(model_dir, TRAIN_LOG), steps_per_epoch)
    guard = NonFiniteGuard(on_nonfinite, steps_per_epoch, os.path.join(model_dir, CHECKPOINT_DIR),
                           run_log=run_log)
    callbacks = [
        guard,
        AtomicModelCheckpoint(os.path.join(model_dir, CHECKPOINT_DIR), marker_dir=model_dir),
        AtomicBackupAndRestore(os.path.join(model_dir, BACKUP_DIR)),
        run_log,
        keras.callbacks.TensorBoard(os.path.join(model_dir, LOG_DIR), update_freq=log_every),
        *test_hook_callbacks(steps_per_epoch, model_dir),
        *extra_callbacks,
    ]
    started = time.time()
    try:
        history = model.fit(
            dataset,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the pipeline shuffles, with the seed
        )
    except NonFiniteLossError as e:
        skipped.write(os.path.join(model_dir, "skipped.json"))
        write_json_atomically(os.path.join(model_dir, "summary.json"), {
            "data": data, "status": "stopped", "error": str(e), "stopped_at_step": e.step,
            "last_good_checkpoint": e.checkpoint, "resumed_from_epoch": start_epoch,
            "nonfinite_skipped_steps": guard.skipped_steps,
            "seconds": time.time() - started, "skipped": skipped.to_dict()})
        raise
    seconds = time.time() - started
    model_path = save_model_atomically(model, os.path.join(model_dir, FINAL_MODEL))
    skipped.write(os.path.join(model_dir, "skipped.json"))
    epochs_run = len(history.epoch)
    final = {k: float(v[-1]) for k, v in history.history.items() if v}
    write_json_atomically(
        os.path.join(model_dir, "summary.json"),
        {
            "data": data,
            "train_steps": epochs * steps_per_epoch,
            "steps_this_run": epochs_run * steps_per_epoch,
            "resumed_from_epoch": start_epoch,
            "status": "completed",
            "nonfinite_skipped_steps": guard.skipped_steps,
            "final_metrics": final,
            "seconds": seconds,
            "skipped": skipped.to_dict(),
        },
    )
    return PretrainResult(
        model=model,
        history=history.history,
        steps=epochs * steps_per_epoch,
        epochs_run=epochs_run,
        skipped=skipped,
        seconds=seconds,
        model_path=model_path,
    )
