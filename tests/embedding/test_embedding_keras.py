"""Scene and timestamp embeddings: exactness against per-window encoding, timestamps."""

import numpy as np
import pytest

from msss_tf.config import MSSSConfig
from msss_tf.embedding import Embedder, load_msss_model

CONFIG = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25)


@pytest.fixture(scope="module")
def embedder():
    return Embedder.random_init(CONFIG, seed=1)


def audio(seconds, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.normal(size=(n, int(round(seconds * 16000))))).astype(np.float32)


def window_frames(embedder, waveform, start_frame):
    """Encoder frames of the one 0.96 s window starting at log-mel frame `start_frame`."""
    begin = start_frame * 160
    segment = waveform[None, begin:begin + CONFIG.segment_samples]
    assert segment.shape[1] == CONFIG.segment_samples
    return embedder.encoder(embedder.frontend(segment), training=False).numpy()[0]


@pytest.mark.parametrize("seconds", [1.07, 1.98, 2.74, 4.0, 0.3])
def test_timestamps_regular_and_inside_the_audio(embedder, seconds):
    x = audio(seconds)
    emb, ts = embedder.timestamp_embeddings(x)
    duration_ms = 1000 * x.shape[1] / 16000
    assert emb.shape == (2, ts.shape[1], embedder.timestamp_embedding_size)
    assert ts.shape[1] == x.shape[1] // 640 + 1
    np.testing.assert_allclose(np.diff(ts, axis=1), 40.0)
    assert ts[0, 0] == 0.0 and ts[0, -1] <= duration_ms
    assert ts[0, -1] + 40.0 > duration_ms  # no timestamp left out at the end
    assert np.all(np.isfinite(emb))


def test_timestamp_embedding_is_the_frame_centred_on_it(embedder):
    x = audio(2.5, n=1, seed=3)[0]
    emb, ts = embedder.timestamp_embeddings(x[None])
    padded = np.pad(x, (embedder.start_pad, 20000))
    for q in (0, 7, 8, 23, 24, 40, ts.shape[1] - 1):
        tile, rest = divmod(q, 24)
        j, k = divmod(rest, 8)
        start = 96 * tile + 4 * k
        frame = window_frames(embedder, padded, start)[j]
        np.testing.assert_allclose(emb[0, q], frame, rtol=1e-4, atol=1e-7)
        # That frame covers log-mel frames [start + 32 j, start + 32 j + 32) of the padded
        # audio; their centre, in the original audio's time, is the timestamp.
        centre_sample = 160 * (start + 32 * j + 15.5) + 200 - embedder.start_pad
        assert centre_sample / 16 == pytest.approx(ts[0, q])


def test_scene_embedding_is_the_mean_of_covering_windows(embedder):
    x = audio(2.0, n=1, seed=4)[0]  # 198 log-mel frames -> 3 windows at 0, 51, 102
    scene = embedder.scene_embeddings(x[None])[0]
    frames = [window_frames(embedder, x, s) for s in (0, 51, 102)]
    np.testing.assert_allclose(scene, np.mean(frames, axis=(0, 1)), rtol=1e-4, atol=1e-7)
    one = audio(CONFIG.segment_seconds, n=1, seed=5)[0]
    np.testing.assert_allclose(
        embedder.scene_embeddings(one[None])[0], window_frames(embedder, one, 0).mean(0),
        rtol=1e-4, atol=1e-7)


def test_short_clip_is_padded_not_dropped(embedder):
    x = audio(0.25, n=1)[0]
    scene = embedder.scene_embeddings(x[None])[0]
    padded = np.pad(x, (0, CONFIG.segment_samples - len(x)))
    np.testing.assert_allclose(scene, window_frames(embedder, padded, 0).mean(0), rtol=1e-4,
                               atol=1e-7)


def test_batch_does_not_change_embeddings(embedder):
    x = audio(1.5, n=3, seed=6)
    together = embedder.scene_embeddings(x, batch_size=3)
    alone = np.concatenate([embedder.scene_embeddings(x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-7)
    assert np.abs(together[0] - together[1]).max() > 10 * np.abs(together - alone).max()


def test_bad_audio_and_settings(embedder):
    x = audio(1.0)
    x[0, 10] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        embedder.scene_embeddings(x)
    with pytest.raises(ValueError, match="shape"):
        embedder.scene_embeddings(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="hop_ms"):
        Embedder(embedder.frontend, embedder.encoder, CONFIG, hop_ms=50.0)
    assert Embedder(embedder.frontend, embedder.encoder, CONFIG, hop_ms=20.0).shifts == 16


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_msss_model(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        load_msss_model(str(tmp_path))
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="broken.keras"):
        load_msss_model(str(bad))


@pytest.mark.parametrize("content", [b"garbage bytes " * 64, b"PK\x03\x04 truncated", b""])
def test_a_corrupt_keras_file_cannot_be_loaded_and_is_not_called_missing(tmp_path, content):
    from msss_tf import hear

    bad = tmp_path / "model.keras"
    bad.write_bytes(content)
    for load in (load_msss_model, hear.load_model):
        with pytest.raises(ValueError) as caught:
            load(str(bad))
        message = str(caught.value)
        assert message.startswith(f"{bad}: cannot load an MSSS model"), message
        assert "not found" not in message.lower(), message
    with pytest.raises(ValueError, match="cannot load"):  # a run directory's model.keras
        load_msss_model(str(tmp_path))


def test_batch_norm_calibration_sets_statistics_and_keeps_weights():
    import keras

    from msss_tf.embedding import calibrate_batch_norm
    from msss_tf.model.encoder import build_encoder
    from msss_tf.model.frontend import LogMelFrontEnd

    keras.utils.set_random_seed(3)
    encoder = build_encoder(CONFIG)
    frontend = LogMelFrontEnd.from_msss_config(CONFIG)
    trainable_before = [w.numpy().copy() for w in encoder.trainable_weights]
    segments = audio(CONFIG.segment_seconds, n=8, seed=4)[:, :CONFIG.segment_samples]
    at_init = encoder(frontend(segments), training=False).numpy()
    calls = calibrate_batch_norm(encoder, frontend, segments, batch_size=4)
    assert calls == 66  # momentum 0.9: 0.9 ** 66 < 1e-3
    for before, after in zip(trainable_before, encoder.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())
    body = encoder.get_layer("efficientnet")
    stem = body.get_layer("stem_bn")
    # The stem's moving mean is the mean of the stem convolution's output on these clips.
    image = encoder.get_layer("add_channel")(frontend(segments))
    stem_in = keras.Model(body.input, stem.input)(image).numpy()
    np.testing.assert_allclose(stem.moving_mean.numpy(), stem_in.mean(axis=(0, 1, 2)),
                               rtol=0.05, atol=0.05 * np.abs(stem_in).mean())
    calibrated = encoder(frontend(segments), training=False).numpy()
    # At init every block shrinks its input; calibrated, activations keep their scale.
    assert np.abs(calibrated).mean() > 100 * np.abs(at_init).mean()
    with pytest.raises(ValueError, match="calibration audio"):
        calibrate_batch_norm(encoder, frontend, segments[:1])


def test_embeddings_read_at_an_earlier_stage():
    from msss_tf.model.encoder import encoder_at_layer

    at_stage = Embedder.random_init(CONFIG, seed=1, layer="stage3")
    whole = Embedder.random_init(CONFIG, seed=1)
    x = audio(2.0, n=2)
    expected = encoder_at_layer(whole.encoder, "stage3")(
        whole.frontend(x[:, :CONFIG.segment_samples])).numpy()  # the first window
    emb, _ = at_stage.timestamp_embeddings(x)
    assert emb.shape[-1] == at_stage.scene_embedding_size == expected.shape[-1] != \
        whole.scene_embedding_size
    frames = at_stage.encode_windows(x[:, :CONFIG.segment_samples])
    np.testing.assert_allclose(frames, expected, rtol=1e-4, atol=1e-6)
    assert at_stage.scene_embeddings(x).shape == (2, expected.shape[-1])
