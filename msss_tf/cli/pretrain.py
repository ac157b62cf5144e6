"""`msss-tf pretrain`: pre-train the MSSS model with model.fit (resumable)."""

from __future__ import annotations

import os
import sys

from absl import flags

from msss_tf.cli.common import (config_from_flags, define_config_flags,
                                define_performance_flags, parse_jit_compile, require)

# The flags defined here belong to the caller, msss_tf.cli (one group in --help).
flags.disclaim_key_flags()


def define_pretrain(fv):
    flags.DEFINE_string("data", "synthetic", "'synthetic' (the built-in offline corpus), a folder "
                        "of audio, or a folder written by `msss-tf prepare`.", flag_values=fv)
    flags.DEFINE_string("model_dir", None, "Run directory: config, checkpoints, TensorBoard logs. "
                        "Starting again on the same directory resumes.", flag_values=fv)
    flags.DEFINE_integer("train_steps", 1000, "Total optimiser steps the run holds at "
                         "the end; exact (the last epoch may be shorter). On a resume, the "
                         "total, not the steps to add.", flag_values=fv)
    flags.DEFINE_integer("steps_per_epoch", 100, "Steps per epoch: checkpoint and resume "
                         "granularity; recorded with the run (a resume keeps it unless "
                         "given).", flag_values=fv)
    flags.DEFINE_integer("synthetic_clips", 256, "Clips in the built-in corpus (--data=synthetic).",
                         flag_values=fv)
    flags.DEFINE_integer("log_every", 10, "TensorBoard logging interval in steps.", flag_values=fv)
    flags.DEFINE_enum("on_nonfinite", "stop", ["stop", "skip"], "A step with a non-finite "
                      "loss: stop (exit code 3, naming the step; nothing of that epoch is saved, "
                      "the last checkpoint stays good) or skip (undo the step and go on; 10 in a "
                      "row still stop).", flag_values=fv)
    define_performance_flags(fv)
    define_config_flags(fv)


def run_pretrain(fv):
    import shlex

    from msss_tf.training.pretrain import pretrain, resolve_config
    from msss_tf.training.reliability import NonFiniteLossError, TrainingAborted, TrainingInterrupted

    require(fv, "model_dir")
    config, explicit = config_from_flags(fv)
    config = resolve_config(fv.model_dir, config, explicit)
    # The command line of the flags given, to say how to repeat it (resume).
    command = " ".join(["msss-tf", "pretrain"] + [
        shlex.quote(word) for name in fv if fv[name].present and name == fv[name].name
        and name not in ("help", "verbose") for word in fv[name].serialize().split("\n")])
    try:
        result = pretrain(
            config,
            data=fv.data,
            model_dir=fv.model_dir,
            train_steps=fv.train_steps,
            # Not given: the run's recorded epoch length (a resume keeps it), else 100.
            steps_per_epoch=fv.steps_per_epoch if fv["steps_per_epoch"].present else None,
            synthetic_clips=fv.synthetic_clips,
            log_every=fv.log_every,
            strategy=fv.strategy,
            jit_compile=parse_jit_compile(fv.jit_compile),
            mixed_precision=fv.mixed_precision,
            view_batching=fv.view_batching,
            sync_batch_norm=fv.sync_batch_norm,
            on_nonfinite=fv.on_nonfinite,
            command=command,
        )
    except NonFiniteLossError as e:
        print(f"msss-tf pretrain: stopped: {e}", file=sys.stderr)
        return 3
    except TrainingInterrupted as e:
        print(f"\nmsss-tf pretrain: {e}. To resume, run the same command again: {command}",
              flush=True)
        return e.exit_code
    except TrainingAborted as e:
        print(f"\nmsss-tf pretrain: {e}; the run keeps its last saved state. To resume, run "
              f"the same command again: {command}", flush=True)
        return e.exit_code
    except KeyboardInterrupt:  # before pretrain() took the signals over
        print(f"\nmsss-tf pretrain: interrupted. To resume, run the same command again: "
              f"{command}", flush=True)
        return 130
    _print_pretrain_summary(result, fv.model_dir)
    return 0


def _print_pretrain_summary(result, model_dir):
    if result.steps_this_run:
        print(f"\ntrained {result.steps_this_run} step(s) in {result.epochs_run} epoch(s) this "
              f"run, {result.steps} steps in all, in {result.seconds:.0f} s")
    else:
        print(f"\nnothing to train: {model_dir} already holds {result.steps} steps "
              f"(--train_steps); ask for more to continue it")
    rows = sorted(result.final_metrics.items())
    if rows:
        print("final metrics:")
        for name, value in rows:
            print(f"  {name:<16} {value:.4f}")
    print(f"model: {result.model_path}")
    print(f"TensorBoard: tensorboard --logdir {os.path.join(model_dir, 'logs')}")
    if result.skipped.count:
        print(result.skipped.summary())
