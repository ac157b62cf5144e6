"""Tests of msss_tf/model/encoder.py (method.md, section Encoder).

EfficientNet-B0 on one-channel log-mel, without the 1/255 Rescaling + Normalization stem
of `keras.applications.EfficientNetB0`, pooled over frequency:
[B, T, 64] -> [B, T', F', 1280] -> [B, T', 1280]; 96 frames -> T' = 3.

The B0 encoder and the Keras reference are built once per module (module fixtures);
tests that change their weights restore them.

Backend-neutral: CI runs this file with KERAS_BACKEND=jax too.
"""

import contextlib
import math

import keras
import numpy as np
import pytest

from msss_tf.config import MSSSConfig
from msss_tf.model.encoder import (
    FrequencyPooling,
    build_efficientnet_body,
    build_encoder,
    encoder_frames,
    round_filters,
)

B0_PARAMS = 4_048_988


ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
# On JAX every op is compiled by XLA on its first call with a new input shape (eager
# dispatch), and so is each new weight shape's initializer: building B0 costs ~20 s there,
# each new input shape seconds more. The tests marked `slow_on_jax` run by default on
# TensorFlow as before; on JAX they run with -m slow. By default JAX runs the frequency
# pooling (values, config round trip), the frame arithmetic and a small encoder's stage
# shapes here; test_msss_model.py runs the encoder inside MSSSModel (shapes, fit, .keras).


def slow_on_jax(test):
    return test if ON_TENSORFLOW else pytest.mark.slow(test)


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@contextlib.contextmanager
def preserved_weights(model):
    saved = model.get_weights()
    try:
        yield
    finally:
        model.set_weights(saved)


@pytest.fixture(scope="module")
def encoder():
    keras.utils.set_random_seed(0)
    return build_encoder(MSSSConfig())


@pytest.fixture(scope="module")
def reference():
    return keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(96, 64, 1)
    )


@pytest.fixture(scope="module")
def small_config():
    return MSSSConfig(width_coefficient=0.5, depth_coefficient=0.5, frequency_pooling="max")


@pytest.fixture(scope="module")
def small_encoder(small_config):
    return build_encoder(small_config)


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def log_mel_like(rng, batch, frames, n_mels=64):
    """Values on the scale of log(mel + 1e-6): mostly in [-14, 2]."""
    return rng.normal(-6.0, 3.0, size=(batch, frames, n_mels)).astype(np.float32)


def is_input_scaling(layer):
    return isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))


# -------------------------------------------------------------- parameter count
@slow_on_jax
def test_b0_parameter_count(encoder, reference):
    normalization_weights = sum(
        int(np.prod(w.shape))
        for layer in reference.layers
        if isinstance(layer, keras.layers.Normalization)
        for w in layer.weights
    )
    rescaling = [l for l in reference.layers if isinstance(l, keras.layers.Rescaling)]
    assert len(rescaling) == 1 and not rescaling[0].weights  # weights=None: one, weightless
    assert normalization_weights == 3  # mean [1], variance [1], count []
    expected = reference.count_params() - normalization_weights
    assert encoder.count_params() == expected == B0_PARAMS
    # Everything trainable except the BatchNorm moving statistics, as in the reference.
    reference_trainable = sum(int(np.prod(w.shape)) for w in reference.trainable_weights)
    encoder_trainable = sum(int(np.prod(w.shape)) for w in encoder.trainable_weights)
    assert encoder_trainable == reference_trainable


@slow_on_jax
def test_encoder_has_no_image_input_scaling(encoder):
    body = encoder.get_layer("efficientnet")
    assert not any(is_input_scaling(layer) for layer in body.layers)
    assert tuple(body.get_layer("stem_conv").kernel.shape) == (3, 3, 1, 32)
    assert [layer.name for layer in encoder.layers][-1] == "frequency_pooling"


@slow_on_jax
def test_stochastic_depth_rates_match_reference(encoder, reference):
    body = encoder.get_layer("efficientnet")
    ref_drops = {l.name: l for l in reference.layers if isinstance(l, keras.layers.Dropout)}
    body_drops = {l.name: l for l in body.layers if isinstance(l, keras.layers.Dropout)}
    assert set(ref_drops) == set(body_drops) and len(ref_drops) == 9
    for name, layer in ref_drops.items():
        assert body_drops[name].rate == pytest.approx(layer.rate), name
        assert tuple(body_drops[name].noise_shape) == tuple(layer.noise_shape), name


# ------------------------------------------------------- architecture equivalence
def _randomise(model, rng):
    for layer in model.layers:
        for w in layer.weights:
            kind = w.path.split("/")[-1]
            value = to_np(w)
            if kind in ("gamma", "moving_variance"):
                new = rng.uniform(0.5, 1.5, size=value.shape)
            elif kind in ("beta", "moving_mean", "bias"):
                new = rng.normal(0.0, 0.1, size=value.shape)
            elif kind in ("mean", "variance", "count"):  # leave Normalization as built
                continue
            else:  # conv kernels: fresh draws at the initialiser's scale
                new = rng.normal(0.0, 1.0, size=value.shape) * max(float(value.std()), 1e-3)
            w.assign(new.astype(np.float32))


@slow_on_jax
def test_architecture_equals_keras_efficientnet_b0(encoder, reference, rng):
    body = encoder.get_layer("efficientnet")
    ref_layers = [l for l in reference.layers if l.weights and not is_input_scaling(l)]
    body_layers = [l for l in body.layers if l.weights]
    assert [l.name for l in ref_layers] == [l.name for l in body_layers]
    assert len(body_layers) == 130
    with preserved_weights(reference), preserved_weights(body):
        _randomise(reference, rng)
        for ref_layer, body_layer in zip(ref_layers, body_layers):
            body_layer.set_weights(ref_layer.get_weights())  # shapes must match exactly
        # The reference's un-adapted Normalization is an identity (mean 0, variance 1).
        norm = [l for l in reference.layers if isinstance(l, keras.layers.Normalization)][0]
        probe = rng.normal(size=(1, 4, 4, 1)).astype(np.float32)
        np.testing.assert_allclose(to_np(norm(probe)), probe, atol=1e-6)

        x = log_mel_like(rng, 2, 96)
        expected = to_np(reference(x[..., None] * 255.0))  # the reference divides by 255
        got = to_np(body(x[..., None]))
        assert got.shape == expected.shape == (2, 3, 2, 1280)
        assert np.abs(expected).max() > 1e-2  # randomised: a non-trivial output
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        # The full encoder: reshape to one channel, body, mean over the frequency axis.
        np.testing.assert_allclose(
            to_np(encoder(x)), expected.mean(axis=2), atol=1e-4, rtol=0
        )
        # Without the x255 the reference sees a different input: the match is not trivial.
        assert np.abs(to_np(reference(x[..., None])) - got).max() > 1e-3  # >> 1e-4 tolerance


# ----------------------------------------------------------------- output shape
@slow_on_jax
def test_output_shape_for_one_segment(encoder, rng):
    out = encoder(log_mel_like(rng, 2, 96))
    assert tuple(out.shape) == (2, 3, 1280)
    assert encoder_frames(96) == 3
    assert tuple(encoder.output.shape) == (None, None, 1280)


# Each of the five stride-2 stages pads (k//2 - 1, k//2) on the dynamic time axis, as
# Keras' EfficientNet does for an unknown size: it halves with floor, so
# T' = floor(floor(T/2)/2 ...) = T // 32 (the module documents this: a tail shorter than
# 32 frames adds no frame). For even sizes this equals TF "SAME" (ceil).
@pytest.mark.parametrize(
    "frames,expected",
    [(32, 1), (33, 1), (63, 1), (64, 2), (100, 3), (127, 3), (128, 4), (160, 5), (250, 7)],
)
@slow_on_jax
def test_output_frames(encoder, rng, frames, expected):
    assert expected == frames // 32
    out = encoder(log_mel_like(rng, 2, frames))
    assert tuple(out.shape) == (2, expected, 1280)
    assert encoder_frames(frames) == out.shape[1]
    assert np.all(np.isfinite(to_np(out)))


def test_encoder_frames_values():
    for t, expected in [(0, 0), (31, 0), (32, 1), (33, 1), (95, 2), (96, 3), (98, 3),
                        (100, 3), (250, 7), (1000, 31)]:
        assert encoder_frames(t) == expected, t


# -------------------------------------------------------- untrained embeddings
@slow_on_jax
def test_untrained_embeddings_are_spread(encoder, reference, rng):
    x = log_mel_like(rng, 4, 96)
    # Training mode (how the encoder is pre-trained: BatchNorm on batch statistics).
    # training=True updates the BatchNorm moving statistics, so restore them afterwards.
    with preserved_weights(encoder):
        clip = to_np(encoder(x, training=True)).mean(axis=1)  # [B, 1280] time mean
    spread = clip.std(axis=0)
    assert np.all(np.isfinite(clip))
    assert spread.mean() > 1e-3 and spread.max() > 1e-2

    # Inference mode (BatchNorm with its initial moving statistics, an identity): the
    # untrained network contracts its input strongly, but the embeddings of different
    # inputs still differ far above float32 rounding (relative spread, not ~1e-7).
    clip = to_np(encoder(x)).mean(axis=1)
    spread = clip.std(axis=0)
    assert spread.mean() > 0.05 * np.abs(clip).mean()
    assert spread.mean() > 1e-6
    # Contrast: the Keras reference applies its 1/255 image scaling to the same log-mel
    # and emits values ~1e-8, orders of magnitude less spread.
    ref_clip = to_np(reference(x[..., None])).mean(axis=(1, 2))
    assert spread.mean() > 100 * ref_clip.std(axis=0).mean()


# ------------------------------------------------------------ frequency pooling
@pytest.mark.parametrize("mode", ["mean", "max"])
def test_frequency_pooling_matches_numpy(rng, mode):
    x = rng.normal(size=(2, 3, 5, 7)).astype(np.float32)
    layer = FrequencyPooling(mode)
    out = to_np(layer(x))
    expected = x.mean(axis=2) if mode == "mean" else x.max(axis=2)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert layer.compute_output_shape((2, 3, 5, 7)) == (2, 3, 7)
    clone = FrequencyPooling.from_config(layer.get_config())
    assert clone.mode == mode
    np.testing.assert_array_equal(to_np(clone(x)), out)


def test_frequency_pooling_hand_case():
    # One time step, 2 frequency bins, 2 channels: bins [1, 4] and [3, -2].
    x = np.array([[[[1.0, 4.0], [3.0, -2.0]]]], np.float32)
    np.testing.assert_allclose(to_np(FrequencyPooling("mean")(x)), [[[2.0, 1.0]]])
    np.testing.assert_allclose(to_np(FrequencyPooling("max")(x)), [[[3.0, 4.0]]])


def test_frequency_pooling_invalid_mode():
    with pytest.raises(ValueError, match="mode"):
        FrequencyPooling("sum")


@slow_on_jax
def test_encoder_uses_configured_pooling(encoder, small_encoder, small_config, rng):
    assert encoder.get_layer("frequency_pooling").mode == "mean"
    assert small_encoder.get_layer("frequency_pooling").mode == small_config.frequency_pooling
    x = log_mel_like(rng, 2, 96)
    body = small_encoder.get_layer("efficientnet")
    feature_map = to_np(body(x[..., None]))
    np.testing.assert_allclose(
        to_np(small_encoder(x)), feature_map.max(axis=2), rtol=1e-5, atol=1e-6
    )


# ---------------------------------------------------------------- small variant
@slow_on_jax
def test_small_variant(encoder, small_encoder, rng):
    assert round_filters(1280, 0.5) == 640
    assert round_filters(32, 0.5) == 16
    assert small_encoder.count_params() < encoder.count_params() / 2
    out = small_encoder(log_mel_like(rng, 2, 96))
    assert tuple(out.shape) == (2, 3, 640)
    body = small_encoder.get_layer("efficientnet")
    assert body.get_layer("top_conv").filters == 640
    # depth 0.5: ceil(0.5 * repeats) blocks per stage -> 1, 1, 1, 2, 2, 2, 1.
    blocks = sorted({l.name.split("_")[0] for l in body.layers if l.name.startswith("block")})
    assert blocks == ["block1a", "block2a", "block3a", "block4a", "block4b", "block5a",
                      "block5b", "block6a", "block6b", "block7a"]


@slow_on_jax
def test_body_builder_width_gives_channel_count():
    body = build_efficientnet_body(n_mels=32, width_coefficient=0.25, depth_coefficient=0.25)
    assert tuple(body.output.shape)[-1] == round_filters(1280, 0.25) == 320
    assert tuple(body.input.shape) == (None, None, 32, 1)


@slow_on_jax
def test_window_mean_normalization_makes_the_encoder_gain_invariant(rng, tmp_path):
    """input_normalization="window_mean": a gain change (a constant added to a window's
    log-mel) leaves the output unchanged; without it the output moves. The layer survives
    a .keras round trip."""
    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25,
                        input_normalization="window_mean")
    keras.utils.set_random_seed(3)
    normalized = build_encoder(config)
    keras.utils.set_random_seed(3)
    plain = build_encoder(MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25))
    x = log_mel_like(rng, 3, 96)
    louder = x + np.array([2.3, -4.6, 0.7], np.float32)[:, None, None]  # x10, /100, x2
    for layer in (normalized, plain):  # running statistics away from init: a real regime
        for _ in range(3):
            layer(x, training=True)
    out = to_np(normalized(x))
    np.testing.assert_allclose(to_np(normalized(louder)), out,
                               rtol=1e-4, atol=1e-4 * np.abs(out).max())
    moved = np.abs(to_np(plain(louder)) - to_np(plain(x)))
    assert moved.max() > 1e-2 * np.abs(to_np(plain(x))).max()
    path = str(tmp_path / "encoder.keras")
    normalized.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_np(reloaded(x)), out, rtol=1e-5,
                               atol=1e-6 * np.abs(out).max())


def test_input_normalization_is_validated():
    with pytest.raises(ValueError, match="input_normalization"):
        MSSSConfig(input_normalization="per_band")


def test_encoder_at_a_stage_reads_that_layer_frequency_flattened(small_config, rng):
    """Each stage's feature map, time averaged to the encoder's frames, with the encoder's
    weights (nothing copied); "output" is the encoder itself; a wrong name says the
    choices."""
    from msss_tf.config import EMBEDDING_LAYERS
    from msss_tf.model.encoder import encoder_at_layer, stage_output_layer

    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25,
                        input_normalization="window_mean")
    encoder = build_encoder(config)
    x = rng.normal(size=(2, 96, 64)).astype(np.float32)
    body = encoder.get_layer("efficientnet")
    assert encoder_at_layer(encoder, "output") is encoder
    for layer in EMBEDDING_LAYERS[1:]:
        at = encoder_at_layer(encoder, layer)
        name = stage_output_layer(body, layer)
        feature_map = to_np(keras.Model(body.input, body.get_layer(name).output)(
            (x - x.mean(axis=(1, 2), keepdims=True))[..., None]))
        b, t, f, c = feature_map.shape
        expected = feature_map.reshape(b, 3, t // 3, f * c).mean(axis=2)
        got = to_np(at(x))
        assert got.shape == (2, 3, f * c), layer
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
        assert {id(v) for v in at.weights} <= {id(v) for v in encoder.weights}
    assert stage_output_layer(body, "stage3") == "block3a_project_bn"
    np.testing.assert_array_equal(to_np(encoder_at_layer(encoder, "block3a_project_bn")(x)),
                                  to_np(encoder_at_layer(encoder, "stage3")(x)))
    assert stage_output_layer(body, "top") == "top_activation"
    with pytest.raises(ValueError, match="stage1, stage2"):
        encoder_at_layer(encoder, "block3")
