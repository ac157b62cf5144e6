"""Tests of msss_tf/model/frontend.py (method.md, sections Front end and Pitch shift).

Front end: 16 kHz, STFT window 400 / hop 160 / fft 512 (Hann, no padding), 64 mel bands
60-7800 Hz, log(mel + eps): [B, N] -> [B, 1 + (N - 400) // 160, 64].
Pitch shift: Y[..., k] = X[..., k / rho] (linear interpolation, zero beyond the top bin),
applied to the linear spectrum before the mel matrix.

Backend-neutral except the TFLite tests: CI runs this file with KERAS_BACKEND=jax too.
"""

import keras
import numpy as np
import pytest

from msss_tf.config import MSSSConfig
from msss_tf.model.frontend import LogMelFrontEnd, PitchShift, mel_weight_matrix, periodic_hann

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
tensorflow_only = pytest.mark.skipif(not ON_TENSORFLOW, reason="TFLite conversion: TensorFlow")


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))

SR = 16000
N_SEGMENT = 15600  # 96 frames
BIN_HZ = SR / 512  # 31.25 Hz per FFT bin


def tone(freq, n=N_SEGMENT, amplitude=0.5, phase=0.0):
    t = np.arange(n) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def htk_mel(f):
    return 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)


def expected_band(freq, n_mels=64, fmin=60.0, fmax=7800.0):
    """The mel band whose triangle (HTK scale, tf.signal's) responds most to `freq`."""
    edges = np.linspace(htk_mel(fmin), htk_mel(fmax), n_mels + 2)
    m = htk_mel(freq)
    rising = (m - edges[:-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[2:] - m) / (edges[2:] - edges[1:-1])
    return int(np.argmax(np.maximum(0.0, np.minimum(rising, falling))))


def peak_band(log_mel):
    """argmax over mel bands of the time-averaged log-mel of example 0."""
    return int(np.argmax(np.asarray(log_mel)[0].mean(axis=0)))


@pytest.fixture(scope="module")
def frontend():
    return LogMelFrontEnd()


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def np_pitch_shift(spectrum, ratio):
    """Y[b, t, k] = X[b, t, k / rho_b], linear interpolation, 0 when k / rho > K - 1."""
    spectrum = np.asarray(spectrum, np.float64)
    out = np.zeros_like(spectrum)
    num_bins = spectrum.shape[-1]
    for b in range(spectrum.shape[0]):
        source = np.arange(num_bins) / float(ratio[b])
        for t in range(spectrum.shape[1]):
            out[b, t] = np.interp(source, np.arange(num_bins), spectrum[b, t], right=0.0)
    return out


# ----------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    "samples,frames",
    [(15600, 96), (16000, 98), (400, 1), (559, 1), (560, 2), (32000, 198), (4000, 23)],
)
def test_output_shape(frontend, samples, frames):
    assert frames == 1 + (samples - 400) // 160
    out = frontend(np.zeros((2, samples), np.float32) + 0.01)
    assert tuple(out.shape) == (2, frames, 64)
    assert frontend.num_frames(samples) == frames
    assert frontend.compute_output_shape((2, samples)) == (2, frames, 64)
    assert frontend.compute_output_shape((None, None)) == (None, None, 64)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"


def test_num_frames_shorter_than_a_window(frontend):
    assert frontend.num_frames(399) == 0
    assert frontend.num_frames(0) == 0


def test_config_segment_samples_give_segment_frames(frontend):
    config = MSSSConfig()
    assert config.segment_samples == N_SEGMENT
    assert frontend.num_frames(config.segment_samples) == config.segment_frames == 96


def test_spectrogram_matches_numpy_stft(frontend, rng):
    # Periodic Hann window of 400, frames every 160 samples, |rfft| with 512 points.
    wave = rng.normal(0, 0.1, size=(1, 2000)).astype(np.float32)
    spec = to_np(frontend.spectrogram(wave))
    n = np.arange(400)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 400)
    frames = 1 + (2000 - 400) // 160
    expected = np.stack(
        [np.abs(np.fft.rfft(wave[0, i * 160 : i * 160 + 400] * window, 512)) for i in range(frames)]
    )
    assert spec.shape == (1, frames, 257)
    np.testing.assert_allclose(spec[0], expected, rtol=1e-4, atol=1e-4)


def test_mel_matrix_is_tf_signal_formula():
    # Hand case: the DC row is zero, each band is a triangle peaking at 1 on its centre.
    matrix = mel_weight_matrix(64, 257, 16000, 60.0, 7800.0)
    assert matrix.shape == (257, 64) and matrix.dtype == np.float32
    assert np.all(matrix[0] == 0.0) and matrix.min() >= 0.0 and matrix.max() <= 1.0
    assert np.all(matrix.max(axis=0) > 0.5)  # every band hears some bin
    if ON_TENSORFLOW:
        import tensorflow as tf

        for args in [(64, 257, 16000, 60.0, 7800.0), (40, 257, 16000, 100.0, 6000.0),
                     (128, 513, 22050, 0.0, 11025.0)]:
            np.testing.assert_allclose(
                matrix if args[0] == 64 else mel_weight_matrix(*args),
                tf.signal.linear_to_mel_weight_matrix(*args).numpy(), rtol=0, atol=3e-5)
    np.testing.assert_allclose(periodic_hann(4), [0.0, 0.5, 1.0, 0.5], atol=1e-7)


def test_keras_ops_spectrogram_equals_the_backend_one(frontend, rng):
    # The keras.ops STFT (every backend but TensorFlow) against the one in use here: on
    # TensorFlow that is tf.signal.stft, so this is the cross-backend check of the STFT.
    wave = rng.normal(0, 0.1, size=(3, 4000)).astype(np.float32)
    np.testing.assert_allclose(to_np(frontend._magnitude_ops(wave)),
                               to_np(frontend.spectrogram(wave)), rtol=1e-4, atol=2e-5)


def test_log_mel_is_log_of_mel_plus_offset(rng):
    wave = rng.normal(0, 0.1, size=(2, 4000)).astype(np.float32)
    log_layer = LogMelFrontEnd()
    raw_layer = LogMelFrontEnd(log_compress=False)
    raw = to_np(raw_layer(wave))
    assert raw.min() >= 0.0
    np.testing.assert_allclose(to_np(log_layer(wave)), np.log(raw + 1e-6), rtol=1e-5, atol=1e-5)
    # Power spectrum option: |X|^2 before the mel matrix.
    power = LogMelFrontEnd(spectrum_power=2.0, log_compress=False)
    spec = log_layer.spectrogram(wave)
    np.testing.assert_allclose(
        to_np(power(wave)), to_np(power.mel(spec**2)), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(to_np(power.spectrogram(wave)), to_np(spec) ** 2, rtol=1e-4)


@pytest.mark.parametrize("freq", [440.0, 523.25, 1000.0, 3000.0])
def test_sine_peaks_in_its_mel_band(frontend, freq):
    band = peak_band(frontend(tone(freq)[None]))
    assert band == expected_band(freq)
    if freq == 440.0:
        # The band's triangle spans 440 Hz (HTK mel edges).
        edges = np.linspace(htk_mel(60), htk_mel(7800), 66)
        assert edges[band] < htk_mel(440.0) < edges[band + 2]


def test_higher_tone_peaks_in_higher_band(frontend):
    bands = [peak_band(frontend(tone(f)[None])) for f in (300.0, 600.0, 1200.0, 2400.0, 4800.0)]
    assert bands == sorted(bands) and len(set(bands)) == 5


# ------------------------------------------------------------ pitch shift
def test_pitch_shift_ratio_one_is_exact_identity(frontend, rng):
    spectrum = rng.uniform(0, 3, size=(3, 5, 257)).astype(np.float32)
    out = to_np(PitchShift()(spectrum, np.ones(3, np.float32)))
    np.testing.assert_array_equal(out, spectrum)
    wave = rng.normal(0, 0.1, size=(2, N_SEGMENT)).astype(np.float32)
    np.testing.assert_array_equal(
        to_np(frontend(wave, pitch_ratio=np.ones(2, np.float32))), to_np(frontend(wave))
    )


def test_pitch_shift_hand_case():
    # X = [0, 10, 20, 30, 40] (5 bins).
    # rho = 2:   source k/2 = [0, .5, 1, 1.5, 2]    -> [0, 5, 10, 15, 20]
    # rho = 0.5: source 2k  = [0, 2, 4, 6, 8]       -> [0, 20, 40, 0, 0] (beyond bin 4: 0)
    # rho = 1.25: source .8k = [0, .8, 1.6, 2.4, 3.2] -> [0, 8, 16, 24, 32]
    x = np.array([[[0, 10, 20, 30, 40]]] * 3, np.float32)
    out = to_np(PitchShift()(x, np.array([2.0, 0.5, 1.25], np.float32)))
    np.testing.assert_allclose(
        out[:, 0], [[0, 5, 10, 15, 20], [0, 20, 40, 0, 0], [0, 8, 16, 24, 32]], atol=1e-5
    )


@pytest.mark.parametrize("ratio", [0.8, 0.93, 1.0, 1.13, 1.2])
def test_pitch_shift_matches_numpy_interpolation(rng, ratio):
    spectrum = rng.uniform(0, 1, size=(2, 4, 257)).astype(np.float32)
    ratios = np.array([ratio, 1.0 / ratio], np.float32)
    out = to_np(PitchShift()(spectrum, ratios))
    assert out.shape == spectrum.shape
    # float32 k / rho is off by up to an ulp (~2e-5 of a bin near the top): on a random
    # spectrum that moves the interpolation by up to ~2e-5 of a neighbour's difference.
    np.testing.assert_allclose(out, np_pitch_shift(spectrum, ratios), rtol=1e-5, atol=5e-5)


@pytest.mark.parametrize("ratio", [0.8, 1.2])
def test_pitch_shift_moves_peak_bin_by_ratio(frontend, ratio):
    # 1000 Hz = FFT bin 32 exactly; shifted by rho its peak must sit at 32 rho (+- 1 bin).
    spec = frontend.spectrogram(tone(1000.0)[None])
    assert int(np.argmax(to_np(spec)[0].mean(0))) == 32
    shifted = to_np(frontend.pitch_shift(spec, np.array([ratio], np.float32)))[0]
    assert abs(int(np.argmax(shifted.mean(0))) - 32 * ratio) <= 1.0
    # Every frame, not only the average.
    assert np.all(np.abs(np.argmax(shifted, axis=-1) - 32 * ratio) <= 1.0)
    # And the peak of a 2000 Hz tone (bin 64).
    spec2 = frontend.spectrogram(tone(2000.0)[None])
    shifted2 = to_np(frontend.pitch_shift(spec2, np.array([ratio], np.float32)))[0]
    assert abs(int(np.argmax(shifted2.mean(0))) - 64 * ratio) <= 1.0


def test_shift_by_three_semitones_lands_in_the_band_of_the_target_tone(frontend):
    # 440 Hz * 2^(3/12) = 523.25 Hz (A4 -> C5).
    ratio = np.array([2 ** (3 / 12)], np.float32)
    shifted = frontend(tone(440.0)[None], pitch_ratio=ratio)
    target = frontend(tone(523.25)[None])
    assert peak_band(shifted) == peak_band(target)
    assert peak_band(shifted) != peak_band(frontend(tone(440.0)[None]))


def test_pitch_shift_per_example_ratios(frontend):
    ratios = np.array([0.8, 1.0, 1.2], np.float32)
    wave = np.stack([tone(1000.0)] * 3)
    batch = to_np(frontend(wave, pitch_ratio=ratios))
    for i, r in enumerate(ratios):
        single = to_np(frontend(wave[i : i + 1], pitch_ratio=np.array([r], np.float32)))
        np.testing.assert_allclose(batch[i], single[0], rtol=1e-5, atol=1e-5)
    peaks = [peak_band(batch[i : i + 1]) for i in range(3)]
    assert peaks[0] < peaks[1] < peaks[2]
    assert peaks[1] == expected_band(1000.0)
    assert peaks[0] == expected_band(800.0) and peaks[2] == expected_band(1200.0)
    # The linear spectra too: peak bins at 25.6, 32, 38.4 (+- 1).
    spec = to_np(frontend.pitch_shift(frontend.spectrogram(wave), ratios))
    for i, r in enumerate(ratios):
        assert abs(int(np.argmax(spec[i].mean(0))) - 32 * r) <= 1.0


def test_pitch_shift_keeps_duration(frontend, rng):
    wave = rng.normal(0, 0.1, size=(2, 8000)).astype(np.float32)
    for r in (0.8, 1.2):
        out = frontend(wave, pitch_ratio=np.full(2, r, np.float32))
        assert tuple(out.shape) == tuple(frontend(wave).shape) == (2, 48, 64)
    # The time envelope is unchanged: a tone that starts half-way still starts half-way.
    burst = tone(1000.0, n=8000)
    burst[:4000] = 0.0
    plain = to_np(frontend(burst[None]))[0].max(axis=-1)
    shifted = to_np(frontend(burst[None], pitch_ratio=np.array([1.2], np.float32)))[0].max(-1)
    onset = lambda curve: int(np.argmax(curve > curve.max() - 6.0))  # noqa: E731
    assert onset(plain) == onset(shifted)


def test_anchor_and_shifted_equals_two_calls(frontend, rng):
    wave = rng.normal(0, 0.1, size=(3, N_SEGMENT)).astype(np.float32)
    ratios = np.array([0.85, 1.0, 1.17], np.float32)
    anchor, shifted = frontend.anchor_and_shifted(wave, ratios)
    np.testing.assert_allclose(to_np(anchor), to_np(frontend(wave)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        to_np(shifted), to_np(frontend(wave, pitch_ratio=ratios)), rtol=1e-6, atol=1e-6
    )
    assert not np.allclose(to_np(shifted)[0], to_np(anchor)[0], atol=1e-2)


# ------------------------------------------------------------ config / build
def test_get_config_round_trip_same_outputs(rng):
    layer = LogMelFrontEnd(
        n_mels=40, mel_fmin=100.0, mel_fmax=6000.0, spectrum_power=2.0, log_offset=1e-4,
        name="fe",
    )
    config = layer.get_config()
    clone = LogMelFrontEnd.from_config(config)
    assert clone.get_config() == config
    assert clone.name == "fe"
    wave = rng.normal(0, 0.1, size=(2, 4000)).astype(np.float32)
    ratios = np.array([0.9, 1.1], np.float32)
    np.testing.assert_array_equal(to_np(clone(wave)), to_np(layer(wave)))
    np.testing.assert_array_equal(
        to_np(clone(wave, pitch_ratio=ratios)), to_np(layer(wave, pitch_ratio=ratios))
    )
    assert tuple(clone(wave).shape) == (2, 23, 40)
    # A different setting gives different outputs (the config is really used).
    assert not np.allclose(to_np(LogMelFrontEnd(n_mels=40)(wave)), to_np(layer(wave)))


def test_from_msss_config_has_the_config_settings(rng):
    config = MSSSConfig()
    layer = LogMelFrontEnd.from_msss_config(config)
    for field in (
        "sample_rate", "stft_window", "stft_hop", "fft_length", "n_mels", "mel_fmin",
        "mel_fmax", "spectrum_power", "log_compress", "log_offset",
    ):
        assert getattr(layer, field) == getattr(config, field), field
    assert (layer.stft_window, layer.stft_hop, layer.fft_length, layer.n_mels) == (
        400, 160, 512, 64,
    )
    wave = rng.normal(0, 0.1, size=(1, N_SEGMENT)).astype(np.float32)
    np.testing.assert_array_equal(to_np(layer(wave)), to_np(LogMelFrontEnd()(wave)))
    other = LogMelFrontEnd.from_msss_config(
        config.replace(n_mels=32, spectrum_power=2.0, log_compress=False), name="fe2"
    )
    assert (other.n_mels, other.spectrum_power, other.log_compress, other.name) == (
        32, 2.0, False, "fe2",
    )
    assert tuple(other(wave).shape) == (1, 96, 32)


# ------------------------------------------------------------------ TFLite
def _convert(concrete_function, trackable):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function], trackable)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _interpreter(model_bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    interpreter.allocate_tensors()
    return interpreter


def _op_names(interpreter):
    return {op["op_name"] for op in interpreter._get_ops_details()}


@tensorflow_only
def test_tflite_builtins_only_matches_keras(frontend, rng):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, N_SEGMENT], tf.float32)])
    def log_mel(waveform):
        return frontend(waveform)

    model = _convert(log_mel.get_concrete_function(), frontend)
    assert b"Flex" not in model
    interpreter = _interpreter(model)
    assert not any("Flex" in name for name in _op_names(interpreter))
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    assert tuple(out["shape"]) == (1, 96, 64)

    def run(wave):
        interpreter.set_tensor(inp["index"], wave)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])

    for wave in (
        rng.normal(0, 0.1, size=(1, N_SEGMENT)).astype(np.float32),
        (tone(440.0) + rng.normal(0, 0.01, size=N_SEGMENT)).astype(np.float32)[None],
    ):
        np.testing.assert_allclose(run(wave), to_np(frontend(wave)), atol=1e-3, rtol=0)
    # A clean loud tone: far from the tone the mel energy (~1e-5) is at the level of
    # float32 FFT rounding, where log(mel + 1e-6) of TF and TFLite differ by up to ~0.2.
    # Compare there on the linear mel scale, relative to the peak, and the peak band.
    wave = tone(440.0)[None]
    got, expected = run(wave), to_np(frontend(wave))
    np.testing.assert_allclose(np.exp(got), np.exp(expected), atol=1e-5 * np.exp(expected).max())
    assert peak_band(got) == peak_band(expected) == expected_band(440.0)


@tensorflow_only
def test_tflite_pitch_shift_builtins_only(frontend, rng):
    import tensorflow as tf

    # The pitch shift lives in the graph too; it must also convert to built-ins.
    @tf.function(
        input_signature=[
            tf.TensorSpec([2, N_SEGMENT], tf.float32),
            tf.TensorSpec([2], tf.float32),
        ]
    )
    def shifted(waveform, ratio):
        return frontend(waveform, pitch_ratio=ratio)

    model = _convert(shifted.get_concrete_function(), frontend)
    assert b"Flex" not in model
    interpreter = _interpreter(model)
    wave = rng.normal(0, 0.1, size=(2, N_SEGMENT)).astype(np.float32)
    ratio = np.array([0.8, 1.2], np.float32)
    details = sorted(interpreter.get_input_details(), key=lambda d: len(d["shape"]))
    interpreter.set_tensor(details[0]["index"], ratio)
    interpreter.set_tensor(details[1]["index"], wave)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = to_np(frontend(wave, pitch_ratio=ratio))
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)
