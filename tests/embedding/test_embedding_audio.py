"""The embedding contract, the one audio check every runtime runs (msss_tf/embedding/
audio.py, contract.py) and the one model-path resolver (paths.py)."""

import numpy as np
import pytest
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.embedding import (AudioEmbedder, Embedder, LogMelStatsEmbedder, as_audio_batch,
                               check_window, empty_timestamps, resolve_model)

CONFIG = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25)


def test_audio_batch_rule():
    one = as_audio_batch(np.zeros(100, np.float64))  # one clip, any float width
    assert one.shape == (1, 100) and one.dtype == np.float32
    assert as_audio_batch(tf.zeros([2, 50])).shape == (2, 50)
    assert as_audio_batch(np.zeros((0, 16000), np.float32)).shape == (0, 16000)  # n = 0
    with pytest.raises(TypeError, match="float samples.*int16"):
        as_audio_batch(np.zeros((1, 100), np.int16))
    with pytest.raises(ValueError, match=r"\[n, samples\].*shape"):
        as_audio_batch(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="zero-length"):
        as_audio_batch(np.zeros((2, 0), np.float32))
    bad = np.zeros((2, 100), np.float32)
    bad[1, 5] = np.inf
    with pytest.raises(ValueError, match="audio holds NaN or Inf samples"):
        as_audio_batch(bad)
    emb, stamps = empty_timestamps(16000, 40.0, 16000, 8)
    assert emb.shape == (0, 26, 8) and stamps.shape == (0, 26)


def test_tflite_window_input_is_checked_before_the_interpreter():
    window = check_window(np.zeros(15600, np.float64), 15600)
    assert window.shape == (1, 15600) and window.dtype == np.float32
    assert check_window(tf.zeros([1, 15600]), 15600).shape == (1, 15600)
    with pytest.raises(TypeError, match="float samples.*int16"):
        check_window(np.zeros(15600, np.int16), 15600)
    for shape in [(15599,), (2, 15600), (0,), (1, 1, 15600), ()]:
        with pytest.raises(ValueError, match=r"must be \[15600\] or \[1, 15600\]"):
            check_window(np.zeros(shape, np.float32), 15600)
    bad = np.zeros(15600, np.float32)
    bad[7] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_window(bad, 15600)


def test_every_runtime_meets_the_contract_and_the_same_rule():
    embedders = [Embedder.random_init(CONFIG, seed=1), LogMelStatsEmbedder()]
    for embedder in embedders:
        assert isinstance(embedder, AudioEmbedder), type(embedder).__name__
        with pytest.raises(TypeError, match="float samples"):
            embedder.scene_embeddings(np.zeros((1, 16000), np.int16))
        with pytest.raises(ValueError, match="zero-length"):
            embedder.timestamp_embeddings(np.zeros((1, 0), np.float32))
        scene = embedder.scene_embeddings(np.zeros((0, 16000), np.float32))
        emb, stamps = embedder.timestamp_embeddings(np.zeros((0, 16000), np.float32))
        size = embedder.scene_embedding_size
        assert scene.shape == (0, size) and emb.shape == (0, 26, size)
        assert stamps.shape == (0, 26)
    assert not isinstance(object(), AudioEmbedder)


def test_the_resolver_tells_model_paths_apart(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert resolve_model(str(run)) == ("keras", str(run))
    base = tmp_path / "export"
    for version in ("1", "2", "10"):
        (base / version).mkdir(parents=True)
        (base / version / "saved_model.pb").write_bytes(b"")
    assert resolve_model(str(base)) == ("saved_model", str(base / "10"))
    assert resolve_model(str(base / "2")) == ("saved_model", str(base / "2"))
    (tmp_path / "m.tflite").write_bytes(b"")
    assert resolve_model(str(tmp_path / "m.tflite")) == ("tflite", str(tmp_path / "m.tflite"))
    with pytest.raises(ValueError, match="not a run directory or a .keras file"):
        Embedder.from_path(str(base))
