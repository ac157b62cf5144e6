"""Test hooks of the fault-injection tests, and the batch counter the callbacks share.

The environment variable `MSSS_TF_TEST_PAUSE` ("step:N" or "checkpoint:E") makes a run
stop and sleep right after global step N, or after epoch E's checkpoint is written but
before it is renamed, after touching `<model_dir>/.test-paused`; tests SIGKILL the
process there, or send it SIGINT/SIGTERM (a caught signal ends the pause). Unset in
normal use.
"""

from __future__ import annotations

import os
import time

import keras

from msss_tf.training.reliability.signals import stop_requested

TEST_PAUSE_ENV = "MSSS_TF_TEST_PAUSE"
TEST_PAUSE_MARKER = ".test-paused"


def test_pause(kind: str, number: int, marker_dir: str) -> None:
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


class StepCounter(keras.callbacks.Callback):
    """Counts batches: `step` is the run's global step (`initial_step` at the start of this
    process, +1 per batch, over every `fit` this callback takes part in)."""

    def __init__(self, initial_step: int = 0):
        super().__init__()
        self.step = int(initial_step)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


class _PauseAtStep(StepCounter):
    def __init__(self, marker_dir: str, initial_step: int = 0):
        super().__init__(initial_step)
        self.marker_dir = marker_dir

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        test_pause("step", self.step, self.marker_dir)


def test_hook_callbacks(model_dir: str, initial_step: int = 0) -> list:
    """The pause-at-step callback when MSSS_TF_TEST_PAUSE asks for one, else []."""
    if os.environ.get(TEST_PAUSE_ENV, "").startswith("step:"):
        return [_PauseAtStep(model_dir, initial_step)]
    return []

