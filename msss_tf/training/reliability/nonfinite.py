"""The guard against non-finite losses and weights: stop the run (policy "stop") or undo
the step and go on (policy "skip", `install_nonfinite_skip`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import keras
import numpy as np
import tensorflow as tf

from msss_tf.rundir import last_good_checkpoint
from msss_tf.training.reliability.hooks import StepCounter

if TYPE_CHECKING:
    from msss_tf.training.reliability.runlog import RunLog

NONFINITE_POLICIES = ("stop", "skip")


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss (or non-finite weights).

    Attributes: step (global 1-based optimiser step of `fit`), epoch (1-based), what
    ("loss" or "weights"), checkpoint (the last good checkpoint path, or None).
    """

    def __init__(self, step: int, epoch: int, what: str = "loss",
                 checkpoint: Optional[str] = None, value=None):
        self.step, self.epoch, self.what, self.checkpoint = step, epoch, what, checkpoint
        if what == "loss":
            head = f"non-finite loss ({value}) at step {step} (epoch {epoch})"
        else:
            head = f"non-finite weights after step {step} (end of epoch {epoch})"
        kept = (f"the last good checkpoint is {checkpoint}" if checkpoint
                else "no checkpoint was written yet")
        super().__init__(
            f"{head}: training stopped, nothing of this epoch was saved; {kept} "
            f"(backup/ holds the same state: the same command resumes from it). "
            f"Lower the learning rate, or pass --on_nonfinite=skip to drop such steps.")


def _all_finite(variables) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(v.numpy())))) for v in variables
               if np.asarray(v.numpy()).dtype.kind == "f")


def install_nonfinite_skip(model: keras.Model) -> tf.Variable:
    """Wraps `model.train_step` so that a step whose loss or updated weights are not
    finite is undone: model weights (trainable, batch-norm statistics), optimiser state
    (moments and iterations) and metric accumulators get their values from before the
    step back. Costs one copy of those variables per step (copy-on-write, on device).

    Call after `compile` and before `fit`. Returns the int64 counter of undone steps; the
    step's logs carry it as "nonfinite_skipped". One replica only: under a multi-replica
    tf.distribute strategy this raises ValueError (use the "stop" policy there).
    """
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1:
        raise ValueError("on_nonfinite='skip' runs on one replica only; use 'stop' with a "
                         "multi-replica tf.distribute strategy")
    counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_skipped")
    original = model.train_step

    def guarded_train_step(data):
        state = ([v for v in model.trainable_variables]
                 + [v for v in model.non_trainable_variables if "seed" not in v.path]
                 + list(model.optimizer.variables) + list(model.metrics_variables))
        saved = [tf.identity(v.value) for v in state]
        logs = original(data)
        checks = [tf.reduce_all(tf.math.is_finite(tf.cast(logs["loss"], tf.float32)))]
        checks += [tf.reduce_all(tf.math.is_finite(v.value)) for v in model.trainable_variables]
        finite = tf.reduce_all(tf.stack(checks))

        def undo():
            for v, s in zip(state, saved):
                v.assign(s)
            counter.assign_add(1)
            return tf.constant(0)

        with tf.control_dependencies([tf.cond(finite, lambda: tf.constant(1), undo)]):
            out = {name: tf.identity(t.result()) for name, t in
                   zip([m.name for m in model.metrics], model.metrics)}
            out["nonfinite_skipped"] = tf.identity(counter)
        return out

    model.train_step = guarded_train_step
    return counter


class NonFiniteGuard(StepCounter):
    """Watches every step's loss: with policy "stop" a non-finite loss raises
    `NonFiniteLossError` at once (inside `fit`, so no epoch-end callback saves anything
    of that epoch); with "skip" (after `install_nonfinite_skip`) the undone steps are
    recorded, and `max_consecutive_skips` in a row stop the run. At each epoch end (put
    this callback before the checkpoint and backup callbacks) non-finite weights stop the
    run too, so a bad state is never saved.

    Attributes: skipped_steps (global step numbers undone), stopped (the error, if any).
    `initial_step`: the run's global step (batches run, see the `msss_tf.training.reliability`
    docstring) at start.
    """

    def __init__(self, policy: str, checkpoint_dir: str, max_consecutive_skips: int = 10,
                 run_log: Optional["RunLog"] = None, initial_step: int = 0):
        super().__init__(initial_step)
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite={policy!r}: must be one of {NONFINITE_POLICIES}")
        self.policy = policy
        self.checkpoint_dir = checkpoint_dir
        self.max_consecutive_skips = max_consecutive_skips
        self.run_log = run_log
        self.skipped_steps = []
        self.stopped = None
        self._epoch = 0
        self._skipped_total = 0
        self._consecutive = 0

    def _stop(self, step, what, value=None):
        error = NonFiniteLossError(step, self._epoch + 1, what,
                                   last_good_checkpoint(self.checkpoint_dir), value)
        self.stopped = error
        if self.run_log is not None:
            self.run_log.event("nonfinite", step=step, epoch=self._epoch + 1, what=what,
                               action="stop", message=str(error))
        raise error

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        logs = logs or {}
        step = self.step
        if self.policy == "skip" and "nonfinite_skipped" in logs:
            total = int(np.asarray(logs["nonfinite_skipped"]))
            if total > self._skipped_total:
                self._skipped_total = total
                self._consecutive += 1
                self.skipped_steps.append(step)
                if self.run_log is not None:
                    self.run_log.event("nonfinite", step=step, epoch=self._epoch + 1,
                                       what="loss", action="skip")
                if self._consecutive >= self.max_consecutive_skips:
                    self._stop(step, "loss", f"{self._consecutive} steps in a row")
            else:
                self._consecutive = 0
            return
        if "loss" in logs:
            value = float(np.asarray(logs["loss"]))
            if not np.isfinite(value):
                self._stop(step, "loss", value)

    def on_epoch_end(self, epoch, logs=None):
        if not _all_finite(self.model.weights):
            self._stop(self.step, "weights")

