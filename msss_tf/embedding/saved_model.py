"""`SavedModelEncoder`: an exported encoder SavedModel (`msss-tf export`) as an embedder.

NumPy in, NumPy out (`AudioEmbedder`), for Python use (HEAR, `msss-tf embed`, probes):
the audio is checked on the host (`as_audio_batch`) and sent to the SavedModel's
`scene_embeddings` / `timestamp_embeddings` functions, `batch_size` clips a call; the
graph places the windows itself. `load_encoder` takes a version folder or its TF
Serving base folder (the newest version). An export is recognised by its signatures
(`ENCODER_SIGNATURES`) and its `embedding_size`; errors name the path.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.embedding.audio import as_audio_batch, empty_timestamps
from msss_tf.embedding.paths import SAVED_MODEL_FILE, saved_model_version
from msss_tf.rundir import CONFIG_FILENAME

ENCODER_SIGNATURES = ("serving_default", "window")  # what an encoder export serves


class SavedModelEncoder:
    """An exported encoder SavedModel, loaded for Python use (HEAR, `msss-tf embed`).

    NumPy in, NumPy out, with the same API as `Embedder`: `scene_embeddings(audio)`,
    `timestamp_embeddings(audio)`, plus `window(windows)`; and the attributes
    `sample_rate`, `scene_embedding_size`, `timestamp_embedding_size`, `hop_ms`,
    `config` (from assets/msss_config.json), `path`, `module` (the loaded object).
    """

    def __init__(self, path: str):
        self.path = path
        if not os.path.isdir(path):
            raise FileNotFoundError(f"no such SavedModel directory: {path}")
        if not os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
            raise ValueError(f"{path}: not a SavedModel directory (no saved_model.pb)")
        try:
            self.module = tf.saved_model.load(path)
        except Exception as e:  # truncated or foreign: say which
            raise ValueError(f"{path}: cannot load the SavedModel "
                             f"({type(e).__name__}: {str(e).strip()[:300]})") from e
        missing = [s for s in ENCODER_SIGNATURES if s not in self.module.signatures]
        if missing or not hasattr(self.module, "embedding_size"):
            raise ValueError(
                f"{path}: not an msss-tf encoder export (signatures "
                f"{sorted(self.module.signatures)}; expected {list(ENCODER_SIGNATURES)})")
        self.sample_rate = int(self.module.sample_rate.numpy())
        self.scene_embedding_size = int(self.module.embedding_size.numpy())
        self.timestamp_embedding_size = self.scene_embedding_size
        self.hop_ms = float(self.module.hop_ms.numpy())
        self.window_samples = int(self.module.window_samples.numpy())
        config_path = os.path.join(path, "assets", CONFIG_FILENAME)
        self.config = MSSSConfig.load(config_path) if os.path.exists(config_path) else None

    def _batches(self, audio, batch_size):
        audio = as_audio_batch(audio)
        for start in range(0, len(audio), batch_size):
            yield tf.constant(audio[start:start + batch_size])

    def scene_embeddings(self, audio, batch_size: int = 16) -> np.ndarray:
        out = [self.module.scene_embeddings(b).numpy() for b in self._batches(audio, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.scene_embedding_size), np.float32)

    def timestamp_embeddings(self, audio, batch_size: int = 8):
        audio = as_audio_batch(audio)
        if len(audio) == 0:
            return empty_timestamps(audio.shape[1], self.hop_ms, self.sample_rate,
                                     self.scene_embedding_size)
        embs, stamps = [], []
        for b in self._batches(audio, batch_size):
            e, t = self.module.timestamp_embeddings(b)
            embs.append(e.numpy())
            stamps.append(t.numpy())
        return np.concatenate(embs), np.concatenate(stamps)

    def window(self, windows):
        """float32 [b, window_samples] -> (embedding [b, D], frames [b, 3, D])."""
        windows = as_audio_batch(windows)
        if windows.shape[1] != self.window_samples:
            raise ValueError(f"window: each row must hold exactly {self.window_samples} "
                             f"samples, got {windows.shape[1]}")
        out = self.module.signatures["window"](waveform=tf.constant(windows))
        return out["embedding"].numpy(), out["frames"].numpy()

    def encode_windows(self, windows, batch_size: int = 64) -> np.ndarray:
        """float32 [c, window_samples] -> frames [c, 3, D], `batch_size` windows a call."""
        windows = as_audio_batch(windows)
        out = [self.window(windows[i:i + batch_size])[1]
               for i in range(0, len(windows), batch_size)]
        return (np.concatenate(out) if out else
                np.zeros((0, 3, self.scene_embedding_size), np.float32))


def load_encoder(path: str) -> SavedModelEncoder:
    """Loads an exported encoder (a version folder, or a base folder: its newest
    version). Errors name the path: missing, truncated, foreign."""
    return SavedModelEncoder(saved_model_version(path) or path)
