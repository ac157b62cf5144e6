"""The HEAR 2021 API (hearbenchmark.com) for msss-tf encoders.

    import msss_tf.hear as hear
    model = hear.load_model("runs/demo")                 # or a .keras file, an exported
    scene = hear.get_scene_embeddings(audio, model)       # encoder SavedModel, a .tflite
    emb, ts = hear.get_timestamp_embeddings(audio, model)

`audio` is float32 [n, samples] at 16 kHz (a tf.Tensor or a NumPy array), every clip of
the same length (HEAR's contract), any length and any n. Scene embeddings are
float32 [n, D]; timestamp embeddings float32 [n, T, D] with timestamps_ms float32 [n, T]
at a 40 ms hop: 0, 40, 80, ... up to the end of the audio, never past it, the same for
every clip. What they are is described in `msss_tf.embedding.windows`; the audio is
checked as every embedder checks it (`msss_tf.embedding.as_audio_batch`: float, finite,
non-empty clips).

`load_model` accepts, and tells apart by their files (`msss_tf.embedding.resolve_model`):

* a run directory (its model.keras or newest checkpoint) or a `.keras` file: the Keras
  `Embedder`;
* an exported encoder SavedModel (`msss-tf export`): a version folder holding
  saved_model.pb, or its TF Serving base folder (the newest version);
* a window `.tflite` from the export: windows run one by one in the LiteRT interpreter.

All three give the same embeddings (up to float rounding, or quantisation for the int8
TFLite files). The returned model is a `tf.Module` (the HEAR validator requires one for
TensorFlow models; a Keras 3 model is not one) carrying `sample_rate`,
`scene_embedding_size` and `timestamp_embedding_size`; its `embedder` is an
`msss_tf.embedding.AudioEmbedder`. Clips are embedded in chunks
(`scene_batch_size`, `timestamp_batch_size` clips) so memory stays bounded for any n.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf

from msss_tf.embedding import as_audio_batch, empty_timestamps, load_embedder, resolve_model

class HEARModel(tf.Module):
    """What `load_model` returns: a `tf.Module` around an embedder.

    Attributes: `sample_rate`, `scene_embedding_size`, `timestamp_embedding_size` (the
    HEAR API); `embedder`, `kind` ("keras", "saved_model" or "tflite"), `path`,
    `scene_batch_size` and `timestamp_batch_size` (clips per internal chunk).
    """

    def __init__(self, embedder, kind: str, path: str, scene_batch_size: int = 16,
                 timestamp_batch_size: int = 8):
        super().__init__(name="msss_hear_model")
        self.embedder = embedder
        self.kind = kind
        self.path = path
        self.sample_rate = int(embedder.sample_rate)
        self.scene_embedding_size = int(embedder.scene_embedding_size)
        self.timestamp_embedding_size = int(embedder.timestamp_embedding_size)
        self.hop_ms = float(embedder.hop_ms)
        self.scene_batch_size = scene_batch_size
        self.timestamp_batch_size = timestamp_batch_size


def load_model(model_file_path: str = "") -> HEARModel:
    """Loads a run directory, a `.keras` file, an exported encoder SavedModel or a window
    `.tflite` (see the module docstring) as a HEAR model."""
    kind, path = resolve_model(model_file_path)
    return HEARModel(load_embedder(path), kind, path)


def _audio(audio, model: HEARModel) -> np.ndarray:
    if not isinstance(model, HEARModel):
        raise TypeError(f"model must come from msss_tf.hear.load_model, got "
                        f"{type(model).__name__}")
    return as_audio_batch(audio)


def get_scene_embeddings(audio, model: HEARModel) -> tf.Tensor:
    """float32 [n, samples] at 16 kHz -> float32 tf.Tensor [n, scene_embedding_size]."""
    audio = _audio(audio, model)
    out = model.embedder.scene_embeddings(audio, batch_size=model.scene_batch_size)
    return tf.constant(np.asarray(out, np.float32).reshape(len(audio),
                                                           model.scene_embedding_size))


def get_timestamp_embeddings(audio, model: HEARModel) -> Tuple[tf.Tensor, tf.Tensor]:
    """float32 [n, samples] at 16 kHz -> (float32 [n, T, timestamp_embedding_size],
    timestamps in ms float32 [n, T]); T = samples // 640 + 1 at the 40 ms hop."""
    audio = _audio(audio, model)
    if len(audio) == 0:
        emb, stamps = empty_timestamps(audio.shape[1], model.hop_ms, model.sample_rate,
                                        model.timestamp_embedding_size)
    else:
        embs, stamps = [], []
        for start in range(0, len(audio), model.timestamp_batch_size):
            e, t = model.embedder.timestamp_embeddings(
                audio[start:start + model.timestamp_batch_size],
                batch_size=model.timestamp_batch_size)
            embs.append(np.asarray(e, np.float32))
            stamps.append(np.asarray(t, np.float32))
        emb, stamps = np.concatenate(embs), np.concatenate(stamps)
    return tf.constant(emb, tf.float32), tf.constant(stamps, tf.float32)
