"""Runs MSSSModel on the backend named by KERAS_BACKEND, for the cross-backend tests.

    KERAS_BACKEND=jax python tests/backend_runner.py IN.npz OUT.npz

IN.npz holds `config` (MSSSConfig JSON), the model's weights `w0000`... (in
`model.weights` order, with their paths in `paths`), a batch with its random draws
(`anchor`, `positive`, `pitch_ratio`, `positive_noise`) and `fit_epochs`. OUT.npz gets
the losses of `compute_msss_losses(batch, training=True)` (`loss/<name>`), the gradient of
the total loss for each trainable weight (`g0000`... in `trainable_paths` order), and after
`model.fit` on the batch for `fit_epochs` epochs the history (`history/<name>`) and the
weights (`fit0000`...). Used by tests/test_backends.py; it imports no TensorFlow itself.
"""

import json
import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from msss_tf.config import MSSSConfig  # noqa: E402
from msss_tf.model.msss_model import MSSSModel, build_optimizer  # noqa: E402

BATCH_KEYS = ("anchor", "positive", "pitch_ratio", "positive_noise")


def losses_and_gradients(model, batch):
    """(losses, gradients) of one training-mode forward pass on the current weights."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        fn = jax.value_and_grad(model.stateless_msss_losses, has_aux=True)
        (_, (values, _)), gradients = fn(trainable, non_trainable, batch, training=True)
    elif backend == "tensorflow":
        import tensorflow as tf

        kept = [v.numpy() for v in model.non_trainable_variables]
        with tf.GradientTape() as tape:
            values = model.compute_msss_losses(batch, training=True)
        gradients = tape.gradient(values["loss"], model.trainable_variables)
        # As on JAX, where the pass is stateless: undo its batch-norm statistics updates.
        for variable, value in zip(model.non_trainable_variables, kept):
            variable.assign(value)
    else:
        raise SystemExit(f"backend_runner: no gradient path for {backend}")
    losses = {k: float(keras.ops.convert_to_numpy(v)) for k, v in values.items()}
    return losses, [np.asarray(keras.ops.convert_to_numpy(g)) for g in gradients]


def main(in_path, out_path):
    data = np.load(in_path)
    config = MSSSConfig.from_dict(json.loads(str(data["config"])))
    model = MSSSModel(config)
    paths = [v.path for v in model.weights]
    if paths != list(data["paths"]):
        raise SystemExit("backend_runner: weight paths differ from the input's")
    model.set_weights([data[f"w{i:04d}"] for i in range(len(paths))])
    batch = {k: data[k] for k in BATCH_KEYS}
    losses, gradients = losses_and_gradients(model, batch)
    out = {f"loss/{k}": v for k, v in losses.items()}
    out["trainable_paths"] = np.array([v.path for v in model.trainable_variables])
    out.update({f"g{i:04d}": g for i, g in enumerate(gradients)})
    model.compile(build_optimizer(config))
    history = model.fit(batch, batch_size=len(batch["anchor"]), epochs=int(data["fit_epochs"]),
                        shuffle=False, verbose=0).history
    out.update({f"history/{k}": np.array(v) for k, v in history.items()})
    out.update({f"fit{i:04d}": w for i, w in enumerate(model.get_weights())})
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
