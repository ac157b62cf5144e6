"""The front end: waveform -> log-mel, and the spectral pitch shift of method.md (Eq. 6).

One STFT serves both the anchor and its pitch-shifted copy: the shift rescales the
frequency axis of the linear spectrum (Y(f) = X(f / rho)) before the mel matrix, so it
costs one gather per example and keeps the duration exactly.

The layers use `tf.signal` rather than `keras.ops`: the same graph must convert to
TFLite built-in ops (RFFT needs `fft_length` a power of two), which `tf.signal.stft`
is known to do.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from msss_tf.config import MSSSConfig


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
        spectrum = tf.convert_to_tensor(spectrum)
        ratio = tf.cast(tf.convert_to_tensor(ratio), spectrum.dtype)
        num_bins = tf.shape(spectrum)[-1]
        bins = tf.cast(tf.range(num_bins), spectrum.dtype)
        source = bins[None, :] / ratio[:, None]  # [batch, bins]
        top = tf.cast(num_bins - 1, spectrum.dtype)
        inside = tf.cast(source <= top, spectrum.dtype)
        lower = tf.minimum(tf.floor(source), top)
        frac = tf.clip_by_value(source - lower, 0.0, 1.0)
        lower_index = tf.cast(lower, tf.int32)
        upper_index = tf.minimum(lower_index + 1, num_bins - 1)
        # Gather along the bin axis with a different index row per example.
        low = tf.gather(spectrum, lower_index, axis=2, batch_dims=1)
        high = tf.gather(spectrum, upper_index, axis=2, batch_dims=1)
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
        # A constant, not a weight: it is fully determined by the settings above.
        self._mel_matrix = tf.signal.linear_to_mel_weight_matrix(
            num_mel_bins=self.n_mels,
            num_spectrogram_bins=self.fft_length // 2 + 1,
            sample_rate=self.sample_rate,
            lower_edge_hertz=self.mel_fmin,
            upper_edge_hertz=self.mel_fmax,
        )

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
        pass  # no weights: the mel matrix is a constant made in __init__

    def num_frames(self, num_samples: int) -> int:
        """STFT frames for `num_samples` samples (0 when shorter than one window)."""
        if num_samples < self.stft_window:
            return 0
        return 1 + (num_samples - self.stft_window) // self.stft_hop

    def spectrogram(self, waveform):
        """float32 [batch, samples] -> linear spectrum [batch, frames, fft_length//2+1]."""
        waveform = tf.convert_to_tensor(waveform, tf.float32)
        stft = tf.signal.stft(
            waveform,
            frame_length=self.stft_window,
            frame_step=self.stft_hop,
            fft_length=self.fft_length,
            window_fn=tf.signal.hann_window,
            pad_end=False,
        )
        magnitude = tf.abs(stft)
        if self.spectrum_power != 1.0:
            magnitude = tf.pow(magnitude, self.spectrum_power)
        return magnitude

    def mel(self, spectrum):
        """Linear spectrum [batch, frames, bins] -> (log-)mel [batch, frames, n_mels]."""
        mel = tf.tensordot(spectrum, self._mel_matrix, axes=1)
        if self.log_compress:
            mel = tf.math.log(mel + self.log_offset)
        return mel

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
