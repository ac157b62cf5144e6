"""The MSSS step's encoder cost on a GPU that has no TensorFlow: Keras 3 on its JAX backend.

The GPU machines lent to this project carry JAX but not TensorFlow, and TensorFlow with
its CUDA libraries (~2 GB of wheels) cannot be carried there. This script measures what
can be measured without TensorFlow, on the same Keras layers the package trains:

* ``floor``: the encoder's three forward+backward passes (anchor, positive, shifted
  anchor; separate calls, as the default ``view_batching="separate"`` step makes them)
  with a trivial loss and Adam, as ``msss-tf bench`` defines the floor;
* ``step``: the same three passes plus the package's clip, frame and pitch heads and
  losses (``msss_tf.model.heads`` / ``msss_tf.model.losses``, written in ``keras.ops``), i.e. the MSSS
  step without its log-mel front end (``tf.signal``, TensorFlow only) on random log-mel.

Both are jit-compiled by JAX (XLA): the figures are those of the accelerator path of
``--jit_compile=true``, not of TensorFlow's own kernels, and say so where they are used.
Run with ``KERAS_BACKEND=jax`` set by this script; it loads ``msss_tf.config``,
``msss_tf.model.encoder``, ``msss_tf.model.heads``, ``msss_tf.model.similarity`` and ``msss_tf.model.losses``
without the package's ``__init__`` (which imports TensorFlow).

    python experiments/gpu_floor_keras_jax.py --batches 256 1024 --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types

os.environ["KERAS_BACKEND"] = "jax"

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(os.path.dirname(HERE), "msss_tf")


def _import_keras_only_modules():
    """msss_tf's Keras-only modules, without msss_tf/__init__.py (it imports TensorFlow)."""
    package = types.ModuleType("msss_tf")
    package.__path__ = [PACKAGE]
    sys.modules["msss_tf"] = package
    import msss_tf.config as config_module
    import msss_tf.model.encoder as encoder_module
    import msss_tf.model.heads as heads_module
    import msss_tf.model.losses as losses_module
    import msss_tf.model.similarity as similarity_module
    return config_module, encoder_module, heads_module, losses_module, similarity_module


def build_step_model(kind, config, modules, policy):
    import keras
    from keras import ops

    _, encoder_module, heads_module, losses_module, similarity_module = modules
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        encoder = encoder_module.build_encoder(config)
    finally:
        keras.config.set_dtype_policy(previous)
    dim = config.embedding_dim
    channels = encoder.output_shape[-1]

    class Step(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            if kind == "step":
                frame_shape = (None, None, channels)
                self.clip_head = heads_module.ClipHead(dim)
                self.frame_head = heads_module.FrameHead(dim)
                self.pitch_head = heads_module.PitchHead(dim)
                for head in (self.clip_head, self.frame_head, self.pitch_head):
                    head.build(frame_shape)
                clip_sim = similarity_module.make_similarity(config.similarity, config.temperature)
                clip_sim.build((None, dim), (None, dim))
                frame_sim = similarity_module.make_similarity(config.similarity, config.temperature)
                frame_sim.build((None, None, dim), (None, None, dim))
                self.clip_loss = losses_module.ClipContrastiveLoss(clip_sim)
                self.frame_loss = losses_module.FrameContrastiveLoss(
                    tau=config.frame_tau, positives=config.frame_positives, similarity=frame_sim)
                self.pitch_loss = losses_module.PitchShiftLoss(config.pitch_target)
                for layer in (self.clip_loss, self.frame_loss, self.pitch_loss):
                    layer.built = True
            self.built = True  # every sublayer is built above

        def call(self, inputs, training=False):
            anchor_mel, positive_mel, shifted_mel, ratio = inputs
            # The default step's order: shifted, anchor, positive; separate calls.
            shifted, anchor, positive = [
                ops.cast(self.encoder(m, training=training), "float32")
                for m in (shifted_mel, anchor_mel, positive_mel)]
            if kind == "floor":
                return sum(ops.mean(ops.square(v)) for v in (shifted, anchor, positive))
            clip = self.clip_loss(self.clip_head(anchor), self.clip_head(positive))
            frame = self.frame_loss(self.frame_head(anchor), self.frame_head(shifted))
            pitch = self.pitch_loss(self.pitch_head(anchor), self.pitch_head(shifted), ratio)
            return clip + config.lambda_frame * frame + config.lambda_pitch * pitch

    return Step()


def time_variant(kind, batch, policy, steps, repeats, config, modules):
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    model = build_step_model(kind, config, modules, policy)
    rng = np.random.default_rng(0)
    frames, bands = config.segment_frames, config.n_mels
    mels = [jnp.asarray(rng.normal(size=(batch, frames, bands)).astype("float32"))
            for _ in range(3)]
    ratio = jnp.asarray(rng.uniform(config.pitch_ratio_min, config.pitch_ratio_max,
                                    size=(batch,)).astype("float32"))
    inputs = (*mels, ratio)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(model.trainable_variables)

    def loss_fn(trainable, non_trainable, x):
        loss, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss, non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def train_step(state, x):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    state = ([v.value for v in model.trainable_variables],
             [v.value for v in model.non_trainable_variables],
             [v.value for v in optimizer.variables])
    started = time.perf_counter()
    loss, state = train_step(state, inputs)
    loss.block_until_ready()
    compile_seconds = time.perf_counter() - started
    loss, state = train_step(state, inputs)  # one more warm-up
    loss.block_until_ready()
    rounds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            loss, state = train_step(state, inputs)
        loss.block_until_ready()
        rounds.append((time.perf_counter() - started) / steps)
    seconds = statistics.median(rounds)
    return {"kind": kind, "batch_size": batch, "policy": policy,
            "step_seconds": seconds, "rounds_seconds": rounds,
            "clips_per_second": batch / seconds, "first_call_seconds": compile_seconds,
            "final_loss": float(loss)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--kinds", nargs="+", default=["floor", "step"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--depth", type=float, default=1.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import jax
    import keras

    modules = _import_keras_only_modules()
    config = modules[0].MSSSConfig(width_coefficient=args.width, depth_coefficient=args.depth)
    device = jax.devices()[0]
    record = {"device": getattr(device, "device_kind", str(device)), "platform": device.platform,
              "jax": jax.__version__, "keras": keras.__version__, "backend": "jax (XLA)",
              "width_coefficient": args.width, "depth_coefficient": args.depth,
              "log_mel": [config.segment_frames, config.n_mels], "runs": []}
    print(f"device {record['device']} ({record['platform']}), jax {jax.__version__}, "
          f"keras {keras.__version__}", flush=True)
    for batch in args.batches:
        for policy in args.policies:
            for kind in args.kinds:
                try:
                    run = time_variant(kind, batch, policy, args.steps, args.repeats, config,
                                       modules)
                except Exception as error:  # one failed variant must not lose the others
                    run = {"kind": kind, "batch_size": batch, "policy": policy,
                           "error": f"{type(error).__name__}: {error}"[:2000]}
                    print(f"batch {batch:5d} {policy:15s} {kind:6s} FAILED {run['error'][:300]}",
                          flush=True)
                else:
                    print(f"batch {batch:5d} {policy:15s} {kind:6s} "
                          f"{run['step_seconds'] * 1000:9.1f} ms/step "
                          f"{run['clips_per_second']:9.0f} clips/s "
                          f"(first call {run['first_call_seconds']:.0f} s)", flush=True)
                record["runs"].append(run)
                if args.out:
                    with open(args.out, "w") as f:
                        json.dump(record, f, indent=2)
    return record


if __name__ == "__main__":
    main()
