"""Where the 0.96 s windows go: the window placement shared by every runtime.

Every embedding is an output frame of a genuine 0.96 s window encoded alone, exactly as
in training. That matters: EfficientNet's squeeze-and-excitation blocks pool over their
whole input, so encoding a long clip in one pass would give frames a context the model
never saw in training.

* **Scene** [n, D]: the clip is covered by ceil(frames / 96) windows spread evenly from
  its start to its end (they overlap a little, never pad except a clip shorter than one
  window); the embedding is the mean of their 3 frames each.
* **Timestamp** [n, T, D] at a regular `hop_ms` (40 ms by default; HEAR asks <= 50 ms),
  timestamps 0, 40, 80, ... ms up to the end of the audio (never past it). An encoder
  frame covers 32 log-mel frames (320 ms), so one 0.96 s window yields 3 frames 320 ms
  apart. Windows that tile the audio back to back, shifted by 0, 40, ..., 280 ms (8
  interleaved tilings), give frames at every 40 ms: each timestamp gets the frame
  centred on it, at a cost of 8 windows per 0.96 s of audio instead of one window per
  timestamp (24 per 0.96 s), with no interpolation. The audio is zero-padded by half an
  encoder frame (167.5 ms) at the start so the first frame is centred on 0 ms, and at
  the end as far as the last tiling needs.

`WindowPlan` computes it with TensorFlow ops (in a `tf.function` or eagerly): the Keras
`Embedder` runs it inside its graph (and so the SavedModel export), `TFLiteEmbedder` and
`embed_file` eagerly, then feed the windows to their model.
"""

from __future__ import annotations

import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.model.encoder import TIME_STRIDE


class WindowPlan:
    """Where the 0.96 s windows go, for scene and timestamp embeddings.

    The window placement of the module docstring, written once and shared by every
    runtime. The methods take and return tensors, in a `tf.function` or eagerly.

    Args:
        config: the run's `MSSSConfig` (STFT, segment length, sample rate).
        hop_ms: timestamp hop; must be a multiple of the STFT hop that divides 320 ms.
    """

    def __init__(self, config: MSSSConfig, hop_ms: float = 40.0):
        self.config = config
        stft_hop_ms = 1000.0 * config.stft_hop / config.sample_rate
        hop_frames = hop_ms / stft_hop_ms
        if abs(hop_frames - round(hop_frames)) > 1e-6 or TIME_STRIDE % round(hop_frames):
            raise ValueError(
                f"hop_ms={hop_ms}: must be k * {stft_hop_ms} ms with k dividing {TIME_STRIDE}"
            )
        self.hop_frames = int(round(hop_frames))
        self.hop_ms = float(hop_ms)
        self.hop_samples = self.hop_frames * config.stft_hop
        self.frames_per_window = config.segment_frames // TIME_STRIDE  # J = 3
        self.window_frames = self.frames_per_window * TIME_STRIDE  # 96
        self.window_samples = config.segment_samples  # the samples of one 96-frame window
        self.shifts = TIME_STRIDE // self.hop_frames  # K = 8
        # Samples of zero padding that centre the first encoder frame on t = 0.
        self.start_pad = int(config.stft_hop * (TIME_STRIDE / 2 - 0.5) + config.stft_window / 2)

    def num_frames(self, num_samples):
        """Log-mel frames of `num_samples` samples (the STFT pads nothing)."""
        return 1 + (num_samples - self.config.stft_window) // self.config.stft_hop

    def scene_pad(self, num_samples):
        """Zero samples appended to a clip so that it holds at least one window."""
        return tf.maximum(self.window_samples - num_samples, 0)

    def scene_starts(self, num_frames):
        """Log-mel frames of the (padded) clip -> start frames int32 [w] of its
        ceil(frames / 96) windows, spread evenly from its start to its end."""
        num_windows = (num_frames + self.window_frames - 1) // self.window_frames
        last_start = tf.cast(num_frames - self.window_frames, tf.float32)
        return tf.cast(tf.round(tf.linspace(0.0, last_start, num_windows)), tf.int32)

    def timestamp_plan(self, num_samples):
        """Samples of a clip -> (start frames int32 [M * K] of the windows in the padded
        audio, T timestamps, M tiles, end padding in samples).

        The audio gets `start_pad` zeros in front and `end_pad` zeros behind; window
        (m, k) starts at log-mel frame m * 96 + k * hop_frames of it.
        """
        per_tile = self.frames_per_window * self.shifts  # 24 timestamps per tile
        num_timestamps = num_samples // self.hop_samples + 1
        num_tiles = (num_timestamps + per_tile - 1) // per_tile
        m = tf.range(num_tiles)[:, None]
        k = tf.range(self.shifts)[None, :]
        starts = tf.reshape(m * self.window_frames + k * self.hop_frames, [-1])
        last_start = (num_tiles - 1) * self.window_frames + (self.shifts - 1) * self.hop_frames
        needed = self.config.stft_window + self.config.stft_hop * (
            last_start + self.window_frames - 1
        )
        end_pad = tf.maximum(needed - self.start_pad - num_samples, 0)
        return starts, num_timestamps, num_tiles, end_pad

    def arrange_timestamp_frames(self, frames, num_tiles, num_timestamps):
        """Encoder frames [b, M * K, J, D] of the windows of `timestamp_plan`, in its
        order -> (embeddings [b, T, D], timestamps_ms [b, T])."""
        frames = tf.convert_to_tensor(frames)
        batch = tf.shape(frames)[0]
        size = frames.shape[-1]
        frames = tf.reshape(
            frames, [batch, num_tiles, self.shifts, self.frames_per_window, size]
        )
        # Timestamp index q = m * (J * K) + j * K + k: order the axes (m, j, k).
        frames = tf.transpose(frames, [0, 1, 3, 2, 4])
        per_tile = self.frames_per_window * self.shifts
        frames = tf.reshape(frames, [batch, num_tiles * per_tile, size])
        embeddings = frames[:, :num_timestamps]
        timestamps = tf.cast(tf.range(num_timestamps), tf.float32) * self.hop_ms
        return embeddings, tf.tile(timestamps[None, :], [batch, 1])


def window_plan_of(embedder) -> WindowPlan:
    """The `WindowPlan` of any window-based embedder (`Embedder`, `SavedModelEncoder`,
    `TFLiteEmbedder`): its `plan`, else one built from its `config` and `hop_ms`."""
    plan = getattr(embedder, "plan", None)
    if plan is not None:
        return plan
    config = getattr(embedder, "config", None)
    if config is None:
        raise ValueError(f"{getattr(embedder, 'path', 'the model')}: no MSSS config (an "
                         f"export's assets/msss_config.json) to place the windows with")
    return WindowPlan(config, embedder.hop_ms)
