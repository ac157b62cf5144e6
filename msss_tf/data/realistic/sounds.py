"""Everyday sounds synthesised in numpy/scipy, and scenes that mix them.

Each event generator takes a random generator, a length in seconds and the sample rate,
and returns a float32 waveform with peak about 1. Scenes place several overlapping
events over a background.
"""

from typing import Callable, Dict, List, Tuple

import numpy as np
from scipy import signal


def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64) / sr


def _normalise(x: np.ndarray) -> np.ndarray:
    peak = np.max(np.abs(x))
    return (x / peak if peak > 0 else x).astype(np.float32)


def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Noise of `n` samples with power spectrum ~ f^a: white 0, pink -1, brown -2,
    blue +1, violet +2."""
    exponent = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0, "violet": 2.0}[colour]
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    spectrum *= f ** (exponent / 2)
    return _normalise(np.fft.irfft(spectrum, n))


def _envelope(n: int, sr: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(n)
    a, r = max(1, min(n // 2, int(attack * sr))), max(1, min(n // 2, int(release * sr)))
    env[:a] = np.linspace(0, 1, a)
    env[n - r:] = np.minimum(env[n - r:], np.linspace(1, 0, r))
    return env


def impact(rng, seconds, sr):
    """A struck object: a few damped modes (wood, metal, glass) excited by a click."""
    n = int(seconds * sr)
    t = _t(n, sr)
    material = rng.choice(["wood", "metal", "glass", "plastic"])
    base = {"wood": (150, 900), "metal": (200, 2500), "glass": (800, 4000),
            "plastic": (300, 1500)}[material]
    decay = {"wood": (0.02, 0.12), "metal": (0.3, 1.5), "glass": (0.2, 0.8),
             "plastic": (0.03, 0.1)}[material]
    f0 = rng.uniform(*base)
    ratios = np.concatenate([[1.0], np.sort(rng.uniform(1.3, 6.5, int(rng.integers(3, 8))))])
    x = np.zeros(n)
    for k, ratio in enumerate(ratios):
        f = f0 * ratio
        if f > sr / 2 - 200:
            break
        tau = rng.uniform(*decay) / (1 + 0.3 * k)
        x += rng.uniform(0.2, 1) / (1 + k) * np.exp(-t / tau) * np.sin(
            2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    m = min(n, int(0.004 * sr))
    click = rng.standard_normal(m) * np.exp(-np.arange(m) / (0.0008 * sr))
    x[:len(click)] += 0.5 * click
    return _normalise(x)


def knocks(rng, seconds, sr):
    """Knocking or hammering: a train of similar impacts."""
    n = int(seconds * sr)
    x = np.zeros(n)
    hit = impact(rng, 0.3, sr)
    t = rng.uniform(0, 0.2)
    interval = rng.uniform(0.12, 0.5)
    while t < seconds - 0.05:
        i = int(t * sr)
        m = min(len(hit), n - i)
        x[i:i + m] += rng.uniform(0.6, 1.0) * hit[:m]
        t += interval * rng.uniform(0.8, 1.25)
    return _normalise(x)


def noise_burst(rng, seconds, sr):
    """A burst of coloured, band-passed noise (a hiss, a whoosh, a spray)."""
    n = int(seconds * sr)
    x = coloured_noise(rng, n, str(rng.choice(["white", "pink", "brown", "blue"])))
    lo = rng.uniform(50, 3000)
    hi = min(sr / 2 - 100, lo * rng.uniform(1.5, 8))
    x = signal.sosfilt(signal.butter(2, [lo, hi], "bandpass", fs=sr, output="sos"), x)
    return _normalise(x * _envelope(n, sr, rng.uniform(0.005, seconds / 2),
                                    rng.uniform(0.02, seconds / 2)))


def engine(rng, seconds, sr):
    """An engine or motor: a harmonic drone whose rate drifts, with cycle-to-cycle jitter."""
    n = int(seconds * sr)
    t = _t(n, sr)
    f0 = rng.uniform(20, 120)
    drift = 1 + rng.uniform(0, 0.3) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t
                                             + rng.uniform(0, 6))
    jitter = signal.sosfilt(signal.butter(1, 20, fs=sr, output="sos"), rng.standard_normal(n))
    f = f0 * drift * (1 + 0.3 * jitter / (np.std(jitter) + 1e-9) * rng.uniform(0.01, 0.05))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k ** rng.uniform(0.5, 1.5)
            for k in range(1, 30) if k * f0 * 1.4 < sr / 2)
    x = x + rng.uniform(0.1, 0.5) * coloured_noise(rng, n, "brown")
    x = signal.sosfilt(signal.butter(2, rng.uniform(600, 4000), fs=sr, output="sos"), x)
    return _normalise(x * _envelope(n, sr, rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.0)))


def chirps(rng, seconds, sr):
    """Bird-like calls: repeated short frequency-modulated syllables."""
    n = int(seconds * sr)
    x = np.zeros(n)
    f_base = rng.uniform(1500, 6000)
    length = rng.uniform(0.03, 0.25)
    sweep = rng.uniform(-0.6, 0.6)
    trill = rng.uniform(0, 40)
    t = rng.uniform(0, 0.3)
    while t < seconds - length:
        m = int(length * sr)
        tt = _t(m, sr)
        f = f_base * (1 + sweep * tt / length) * (1 + 0.05 * np.sin(2 * np.pi * trill * tt))
        f = np.clip(f, 200, sr / 2 - 500)
        syl = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(m)
        i = int(t * sr)
        x[i:i + m] += syl * rng.uniform(0.5, 1)
        t += length + rng.uniform(0.02, 0.4)
    return _normalise(x)


def animal_call(rng, seconds, sr):
    """Mammal-like calls (barks, meows, moos): harmonic sources with a pitch contour
    through formant resonances."""
    n = int(seconds * sr)
    x = np.zeros(n)
    f0 = rng.uniform(80, 900)
    call = rng.uniform(0.15, 1.2)
    t = rng.uniform(0, 0.3)
    formants = rng.uniform(300, 3500, 3)
    while t < seconds - 0.1:
        m = min(int(call * sr), n - int(t * sr))
        tt = _t(m, sr) / max(call, 1e-3)
        contour = f0 * (1 + rng.uniform(-0.5, 0.8) * np.sin(np.pi * tt)
                        + 0.02 * np.sin(2 * np.pi * 6 * tt * call))
        phase = 2 * np.pi * np.cumsum(contour) / sr
        src = sum(np.sin(k * phase) / k for k in range(1, 25) if k * f0 * 1.8 < sr / 2)
        src = src + 0.2 * rng.standard_normal(m)
        y = np.zeros(m)
        for fc in formants:
            b, a = signal.iirpeak(min(fc, sr / 2 - 200), 5, fs=sr)
            y += signal.lfilter(b, a, src)
        i = int(t * sr)
        x[i:i + m] += y * np.sin(np.pi * np.linspace(0, 1, m)) ** 0.5
        t += call + rng.uniform(0.1, 1.0)
    return _normalise(x)


def water(rng, seconds, sr):
    """Running water or rain: many tiny decaying bubbles or drops (granular synthesis)."""
    n = int(seconds * sr)
    kind = rng.choice(["rain", "stream"])
    density = rng.uniform(50, 600) if kind == "rain" else rng.uniform(100, 800)
    count = int(density * seconds)
    x = np.zeros(n)
    grain_n = int(0.03 * sr)
    tt = _t(grain_n, sr)
    onsets = rng.integers(0, max(1, n - grain_n), count)
    for i, f, tau, a in zip(onsets, rng.uniform(400, 5000, count), rng.uniform(0.002, 0.012, count),
                            rng.uniform(0.1, 1.0, count)):
        if kind == "stream":  # bubbles rise in pitch as they shrink
            grain = np.sin(2 * np.pi * f * tt * (1 + 0.1 * tt / tau)) * np.exp(-tt / tau)
        else:
            grain = rng.standard_normal(grain_n) * np.exp(-tt / (tau / 3))
        x[i:i + grain_n] += a * grain
    x += rng.uniform(0.05, 0.3) * coloured_noise(rng, n, "pink")
    return _normalise(x * _envelope(n, sr, 0.2, 0.2))


def door(rng, seconds, sr):
    """A door: a creak (irregular low pulse train through resonances), then a slam or click."""
    n = int(seconds * sr)
    x = np.zeros(n)
    creak = int(rng.uniform(0.2, 0.7) * n) if rng.random() < 0.7 else 0
    if creak:
        rate = rng.uniform(20, 120) * (1 + 0.4 * np.sin(np.linspace(0, rng.uniform(1, 6), creak)))
        pulses = np.zeros(creak)
        pos = np.cumsum(sr / rate * rng.uniform(0.8, 1.2, creak)).astype(int)
        pulses[pos[pos < creak]] = 1
        b, a = signal.iirpeak(rng.uniform(400, 2500), 8, fs=sr)
        x[:creak] = signal.lfilter(b, a, pulses) * np.hanning(creak)
    hit = impact(rng, min(0.6, seconds - creak / sr), sr)
    x[creak:creak + len(hit)] += hit * rng.uniform(0.5, 1.5)
    return _normalise(x)


def clicks(rng, seconds, sr):
    """Clicks: a clock tick, typing or a switch, as trains of very short transients."""
    n = int(seconds * sr)
    x = np.zeros(n)
    regular = rng.random() < 0.5
    interval = rng.uniform(0.08, 1.0)
    m = int(rng.uniform(0.002, 0.015) * sr)
    b, a = signal.iirpeak(rng.uniform(1000, 6000), rng.uniform(2, 10), fs=sr)
    t = rng.uniform(0, 0.2)
    while t < seconds - 0.02:
        i = int(t * sr)
        burst = rng.standard_normal(m) * np.exp(-np.arange(m) / (m / 4))
        x[i:i + m] += signal.lfilter(b, a, burst)[:n - i]
        t += interval if regular else rng.exponential(interval / 2) + 0.03
    return _normalise(x)


def siren(rng, seconds, sr):
    """A siren or alarm: wail or yelp frequency modulation, or a two-tone or beeping alarm."""
    n = int(seconds * sr)
    t = _t(n, sr)
    mode = rng.choice(["wail", "yelp", "two_tone", "beep"])
    lo, hi = rng.uniform(400, 900), rng.uniform(1000, 2000)
    if mode in ("wail", "yelp"):
        rate = rng.uniform(0.1, 0.4) if mode == "wail" else rng.uniform(2, 6)
        f = lo + (hi - lo) * (0.5 - 0.5 * np.cos(2 * np.pi * rate * t))
        gate = np.ones(n)
    elif mode == "two_tone":
        f = np.where((t * rng.uniform(0.8, 2)) % 1 < 0.5, lo, hi)
        gate = np.ones(n)
    else:
        f = np.full(n, hi)
        gate = ((t * rng.uniform(1, 6)) % 1 < rng.uniform(0.3, 0.7)).astype(float)
        gate = signal.sosfiltfilt(signal.butter(1, 200, fs=sr, output="sos"), gate)
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k ** 1.5 for k in range(1, 6) if k * hi < sr / 2)
    return _normalise(x * gate * _envelope(n, sr, 0.05, 0.05))


EVENTS: Dict[str, Callable] = {
    "impact": impact, "knocks": knocks, "noise_burst": noise_burst, "engine": engine,
    "chirps": chirps, "animal_call": animal_call, "water": water, "door": door,
    "clicks": clicks, "siren": siren,
}
# Typical event lengths in seconds (min, max).
EVENT_SECONDS = {
    "impact": (0.3, 1.5), "knocks": (0.6, 2.5), "noise_burst": (0.2, 2.0),
    "engine": (1.5, 5.0), "chirps": (0.5, 3.0), "animal_call": (0.5, 3.0),
    "water": (1.0, 5.0), "door": (0.5, 2.0), "clicks": (0.5, 3.0), "siren": (1.5, 5.0),
}


def background(rng, seconds, sr) -> Tuple[np.ndarray, str]:
    """A steady background: coloured noise, wind, mains hum, rain or a distant engine."""
    n = int(seconds * sr)
    kind = str(rng.choice(["noise", "wind", "hum", "rain", "engine"]))
    if kind == "noise":
        x = coloured_noise(rng, n, str(rng.choice(["pink", "brown", "white"])))
    elif kind == "wind":
        x = coloured_noise(rng, n, "pink")
        gust = signal.sosfiltfilt(signal.butter(1, 0.5, fs=sr, output="sos"),
                                  rng.standard_normal(n))
        x = x * (1 + 2 * np.abs(gust) / (np.std(gust) + 1e-9))
        x = signal.sosfilt(signal.butter(2, rng.uniform(300, 1500), fs=sr, output="sos"), x)
    elif kind == "hum":
        t = _t(n, sr)
        f = float(rng.choice([50.0, 60.0]))
        x = sum(rng.uniform(0.1, 1) * np.sin(2 * np.pi * k * f * t) for k in range(1, 8))
        x = x + 0.05 * coloured_noise(rng, n, "white")
    elif kind == "rain":
        x = water(rng, seconds, sr)
    else:
        x = engine(rng, seconds, sr)
    return _normalise(x), kind


def place_events(rng, seconds: float, sr: int, num_events: int, event_names=tuple(EVENTS)
                 ) -> Tuple[np.ndarray, List[Tuple[float, float, str]]]:
    """Mixes `num_events` events at random times, overlapping freely.

    Args:
      seconds: scene length in seconds.
      num_events: how many events to place.
      event_names: the event types to draw from (keys of EVENTS).

    Returns:
      (mix float32 [round(seconds * sr)], [(onset_s, offset_s, name)] sorted by onset),
      each event scaled to a random level within 20 dB.
    """
    n = int(round(seconds * sr))
    mix = np.zeros(n, np.float64)
    annotations = []
    for _ in range(num_events):
        name = str(rng.choice(event_names))
        lo, hi = EVENT_SECONDS[name]
        length = float(min(rng.uniform(lo, hi), seconds * 0.8))
        onset = float(rng.uniform(0, seconds - length))
        x = EVENTS[name](rng, length, sr)
        i = int(onset * sr)
        m = min(len(x), n - i)
        mix[i:i + m] += x[:m] * 10 ** (-rng.uniform(0, 20) / 20)
        annotations.append((onset, onset + m / sr, name))
    return mix.astype(np.float32), sorted(annotations)


def sounds_clip(rng: np.random.Generator, seconds: float, sample_rate: int
                ) -> Tuple[np.ndarray, Dict]:
    """Renders an everyday-sound clip: one kind of event repeated, or a scene.

    Args:
      rng: the clip's random generator.
      seconds: clip length in seconds.
      sample_rate: in Hz.

    Returns:
      (waveform float32 [round(seconds * sample_rate)], info) with the style, the event
      types and the background type.
    """
    n = int(round(seconds * sample_rate))
    if rng.random() < 0.3:
        name = str(rng.choice(list(EVENTS)))
        x = EVENTS[name](rng, seconds, sample_rate)[:n]
        x = np.pad(x, (0, n - len(x)))
        return x, {"style": "event", "events": [name], "background": None}
    mix, annotations = place_events(rng, seconds, sample_rate, int(rng.integers(2, 7)))
    bg, bg_kind = background(rng, seconds, sample_rate)
    # Background 10-35 dB below the events' peak.
    peak = np.max(np.abs(mix)) or 1.0
    bg = np.pad(bg[:n], (0, n - len(bg[:n])))  # generators round the length down
    mix = mix + bg * peak * 10 ** (-rng.uniform(10, 35) / 20)
    return mix.astype(np.float32), {"style": "scene", "events": [a[2] for a in annotations],
                                    "background": bg_kind}
