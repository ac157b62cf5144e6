"""Peak memory of `msss-tf` jobs, each in its own process: one-step pre-training at
several batch sizes, and `msss-tf embed` on long files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Sequence

import numpy as np

from msss_tf.bench.timing import children_cpu_seconds

# The peak is VmHWM, this process's own high-water mark: on Linux, ru_maxrss survives
# exec, so a child started by a large parent reports at least the parent's size.
_MEMORY_SCRIPT = """
import resource, sys
from msss_tf.cli import main
rc = main(["msss-tf"] + sys.argv[1:])
try:
    with open("/proc/self/status") as f:
        peak = [int(l.split()[1]) for l in f if l.startswith("VmHWM:")][0]
except (OSError, IndexError, ValueError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("MAX_RSS_KIB", peak, flush=True)
sys.exit(rc)
"""


def peak_rss_of_command(args: Sequence[str], what: str = "") -> float:
    """Runs `msss-tf ARGS...` in a fresh Python process; returns its peak RSS in MiB.
    Raises RuntimeError (with the end of its stderr) if it fails."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, *args], capture_output=True,
                          text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("MAX_RSS_KIB")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what or args[0]} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return int(lines[-1].split()[1]) / 1024.0


def bench_memory(config, batch_sizes: Sequence[int], workdir, extra_flags=(), log=print) -> dict:
    """Peak RSS (MiB) of one-step pre-training at each batch size, one subprocess each
    (and the CPU seconds each took)."""
    out, cpu = {}, {}
    for batch_size in batch_sizes:
        model_dir = os.path.join(workdir, f"memory-{batch_size}")
        args = ["pretrain", "--data=synthetic",
                f"--model_dir={model_dir}", "--train_steps=1", "--steps_per_epoch=1",
                f"--batch_size={batch_size}", f"--synthetic_clips={max(2 * batch_size, 8)}",
                f"--width_coefficient={config.width_coefficient}",
                f"--depth_coefficient={config.depth_coefficient}", *extra_flags]
        started = time.perf_counter()
        cpu_before = children_cpu_seconds()
        out[str(batch_size)] = peak_rss_of_command(args, f"memory run at batch {batch_size}")
        cpu[str(batch_size)] = children_cpu_seconds() - cpu_before
        log(f"  peak RSS at batch {batch_size}: {out[str(batch_size)]:.0f} MiB "
            f"({time.perf_counter() - started:.0f} s)")
    return {"peak_rss_mib": out, "cpu_seconds": cpu}


def write_long_wav(path: str, seconds: float, sample_rate: int = 16000, seed: int = 0) -> str:
    """A 16-bit mono WAV of `seconds` of tones in noise, written a minute at a time."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total = int(round(seconds * sample_rate))
    with sf.SoundFile(path, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as f:
        for start in range(0, total, 60 * sample_rate):
            t = np.arange(start, min(total, start + 60 * sample_rate)) / sample_rate
            tone = 0.2 * np.sin(2 * np.pi * (220 + 110 * np.floor(t % 7)) * t)
            f.write((tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32))
    return path


def long_audio_models(config, workdir) -> dict:
    """An untrained model of the benchmark's size as a run directory and as an exported
    SavedModel (memory does not depend on the weights)."""
    import keras

    from msss_tf.export import export_encoder
    from msss_tf.model.msss_model import MSSSModel

    keras.utils.set_random_seed(0)
    run_dir = os.path.join(workdir, "long-audio-run")
    os.makedirs(run_dir, exist_ok=True)
    config.save(run_dir)
    model = MSSSModel(config)
    model.save(os.path.join(run_dir, "model.keras"))
    exported = export_encoder(model, os.path.join(workdir, "long-audio-export"), tflite=())
    return {"run directory": run_dir, "SavedModel": exported["export_dir"]}


def bench_long_audio(models: dict, minutes: Sequence[float], workdir, log=print) -> dict:
    """Peak RSS (MiB) of `msss-tf embed` on one file of each length in `minutes`, for each
    model (name -> a run directory, SavedModel or .tflite), each in its own process; and
    each peak as a ratio to the shortest file's."""
    files = {m: write_long_wav(os.path.join(workdir, f"long-{m:g}min.wav"), 60.0 * m)
             for m in minutes}
    out = {}
    for name, model in models.items():
        peaks = {}
        for m, path in files.items():
            started = time.perf_counter()
            peaks[f"{m:g}"] = peak_rss_of_command(
                ["embed", f"--model={model}", f"--out={os.path.join(workdir, 'long.npz')}",
                 path], f"embed of {m:g} minutes ({name})")
            log(f"  embed {m:g} min ({name}): peak RSS {peaks[f'{m:g}']:.0f} MiB "
                f"({time.perf_counter() - started:.0f} s)")
        shortest = peaks[f"{min(minutes):g}"]
        out[name] = {"peak_rss_mib": peaks,
                     "ratio_to_shortest": {k: v / shortest for k, v in peaks.items()}}
    return out
