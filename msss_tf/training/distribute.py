"""tf.distribute for pre-training: `msss-tf pretrain --strategy=default|mirrored|multi_worker`.

* `default`: one device (TensorFlow's default strategy).
* `mirrored`: `tf.distribute.MirroredStrategy` over the GPUs of this host (or the given
  devices; on a CPU-only host, the CPU).
* `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy` over the hosts listed in
  `TF_CONFIG` (`{"cluster": {"worker": ["host1:port", ...]}, "task": {"type": "worker",
  "index": i}}`); start the same command on every host. Only the chief (worker 0, or the
  task of type "chief") writes into `--model_dir`; the other workers write their
  checkpoints into a temporary folder, as TensorFlow's multi-worker guide prescribes
  (every worker must still run the save: it may hold collective ops).

`--batch_size` is the global batch; each of the R replicas gets batch_size / R clips.
What the step does across replicas (negatives gathered, global random draws, batch-norm
statistics) is in `msss_tf/model/msss_model.py` (with its helpers in
`msss_tf/model/replicas.py`) and docs/performance.md.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Optional, Sequence

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str = "default", devices: Optional[Sequence[str]] = None):
    """The `tf.distribute.Strategy` called `name` (one of `STRATEGIES`).

    Create it before any other TensorFlow op of the program: MultiWorkerMirroredStrategy
    must exist before collective ops run, and both kinds fix the devices they use.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"--strategy={name!r}: must be one of {STRATEGIES}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices is None and not tf.config.list_logical_devices("GPU"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if not os.environ.get("TF_CONFIG"):
        raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                         "(cluster and task of this worker); see msss_tf/training/distribute.py")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy) -> bool:
    """True on the worker that writes the run directory (always true without workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def writable_model_dir(model_dir: str, strategy) -> str:
    """`model_dir` on the chief; a fresh temporary folder on the other workers."""
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return tempfile.mkdtemp(prefix=f"msss-{resolver.task_type}{resolver.task_id}-")


def check_global_batch(batch_size: int, strategy) -> int:
    """The per-replica batch; ValueError unless the global batch splits evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"--batch_size={batch_size} (the global batch) must be a multiple of "
                         f"the {replicas} replicas of the strategy")
    return batch_size // replicas
