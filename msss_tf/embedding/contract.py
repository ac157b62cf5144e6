"""The embedder contract: what every embedding runtime of msss-tf provides.

`AudioEmbedder` is met by `Embedder` (Keras), `SavedModelEncoder` (an exported
SavedModel), `TFLiteEmbedder` (a window .tflite), `LogMelStatsEmbedder` (the log-mel
reference) and, through its `embedder`, by the model of `msss_tf.hear.load_model`.
Probes, HEAR, `msss-tf embed` and the benchmarks rely on nothing else.
"""

from __future__ import annotations

from typing import Protocol, Tuple, runtime_checkable

import numpy as np


@runtime_checkable
class AudioEmbedder(Protocol):
    """Scene and timestamp embeddings of mono audio clips.

    Attributes:
        sample_rate: Hz of the audio the embedder takes (16000).
        scene_embedding_size: D of a scene embedding.
        timestamp_embedding_size: D of a timestamp embedding.

    Both methods take audio float [n, samples] (or one clip [samples]), every clip the
    same length, at `sample_rate`, samples in [-1, 1], as a NumPy array or a tf.Tensor;
    it is checked by `msss_tf.embedding.as_audio_batch` (float dtype, finite, non-empty
    clips; n = 0 is allowed) before the model runs. `batch_size` is the number of clips
    per model call (memory is bounded by it; results do not depend on it).

    `scene_embeddings(audio, batch_size)` -> float32 NumPy [n, scene_embedding_size]:
    one embedding per clip, whatever its length.

    `timestamp_embeddings(audio, batch_size)` -> (float32 NumPy
    [n, T, timestamp_embedding_size], timestamps in milliseconds float32 [n, T]):
    embeddings at a regular hop (40 ms by default) from 0 ms up to the end of the audio,
    never past it (T = samples // hop_samples + 1), the same timestamps for every clip.
    """

    sample_rate: int
    scene_embedding_size: int
    timestamp_embedding_size: int

    def scene_embeddings(self, audio, batch_size: int = 16) -> np.ndarray:
        ...

    def timestamp_embeddings(self, audio,
                             batch_size: int = 8) -> Tuple[np.ndarray, np.ndarray]:
        ...
