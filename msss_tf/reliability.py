"""What keeps a long pre-training run safe: atomic backups and checkpoints, a guard
against non-finite losses, and a log of every start, committed epoch and bad step.

Used by `msss_tf.pretrain`; each piece is a Keras callback (or a small helper) that works
in any `model.fit`:

* `AtomicBackupAndRestore`: Keras' `BackupAndRestore`, but every backup is committed
  atomically. The weights (model + optimiser) go to a new file that is renamed into
  place, then `training_metadata.json` (written atomically too) is switched to name it;
  the previous weights file is deleted only after that. A SIGKILL at any instant leaves
  either the old or the new state, never a mix (Keras' own callback writes its weights
  and its JSON in place: a kill between them resumes with the next epoch's weights under
  the previous epoch's counter, and a kill inside the JSON write breaks the resume).
* `AtomicModelCheckpoint`: the full model per epoch, written to `*.tmp.keras` then
  renamed; leftovers of a killed write are removed on the next start.
* `NonFiniteGuard` (+ `install_nonfinite_skip`): a non-finite loss or non-finite weights
  either stop the run with `NonFiniteLossError` naming the step (policy "stop") before
  anything is saved, or the step is undone and training goes on (policy "skip").
* `RunLog`: `train_log.jsonl` in the run directory, one JSON object per event: "start"
  (initial epoch, optimiser step, fingerprints of the restored state), "epoch_end" (after
  the epoch's backup is committed), "nonfinite" (a skipped or fatal step).
* `GracefulStop` + `StopAtStep`: SIGINT (Ctrl-C) and SIGTERM (schedulers) only set a
  flag; `StopAtStep` ends `fit` at the next step boundary, where the epoch-end callbacks
  commit the state of that step (checkpoint, backup), and the caller raises
  `TrainingInterrupted`. A second signal raises `TrainingAborted` at once. `StopAtStep`
  also ends `fit` when the optimiser reaches the step budget, so the last epoch may be
  shorter and the step count is exact.
* Step numbers: "step N" in messages, `train_log.jsonl` ("fit_step") and the test hook is
  the N-th batch of the run, counted across resumes (the backup records it as "batches");
  the optimiser's own count ("optimizer_step", backup "step") leaves out undone steps.
* Test hooks: the environment variable `MSSS_TF_TEST_PAUSE` ("step:N" or
  "checkpoint:E") makes a run stop and sleep right after global step N, or after epoch
  E's checkpoint is written but before it is renamed, after touching
  `<model_dir>/.test-paused`; tests SIGKILL the process there, or send it SIGINT/SIGTERM
  (a caught signal ends the pause). Unset in normal use.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from msss_tf.data.audio import write_json_atomically
from msss_tf.rundir import last_good_checkpoint

NONFINITE_POLICIES = ("stop", "skip")
TEST_PAUSE_ENV = "MSSS_TF_TEST_PAUSE"
TEST_PAUSE_MARKER = ".test-paused"
TRAIN_LOG = "train_log.jsonl"
METADATA = "training_metadata.json"


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


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a step boundary after SIGINT or SIGTERM; the state at that step
    is committed (backup/ and a checkpoint) when `committed`, and the same command resumes.

    Attributes: signum, step (optimiser steps the run holds), train_steps (asked for),
    model_dir, committed, exit_code (128 + signum: 130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, step: int, train_steps: int, model_dir: str,
                 committed: bool = True):
        self.signum, self.step, self.train_steps = signum, step, train_steps
        self.model_dir, self.committed = model_dir, committed
        self.exit_code = 128 + signum
        where = (f"the state at step {step} is saved in {model_dir}" if committed
                 else f"{model_dir} holds {step} steps, as before")
        super().__init__(f"interrupted by {signal_name(signum)} at step {step} of "
                         f"{train_steps}; {where}")


class TrainingAborted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: training was abandoned at once, mid-step. The run holds
    its last committed state (the same command resumes from it). exit_code: 128 + signum."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"aborted by a second {signal_name(signum)}")


# ---------------------------------------------------------------------------- signals
_ACTIVE_STOPS = []  # the GracefulStop blocks now open, innermost last


def stop_requested() -> bool:
    """Whether the innermost open `GracefulStop` has caught a signal."""
    return bool(_ACTIVE_STOPS) and _ACTIVE_STOPS[-1].requested


class GracefulStop:
    """A `with` block in which SIGINT and SIGTERM ask training to stop instead of killing it.

    The first signal only records itself (`signum`, `requested`) and says so on stderr;
    `StopAtStep` then ends `fit` at the next step boundary. A second signal raises
    `TrainingAborted` wherever the main thread is (every file is written atomically, so
    the run keeps its last committed state). The previous handlers come back on exit.
    Outside the main thread (Python installs handlers there only) or with
    `enabled=False`, no handler is installed and `requested` stays False.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.signum = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        _ACTIVE_STOPS.append(self)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous = {}
        if self in _ACTIVE_STOPS:
            _ACTIVE_STOPS.remove(self)
        return False

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise TrainingAborted(signum)
        self.signum = signum
        # os.write, not print: the handler may run while the main thread is inside a
        # print to the same stream (a buffered writer refuses re-entry).
        os.write(2, (f"\nmsss-tf: {signal_name(signum)} received: stopping after this step "
                     f"and saving it; send it again (Ctrl-C) to abort at once\n").encode())


class StopAtStep(keras.callbacks.Callback):
    """Ends `fit` at a step boundary: once the optimiser has taken `target_step` steps
    (so the last epoch may be shorter than `steps_per_epoch` and the count is exact), or
    once `stop` (a `GracefulStop`) has caught a signal. Keras then runs the epoch-end
    callbacks for that partial epoch: the checkpoint and the backup commit the state of
    that step, which a resumed run continues from.

    Put it after the checkpoint and backup callbacks (and after the test hooks).
    """

    def __init__(self, target_step: int, stop: Optional[GracefulStop] = None):
        super().__init__()
        self.target_step = target_step
        self.stop = stop

    def _optimizer_step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        held = self._optimizer_step()  # after the backup was restored
        if held > self.target_step:
            raise ValueError(f"the restored run holds {held} optimizer steps, more than the "
                             f"{self.target_step} asked for; ask for --train_steps={held} "
                             f"or more, or use a new --model_dir")

    def on_train_batch_end(self, batch, logs=None):
        if (self.stop is not None and self.stop.requested) or \
                self._optimizer_step() >= self.target_step:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.stop is not None and self.stop.requested:
            self.model.stop_training = True


# ------------------------------------------------------------------------------ hooks
def _test_pause(kind: str, number: int, marker_dir: str) -> None:
    """Sleeps (until killed, or until a caught SIGINT/SIGTERM asks to stop) if
    MSSS_TF_TEST_PAUSE asks to pause at (kind, number)."""
    wanted = os.environ.get(TEST_PAUSE_ENV, "")
    if wanted != f"{kind}:{number}":
        return
    with open(os.path.join(marker_dir, TEST_PAUSE_MARKER), "w") as f:
        f.write(wanted)
    deadline = time.time() + 600
    while time.time() < deadline and not stop_requested():
        time.sleep(0.05)


class _StepCounter(keras.callbacks.Callback):
    """Counts batches: `step` is the run's global step (`initial_step` at the start of this
    process, +1 per batch, over every `fit` this callback takes part in)."""

    def __init__(self, initial_step: int = 0):
        super().__init__()
        self.step = int(initial_step)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


class _PauseAtStep(_StepCounter):
    def __init__(self, marker_dir: str, initial_step: int = 0):
        super().__init__(initial_step)
        self.marker_dir = marker_dir

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        _test_pause("step", self.step, self.marker_dir)


def test_hook_callbacks(model_dir: str, initial_step: int = 0) -> list:
    """The pause-at-step callback when MSSS_TF_TEST_PAUSE asks for one, else []."""
    if os.environ.get(TEST_PAUSE_ENV, "").startswith("step:"):
        return [_PauseAtStep(model_dir, initial_step)]
    return []


# ------------------------------------------------------------------------ checkpoints
def save_model_atomically(model: keras.Model, path: str, pause: Optional[tuple] = None) -> str:
    """`model.save(path)` via `*.tmp.keras` + rename: a reader never sees half a file."""
    tmp = path[: -len(".keras")] + ".tmp.keras"
    model.save(tmp)
    if pause is not None:
        _test_pause(*pause)
    os.replace(tmp, path)
    return path


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the full model as `epoch-NNNN.keras` each epoch (atomically), keeping the
    newest `keep`; removes `*.tmp.keras` left by a killed write when training starts."""

    def __init__(self, directory: str, keep: int = 3, marker_dir: Optional[str] = None):
        super().__init__()
        self.directory = directory
        self.keep = keep
        self.marker_dir = marker_dir or directory

    def on_train_begin(self, logs=None):
        if os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.endswith(".tmp.keras"):
                    os.remove(os.path.join(self.directory, name))

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"epoch-{epoch + 1:04d}.keras")
        save_model_atomically(self.model, path, pause=("checkpoint", epoch + 1, self.marker_dir))
        saved = sorted(f for f in os.listdir(self.directory)
                       if f.endswith(".keras") and not f.endswith(".tmp.keras"))
        for old in saved[: -self.keep] if self.keep else []:
            os.remove(os.path.join(self.directory, old))


# ----------------------------------------------------------------------------- backup
def read_backup_metadata(backup_dir: str) -> dict:
    """The committed backup state ({"epoch", "weights", "step", ...}); {} if none.

    Raises ValueError naming the file if it is unreadable (only a legacy Keras backup,
    written in place, can be).
    """
    path = os.path.join(backup_dir, METADATA)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            meta = json.load(f)
        int(meta["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: corrupt backup metadata ({e}); delete {backup_dir} to "
                         f"start over, or restore from a checkpoint") from e
    return meta


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` (save at each epoch end) with atomic commits.

    Layout of `backup_dir`: `epoch-NNNNNN.weights.h5` (model and optimiser variables, the
    current one and the previous one) and `training_metadata.json` = {"epoch": E,
    "batch": 0, "weights": <file name>, "step": <optimiser iterations>, "batches": <batches
    run in all, undone ones included>}. The JSON names the weights file, so the pair is
    switched in one atomic rename. A backup written by Keras' own callback
    (latest.weights.h5, no "weights" key) is still restored.

    E counts committed epochs; an epoch cut short (the step budget's last one, or a stop
    on a signal) is committed like a whole one, so read the step counts, not E * epoch
    length. `initial_batches`: the "batches" of the backup this run starts from.
    """

    def __init__(self, backup_dir: str, initial_batches: int = 0):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.batches = int(initial_batches)

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1

    def on_train_begin(self, logs=None):
        meta = read_backup_metadata(self.backup_dir)
        if "weights" not in meta:
            return super().on_train_begin(logs)  # none yet, or a legacy Keras backup
        path = os.path.join(self.backup_dir, meta["weights"])
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(path)
        except Exception as e:
            raise ValueError(f"{path}: cannot restore the backup ({type(e).__name__}: {e}); "
                             f"delete {self.backup_dir} to start over") from e
        self.model._initial_epoch = int(meta["epoch"])
        self._current_epoch = int(meta["epoch"])

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{self._current_epoch:06d}.weights.h5"
        tmp = os.path.join(self.backup_dir, f".tmp-{name}")
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, os.path.join(self.backup_dir, name))
        previous = read_backup_metadata(self.backup_dir).get("weights")
        step = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer else None
        write_json_atomically(os.path.join(self.backup_dir, METADATA), {
            "epoch": self._current_epoch, "batch": 0, "weights": name, "step": step,
            "batches": self.batches, "previous": previous, "time": time.time()})
        keep = {name, previous}
        for old in os.listdir(self.backup_dir):
            if old not in keep and (old.endswith(".weights.h5") or old.endswith(".bkp")):
                os.remove(os.path.join(self.backup_dir, old))


# -------------------------------------------------------------------------- non-finite
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


class NonFiniteGuard(_StepCounter):
    """Watches every step's loss: with policy "stop" a non-finite loss raises
    `NonFiniteLossError` at once (inside `fit`, so no epoch-end callback saves anything
    of that epoch); with "skip" (after `install_nonfinite_skip`) the undone steps are
    recorded, and `max_consecutive_skips` in a row stop the run. At each epoch end (put
    this callback before the checkpoint and backup callbacks) non-finite weights stop the
    run too, so a bad state is never saved.

    Attributes: skipped_steps (global step numbers undone), stopped (the error, if any).
    `initial_step`: the run's global step (batches run, see the module docstring) at start.
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


# -------------------------------------------------------------------------------- log
def _fingerprint(variables) -> float:
    """Sum of |values| over `variables` in float64: equal states give equal numbers."""
    return float(sum(np.abs(np.asarray(v.numpy(), np.float64)).sum() for v in variables))


class RunLog(_StepCounter):
    """Appends one JSON line per event to `path` (see the module docstring). Put it
    after the backup callback: its "epoch_end" means the epoch is committed.
    `initial_step`: the run's global step (batches run) at start."""

    def __init__(self, path: str, initial_step: int = 0):
        super().__init__(initial_step)
        self.path = path

    def event(self, kind: str, **fields) -> None:
        record = {"event": kind, "time": round(time.time(), 3), "pid": os.getpid(), **fields}
        with open(self.path, "a+b") as f:
            # A line torn by a power cut or a full disk must not swallow this one.
            torn = False
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            f.write((("\n" if torn else "") + json.dumps(record) + "\n").encode())
            f.flush()

    def _state(self) -> dict:
        optimizer = self.model.optimizer
        return {
            "optimizer_step": int(optimizer.iterations.numpy()),
            "optimizer_fingerprint": _fingerprint(optimizer.variables),
            "weights_fingerprint": _fingerprint(self.model.weights),
        }

    def on_train_begin(self, logs=None):
        self.event("start", initial_epoch=int(self.model._initial_epoch or 0),
                   fit_step=self.step, **self._state())

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        self.event("epoch_end", epoch=epoch + 1, fit_step=self.step,
                   loss=None if loss is None else float(np.asarray(loss)), **self._state())


def read_run_log(model_dir: str) -> list:
    """The events of `model_dir/train_log.jsonl` (a torn last line is ignored)."""
    path = os.path.join(model_dir, TRAIN_LOG)
    events = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
    return events
