"""The same model on TensorFlow and on JAX: losses, gradients and a short fit agree.

The model's weights and the step's random draws (pitch ratios, the positive's noise) are
fixed here and handed to both backends; the encoder's stochastic depth is off (it draws
its own masks on each backend). JAX runs in a subprocess (a process has one Keras
backend), TensorFlow in this one, both through tests/backend_runner.py.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from msss_tf.config import MSSSConfig
from msss_tf.model.msss_model import MSSSModel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import backend_runner  # noqa: E402

pytestmark = [
    pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                       reason="compares the JAX backend against TensorFlow, run from TF"),
    pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                       reason="jax is not installed (pip install -e '.[test]' installs it)"),
]


def write_case(path, config, seed=0, batch_size=4, fit_epochs=3):
    keras.utils.set_random_seed(seed)
    model = MSSSModel(config)
    rng = np.random.default_rng(seed)
    t = np.arange(config.segment_samples) / config.sample_rate
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000, (batch_size, 1)) * t)
    batch = {
        "anchor": (tone + rng.normal(0, 0.05, tone.shape)).astype("float32"),
        "positive": (tone + rng.normal(0, 0.05, tone.shape)).astype("float32"),
        "pitch_ratio": rng.uniform(config.pitch_ratio_min, config.pitch_ratio_max,
                                   batch_size).astype("float32"),
        "positive_noise": rng.normal(0, config.positive_noise_std, tone.shape).astype("float32"),
    }
    weights = {f"w{i:04d}": w for i, w in enumerate(model.get_weights())}
    np.savez(path, config=json.dumps(config.to_dict()),
             paths=np.array([v.path for v in model.weights]), fit_epochs=fit_epochs,
             **batch, **weights)


def run_jax(in_path, out_path):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, os.path.join(HERE, "backend_runner.py"),
                             str(in_path), str(out_path)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(out_path)


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


def assert_gradients_agree(got, expected, paths):
    """Relative error under 2e-3 for every tensor, except those whose gradient is zero but
    for rounding on both backends: the betas of the stride blocks' projection batch norm
    (a training-mode batch norm follows them on every path, which removes any constant
    shift), ~1e-6 on both against ~1e-2 for a typical tensor."""
    scale = float(np.median([rms(g) for g in expected]))
    zero = 1e-3 * scale
    for g_got, g_expected, path in zip(got, expected, paths):
        if rms(g_expected) < zero:
            assert rms(g_got) < zero, (path, rms(g_got), zero)
            continue
        error = float(np.linalg.norm(g_got - g_expected) / np.linalg.norm(g_expected))
        assert error < 2e-3, f"relative gradient difference {error:.2e} at {path}"
    structural_zeros = [p for g, p in zip(expected, paths) if rms(g) < zero]
    assert all("project_bn/beta" in p for p in structural_zeros), structural_zeros


@pytest.mark.slow  # two Keras backends compile a fit: about a minute each
@pytest.mark.parametrize("changes", [
    dict(),  # the paper's losses: clip + frame (negatives from the anchor's own frames) + pitch
    dict(frame_negatives="batch", view_batching_concat=True),
])
def test_losses_gradients_and_fit_agree_across_backends(tmp_path, changes):
    changes = dict(changes)
    concat = changes.pop("view_batching_concat", False)
    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4,
                        embedding_dim=32, drop_connect_rate=0.0, optimizer="sgd",
                        learning_rate=0.01, **changes)
    case = tmp_path / "case.npz"
    write_case(case, config)
    if concat:  # the concatenated-views step, on both backends
        backend_runner.MSSSModel = lambda c: MSSSModel(c, view_batching="concat")
    try:
        backend_runner.main(str(case), str(tmp_path / "tensorflow.npz"))
    finally:
        backend_runner.MSSSModel = MSSSModel
    tf_out = np.load(tmp_path / "tensorflow.npz")
    if concat:
        env_runner = tmp_path / "concat_runner.py"
        env_runner.write_text(
            "import sys; sys.path.insert(0, %r)\nimport backend_runner\n"
            "from msss_tf.model.msss_model import MSSSModel\n"
            "backend_runner.MSSSModel = lambda c: MSSSModel(c, view_batching='concat')\n"
            "backend_runner.main(*sys.argv[1:3])\n" % HERE)
        env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        result = subprocess.run([sys.executable, str(env_runner), str(case),
                                 str(tmp_path / "jax.npz")], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        jax_out = np.load(tmp_path / "jax.npz")
    else:
        jax_out = run_jax(case, tmp_path / "jax.npz")

    # Losses of one training-mode pass on the same weights and draws.
    names = sorted(k for k in tf_out.files if k.startswith("loss/"))
    assert names == sorted(k for k in jax_out.files if k.startswith("loss/"))
    assert {"loss/loss", "loss/clip_loss", "loss/frame_loss", "loss/pitch_loss"} <= set(names)
    for name in names:
        np.testing.assert_allclose(jax_out[name], tf_out[name], rtol=2e-4, atol=1e-5,
                                   err_msg=name)
    # The gradient of every trainable weight.
    paths = list(tf_out["trainable_paths"])
    assert paths == list(jax_out["trainable_paths"])
    assert_gradients_agree([jax_out[f"g{i:04d}"] for i in range(len(paths))],
                           [tf_out[f"g{i:04d}"] for i in range(len(paths))], paths)
    # Three SGD steps of model.fit: the same losses, the same weights and BN statistics.
    for key in (k for k in tf_out.files if k.startswith("history/")):
        np.testing.assert_allclose(jax_out[key], tf_out[key], rtol=2e-3, atol=1e-4,
                                   err_msg=key)
    # Float rounding grows over the steps (about 1e-4 of a weight by the third), so the
    # weights are compared loosely and the updates as a whole closely.
    case_weights = np.load(case)
    fitted = sorted(k for k in tf_out.files if k.startswith("fit"))
    for key in fitted:
        np.testing.assert_allclose(jax_out[key], tf_out[key], rtol=1e-2, atol=5e-4,
                                   err_msg=key)
    start = np.concatenate([case_weights[f"w{k[3:]}"].ravel() for k in fitted])
    tf_update = np.concatenate([tf_out[k].ravel() for k in fitted]) - start
    jax_update = np.concatenate([jax_out[k].ravel() for k in fitted]) - start
    assert np.linalg.norm(tf_update) > 0.01  # training moved them
    assert np.linalg.norm(jax_update - tf_update) < 1e-2 * np.linalg.norm(tf_update)


TRAIN_ON_JAX = """
import sys
import keras
import numpy as np
from msss_tf.config import MSSSConfig
from msss_tf.model.msss_model import MSSSModel, build_optimizer

out = sys.argv[1]
config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4,
                    embedding_dim=32)
model = MSSSModel(config)  # (keras.utils.set_random_seed would import TensorFlow)
model.compile(build_optimizer(config))
rng = np.random.default_rng(0)
S = config.segment_samples
batch = {"anchor": rng.normal(0, 0.1, (8, S)).astype("float32"),
         "positive": rng.normal(0, 0.1, (8, S)).astype("float32")}
model.fit(batch, batch_size=4, epochs=2, verbose=0)
# Keras's own file helpers import TensorFlow where it is installed (gfile), and so does
# keras.utils.set_random_seed; the model and its training must not.
assert "tensorflow" not in sys.modules, "the JAX fit imported TensorFlow"
model.save(out + "/model.keras")
t = np.arange(S) / 16000.0
windows = np.stack([0.3 * np.sin(2 * np.pi * f * t) + rng.normal(0, 0.02, S)
                    for f in (220.0, 880.0, 3000.0)]).astype("float32")
frames = keras.ops.convert_to_numpy(model(windows))
np.savez(out + "/jax.npz", windows=windows, frames=frames)
"""


def cosines(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.slow  # a JAX fit, then a SavedModel and two TFLite conversions
def test_a_model_trained_on_jax_exports_under_tensorflow(tmp_path):
    from msss_tf.embedding import TFLiteEmbedder, load_encoder, load_msss_model
    from msss_tf.export import export_encoder

    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.path.dirname(HERE))
    done = subprocess.run([sys.executable, "-c", TRAIN_ON_JAX, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jax_run = np.load(tmp_path / "jax.npz")
    windows, jax_frames = jax_run["windows"], jax_run["frames"]

    # The .keras file written under JAX loads here and computes the same frames.
    model = load_msss_model(str(tmp_path / "model.keras"))
    np.testing.assert_allclose(model(windows).numpy(), jax_frames, rtol=1e-4, atol=1e-4)
    # Export with the usual checks (each TFLite file is checked against Keras on export).
    exported = export_encoder(str(tmp_path / "model.keras"), str(tmp_path / "saved"),
                              tflite=("float32", "dynamic_int8"))
    saved = load_encoder(exported["export_dir"]).encode_windows(windows)
    np.testing.assert_allclose(saved, jax_frames, rtol=1e-4, atol=1e-4)
    with open(exported["summary"]) as f:
        summary = json.load(f)
    for variant, target in (("float32", 0.9999), ("dynamic_int8", None)):
        info = summary["tflite"][variant]
        got = TFLiteEmbedder(exported["tflite"][variant]).encode_windows(windows)
        assert got.shape == jax_frames.shape
        if target is not None:
            assert cosines(got, jax_frames).min() > target, variant
        else:  # the variant's own target, as measured on export
            assert info.get("meets_target", True), info
            assert cosines(got, jax_frames).min() > 0.9, variant
