"""Tests of msss_tf/model/similarity.py against NumPy (method.md, section Similarity).

Bilinear: s(a, b) = a^T W b, W trainable.  Cosine: s(a, b) = cos(a, b) / temperature.
Both map a [..., N, D] and b [..., M, D] to [..., N, M].

Backend-neutral: CI runs this file with KERAS_BACKEND=jax too.
"""

import os

import keras
import numpy as np
import pytest

from msss_tf.model.similarity import (
    BilinearSimilarity,
    CosineSimilarity,
    IdentityPlusNoise,
    make_similarity,
)


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _np_bilinear(a, w, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    w = np.asarray(w, np.float64)
    # Explicit sum over both embedding axes: s[..., n, m] = sum_ij a[n, i] W[i, j] b[m, j].
    return np.einsum("...ni,ij,...mj->...nm", a, w, b)


def _np_cosine(a, b, temperature):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a_unit = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b_unit = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.einsum("...ni,...mi->...nm", a_unit, b_unit) / temperature


def _built_bilinear(dim, w=None, name=None):
    layer = BilinearSimilarity(name=name)
    layer.build((None, dim), (None, dim))
    if w is not None:
        layer.kernel.assign(np.asarray(w, np.float32))
    return layer


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ------------------------------------------------------------------- bilinear
def test_bilinear_hand_case():
    # W = [[1, 2], [0, 1]]; a = [1, 1]: a^T W = [1, 3]; b0 = [1, 0] -> 1, b1 = [0, 1] -> 3,
    # b2 = [2, -1] -> 2 - 3 = -1.
    layer = _built_bilinear(2, [[1.0, 2.0], [0.0, 1.0]])
    out = layer(np.array([[1.0, 1.0]], np.float32), np.array([[1, 0], [0, 1], [2, -1]], np.float32))
    np.testing.assert_allclose(to_np(out), [[1.0, 3.0, -1.0]], atol=1e-6)
    # Not symmetric in its arguments when W is not: s(b0, a) = b0^T W a = [1, 2].[1, 1] = 3.
    swapped = layer(np.array([[1.0, 0.0]], np.float32), np.array([[1.0, 1.0]], np.float32))
    np.testing.assert_allclose(to_np(swapped), [[3.0]], atol=1e-6)


def test_bilinear_unbatched_matches_numpy(rng):
    n, m, d = 5, 7, 6
    a = rng.normal(size=(n, d)).astype(np.float32)
    b = rng.normal(size=(m, d)).astype(np.float32)
    w = rng.normal(size=(d, d)).astype(np.float32)  # deliberately not symmetric
    layer = _built_bilinear(d, w)
    out = to_np(layer(a, b))
    assert out.shape == (n, m)
    np.testing.assert_allclose(out, _np_bilinear(a, w, b), rtol=1e-5, atol=1e-5)
    # The transposed W gives a different answer: the layer really uses a^T W b, not a^T W^T b.
    assert not np.allclose(out, _np_bilinear(a, w.T, b), atol=1e-3)


def test_bilinear_batched_matches_numpy(rng):
    batch, t, m, d = 3, 4, 5, 8
    a = rng.normal(size=(batch, t, d)).astype(np.float32)
    b = rng.normal(size=(batch, m, d)).astype(np.float32)
    w = rng.normal(size=(d, d)).astype(np.float32)
    layer = _built_bilinear(d, w)
    out = to_np(layer(a, b))
    assert out.shape == (batch, t, m)
    np.testing.assert_allclose(out, _np_bilinear(a, w, b), rtol=1e-5, atol=1e-5)
    # Each batch element is scored only against its own b (no mixing across the batch).
    for i in range(batch):
        np.testing.assert_allclose(out[i], _np_bilinear(a[i], w, b[i]), rtol=1e-5, atol=1e-5)
    assert layer.compute_output_shape((batch, t, d), (batch, m, d)) == (batch, t, m)


def test_bilinear_kernel_initialised_near_scaled_identity():
    # Documented start: W = (I + N(0, 0.01^2)) / sqrt(D), i.e. a scaled dot product.
    dim = 64
    layer = _built_bilinear(dim)
    w = to_np(layer.kernel)
    assert w.shape == (dim, dim)
    noise = w * np.sqrt(dim) - np.eye(dim)
    assert np.abs(noise).max() < 0.1
    assert 0.003 < noise.std() < 0.03
    np.testing.assert_allclose(
        to_np(IdentityPlusNoise(stddev=0.0)((3, 3))), np.eye(3) / np.sqrt(3.0), atol=1e-7
    )
    # Untrained scores are ordered like the dot product: a vector scores itself highest.
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, dim)).astype(np.float32)
    scores = to_np(layer(a, a))
    assert np.array_equal(np.argmax(scores, axis=1), np.arange(8))


def test_bilinear_kernel_is_trainable_and_gradients_flow(rng, gradients):
    n, m, d = 3, 4, 5
    a = rng.normal(size=(n, d)).astype(np.float32)
    b = rng.normal(size=(m, d)).astype(np.float32)
    w = rng.normal(size=(d, d)).astype(np.float32)
    layer = _built_bilinear(d, w)
    assert len(layer.trainable_weights) == 1
    assert layer.trainable_weights[0] is layer.kernel
    assert tuple(layer.kernel.shape) == (d, d)
    _, (grad_w,), (grad_a, _) = gradients(
        lambda a, b: keras.ops.sum(layer(a, b)), [layer.kernel], [a, b]
    )
    # d/dW sum_nm a_n^T W b_m = (sum_n a_n)(sum_m b_m)^T; d/da_n = W sum_m b_m.
    np.testing.assert_allclose(grad_w, np.outer(a.sum(0), b.sum(0)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_a, np.tile(w @ b.sum(0), (n, 1)), rtol=1e-5, atol=1e-5)
    # One SGD step changes the kernel.
    before = to_np(layer.kernel).copy()
    keras.optimizers.SGD(0.1).apply_gradients([(keras.ops.convert_to_tensor(grad_w), layer.kernel)])
    assert not np.allclose(to_np(layer.kernel), before)


def test_bilinear_unknown_dim_raises():
    with pytest.raises(ValueError, match="last axis"):
        BilinearSimilarity().build((None, None), (None, None))


def test_bilinear_config_round_trip(rng):
    layer = BilinearSimilarity(name="sim_w")
    config = layer.get_config()
    clone = BilinearSimilarity.from_config(config)
    assert isinstance(clone, BilinearSimilarity)
    assert clone.name == "sim_w"
    # Through the registered-serializable path too.
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, BilinearSimilarity)
    # A clone given the same W computes the same scores.
    d = 4
    w = rng.normal(size=(d, d)).astype(np.float32)
    a = rng.normal(size=(2, d)).astype(np.float32)
    b = rng.normal(size=(3, d)).astype(np.float32)
    layer = _built_bilinear(d, w)
    clone = BilinearSimilarity.from_config(layer.get_config())
    clone.build((None, d), (None, d))
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_np(clone(a, b)), to_np(layer(a, b)), rtol=1e-6)


def test_bilinear_weights_survive_keras_save(tmp_path, rng):
    d = 6
    a_in = keras.Input(shape=(d,), name="a")
    b_in = keras.Input(shape=(d,), name="b")
    sim = BilinearSimilarity(name="bilinear")
    out = sim(a_in, b_in)  # [batch, batch] from two sets of vectors
    model = keras.Model([a_in, b_in], out)
    w = rng.normal(size=(d, d)).astype(np.float32)
    sim.kernel.assign(w)
    path = os.path.join(tmp_path, "bilinear.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded_sim = loaded.get_layer("bilinear")
    assert isinstance(loaded_sim, BilinearSimilarity)
    np.testing.assert_array_equal(to_np(loaded_sim.kernel), w)
    a = rng.normal(size=(3, d)).astype(np.float32)
    b = rng.normal(size=(3, d)).astype(np.float32)
    np.testing.assert_allclose(
        to_np(loaded([a, b])), _np_bilinear(a, w, b), rtol=1e-5, atol=1e-5
    )


# --------------------------------------------------------------------- cosine
def test_cosine_hand_case():
    # a = [3, 4] (|a| = 5), b0 = [1, 0]: cos = 0.6; b1 = [0, 2]: cos = 0.8;
    # b2 = [-6, -8]: cos = -1. Divided by temperature 0.2 -> [3, 4, -5].
    layer = CosineSimilarity(temperature=0.2)
    out = layer(np.array([[3.0, 4.0]], np.float32), np.array([[1, 0], [0, 2], [-6, -8]], np.float32))
    np.testing.assert_allclose(to_np(out), [[3.0, 4.0, -5.0]], rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.2, 1.0, 0.05])
def test_cosine_unbatched_matches_numpy(rng, temperature):
    a = rng.normal(size=(5, 7)).astype(np.float32)
    b = rng.normal(size=(6, 7)).astype(np.float32) * 3.0  # scale must not matter
    out = to_np(CosineSimilarity(temperature=temperature)(a, b))
    assert out.shape == (5, 6)
    np.testing.assert_allclose(out, _np_cosine(a, b, temperature), rtol=1e-5, atol=1e-5)
    assert np.abs(out).max() <= 1.0 / temperature + 1e-4


def test_cosine_batched_matches_numpy(rng):
    a = rng.normal(size=(3, 4, 8)).astype(np.float32)
    b = rng.normal(size=(3, 5, 8)).astype(np.float32)
    out = to_np(CosineSimilarity(temperature=0.2)(a, b))
    assert out.shape == (3, 4, 5)
    np.testing.assert_allclose(out, _np_cosine(a, b, 0.2), rtol=1e-5, atol=1e-5)
    # Self-similarity is 1 / temperature on the diagonal.
    self_scores = to_np(CosineSimilarity(temperature=0.2)(a, a))
    np.testing.assert_allclose(np.diagonal(self_scores, axis1=1, axis2=2), 5.0, rtol=1e-5)


def test_cosine_scale_invariant_and_zero_vector_safe(rng):
    a = rng.normal(size=(2, 4)).astype(np.float32)
    b = rng.normal(size=(3, 4)).astype(np.float32)
    layer = CosineSimilarity(temperature=0.5)
    np.testing.assert_allclose(to_np(layer(a * 7.0, b * 0.01)), to_np(layer(a, b)), rtol=1e-5)
    zero = np.zeros((1, 4), np.float32)
    out = to_np(layer(zero, b))
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, 0.0)


def test_cosine_has_no_weights_and_gradients_flow(rng, gradients):
    layer = CosineSimilarity()
    a = rng.normal(size=(2, 4)).astype(np.float32)
    b = rng.normal(size=(3, 4)).astype(np.float32)
    _, _, (grad,) = gradients(lambda a: keras.ops.sum(layer(a, b)), inputs=[a])
    assert layer.weights == []
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    # The gradient of cos(a, .) is orthogonal to a (cosine is scale invariant).
    np.testing.assert_allclose(np.sum(grad * a, axis=-1), 0.0, atol=1e-4)


def test_cosine_config_round_trip(rng):
    layer = CosineSimilarity(temperature=0.37, name="cos")
    config = layer.get_config()
    assert config["temperature"] == pytest.approx(0.37)
    clone = CosineSimilarity.from_config(config)
    assert clone.temperature == pytest.approx(0.37)
    assert clone.name == "cos"
    a = rng.normal(size=(2, 4)).astype(np.float32)
    b = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(to_np(clone(a, b)), to_np(layer(a, b)), rtol=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, CosineSimilarity) and again.temperature == pytest.approx(0.37)


@pytest.mark.parametrize("temperature", [0.0, -0.2])
def test_cosine_invalid_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        CosineSimilarity(temperature=temperature)


# ------------------------------------------------------------ make_similarity
def test_make_similarity(rng):
    bilinear = make_similarity("bilinear", name="w_clip")
    assert isinstance(bilinear, BilinearSimilarity) and bilinear.name == "w_clip"
    cosine = make_similarity("cosine", temperature=0.5)
    assert isinstance(cosine, CosineSimilarity) and cosine.temperature == pytest.approx(0.5)
    a = rng.normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_allclose(to_np(cosine(a, a)), _np_cosine(a, a, 0.5), rtol=1e-5, atol=1e-5)
    # Two calls give two independent layers (separate W unless shared on purpose).
    assert make_similarity("bilinear") is not make_similarity("bilinear")
    with pytest.raises(ValueError, match="similarity"):
        make_similarity("dot")
