"""Stopping a run cleanly on SIGINT/SIGTERM.

`GracefulStop` turns the first signal into a request (`stop_requested()`); `StopAtStep`
ends `fit` at the next step boundary (or at the step budget), where the epoch-end
callbacks commit that step's state, and the caller raises `TrainingInterrupted`. A second
signal raises `TrainingAborted` at once.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Optional

import keras


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

