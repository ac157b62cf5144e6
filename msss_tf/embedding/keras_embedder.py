"""`Embedder`: scene and timestamp embeddings from a frozen Keras front end + encoder.

Which layer: by default the encoder's frequency-pooled output (1280-d for B0), not the
512-d heads. The heads exist to serve the pre-training losses and are discarded, as in
COLA and SimCLR; the layer under them carries more general information. `layer=` reads
an earlier EfficientNet stage instead ("stage1" .. "stage7", "top"; frequency flattened,
`msss_tf.model.encoder.encoder_at_layer`): the same windows and frames, another feature map.

The windows are placed by `WindowPlan` (`msss_tf.embedding.windows`) and gathered from
the waveform at most `max_windows` per encoder call, so memory does not grow with the
clip's length. The `*_tf` methods are TensorFlow graph code (`tf.function`-friendly):
the same functions serve probes, SavedModel export and HEAR. The NumPy methods meet
`AudioEmbedder` (`msss_tf.embedding.contract`).
"""

from __future__ import annotations

from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.embedding.audio import as_audio_batch, empty_timestamps
from msss_tf.embedding.keras_model import calibrate_batch_norm, load_msss_model
from msss_tf.embedding.paths import resolve_model
from msss_tf.embedding.windows import WindowPlan
from msss_tf.model.encoder import build_encoder, encoder_at_layer
from msss_tf.model.frontend import LogMelFrontEnd


class Embedder(tf.Module):
    """Scene and timestamp embeddings from a frozen front end + encoder.

    Args:
        frontend: the `LogMelFrontEnd` the encoder was trained with.
        encoder: log-mel [b, frames, n_mels] -> frames [b, frames // 32, D].
        config: the run's `MSSSConfig` (segment length, sample rate).
        hop_ms: timestamp hop; must be a multiple of the STFT hop that divides 320 ms.
        max_windows: windows per encoder call (over the batch): the encoder's working
            memory is bounded by it, whatever the clips' length.

    Attributes (the HEAR API reads them): `sample_rate`, `scene_embedding_size`,
    `timestamp_embedding_size`; `plan`: the `WindowPlan` (window placement).
    """

    def __init__(self, frontend, encoder, config: MSSSConfig, hop_ms: float = 40.0,
                 max_windows: int = 64, name=None):
        super().__init__(name=name)
        if max_windows < 1:
            raise ValueError(f"max_windows={max_windows}: must be >= 1")
        self.max_windows = int(max_windows)
        self.frontend = frontend
        self.encoder = encoder
        self.config = config
        self.plan = plan = WindowPlan(config, hop_ms)
        self.hop_frames = plan.hop_frames
        self.hop_ms = plan.hop_ms
        self.hop_samples = plan.hop_samples
        self.frames_per_window = plan.frames_per_window  # J = 3
        self.window_frames = plan.window_frames  # 96
        self.shifts = plan.shifts  # K = 8
        self.start_pad = plan.start_pad
        self.sample_rate = config.sample_rate
        self.scene_embedding_size = int(encoder.output_shape[-1])
        self.timestamp_embedding_size = self.scene_embedding_size

    @classmethod
    def from_model(cls, model, layer: str = "output", **kwargs) -> "Embedder":
        """The embedder of an `MSSSModel`, read at `layer` (`EMBEDDING_LAYERS`: "output",
        the paper's, or an EfficientNet stage, see `msss_tf.model.encoder.encoder_at_layer`)."""
        return cls(model.frontend, encoder_at_layer(model.encoder, layer), model.msss_config,
                   **kwargs)

    @classmethod
    def from_path(cls, path: str, layer: str = "output", **kwargs) -> "Embedder":
        """The embedder of a run directory or a `.keras` file (`resolve_model`; an
        exported SavedModel or .tflite is refused: load those with `load_embedder`)."""
        kind, path = resolve_model(path)
        if kind != "keras":
            raise ValueError(f"{path}: an exported {kind} model, not a run directory or a "
                             f".keras file; load it with msss_tf.embedding.load_embedder")
        return cls.from_model(load_msss_model(path), layer=layer, **kwargs)

    @classmethod
    def random_init(cls, config: MSSSConfig, seed: int = 0, calibration_audio=None,
                    layer: str = "output", **kwargs) -> "Embedder":
        """An untrained encoder: the reference row 'random initialisation'.

        Args:
            config: the run's `MSSSConfig` (encoder size, front end).
            seed: seeds the initial weights.
            layer: where to read the embeddings (see `from_model`).
            calibration_audio: None, or float32 [n, config.segment_samples] waveforms:
                the batch-norm moving statistics are then estimated on them (weights
                untouched; see `calibrate_batch_norm`). Without it, batch norm keeps its
                initial statistics (mean 0, variance 1): each block then shrinks its
                input, every swish works in its linear region, and the "random network"
                is in effect a random *linear* map of the log-mel patch, a different
                baseline from a random network in the regime a trained one runs in.
        """
        keras.utils.set_random_seed(seed)
        frontend = LogMelFrontEnd.from_msss_config(config)
        encoder = build_encoder(config)
        if calibration_audio is not None:
            calibrate_batch_norm(encoder, frontend, calibration_audio)
        return cls(frontend, encoder_at_layer(encoder, layer), config, **kwargs)

    # ---------------------------------------------------------------- graph code
    def _windows_at(self, waveform, sample_starts, offset=0):
        """Windows of `waveform` [b, S] starting at samples `sample_starts` int32 [c] of
        the clip padded with `offset` zeros in front (and zeros behind, as far as a window
        reaches) -> float32 [b, c, window_samples]. Gathers the windows' samples only: the
        padded clip is never built."""
        num_samples = tf.shape(waveform)[1]
        index = (sample_starts[:, None] - offset
                 + tf.range(self.plan.window_samples)[None, :])  # [c, window_samples]
        inside = tf.logical_and(index >= 0, index < num_samples)
        index = tf.clip_by_value(index, 0, tf.maximum(num_samples - 1, 0))
        return tf.gather(waveform, index, axis=1) * tf.cast(inside, waveform.dtype)

    def _frames_at(self, waveform, sample_starts, offset=0):
        """As `_windows_at`, encoded -> frames float32 [b, c, J, D]."""
        windows = self._windows_at(waveform, sample_starts, offset)
        shape = tf.shape(windows)
        frames = self.window_frames_tf(tf.reshape(windows, [-1, self.plan.window_samples]))
        return tf.reshape(
            frames, [shape[0], shape[1], self.frames_per_window, self.scene_embedding_size])

    def window_frames_tf(self, window):
        """Exactly one 0.96 s window per row, float32 [b, segment_samples] -> the
        window's encoder frames [b, J, D] (the streaming / TFLite unit)."""
        window = tf.convert_to_tensor(window, tf.float32)
        return self.encoder(self.frontend(window), training=False)

    def scene_embeddings_tf(self, waveform):
        """float32 [b, samples] -> [b, D] (placement: `msss_tf.embedding.windows`).

        The windows are encoded `max_windows` at a time (over the batch), so the memory
        the encoder needs does not grow with the clip's length."""
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        batch, num_samples = tf.shape(waveform)[0], tf.shape(waveform)[1]
        padded = num_samples + self.plan.scene_pad(num_samples)
        starts = self.plan.scene_starts(self.plan.num_frames(padded)) * self.config.stft_hop
        num_windows = tf.shape(starts)[0]
        per_call = tf.maximum(1, self.max_windows // tf.maximum(batch, 1))

        def body(i, total):
            frames = self._frames_at(waveform, starts[i:i + per_call])
            return i + per_call, total + tf.reduce_sum(frames, axis=[1, 2])

        _, total = tf.while_loop(
            lambda i, _: i < num_windows, body,
            (tf.constant(0), tf.zeros([batch, self.scene_embedding_size])),
            parallel_iterations=1)
        return total / tf.cast(num_windows * self.frames_per_window, tf.float32)

    def timestamp_embeddings_tf(self, waveform) -> Tuple[tf.Tensor, tf.Tensor]:
        """float32 [b, samples] -> (embeddings [b, T, D], timestamps_ms [b, T]).

        T = samples // hop_samples + 1; timestamp q is q * hop_ms, <= the audio's end.
        Whole tiles of windows are encoded at a time (about `max_windows` windows over the
        batch), so the memory beyond the output does not grow with the clip's length.
        """
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        batch = tf.shape(waveform)[0]
        starts, num_timestamps, num_tiles, _ = self.plan.timestamp_plan(tf.shape(waveform)[1])
        starts = starts * self.config.stft_hop
        shifts = self.shifts
        tiles_per_call = tf.maximum(1, self.max_windows // tf.maximum(batch * shifts, 1))
        num_calls = (num_tiles + tiles_per_call - 1) // tiles_per_call
        per_tile = self.frames_per_window * shifts

        def body(call, out):
            first = call * tiles_per_call
            tiles = tf.minimum(tiles_per_call, num_tiles - first)
            frames = self._frames_at(waveform, starts[first * shifts:(first + tiles) * shifts],
                                     offset=self.start_pad)
            embeddings, _ = self.plan.arrange_timestamp_frames(frames, tiles, tiles * per_tile)
            return call + 1, out.write(call, tf.transpose(embeddings, [1, 0, 2]))

        out = tf.TensorArray(tf.float32, size=num_calls, infer_shape=False,
                             element_shape=tf.TensorShape([None, None,
                                                           self.scene_embedding_size]))
        _, out = tf.while_loop(lambda call, _: call < num_calls, body, (tf.constant(0), out),
                               parallel_iterations=1)
        embeddings = tf.transpose(out.concat(), [1, 0, 2])[:, :num_timestamps]
        timestamps = tf.cast(tf.range(num_timestamps), tf.float32) * self.hop_ms
        return embeddings, tf.tile(timestamps[None, :], [batch, 1])

    # --------------------------------------------------------------- NumPy API
    def _batches(self, audio, batch_size):
        audio = as_audio_batch(audio)
        for start in range(0, len(audio), batch_size):
            yield audio[start:start + batch_size]

    def scene_embeddings(self, audio, batch_size: int = 16) -> np.ndarray:
        """NumPy float32 [n, samples] -> [n, D], in batches of `batch_size` clips."""
        out = [self._scene_fn(tf.constant(b)).numpy() for b in self._batches(audio, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.scene_embedding_size), np.float32)

    def timestamp_embeddings(self, audio, batch_size: int = 8):
        """NumPy float32 [n, samples] -> ([n, T, D], timestamps_ms [n, T])."""
        audio = as_audio_batch(audio)
        if len(audio) == 0:
            return empty_timestamps(audio.shape[1], self.hop_ms, self.sample_rate,
                                    self.timestamp_embedding_size)
        embs, stamps = [], []
        for b in self._batches(audio, batch_size):
            e, t = self._timestamp_fn(tf.constant(b))
            embs.append(e.numpy())
            stamps.append(t.numpy())
        return np.concatenate(embs), np.concatenate(stamps)

    def encode_windows(self, windows, batch_size: int = 64) -> np.ndarray:
        """NumPy float32 [c, segment_samples] (whole 0.96 s windows) -> encoder frames
        [c, J, D], in batches of `batch_size` windows."""
        windows = as_audio_batch(windows)
        if windows.shape[1] != self.plan.window_samples:
            raise ValueError(f"encode_windows: each row must hold exactly "
                             f"{self.plan.window_samples} samples, got {windows.shape[1]}")
        out = [self._window_fn(tf.constant(windows[i:i + batch_size])).numpy()
               for i in range(0, len(windows), batch_size)]
        return (np.concatenate(out) if out else
                np.zeros((0, self.frames_per_window, self.scene_embedding_size), np.float32))

    @tf.function(reduce_retracing=True)
    def _window_fn(self, windows):
        return self.window_frames_tf(windows)

    @tf.function(reduce_retracing=True)
    def _scene_fn(self, waveform):
        return self.scene_embeddings_tf(waveform)

    @tf.function(reduce_retracing=True)
    def _timestamp_fn(self, waveform):
        return self.timestamp_embeddings_tf(waveform)
