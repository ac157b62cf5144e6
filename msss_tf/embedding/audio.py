"""The one audio check of every embedding runtime (Keras, SavedModel, TFLite, log-mel,
HEAR), run on the host before any model is called.

`as_audio_batch(audio)` accepts a NumPy array or a tf.Tensor (anything with `.numpy()`)
and returns float32 NumPy [n, samples]. The rule:

* float samples (any float width; cast to float32). Integer or other dtypes are refused
  (TypeError): PCM ints are not in [-1, 1], and a silent cast would embed the wrong scale;
* rank 2 [n, samples], or rank 1 [samples] for one clip (ValueError naming the shape);
* n = 0 clips is allowed (an empty batch embeds to empty outputs: `empty_timestamps`);
  zero-length clips (samples = 0) are refused (ValueError);
* every sample finite: NaN or Inf is refused (ValueError "audio holds NaN or Inf
  samples"), since it would give NaN embeddings.

`check_window` is the same rule for one 0.96 s window of a TFLite window model.
NumPy only: importing this module loads no TensorFlow.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np


def _to_numpy(audio) -> np.ndarray:
    if hasattr(audio, "numpy") and not isinstance(audio, np.ndarray):  # a tf.Tensor
        audio = audio.numpy()
    return np.asarray(audio)


def as_audio_batch(audio) -> np.ndarray:
    """Audio [n, samples] (or one clip [samples]), NumPy or tf.Tensor -> checked float32
    NumPy [n, samples]; raises TypeError / ValueError saying what is wrong (see the
    module docstring)."""
    audio = _to_numpy(audio)
    if audio.dtype.kind != "f":
        raise TypeError(f"audio must hold float samples in [-1, 1], got dtype {audio.dtype}")
    audio = audio.astype(np.float32, copy=False)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n, samples] (or one clip [samples]), "
                         f"got shape {audio.shape}")
    if audio.shape[1] == 0:
        raise ValueError("audio has zero-length clips (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio holds NaN or Inf samples")
    return audio


def check_window(window, window_samples: int) -> np.ndarray:
    """One 0.96 s window for the TFLite model (whose graph cannot raise: Assert and
    CheckNumerics are not TFLite built-ins; it returns NaN for non-finite samples): float
    samples, exactly `window_samples` of them ([n] or [1, n]), all finite. Returns
    float32 [1, window_samples]; raises TypeError / ValueError saying what is wrong."""
    window = _to_numpy(window)
    if window.dtype.kind != "f":
        raise TypeError(f"window must hold float samples in [-1, 1], got dtype {window.dtype}")
    if window.shape not in ((window_samples,), (1, window_samples)):
        raise ValueError(f"window must be [{window_samples}] or [1, {window_samples}] (one "
                         f"0.96 s window at 16 kHz), got shape {window.shape}")
    if not np.all(np.isfinite(window)):
        raise ValueError("window holds NaN or Inf samples")
    return window.astype(np.float32, copy=False).reshape(1, window_samples)


def empty_timestamps(num_samples: int, hop_ms: float, sample_rate: int,
                     size: int) -> Tuple[np.ndarray, np.ndarray]:
    """The timestamp embeddings of an empty batch of clips of `num_samples` samples:
    (float32 [0, T, size], float32 [0, T]), T = num_samples // hop_samples + 1."""
    steps = num_samples // int(round(hop_ms * sample_rate / 1000)) + 1
    return np.zeros((0, steps, size), np.float32), np.zeros((0, steps), np.float32)
