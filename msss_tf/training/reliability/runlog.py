"""`train_log.jsonl`: one JSON object per event of a run ("start", "epoch_end",
"nonfinite"), appended so that a torn last line never swallows the next one."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from msss_tf.training.reliability.hooks import StepCounter

TRAIN_LOG = "train_log.jsonl"


def _fingerprint(variables) -> float:
    """Sum of |values| over `variables` in float64: equal states give equal numbers."""
    return float(sum(np.abs(np.asarray(v.numpy(), np.float64)).sum() for v in variables))


class RunLog(StepCounter):
    """Appends one JSON line per event to `path` (see the `msss_tf.training.reliability` docstring). Put it
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
