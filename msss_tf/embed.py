"""Embeddings from a frozen encoder, for audio of any length (scene and timestamp).

Which layer: by default the encoder's frequency-pooled output (1280-d for B0), not the
512-d heads. The heads exist to serve the pre-training losses and are discarded, as in
COLA and SimCLR; the layer under them carries more general information. `layer=` reads
an earlier EfficientNet stage instead ("stage1" .. "stage7", "top"; frequency flattened,
`msss_tf.encoder.encoder_at_layer`): the same windows and frames, another feature map.

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
  timestamp (24 per 0.96 s): 3x cheaper, and exact (no interpolation). The audio is
  zero-padded by half an encoder frame (167.5 ms) at the start so the first frame is
  centred on 0 ms, and at the end as far as the last tiling needs.

All of it is TensorFlow graph code (`tf.function`-friendly): the same functions serve
probes, SavedModel export and HEAR.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.encoder import TIME_STRIDE, build_encoder, encoder_at_layer
from msss_tf.frontend import LogMelFrontEnd


def load_msss_model(path: str):
    """An `MSSSModel` from a `.keras` file or a run directory (its final/latest model)."""
    from msss_tf.model import MSSSModel  # registers the custom objects
    from msss_tf.pretrain import latest_checkpoint

    if os.path.isdir(path):
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise FileNotFoundError(
                f"{path}: no model.keras or checkpoints/*.keras in this run directory"
            )
        path = checkpoint
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file or run directory: {path}")
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


def as_audio_batch(audio) -> np.ndarray:
    """Audio [n, samples] or [samples] -> float32 [n, samples]; refuses other ranks and
    NaN or Inf samples (they would give NaN embeddings)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if audio.ndim != 2:
        raise ValueError(f"audio must be [n, samples] or [samples], got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio holds NaN or Inf samples")
    return audio


class WindowPlan:
    """Where the 0.96 s windows go, for scene and timestamp embeddings.

    The window placement of the module docstring, written once and shared by every
    runtime: `Embedder` (Keras, SavedModel) runs it inside its graph; `TFLiteEmbedder`
    (`msss_tf.export`) runs it eagerly for one clip, then feeds the windows to the
    interpreter one by one. The methods take and return tensors, in a `tf.function` or
    eagerly.

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
        the paper's, or an EfficientNet stage, see `msss_tf.encoder.encoder_at_layer`)."""
        return cls(model.frontend, encoder_at_layer(model.encoder, layer), model.msss_config,
                   **kwargs)

    @classmethod
    def from_path(cls, path: str, layer: str = "output", **kwargs) -> "Embedder":
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
        """float32 [b, samples] -> [b, D] (see the module docstring).

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


# ------------------------------------------------------------------ files of any length
def window_plan_of(embedder) -> WindowPlan:
    """The `WindowPlan` of any embedder (`Embedder`, `SavedModelEncoder`,
    `TFLiteEmbedder`)."""
    plan = getattr(embedder, "plan", None)
    if plan is not None:
        return plan
    config = getattr(embedder, "config", None)
    if config is None:
        raise ValueError(f"{getattr(embedder, 'path', 'the model')}: no MSSS config (an "
                         f"export's assets/msss_config.json) to place the windows with")
    return WindowPlan(config, embedder.hop_ms)


def embed_file(embedder, path: str, write_timestamps, max_windows: int = 64,
               block_seconds: float = 30.0, tmp_dir: Optional[str] = None):
    """Scene and timestamp embeddings of one audio file of any length, in memory that does
    not grow with its length: the file is decoded into a temporary file
    (`msss_tf.data.audio.SpooledAudio`), and its windows are read back and encoded
    `max_windows` at a time. The same windows as `Embedder.scene_embeddings` /
    `timestamp_embeddings` on the whole clip, so the same embeddings (up to float
    summation order).

    Args:
        embedder: `Embedder`, `SavedModelEncoder` or `TFLiteEmbedder` (anything with
            `encode_windows(windows [c, segment_samples]) -> [c, J, D]` and a window plan).
        path: the audio file, read as `msss_tf.data.audio.load_audio` would read it.
        write_timestamps: called with consecutive blocks float32 [t, D] of the timestamp
            embeddings (at timestamps 0, hop_ms, 2 hop_ms, ...), in order.
        max_windows: windows per encoder call.
        block_seconds: audio decoded per block.
        tmp_dir: where the temporary file goes.

    Returns:
        (scene embedding float32 [D], the number T of timestamp embeddings written).

    Raises:
        AudioError: the file is not usable audio (as `load_audio`).
    """
    from msss_tf.data.audio import SpooledAudio

    plan = window_plan_of(embedder)
    hop, width = plan.config.stft_hop, plan.window_samples
    size = int(embedder.scene_embedding_size)

    def frames_at(audio, starts):  # sample starts int [c] -> frames [c, J, D]
        span = audio.read(int(starts[0]), int(starts[-1]) + width)
        windows = np.stack([span[s - starts[0]:s - starts[0] + width] for s in starts])
        return np.asarray(embedder.encode_windows(windows), np.float32)

    with SpooledAudio(path, plan.config.sample_rate, block_seconds=block_seconds,
                      tmp_dir=tmp_dir) as audio:
        num_samples = audio.num_samples
        padded = num_samples + int(plan.scene_pad(num_samples))
        starts = plan.scene_starts(plan.num_frames(padded)).numpy().astype(np.int64) * hop
        total = np.zeros(size, np.float64)
        for i in range(0, len(starts), max_windows):
            total += frames_at(audio, starts[i:i + max_windows]).sum(axis=(0, 1))
        scene = (total / (len(starts) * plan.frames_per_window)).astype(np.float32)

        starts, num_timestamps, num_tiles, _ = plan.timestamp_plan(num_samples)
        starts = starts.numpy().astype(np.int64) * hop - plan.start_pad
        num_timestamps, num_tiles = int(num_timestamps), int(num_tiles)
        tiles_per_call = max(1, max_windows // plan.shifts)
        written = 0
        for first in range(0, num_tiles, tiles_per_call):
            tiles = min(tiles_per_call, num_tiles - first)
            frames = frames_at(audio, starts[first * plan.shifts:(first + tiles) * plan.shifts])
            block, _ = plan.arrange_timestamp_frames(
                frames[None], tiles, tiles * plan.frames_per_window * plan.shifts)
            block = block.numpy()[0][:num_timestamps - written]
            write_timestamps(block)
            written += len(block)
    return scene, written


def save_npz_streamed(path: str, arrays: dict, streamed: dict) -> None:
    """Writes an `.npz` as `np.savez` does (stored, not compressed), where the arrays of
    `streamed` are written block by block and never held whole in memory.

    Args:
        path: the file to write.
        arrays: name -> NumPy array, written as they are.
        streamed: name -> (shape, dtype, blocks): `blocks` yields NumPy arrays whose
            elements, in order, fill an array of that shape (C order).
    """
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
        for name, (shape, dtype, blocks) in streamed.items():
            dtype = np.dtype(dtype)
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(
                    f, {"descr": np.lib.format.dtype_to_descr(dtype),
                        "fortran_order": False, "shape": tuple(int(d) for d in shape)})
                count = 0
                for block in blocks:
                    block = np.ascontiguousarray(block, dtype)
                    f.write(block.tobytes())
                    count += block.size
                if count != int(np.prod(shape)):
                    raise ValueError(f"{path}: {name}: {count} elements written, "
                                     f"{int(np.prod(shape))} expected for shape {shape}")
