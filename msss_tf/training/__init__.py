"""The training stage: the pre-training job and what keeps it safe and distributed.

* `pretrain`: `pretrain` (fit, checkpoints, resume, TensorBoard, summary),
  `TrainingInterrupted`.
* `distribute`: `--strategy` (default, mirrored, multi_worker): the strategy, the global
  batch, the chief.
* `reliability/`: atomic backups and checkpoints, the non-finite guard, `train_log.jsonl`.

The run directory's layout, which inference reads too, is `msss_tf.rundir`. The public
names below are imported on first use (PEP 562).
"""

from msss_tf.lazy import lazy_exports

_PUBLIC = {
    "pretrain": "pretrain",
    "make_strategy": "distribute",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
