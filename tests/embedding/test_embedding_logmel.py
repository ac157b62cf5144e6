"""The embedder that needs no training (msss_tf/embedding/logmel.py): the log-mel reference."""

import numpy as np
import pytest

from msss_tf.embedding import LogMelStatsEmbedder
from msss_tf.config import MSSSConfig


@pytest.mark.parametrize("seconds", [1.07, 1.98, 2.74, 4.0])
def test_logmel_embedder_shapes_and_timestamps(seconds):
    from msss_tf.embedding import WindowPlan

    config = MSSSConfig()
    embedder = LogMelStatsEmbedder(config)
    samples = int(round(seconds * 16000))
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((2, samples))).astype(np.float32)
    scene = embedder.scene_embeddings(audio)
    assert scene.shape == (2, 128) and scene.dtype == np.float32
    emb, stamps = embedder.timestamp_embeddings(audio)
    num = samples // 640 + 1
    _, planned, _, _ = WindowPlan(config).timestamp_plan(samples)  # the Embedder's count
    assert int(planned) == num
    assert emb.shape == (2, num, 128) and stamps.shape == (2, num)
    np.testing.assert_allclose(np.diff(stamps[0]), 40.0)
    assert stamps[0, 0] == 0.0 and stamps[0, -1] <= 1000.0 * seconds
    assert 1000.0 * seconds - stamps[0, -1] < 40.0
    assert np.all(np.isfinite(emb)) and np.all(emb[..., 64:] >= 0)

    # Reference: plain NumPy over the frames whose centres are within +-160 ms.
    mel = np.asarray(embedder.frontend(audio), np.float64)
    centres = 1000.0 * (np.arange(mel.shape[1]) * 160 + 200) / 16000
    np.testing.assert_allclose(scene[:, :64], mel.mean(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scene[:, 64:], mel.std(1), rtol=1e-4, atol=1e-5)
    for q in (0, num // 2, num - 1):
        inside = (centres >= stamps[0, q] - 160) & (centres < stamps[0, q] + 160)
        assert inside.sum() == (32 if q == num // 2 else inside.sum()) and inside.sum() >= 15
        np.testing.assert_allclose(emb[:, q, :64], mel[:, inside].mean(1), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(emb[:, q, 64:], mel[:, inside].std(1), rtol=1e-3, atol=1e-3)


def test_logmel_embedder_tells_tones_apart_and_handles_short_clips():
    embedder = LogMelStatsEmbedder()
    t = np.arange(16000) / 16000
    low, high = (0.5 * np.sin(2 * np.pi * f * t).astype(np.float32) for f in (300.0, 3000.0))
    a, b = embedder.scene_embeddings(np.stack([low, high]))
    assert np.argmax(a[:64]) < np.argmax(b[:64])  # the louder band follows the pitch
    emb, stamps = embedder.timestamp_embeddings(np.zeros((1, 100), np.float32))  # < 1 window
    assert emb.shape == (1, 1, 128) and stamps.tolist() == [[0.0]]
    with pytest.raises(ValueError, match="NaN"):
        embedder.scene_embeddings(np.full((1, 1000), np.nan, np.float32))
