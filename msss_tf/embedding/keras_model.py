"""Loading a trained `MSSSModel` for inference, and batch-norm calibration.

`load_msss_model(path)`: a `.keras` file, or a run directory (its newest whole model,
`msss_tf.rundir.latest_checkpoint`); every failure is a FileNotFoundError / ValueError
naming the path and what is wrong with it (missing, not a .keras archive, corrupt, not an
MSSS model). `calibrate_batch_norm`: sets an (untrained) encoder's batch-norm moving
statistics from audio, weights untouched.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from msss_tf.embedding.paths import keras_model_file


def load_msss_model(path: str):
    """An `MSSSModel` from a `.keras` file or a run directory (its final/latest model)."""
    from msss_tf.model.msss_model import MSSSModel  # registers the custom objects

    path = keras_model_file(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise ValueError(f"{path}: cannot load an MSSS model: the file exists but cannot be "
                         f"read ({e.strerror or e})") from e
    if path.endswith(".keras") and head != b"PK\x03\x04":
        # Keras itself would say "File not found" for a file that is there.
        raise ValueError(
            f"{path}: cannot load an MSSS model: the file exists but is not a .keras "
            f"archive (a zip file; it starts with {head!r}): it is corrupt, truncated or "
            f"of another format. Use another checkpoint of the run, or re-save the model")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # a truncated or foreign file: say which
        why = str(e).replace("File not found: ", "")  # Keras' wording for a bad zip
        raise ValueError(f"{path}: cannot load an MSSS model: the file is corrupt, truncated "
                         f"or not an MSSS model ({type(e).__name__}: {why})") from e
    if not isinstance(model, MSSSModel):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not an MSSSModel")
    return model


def calibrate_batch_norm(encoder, frontend, audio, batch_size: int = 16, passes: int = 0) -> int:
    """Sets the encoder's batch-norm moving statistics from `audio`, weights untouched.

    The encoder runs in training mode (batch statistics; each call moves the moving
    averages by `1 - momentum` towards them) over batches of `audio`, for as many calls
    as it takes the moving averages to forget their initial values to 1e-3
    (log(1e-3) / log(momentum) calls: 66 at momentum 0.9), cycling through the data.

    Args:
        encoder: a Keras encoder (log-mel [b, frames, n_mels] -> frames).
        frontend: the `LogMelFrontEnd` that feeds it.
        audio: float32 [n, samples], n >= 2 (batch statistics need two examples).
        batch_size: clips per call.
        passes: calls to make; 0: as many as the momentum needs.

    Returns:
        The number of training-mode calls made.
    """
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2 or audio.shape[0] < 2:
        raise ValueError(f"calibration audio: expected [n >= 2, samples], got {audio.shape}")
    momenta = [layer.momentum for layer in encoder._flatten_layers()
               if isinstance(layer, keras.layers.BatchNormalization)]
    if not momenta:
        return 0
    if passes <= 0:
        passes = int(math.ceil(math.log(1e-3) / math.log(max(momenta))))
    batch_size = max(2, min(batch_size, audio.shape[0]))
    starts = list(range(0, audio.shape[0] - batch_size + 1, batch_size))

    @tf.function(reduce_retracing=True)
    def step(batch):
        encoder(frontend(batch), training=True)

    for i in range(passes):
        start = starts[i % len(starts)]
        step(tf.constant(audio[start:start + batch_size]))
    return passes
