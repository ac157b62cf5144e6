"""gpu_pretrain_jax.py's output folder: sharded weights written so that a kill leaves the
last checkpoint whole, summary JSON, device memory.

Output folder (`--out_dir`, flat: 6 files for B0, 7 with the device command's train.log;
each weights shard <= `--max_shard_mb`, under the 16 MiB a file coming back may hold):

    weights.weights.json, weights_0000N.weights.h5   the model's weights (no optimiser
        state), Keras's sharded format: B0 with its heads is 25.6 MiB in float32, over the
        16 MiB a file that comes back from the device may hold, so it is split into shards
        of at most 15 MB (14.3 + 11.3 MiB for B0). Load with `MSSSModel(config).load_weights(
        "OUT/weights.weights.json")`, on the TensorFlow backend too (tested).
    msss_config.json    the run's MSSSConfig (`MSSSConfig.load(OUT)`)
    losses.csv          one row per `--log_every` steps and per epoch end: step, steps in
                        the row, seconds since fit began, mean loss / clip_loss /
                        frame_loss / pitch_loss / clip_accuracy over the row's steps, and
                        clips per second over them (wall clock, host synced at each row;
                        the first row's time includes compiling)
    summary.json        status, stop reason, steps, seconds, compile (first step)
                        seconds, steps/s and clips/s after the first step, device,
                        versions, config, flags, checkpoints, a weights fingerprint
"""

from __future__ import annotations

import hashlib
import os

from msss_tf.atomic import write_json_atomically

WEIGHTS_NAME = "weights.weights.json"  # shards: weights_00000.weights.h5, ...
STAGING_NAME = "staging"  # a checkpoint is written here, then moved up


def weights_fingerprint(model) -> dict:
    """Count, sum and sum of squares (float64) of every weight, and a hash of the weights'
    paths: the sums compare the weights of two models, e.g. a checkpoint loaded elsewhere."""
    import numpy as np

    total = squares = 0.0
    for variable in model.weights:
        value = np.asarray(variable.numpy(), np.float64)
        total += float(value.sum())
        squares += float(np.square(value).sum())
    paths = hashlib.sha1("\n".join(v.path for v in model.weights).encode()).hexdigest()
    return {"count": len(model.weights), "sum": total, "sum_squares": squares,
            "paths_sha1": paths[:16]}


def save_weights(model, out_dir, max_shard_mb) -> list:
    """Writes the model's weights (sharded) to out_dir/staging, then moves the shards and
    last the index up into out_dir; returns [(file name, bytes)]. A kill before the moves
    leaves the previous checkpoint whole; only a kill between the moves (microseconds)
    can leave an index and shards of different checkpoints."""
    from keras.src.saving import saving_lib  # objects_to_skip is not in the public API

    staging = os.path.join(out_dir, STAGING_NAME)
    os.makedirs(staging, exist_ok=True)
    for name in os.listdir(staging):
        os.remove(os.path.join(staging, name))
    # Model.save_weights would add the optimiser's state (Adam's two moments: 3x the size,
    # 6 shards for B0, more files than come back from the device); the saving library's
    # objects_to_skip leaves it out. Loading is Model.load_weights as before.
    saving_lib.save_weights_only(
        model, os.path.join(staging, WEIGHTS_NAME),
        max_shard_size=max_shard_mb * 1e6 / 1024**3,
        objects_to_skip=[model.optimizer] if getattr(model, "optimizer", None) else None)
    names = sorted(os.listdir(staging), key=lambda n: (n == WEIGHTS_NAME, n))
    written = [(name, os.path.getsize(os.path.join(staging, name))) for name in names]
    stale = {n for n in os.listdir(out_dir)
             if n.startswith("weights_") and n.endswith(".weights.h5")} - set(names)
    for name in names:  # the shards first, the index last
        os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    for name in stale:  # an earlier checkpoint's extra shard (another --max_shard_mb)
        os.remove(os.path.join(out_dir, name))
    os.rmdir(staging)
    return written


def write_json(path, value):
    write_json_atomically(path, value, default=str)


def device_memory(device) -> dict:
    try:
        stats = device.memory_stats() or {}
    except Exception:  # not every platform has them
        return {}
    keep = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(stats[k]) for k in keep if k in stats}
