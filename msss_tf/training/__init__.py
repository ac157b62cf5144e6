"""The training stage: the pre-training job and what keeps it safe and distributed.

* `pretrain`: `pretrain` (fit, checkpoints, resume, TensorBoard, summary),
  `TrainingInterrupted`.
* `distribute`: `--strategy` (default, mirrored, multi_worker): the strategy, the global
  batch, the chief.
* `reliability/`: atomic backups and checkpoints, the non-finite guard, `train_log.jsonl`.

The run directory's layout, which inference reads too, is `msss_tf.rundir`. The job is
`msss_tf.training.pretrain.pretrain`: it is not re-exported here, because the name
`pretrain` on this package is the submodule once anything has imported it. The public
names below are imported on first use (PEP 562).
"""

from msss_tf.lazy import lazy_exports

_PUBLIC = {
    "make_strategy": "distribute",
    "TrainingInterrupted": "msss_tf.training.reliability",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
