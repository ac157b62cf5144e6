"""The layout of a pre-training run directory, shared by training and inference.

A run directory (`msss-tf pretrain --model_dir=RUN`) holds:

* `CONFIG_FILENAME` (msss_config.json): the run's `MSSSConfig`;
* `FINAL_MODEL` (model.keras): the trained model, written when training ends;
* `CHECKPOINT_DIR` (checkpoints/): epoch checkpoints `epoch-NNNN.keras`; a write killed
  before its rename leaves `epoch-NNNN.tmp.keras`, which no reader opens.

`msss_tf.training.pretrain` writes this layout; `msss_tf.embedding` reads it
(`latest_checkpoint`). Pure `os` code: importing it loads no TensorFlow.
"""

from __future__ import annotations

import os
from typing import Optional

CONFIG_FILENAME = "msss_config.json"
FINAL_MODEL = "model.keras"
CHECKPOINT_DIR = "checkpoints"


def last_good_checkpoint(directory: str) -> Optional[str]:
    """The newest complete `epoch-NNNN.keras` in `directory`, or None."""
    if not os.path.isdir(directory):
        return None
    saved = sorted(f for f in os.listdir(directory)
                   if f.endswith(".keras") and not f.endswith(".tmp.keras"))
    return os.path.join(directory, saved[-1]) if saved else None


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The newest of the final model and the epoch checkpoints, else None.

    An interrupted resume leaves checkpoints newer than an earlier run's final model:
    those hold more training, so the newer file wins.
    """
    final = os.path.join(model_dir, FINAL_MODEL)
    checkpoint = last_good_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
    candidates = [p for p in (final, checkpoint) if p and os.path.exists(p)]
    if not candidates:
        return None
    return max(candidates, key=os.path.getmtime)


def is_run_dir(path: str) -> bool:
    """Whether the folder `path` looks like a run directory (any of the three entries)."""
    return any(os.path.exists(os.path.join(path, name))
               for name in (FINAL_MODEL, CHECKPOINT_DIR, CONFIG_FILENAME))
