"""The front end: waveform -> log-mel, and the spectral pitch shift of method.md (Eq. 6).

One STFT serves both the anchor and its pitch-shifted copy: the shift rescales the
frequency axis of the linear spectrum (Y(f) = X(f / rho)) before the mel matrix, so it
costs one gather per example and keeps the duration exactly.

The layers run on every Keras backend: the pitch shift and the mel stage are
`keras.ops`, the mel matrix a NumPy constant (`mel_weight_matrix`). Only the STFT has two
forms: on TensorFlow `tf.signal.stft`, whose graph converts to TFLite built-in ops (RFFT
with `fft_length` a power of two); elsewhere framing by gather, a periodic Hann window
and `keras.ops.rfft`, the same numbers to float rounding (tested). TensorFlow is imported
only on its own backend, so the front end trains with JAX where TensorFlow is absent.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from msss_tf.config import MSSSConfig


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def hertz_to_mel(frequency):
    """The HTK mel scale of `tf.signal`: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(frequency, np.float64) / 700.0)


def mel_weight_matrix(num_mel_bins: int, num_spectrogram_bins: int, sample_rate: int,
                      lower_edge_hertz: float, upper_edge_hertz: float) -> np.ndarray:
    """float32 [num_spectrogram_bins, num_mel_bins]: triangular filters, HTK mel scale.

    The formula of `tf.signal.linear_to_mel_weight_matrix` (the DC bin gets no weight;
    band edges equally spaced in mel from `lower_edge_hertz` to `upper_edge_hertz`),
    computed in float64: it equals TensorFlow's float32 matrix to within 2e-5.
    """
    frequencies = np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins)[1:]
    bins_mel = hertz_to_mel(frequencies)[:, None]
    edges = np.linspace(hertz_to_mel(lower_edge_hertz), hertz_to_mel(upper_edge_hertz),
                        num_mel_bins + 2)
    lower, center, upper = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.pad(weights, [[1, 0], [0, 0]]).astype(np.float32)


def periodic_hann(length: int) -> np.ndarray:
    """float32 [length]: the periodic Hann window (`tf.signal.hann_window`'s default)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)


@keras.saving.register_keras_serializable(package="msss_tf")
class PitchShift(keras.layers.Layer):
    """Shifts pitch by rescaling the frequency axis of a linear spectrum.

    `Y[..., k] = X[..., k / ratio]`, linearly interpolated between bins; bins whose
    source lies above the top bin are zero. `ratio > 1` raises the pitch.

    Call arguments:
        spectrum: float [batch, frames, bins], a linear-frequency (magnitude or power)
            spectrogram.
        ratio: float [batch], one pitch ratio per example.

    Returns:
        float [batch, frames, bins], the shifted spectrum (same shape: duration kept).
    """

    def call(self, spectrum, ratio):
        spectrum = ops.convert_to_tensor(spectrum)
        ratio = ops.cast(ratio, spectrum.dtype)
        num_bins = spectrum.shape[-1]  # static: fft_length // 2 + 1
        bins = ops.arange(num_bins, dtype=spectrum.dtype)
        source = bins[None, :] / ratio[:, None]  # [batch, bins]
        top = float(num_bins - 1)
        inside = ops.cast(source <= top, spectrum.dtype)
        lower = ops.minimum(ops.floor(source), top)
        frac = ops.clip(source - lower, 0.0, 1.0)
        lower_index = ops.cast(lower, "int32")
        upper_index = ops.minimum(lower_index + 1, num_bins - 1)
        # Gather along the bin axis with a different index row per example.
        low = ops.take_along_axis(spectrum, lower_index[:, None, :], axis=2)
        high = ops.take_along_axis(spectrum, upper_index[:, None, :], axis=2)
        weight_high = (frac * inside)[:, None, :]
        weight_low = ((1.0 - frac) * inside)[:, None, :]
        return low * weight_low + high * weight_high

    def compute_output_shape(self, spectrum_shape, ratio_shape=None):
        return spectrum_shape


@keras.saving.register_keras_serializable(package="msss_tf")
class LogMelFrontEnd(keras.layers.Layer):
    """Waveform [batch, samples] -> log-mel [batch, frames, n_mels].

    Hann-windowed STFT (`stft_window` samples, hop `stft_hop`, `fft_length` points,
    no padding: `frames = 1 + (samples - stft_window) // stft_hop`), magnitude raised
    to `spectrum_power`, mel filterbank (`mel_fmin`-`mel_fmax` Hz, HTK mel scale of
    `tf.signal`), then `log(mel + log_offset)` when `log_compress`.

    Call arguments:
        waveform: float32 [batch, samples] at `sample_rate`.
        pitch_ratio: optional float32 [batch]; when given, the log-mel of the
            pitch-shifted waveform is returned instead (see `PitchShift`).
    """

    def __init__(
        self,
        sample_rate=16000,
        stft_window=400,
        stft_hop=160,
        fft_length=512,
        n_mels=64,
        mel_fmin=60.0,
        mel_fmax=7800.0,
        spectrum_power=1.0,
        log_compress=True,
        log_offset=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)
        self.stft_window = int(stft_window)
        self.stft_hop = int(stft_hop)
        self.fft_length = int(fft_length)
        self.n_mels = int(n_mels)
        self.mel_fmin = float(mel_fmin)
        self.mel_fmax = float(mel_fmax)
        self.spectrum_power = float(spectrum_power)
        self.log_compress = bool(log_compress)
        self.log_offset = float(log_offset)
        self.pitch_shift = PitchShift(name="pitch_shift")
        # Constants, not weights: fully determined by the settings above.
        self.mel_matrix = mel_weight_matrix(self.n_mels, self.fft_length // 2 + 1,
                                            self.sample_rate, self.mel_fmin, self.mel_fmax)
        self._window = periodic_hann(self.stft_window)

    @classmethod
    def from_msss_config(cls, config: MSSSConfig, **kwargs) -> "LogMelFrontEnd":
        return cls(
            sample_rate=config.sample_rate,
            stft_window=config.stft_window,
            stft_hop=config.stft_hop,
            fft_length=config.fft_length,
            n_mels=config.n_mels,
            mel_fmin=config.mel_fmin,
            mel_fmax=config.mel_fmax,
            spectrum_power=config.spectrum_power,
            log_compress=config.log_compress,
            log_offset=config.log_offset,
            **kwargs,
        )

    def build(self, waveform_shape, pitch_ratio_shape=None):
        pass  # no weights: the mel matrix and window are constants made in __init__

    def num_frames(self, num_samples: int) -> int:
        """STFT frames for `num_samples` samples (0 when shorter than one window)."""
        if num_samples < self.stft_window:
            return 0
        return 1 + (num_samples - self.stft_window) // self.stft_hop

    def spectrogram(self, waveform):
        """float32 [batch, samples] -> linear spectrum [batch, frames, fft_length//2+1]."""
        if _on_tensorflow():
            import tensorflow as tf

            stft = tf.signal.stft(
                tf.convert_to_tensor(waveform, tf.float32),
                frame_length=self.stft_window,
                frame_step=self.stft_hop,
                fft_length=self.fft_length,
                window_fn=tf.signal.hann_window,
                pad_end=False,
            )
            magnitude = tf.abs(stft)
        else:
            magnitude = self._magnitude_ops(waveform)
        if self.spectrum_power != 1.0:
            magnitude = ops.power(magnitude, self.spectrum_power)
        return magnitude

    def _magnitude_ops(self, waveform):
        """|STFT| in `keras.ops` (any backend): frames by gather, Hann, `rfft`."""
        waveform = ops.cast(waveform, "float32")
        frames = self.num_frames(int(waveform.shape[-1]))
        starts = np.arange(frames, dtype=np.int32)[:, None] * self.stft_hop
        index = starts + np.arange(self.stft_window, dtype=np.int32)[None, :]
        framed = ops.take(waveform, index, axis=-1) * self._window  # [batch, frames, window]
        real, imag = ops.rfft(framed, fft_length=self.fft_length)
        return ops.sqrt(real * real + imag * imag)

    def mel(self, spectrum, matrix_scale=None):
        """Linear spectrum [batch, frames, bins] -> (log-)mel [batch, frames, n_mels].

        `matrix_scale`: an optional scalar tensor the mel matrix is multiplied by first
        (`log_mel_kept_float` passes an exact 1.0 that depends on the data)."""
        matrix = self.mel_matrix
        if matrix_scale is not None:
            matrix = ops.convert_to_tensor(matrix) * matrix_scale
        mel = ops.tensordot(spectrum, matrix, axes=1)
        if self.log_compress:
            mel = ops.log(mel + self.log_offset)
        return mel

    def log_mel_kept_float(self, waveform):
        """The log-mel of `waveform` (no pitch shift), the same numbers as calling the
        layer, in a form that no TFLite quantiser touches: the mode of the quantised
        TFLite exports (`msss_tf.export.tflite`).

        Quantising anything between the waveform and the log destroys the log-mel: int8
        magnitudes round quiet bins to 0, whose log is log(log_offset) instead of that of
        a small number. Dynamic-range quantisation has no deny-list and quantises every
        matmul with a constant weight of >= 1024 elements; the mel matrix is one. Here it
        is multiplied by a data-dependent exact 1.0, min(1, 1 + |waveform[0, 0]|), which
        makes it a non-constant operand the quantiser leaves alone (one extra
        multiplication of the matrix per call). Full-int8 quantisation deny-lists these
        ops by their name scope instead."""
        spectrum = self.spectrogram(waveform)
        one = ops.minimum(1.0, 1.0 + ops.abs(waveform[0, 0]))
        return self.mel(spectrum, matrix_scale=one)

    def call(self, waveform, pitch_ratio=None):
        spectrum = self.spectrogram(waveform)
        if pitch_ratio is not None:
            spectrum = self.pitch_shift(spectrum, pitch_ratio)
        return self.mel(spectrum)

    def anchor_and_shifted(self, waveform, pitch_ratio):
        """Log-mel of the waveform and of its pitch-shifted copy, from one STFT."""
        spectrum = self.spectrogram(waveform)
        return self.mel(spectrum), self.mel(self.pitch_shift(spectrum, pitch_ratio))

    def compute_output_shape(self, waveform_shape, pitch_ratio_shape=None):
        samples = waveform_shape[-1]
        frames = None if samples is None else self.num_frames(samples)
        return (waveform_shape[0], frames, self.n_mels)

    def get_config(self):
        config = super().get_config()
        config.update(
            sample_rate=self.sample_rate,
            stft_window=self.stft_window,
            stft_hop=self.stft_hop,
            fft_length=self.fft_length,
            n_mels=self.n_mels,
            mel_fmin=self.mel_fmin,
            mel_fmax=self.mel_fmax,
            spectrum_power=self.spectrum_power,
            log_compress=self.log_compress,
            log_offset=self.log_offset,
        )
        return config
