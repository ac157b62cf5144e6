"""The training stage: the pre-training job and what keeps it safe and distributed.

* `pretrain`: `pretrain` (fit, checkpoints, resume, TensorBoard, summary),
  `TrainingInterrupted`.
* `distribute`: `--strategy` (default, mirrored, multi_worker): the strategy, the global
  batch, the chief.
* `reliability/`: atomic backups and checkpoints, the non-finite guard, `train_log.jsonl`.

The run directory's layout, which inference reads too, is `msss_tf.rundir`. The public
names below are imported on first use (PEP 562).
"""

import importlib

_PUBLIC = {
    "pretrain": "pretrain",
    "make_strategy": "distribute",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'msss_tf.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"msss_tf.training.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
