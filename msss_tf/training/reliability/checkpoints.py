"""Atomic checkpoints and backups: a SIGKILL at any instant leaves the old or the new
state, never a mix.

* `save_model_atomically`, `AtomicModelCheckpoint`: full models
  per epoch, written to `*.tmp.keras` then renamed.
* `AtomicBackupAndRestore`, `read_backup_metadata`: Keras' `BackupAndRestore` with the
  weights file and `training_metadata.json` switched in one atomic rename.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import keras

from msss_tf.atomic import write_json_atomically
from msss_tf.training.reliability.hooks import test_pause

METADATA = "training_metadata.json"


def save_model_atomically(model: keras.Model, path: str, pause: Optional[tuple] = None) -> str:
    """`model.save(path)` via `*.tmp.keras` + rename: a reader never sees half a file."""
    tmp = path[: -len(".keras")] + ".tmp.keras"
    model.save(tmp)
    if pause is not None:
        test_pause(*pause)
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

