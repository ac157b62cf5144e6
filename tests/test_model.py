"""MSSSModel: views, the combined loss, fit with Keras callbacks, .keras round trip."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.model import MSSSModel, build_optimizer

# A narrow, shallow member of the same family keeps graph tracing short; the B0 body
# itself is tested in test_encoder.py.
SMALL = dict(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4, learning_rate=1e-3)


def small_config(**changes):
    return MSSSConfig(**{**SMALL, **changes})


def random_batch(config, batch_size=4, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(config.segment_samples) / config.sample_rate
    f0 = rng.uniform(100, 1000, size=(batch_size, 1))
    tone = np.sin(2 * np.pi * f0 * t) * 0.3
    noise = rng.normal(scale=0.05, size=(2, batch_size, config.segment_samples))
    return {
        "anchor": (tone + noise[0]).astype("float32"),
        "positive": (tone + noise[1]).astype("float32"),
    }


@pytest.mark.parametrize(
    "losses",
    [("clip",), ("clip", "frame"), ("clip", "pitch"), ("clip", "frame", "pitch"), ("frame",),
     ("pitch",), ("frame", "pitch")],
)
def test_any_subset_of_losses(losses):
    config = small_config(losses=losses, lambda_frame=0.5, lambda_pitch=2.0)
    model = MSSSModel(config)
    values = model.compute_msss_losses(random_batch(config), training=True)
    expected_keys = {"loss"} | {f"{n}_loss" for n in losses}
    if "clip" in losses:
        expected_keys.add("clip_accuracy")
    assert set(values) == expected_keys
    for v in values.values():
        assert np.isfinite(float(v))
    total = sum(
        w * float(values[f"{n}_loss"])
        for n, w in (("clip", 1.0), ("frame", 0.5), ("pitch", 2.0))
        if n in losses
    )
    np.testing.assert_allclose(float(values["loss"]), total, rtol=1e-5)
    # Heads of disabled losses are not built (nothing untrained ships in the model).
    assert (model.clip_head is None) == ("clip" not in losses)
    assert (model.frame_head is None) == ("frame" not in losses)
    assert (model.pitch_head is None) == ("pitch" not in losses)
    assert [m.name for m in model.metrics][0] == "loss"


def test_every_trainable_weight_gets_a_gradient():
    config = small_config()
    model = MSSSModel(config)
    batch = random_batch(config)
    with tf.GradientTape() as tape:
        loss = model.compute_msss_losses(batch, training=True)["loss"]
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing
    zero = [v.path for v, g in zip(model.trainable_variables, grads)
            if float(tf.reduce_max(tf.abs(g))) == 0.0]
    assert not zero, zero


def test_pitch_target_uses_the_ratio_of_the_shifted_view(monkeypatch):
    """The ratio that shifts the anchor is the one the pitch loss regresses on."""
    config = small_config(losses=("pitch",), pitch_target="semitones")
    model = MSSSModel(config)
    batch = random_batch(config)
    seen = {}
    shift = model.frontend.anchor_and_shifted
    loss_call = model.pitch_loss.call

    def spy_shift(waveform, ratio):
        seen["shift_ratio"] = ratio
        return shift(waveform, ratio)

    def spy_loss(anchor_pitch, shifted_pitch, ratio):
        seen["loss_ratio"] = ratio
        return loss_call(anchor_pitch, shifted_pitch, ratio)

    monkeypatch.setattr(model.frontend, "anchor_and_shifted", spy_shift)
    monkeypatch.setattr(model.pitch_loss, "call", spy_loss)
    values = model.compute_msss_losses(batch, training=False)  # no drop-connect noise
    ratio = seen["shift_ratio"].numpy()
    np.testing.assert_array_equal(ratio, seen["loss_ratio"].numpy())
    assert ratio.shape == (4,)
    assert np.all((ratio >= 0.8) & (ratio <= 1.2)) and np.ptp(ratio) > 0
    # Recompute L_pitch from the heads by hand with the semitone target.
    anchor_mel, shifted_mel = shift(batch["anchor"], ratio)
    r_anchor = model.pitch_head(model.encoder(anchor_mel)).numpy()
    r_shift = model.pitch_head(model.encoder(shifted_mel)).numpy()
    expected = np.mean((r_shift - r_anchor - 12 * np.log2(ratio)[:, None]) ** 2)
    np.testing.assert_allclose(float(values["pitch_loss"]), expected, rtol=1e-4)


def test_shared_similarity_is_one_weight():
    separate = MSSSModel(small_config(losses=("clip", "frame")))
    shared = MSSSModel(small_config(losses=("clip", "frame"), share_similarity=True))
    assert separate.count_params() - shared.count_params() == 512 * 512
    assert shared.frame_loss.similarity is shared.clip_loss.similarity
    cosine = MSSSModel(small_config(losses=("clip", "frame"), similarity="cosine"))
    assert separate.count_params() - cosine.count_params() == 2 * 512 * 512


def test_call_returns_frame_features():
    config = small_config()
    model = MSSSModel(config)
    out = model(np.zeros((2, 16000 * 2), "float32"))
    # 2 s: 1 + (32000 - 400) // 160 = 198 frames -> 198 // 32 = 6.
    assert out.shape == (2, 6, model.encoder.output_shape[-1])


def test_fit_overfits_one_batch_and_callbacks_and_round_trip(tmp_path):
    config = small_config()
    model = MSSSModel(config)
    model.compile(optimizer=build_optimizer(config))
    batch = random_batch(config)
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.keras")),
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup")),
        keras.callbacks.TensorBoard(str(tmp_path / "logs"), update_freq=1),
    ]
    history = model.fit(dataset, epochs=4, steps_per_epoch=8, callbacks=callbacks, verbose=0)
    losses = history.history["loss"]
    for name in ("clip_loss", "frame_loss", "pitch_loss", "clip_accuracy"):
        assert np.all(np.isfinite(history.history[name]))
    assert losses[-1] < 0.5 * losses[0], losses
    assert sorted(os.listdir(tmp_path)).count("ckpt-04.keras") == 1
    event_files = [f for _, _, fs in os.walk(tmp_path / "logs") for f in fs if "tfevents" in f]
    assert event_files

    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, MSSSModel)
    assert restored.msss_config == config
    x = batch["anchor"]
    np.testing.assert_array_equal(model(x).numpy(), restored(x).numpy())
    assert int(restored.optimizer.iterations.numpy()) == 32
    # The restored model keeps training where the first stopped.
    restored.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0)
    assert int(restored.optimizer.iterations.numpy()) == 34
    # evaluate() runs test_step and reports every loss.
    scores = restored.evaluate(dataset, steps=1, verbose=0, return_dict=True)
    assert set(scores) == {"loss", "clip_loss", "frame_loss", "pitch_loss", "clip_accuracy"}


def test_fit_on_the_synthetic_corpus():
    from msss_tf.data import pretrain_dataset

    config = small_config(batch_size=8)
    model = MSSSModel(config)
    model.compile(optimizer=build_optimizer(config))
    dataset = pretrain_dataset("synthetic", config, num_clips=32)
    history = model.fit(dataset, epochs=1, steps_per_epoch=3, verbose=0)
    for name in ("loss", "clip_loss", "frame_loss", "pitch_loss"):
        assert np.isfinite(history.history[name][-1])
