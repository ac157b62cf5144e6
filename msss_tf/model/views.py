"""The views of one pre-training step, drawn from a batch of segment pairs.

Shapes: B clips in this replica's batch, S samples per segment, T = 1 + (S - stft_window)
// stft_hop STFT frames, M = n_mels mel bins.

From `batch["anchor"]` and `batch["positive"]`, waveforms [B, S] (float32, or int16 PCM
scaled by 1 / 32768), `draw_views` makes up to three log-mel views [B, T, M]:

* anchor: the anchor segment;
* shifted: the anchor pitch-shifted by a ratio rho ~ U[pitch_ratio_min, pitch_ratio_max]
  per clip (`pitch_ratio` [B]), from the anchor's STFT; only when
  `config.needs_shifted_view`;
* positive: the positive segment plus N(0, positive_noise_std^2) noise [B, S]; only when
  a loss needs it.

The random draws, in this order from the model's one seed generator: rho, then the
noise. A batch may carry its own draws instead ("pitch_ratio" [B], "positive_noise"
[B, S], the latter added as is). Under a multi-replica tf.distribute step the draws are
made for the global batch and sliced by replica (`msss_tf.model.replicas.global_draw`), so
every replica sees the rows one device would draw for the same global batch.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import keras
from keras import ops

from msss_tf.model.replicas import global_draw


class Views(NamedTuple):
    """Log-mel views [B, T, M] of one step (None when not drawn) and the pitch ratios
    [B] of the shifted view (None without it)."""

    anchor: object
    positive: Optional[object]
    shifted: Optional[object]
    pitch_ratio: Optional[object]


def float_waveform(value):
    """A batch of waveforms as float32: int16 PCM (the NumPy input path's) is scaled by
    1 / 32768, so the host can send half the bytes."""
    value = ops.convert_to_tensor(value)
    if keras.backend.standardize_dtype(value.dtype) == "int16":
        return ops.cast(value, "float32") * (1.0 / 32768.0)
    return ops.cast(value, "float32")


def draw_views(batch, config, frontend, seed_generator, need_positive: bool,
               replica=None) -> Views:
    """The views of `batch` (see the module docstring).

    Args:
        batch: dict with "anchor" (and, when `need_positive`, "positive") [B, S];
            optionally "pitch_ratio" [B] and "positive_noise" [B, S].
        config: the `MSSSConfig` (pitch ratio range, noise level, which views exist).
        frontend: a `LogMelFrontEnd`, waveform [B, S] -> log-mel [B, T, M].
        seed_generator: the `keras.random.SeedGenerator` the draws advance.
        need_positive: whether to make the positive view.
        replica: the tf.distribute replica context of a multi-replica step, else None.
    """
    anchor_wave = float_waveform(batch["anchor"])
    batch_size = ops.shape(anchor_wave)[0]

    ratio = None
    if config.needs_shifted_view and "pitch_ratio" in batch:  # the caller's own draws
        ratio = ops.cast(batch["pitch_ratio"], "float32")
    elif config.needs_shifted_view:
        ratio = global_draw(
            replica,
            lambda n: keras.random.uniform(
                (n,), minval=config.pitch_ratio_min, maxval=config.pitch_ratio_max,
                seed=seed_generator),
            batch_size,
        )
    if ratio is not None:
        anchor_mel, shifted_mel = frontend.anchor_and_shifted(anchor_wave, ratio)
    else:
        anchor_mel, shifted_mel = frontend(anchor_wave), None

    positive_mel = None
    if need_positive:
        positive_wave = float_waveform(batch["positive"])
        if config.positive_noise_std > 0 and "positive_noise" in batch:
            positive_wave += ops.cast(batch["positive_noise"], "float32")
        elif config.positive_noise_std > 0:
            samples = ops.shape(positive_wave)[1]
            positive_wave += global_draw(
                replica,
                lambda n: keras.random.normal(
                    _shape_of(n, samples), stddev=config.positive_noise_std,
                    seed=seed_generator),
                batch_size,
            )
        positive_mel = frontend(positive_wave)
    return Views(anchor_mel, positive_mel, shifted_mel, ratio)


def _shape_of(*dims):
    """A shape for keras.random: a tuple of ints, or on TensorFlow a dynamic shape tensor."""
    if all(isinstance(d, int) for d in dims):
        return tuple(dims)
    import tensorflow as tf

    return tf.stack(dims)
