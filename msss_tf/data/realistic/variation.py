"""Recording variation applied to every corpus clip: room reverb, background noise, level."""

from typing import Dict, Tuple

import numpy as np
from scipy import signal

from msss_tf.data.realistic.sounds import coloured_noise

# Peak level range in dBFS; the top stays below full scale so no clip is ever clipped.
PEAK_DBFS = (-30.0, -1.0)
# A clip whose RMS is below this (dBFS) counts as silent.
SILENCE_DBFS = -65.0


def room_impulse_response(rng: np.random.Generator, rt60: float, sr: int) -> np.ndarray:
    """A synthetic room response: a direct path, then exponentially decaying noise whose
    high frequencies die faster (air and wall absorption).

    Args:
      rt60: reverberation time in seconds (60 dB decay).
      sr: sample rate in Hz.

    Returns:
      float32 [n] impulse response, direct path 1 at index 0.
    """
    n = int(rt60 * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    dark = signal.sosfilt(signal.butter(1, rng.uniform(1500, 5000), fs=sr, output="sos"), tail)
    mix = rng.uniform(0.3, 1.0)
    tail = (mix * dark + (1 - mix) * tail) * np.exp(-3 * t / rt60)
    predelay = int(rng.uniform(0.002, 0.02) * sr)
    ir = np.zeros(n + predelay)
    ir[0] = 1.0
    # Direct-to-reverberant ratio 0 to 12 dB.
    tail_gain = 10 ** (-rng.uniform(0, 12) / 20) / (np.sqrt(np.sum(tail ** 2)) + 1e-12)
    ir[predelay:] += tail * tail_gain
    return ir.astype(np.float32)


def apply_variation(rng: np.random.Generator, x: np.ndarray, sr: int,
                    reverb_prob: float = 0.5, noise_prob: float = 0.5) -> Tuple[np.ndarray, Dict]:
    """Reverb (RT60 0.15-1.2 s), additive coloured noise (SNR 0-30 dB), then a random
    peak level in PEAK_DBFS.

    Args:
      x: float32 [n] clean clip.
      sr: sample rate in Hz.
      reverb_prob, noise_prob: how often each is applied.

    Returns:
      (float32 [n] clip with peak < 1, info with what was applied).
    """
    n = len(x)
    y = x.astype(np.float64)
    info = {"reverb": False, "noise": False}
    if rng.random() < reverb_prob:
        ir = room_impulse_response(rng, float(rng.uniform(0.15, 1.2)), sr)
        y = signal.fftconvolve(y, ir)[:n]
        info["reverb"] = True
    if rng.random() < noise_prob:
        noise = coloured_noise(rng, n, str(rng.choice(["white", "pink", "brown"])))
        snr = rng.uniform(0, 30)
        p_signal = np.mean(y ** 2)
        y = y + noise * np.sqrt(p_signal / (np.mean(noise ** 2) + 1e-20) * 10 ** (-snr / 10))
        info["noise"] = True
    peak = np.max(np.abs(y))
    if peak > 0:
        y = y * (10 ** (rng.uniform(*PEAK_DBFS) / 20) / peak)
    return y.astype(np.float32), info


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float [n] in (-1, 1) -> int16 [n], rounded."""
    return np.round(np.asarray(x, np.float64) * 32767).astype(np.int16)


def check_clip(pcm: np.ndarray, where: str) -> None:
    """Raises ValueError if the int16 clip is empty, silent, or touches full scale.

    Args:
      pcm: int16 [n] samples.
      where: names the clip in the message.
    """
    if pcm.size == 0:
        raise ValueError(f"{where}: empty clip")
    x = pcm.astype(np.float64) / 32768
    peak = np.max(np.abs(x))
    rms_db = 10 * np.log10(np.mean(x ** 2) + 1e-30)
    if peak >= 32767 / 32768:
        raise ValueError(f"{where}: clipped (peak {peak:.4f})")
    if rms_db < SILENCE_DBFS:
        raise ValueError(f"{where}: silent (RMS {rms_db:.1f} dBFS)")
