"""build_corpus: a reproducible folder of realistic, unlabelled pre-training audio.

Layout of `out_dir`:
    audio/000000.wav ...   16-bit mono WAV clips (names carry no labels)
    manifest.json          seed, sizes, counts per kind, renderer versions (written last)

Pre-train on `out_dir/audio` (a folder of audio), or run `prepare` on it: `out_dir` itself
holds a manifest.json, which the pipeline would take for a prepared TFRecord folder.
"""

import collections
import concurrent.futures
import hashlib
import importlib.metadata
import multiprocessing
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from msss_tf.atomic import atomic_path, write_json_atomically
from msss_tf.data.realistic import music, sounds, speech
from msss_tf.data.realistic.deps import soundfont_path
from msss_tf.data.realistic.variation import apply_variation, check_clip, to_pcm16

KINDS = ("speech", "music", "sounds")
AUDIO_SUBDIR = "audio"
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

_RENDERERS: Dict[Tuple[str, int], object] = {}


def _renderer(kind: str, sample_rate: int):
    # One renderer per process and kind (the SoundFont bytes are read once).
    key = (kind, sample_rate)
    if key not in _RENDERERS:
        _RENDERERS[key] = (speech.EspeakRenderer(sample_rate) if kind == "speech"
                           else music.MidiRenderer(sample_rate))
    return _RENDERERS[key]


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of clip `index` of the corpus with `seed`."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, 0x5EED]))


def render_clip(kind: str, seconds: float, rng: np.random.Generator,
                sample_rate: int = 16000) -> Tuple[np.ndarray, Dict]:
    """Renders one corpus clip with recording variation, checked.

    Args:
      kind: one of KINDS.
      seconds: length in seconds.
      rng: the clip's random generator.
      sample_rate: in Hz.

    Returns:
      (int16 [round(seconds * sample_rate)] samples, info about its content).

    Raises:
      ValueError: the clip came out non-finite, silent or clipped.
    """
    if kind == "speech":
        x, info = speech.speech_clip(rng, seconds, _renderer("speech", sample_rate))
    elif kind == "music":
        x, info = music.music_clip(rng, seconds, _renderer("music", sample_rate))
    elif kind == "sounds":
        x, info = sounds.sounds_clip(rng, seconds, sample_rate)
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{kind} clip: non-finite samples before variation")
    x, variation = apply_variation(rng, x, sample_rate)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{kind} clip: non-finite samples")
    pcm = to_pcm16(x)
    check_clip(pcm, f"{kind} clip ({info})")
    info = dict(info, kind=kind, **variation)
    return pcm, info


def plan_corpus(minutes: float, seed: int, mix: Sequence[float],
                clip_seconds: Tuple[float, float]) -> List[Tuple[str, float]]:
    """The (kind, seconds) of each clip: lengths uniform in `clip_seconds`, totalling
    `minutes`, kinds assigned so each kind's share of seconds follows `mix`."""
    if minutes <= 0:
        raise ValueError(f"minutes must be > 0, got {minutes}")
    lo, hi = clip_seconds
    if not 0 < lo <= hi:
        raise ValueError(f"clip_seconds must be 0 < min <= max, got {clip_seconds}")
    mix = np.asarray(mix, np.float64)
    if mix.shape != (len(KINDS),) or np.any(mix < 0) or mix.sum() <= 0:
        raise ValueError(f"mix must be {len(KINDS)} non-negative fractions {KINDS}, got {mix}")
    mix = mix / mix.sum()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9_1A4]))
    total = minutes * 60.0
    plan, done = [], np.zeros(len(KINDS))
    while done.sum() < total - 1e-9:
        left = total - done.sum()
        seconds = float(rng.uniform(lo, hi))
        if left < seconds:
            # The last clip takes what is left, unless that is too short for a clip.
            if left < lo / 2 and plan:
                break
            seconds = max(left, min(lo, 1.0))
        seconds = round(seconds, 3)
        # The kind furthest below its share of the seconds so far.
        kind = int(np.argmax(mix * (done.sum() + seconds) - done))
        plan.append((KINDS[kind], seconds))
        done[kind] += seconds
    return plan


def _write_clip(path: str, pcm: np.ndarray, sample_rate: int) -> None:
    with atomic_path(path, ".wav") as tmp:
        sf.write(tmp, pcm, sample_rate, subtype="PCM_16", format="WAV")


def _render_and_write(job) -> Dict:
    index, kind, seconds, seed, sample_rate, path = job
    pcm, info = render_clip(kind, seconds, clip_rng(seed, index), sample_rate)
    _write_clip(path, pcm, sample_rate)
    return info


def renderer_versions() -> Dict[str, str]:
    """Versions of everything whose output goes into the clips' bytes."""
    versions = {}
    for package in ("numpy", "scipy", "soundfile", "espeakng-loader", "tinysoundfont",
                    "pretty-midi"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["libespeak-ng"] = _renderer("speech", 16000).info()["version"]
    _renderer("music", 16000)  # fails here, before any file is written, without tinysoundfont
    with open(soundfont_path(), "rb") as f:
        versions["TimGM6mb.sf2 sha256"] = hashlib.sha256(f.read()).hexdigest()
    versions["libsndfile"] = sf.__libsndfile_version__
    return versions


def _summarise(infos: List[Dict], plan: List[Tuple[str, float]]) -> Dict:
    counts = collections.Counter(kind for kind, _ in plan)
    seconds = collections.Counter()
    for kind, s in plan:
        seconds[kind] += s
    styles = collections.Counter(f"{i['kind']}/{i['style']}" for i in infos)
    voices = {v for i in infos if i["kind"] == "speech" for v in i["voices"]}
    languages = {v.split("+")[0] for v in voices}
    variants = {v.split("+")[1] for v in voices}
    programs = {p for i in infos if i["kind"] == "music" for p in i["programs"]}
    events = collections.Counter(e for i in infos if i["kind"] == "sounds" for e in i["events"])
    backgrounds = collections.Counter(i["background"] for i in infos
                                      if i["kind"] == "sounds" and i["background"])
    return {
        "clips_per_kind": {k: counts.get(k, 0) for k in KINDS},
        "seconds_per_kind": {k: round(seconds.get(k, 0.0), 3) for k in KINDS},
        "clips_per_style": dict(sorted(styles.items())),
        "distinct_voices": len(voices),
        "distinct_languages": len(languages),
        "distinct_voice_variants": len(variants),
        "distinct_gm_programs": len(programs),
        "clips_with_drums": sum(1 for i in infos if i["kind"] == "music" and i["drums"]),
        "sound_events": dict(sorted(events.items())),
        "sound_backgrounds": dict(sorted(backgrounds.items())),
        "clips_with_reverb": sum(i["reverb"] for i in infos),
        "clips_with_added_noise": sum(i["noise"] for i in infos),
    }


def build_corpus(out_dir: str, minutes: float, seed: int = 0,
                 mix: Sequence[float] = (0.34, 0.33, 0.33), sample_rate: int = 16000,
                 clip_seconds: Tuple[float, float] = (4.0, 10.0), jobs: int = 1,
                 progress: Optional[Callable[[int, int], None]] = None) -> Dict:
    """Renders a realistic pre-training corpus of speech, music and everyday sounds.

    The same arguments (jobs aside) give byte-identical files: every clip draws from its
    own generator, seeded by (seed, clip index), and its renderers start fresh.

    Args:
      out_dir: output folder; clips go to `out_dir/audio/`, the manifest to
        `out_dir/manifest.json`. Clips of an earlier build there are replaced.
      minutes: total audio length in minutes.
      seed: the corpus seed.
      mix: fractions of the audio seconds for (speech, music, sounds); normalised.
      sample_rate: in Hz.
      clip_seconds: (min, max) clip length in seconds.
      jobs: worker processes (1: render in this process).
      progress: optional callback(clips_done, clips_total).

    Returns:
      The manifest dict, also written to `out_dir/manifest.json`.

    Raises:
      MissingCorpusPackageError: espeakng-loader, tinysoundfont or pretty-midi is missing.
    """
    start_wall, start_cpu = time.perf_counter(), os.times()
    plan = plan_corpus(minutes, seed, mix, clip_seconds)
    versions = renderer_versions()  # also fails early if a renderer is missing
    audio_dir = os.path.join(out_dir, AUDIO_SUBDIR)
    os.makedirs(audio_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)
    # Until the new manifest is written, the folder must not look complete.
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    names = [f"{i:06d}.wav" for i in range(len(plan))]
    for stale in sorted(set(os.listdir(audio_dir)) - set(names)):
        if stale.endswith(".wav"):
            os.remove(os.path.join(audio_dir, stale))
    jobs_list = [(i, kind, seconds, seed, sample_rate, os.path.join(audio_dir, names[i]))
                 for i, (kind, seconds) in enumerate(plan)]
    infos: List[Dict] = []
    if jobs <= 1:
        for job in jobs_list:
            infos.append(_render_and_write(job))
            if progress:
                progress(len(infos), len(plan))
    else:
        # spawn: the parent may hold TensorFlow's threads, which fork does not copy safely.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            for info in pool.map(_render_and_write, jobs_list, chunksize=4):
                infos.append(info)
                if progress:
                    progress(len(infos), len(plan))
    wall = time.perf_counter() - start_wall
    end_cpu = os.times()
    cpu = sum(end_cpu[k] - start_cpu[k] for k in range(4))  # self and children
    total_seconds = sum(s for _, s in plan)
    manifest = {
        "format": "msss_tf realistic corpus",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "minutes_requested": minutes,
        "seconds_total": round(total_seconds, 3),
        "num_clips": len(plan),
        "sample_rate": sample_rate,
        "clip_seconds": list(clip_seconds),
        "mix": dict(zip(KINDS, (float(m) for m in np.asarray(mix) / np.sum(mix)))),
        "audio_dir": AUDIO_SUBDIR,
        "files": names,
        **_summarise(infos, plan),
        "renderers": versions,
        "build": {"jobs": jobs, "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                  "audio_seconds_per_cpu_second": round(total_seconds / max(cpu, 1e-9), 1),
                  "audio_seconds_per_wall_second": round(total_seconds / max(wall, 1e-9), 1)},
    }
    write_json_atomically(manifest_path, manifest)
    return manifest
