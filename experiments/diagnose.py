"""Diagnostics of a pre-training run's checkpoints: shortcuts and collapse.

    python -m experiments.diagnose --run_dir=runs/long/all --steps=1000,3000 \
        --out=docs/results/diagnose_all.json

For each checkpoint, on held-out segment pairs of the run's corpus:

* **shortcuts.** Each loss on true pairs and on mismatched pairs, where the second
  view comes from another clip of the batch (and, for the pitch loss, the target is that
  clip's shift). A frame loss that stays far below chance on mismatched pairs is solved
  from the frame's position in the window, not from its content; a pitch loss that stays
  low reads the shift from the shifted view alone (its resampling artefacts), not from
  the relation of the two views. References: chance for the frame loss (ln of the
  candidates per frame: T in the paper's form, B * T with the batch's negatives) and the loss of predicting the mean target for the pitch loss.
* **batch norm.** Clip loss and accuracy with batch norm in inference mode (moving
  statistics, as probes and exports use it) and in training mode (batch statistics).
* **collapse.** The effective rank (exp of the entropy of the normalised singular
  values) of the scene embeddings of the held-out segments, and how many dimensions
  carry at least 1e-3 of the largest dimension's variance.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags: defined when run, so that importing this module (tests)
    never clashes with another experiment's flags of the same name."""
    flags.DEFINE_string("run_dir", None, "Run directory written by experiments.long_run train.")
    flags.DEFINE_list("steps", None, "Checkpoint steps to diagnose (0: the untrained model).")
    flags.DEFINE_integer("pairs", 128, "Held-out segment pairs.")
    flags.DEFINE_integer("batch", 16, "Batch of the contrastive losses (the negatives).")
    flags.DEFINE_string("out", None, "JSON file for the figures.")


def effective_rank(x):
    """exp(entropy) of the normalised singular values of the centred rows of x [n, d]."""
    import numpy as np

    x = np.asarray(x, np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    p = s / max(s.sum(), 1e-12)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def diagnose(model, anchor, positive, batch, seed=0):
    """Figures for one model on held-out (anchor, positive) waveforms [n, samples]."""
    import numpy as np
    import tensorflow as tf

    from msss_tf.embedding import Embedder
    from msss_tf.model.losses import pitch_shift_target

    config = model.msss_config
    rng = np.random.default_rng(seed)
    sums = {}

    def add(name, value):
        sums.setdefault(name, []).append(float(value))

    for start in range(0, len(anchor) - batch + 1, batch):
        a = tf.constant(anchor[start:start + batch])
        p = tf.constant(positive[start:start + batch])
        ratio = tf.constant(rng.uniform(config.pitch_ratio_min, config.pitch_ratio_max,
                                        batch).astype(np.float32))
        other = np.roll(np.arange(batch), 1)  # each item's mismatched partner
        a_mel, s_mel = model.frontend.anchor_and_shifted(a, ratio)
        enc_a, enc_s = model._encode(a_mel, False), model._encode(s_mel, False)
        if model.clip_loss is not None:
            for mode, training in (("inference", False), ("training", True)):
                ea = model._encode(a_mel, training) if training else enc_a
                ep = model._encode(model.frontend(p), training)
                loss, accuracy = model.clip_loss(model.clip_head(ea), model.clip_head(ep),
                                                 return_accuracy=True)
                add(f"clip_loss_bn_{mode}", loss)
                add(f"clip_accuracy_bn_{mode}", accuracy)
        if model.frame_loss is not None and config.frame_positives == "pitch_shifted":
            frames = model.frame_head(enc_a)
            shifted = model.frame_head(enc_s)
            add("frame_loss_true_pairs", model.frame_loss(frames, shifted))
            add("frame_loss_mismatched", model.frame_loss(frames, tf.gather(shifted, other)))
            candidates = int(frames.shape[1]) * (batch if config.frame_negatives == "batch" else 1)
            add("frame_loss_chance", np.log(candidates))
        if model.pitch_loss is not None:
            pa, ps = model.pitch_head(enc_a), model.pitch_head(enc_s)
            add("pitch_loss_true_pairs", model.pitch_loss(pa, ps, ratio))
            add("pitch_loss_mismatched",
                model.pitch_loss(pa, tf.gather(ps, other), tf.gather(ratio, other)))
            goal = np.asarray(pitch_shift_target(ratio, config.pitch_target))
            add("pitch_loss_predict_mean", np.mean((goal - goal.mean()) ** 2))
    out = {name: float(np.mean(values)) for name, values in sums.items()}
    scene = Embedder.from_model(model).scene_embeddings(anchor)
    variance = scene.var(0)
    out["embedding_dims"] = int(scene.shape[1])
    out["embedding_effective_rank"] = effective_rank(scene)
    out["embedding_dims_with_variance"] = int((variance >= 1e-3 * variance.max()).sum())
    return out


def main(argv):
    del argv
    if not (FLAGS.run_dir and FLAGS.steps and FLAGS.out):
        raise app.UsageError("--run_dir, --steps and --out are required")
    import keras

    from msss_tf.config import CONFIG_FILENAME, MSSSConfig
    from msss_tf.data import pretrain_dataset
    from msss_tf.embedding import load_msss_model
    from msss_tf.model.msss_model import MSSSModel
    from msss_tf.runs import portable_path

    config = MSSSConfig.load(os.path.join(FLAGS.run_dir, CONFIG_FILENAME))
    with open(os.path.join(FLAGS.run_dir, "long_run.json")) as f:
        record = json.load(f)
    data = pretrain_dataset(record["shards"], config, batch_size=FLAGS.pairs,
                            seed=config.seed + 20_011)  # not the training draws
    batch = next(iter(data))
    anchor, positive = batch["anchor"].numpy(), batch["positive"].numpy()
    results = {"run_dir": portable_path(FLAGS.run_dir), "losses": list(config.losses),
               "pairs": FLAGS.pairs, "batch": FLAGS.batch, "steps": {}}
    for step in (int(s) for s in FLAGS.steps):
        if step == 0:
            keras.utils.set_random_seed(config.seed)
            model = MSSSModel(config)
            model(anchor[:2])  # builds the weights
        else:
            name = f"epoch-{step // record['steps_per_epoch']:04d}.keras"
            kept = os.path.join(FLAGS.run_dir, "kept", name)  # long_run's milestones
            model = load_msss_model(kept if os.path.exists(kept) else
                                    os.path.join(FLAGS.run_dir, "checkpoints", name))
        results["steps"][str(step)] = diagnose(model, anchor, positive, FLAGS.batch)
        print(step, json.dumps(results["steps"][str(step)], indent=1))
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
