"""`LogMelStatsEmbedder`: the log-mel front end alone as an embedder, no training.

A reference row next to trained encoders (the "log-mel mean+std" row of the ablation
study, experiments/study/, and of the long runs, experiments/long_run.py). It meets
`AudioEmbedder`, with the same audio check and timestamp hop rules as `Embedder`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from msss_tf.config import MSSSConfig
from msss_tf.embedding.audio import as_audio_batch, empty_timestamps


class LogMelStatsEmbedder:
    """The log-mel front end alone as an embedder: no encoder, no training.

    An `AudioEmbedder`, like `Embedder`. An embedding is
    the mean and the standard deviation over time of the log-mel frames (2 x n_mels = 128
    values): for `scene_embeddings` over the whole clip; for `timestamp_embeddings` over
    the frames whose centres lie within +-160 ms of each timestamp (the span of one
    320 ms encoder frame), timestamps at the Embedder's hop (0, 40, 80, ... ms, never past
    the end of the audio: T = samples // hop_samples + 1). A clip shorter than one STFT
    window is zero-padded to one window.
    """

    def __init__(self, config: Optional[MSSSConfig] = None, hop_ms: float = 40.0,
                 context_ms: float = 320.0):
        from msss_tf.embedding.windows import WindowPlan
        from msss_tf.model.frontend import LogMelFrontEnd

        self.config = config or MSSSConfig()
        plan = WindowPlan(self.config, hop_ms)  # the same hop rules as Embedder
        self.hop_ms = plan.hop_ms
        self.hop_samples = plan.hop_samples
        self.context_ms = float(context_ms)
        self.frontend = LogMelFrontEnd.from_msss_config(self.config)
        self.sample_rate = self.config.sample_rate
        self.scene_embedding_size = self.timestamp_embedding_size = 2 * self.config.n_mels

    def _log_mel(self, audio) -> np.ndarray:
        audio = as_audio_batch(audio)
        short = self.config.stft_window - audio.shape[1]
        if short > 0:
            audio = np.pad(audio, ((0, 0), (0, short)))
        return np.asarray(self.frontend(audio), np.float64)  # [n, F, mels]

    def scene_embeddings(self, audio, batch_size: int = 16) -> np.ndarray:
        audio = as_audio_batch(audio)
        if len(audio) == 0:
            return np.zeros((0, self.scene_embedding_size), np.float32)
        mel = self._log_mel(audio)
        return np.concatenate([mel.mean(1), mel.std(1)], axis=-1).astype(np.float32)

    def frame_centres_ms(self, num_frames: int) -> np.ndarray:
        c = self.config
        return 1000.0 * (np.arange(num_frames) * c.stft_hop + c.stft_window / 2) / c.sample_rate

    def timestamp_embeddings(self, audio, batch_size: int = 8):
        audio = as_audio_batch(audio)
        if len(audio) == 0:
            return empty_timestamps(audio.shape[1], self.hop_ms, self.sample_rate,
                                    self.timestamp_embedding_size)
        mel = self._log_mel(audio)  # [n, F, M]
        n, frames, _ = mel.shape
        num_timestamps = audio.shape[1] // self.hop_samples + 1
        stamps = np.arange(num_timestamps, dtype=np.float64) * self.hop_ms
        centres = self.frame_centres_ms(frames)
        half = self.context_ms / 2
        lo = np.searchsorted(centres, stamps - half, side="left")
        hi = np.searchsorted(centres, stamps + half, side="left")
        # Never empty: the nearest frame when no centre falls inside (short clips).
        nearest = np.clip(np.searchsorted(centres, stamps), 0, frames - 1)
        empty = hi <= lo
        lo = np.where(empty, nearest, lo)
        hi = np.where(empty, nearest + 1, hi)
        zero = np.zeros((n, 1, mel.shape[2]))
        s1 = np.concatenate([zero, np.cumsum(mel, axis=1)], axis=1)
        s2 = np.concatenate([zero, np.cumsum(mel * mel, axis=1)], axis=1)
        count = (hi - lo)[None, :, None].astype(np.float64)
        mean = (s1[:, hi] - s1[:, lo]) / count
        var = np.maximum((s2[:, hi] - s2[:, lo]) / count - mean * mean, 0.0)
        emb = np.concatenate([mean, np.sqrt(var)], axis=-1).astype(np.float32)
        return emb, np.tile(stamps.astype(np.float32)[None, :], (n, 1))
