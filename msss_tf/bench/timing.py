"""Timing helpers shared by the benchmark's parts on both backends: interleaved timed
rounds, synthetic inputs, process and child CPU clocks, and a background job."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, Optional

import numpy as np


def timed_rounds(fns: Dict[str, Callable[[], None]], calls: int, repeats: int) -> Dict[str, dict]:
    """Seconds per call of each fn: median over `repeats` interleaved rounds of `calls`."""
    rounds = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            rounds[name].append((time.perf_counter() - start) / calls)
    return {name: {"median_s": statistics.median(v), "rounds_s": v} for name, v in rounds.items()}


def waveform_batch(config, batch_size: int, seed: int = 0):
    """{"anchor", "positive"}: float32 [batch_size, segment_samples], tones in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(config.segment_samples) / config.sample_rate
    f0 = rng.uniform(100, 1000, size=(batch_size, 1))
    tone = 0.3 * np.sin(2 * np.pi * f0 * t)
    noise = rng.normal(scale=0.05, size=(2, batch_size, config.segment_samples))
    return {"anchor": (tone + noise[0]).astype("float32"),
            "positive": (tone + noise[1]).astype("float32")}


def log_mel_views(config, batch_size, views=3, seed=0):
    """{"view0", ...}: float32 [batch_size, segment_frames, n_mels] of random normals."""
    rng = np.random.default_rng(seed)
    shape = (batch_size, config.segment_frames, config.n_mels)
    return {f"view{i}": rng.normal(size=shape).astype("float32") for i in range(views)}


def process_age_seconds() -> Optional[float]:
    """Seconds since this process started (Linux /proc), else None."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None



def children_cpu_seconds() -> float:
    """CPU seconds (user + sys) of the finished child processes."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Background:
    """`fn()` in a thread (used for the memory subprocesses: they run while the main
    process traces, which is single-threaded Python, and are waited for before any timed
    round); its log lines are kept and printed when it is joined."""

    def __init__(self, fn):
        import threading

        self.lines, self.result, self.error = [], None, None
        self.started = time.perf_counter()
        self.seconds = None

        def target():
            try:
                self.result = fn(self.lines.append)
            except BaseException as e:  # re-raised in join()
                self.error = e
            self.seconds = time.perf_counter() - self.started

        self.thread = threading.Thread(target=target, name="bench-memory", daemon=True)
        self.thread.start()

    def join(self, log) -> float:
        """Waits for it; logs its lines; returns the seconds spent waiting."""
        started = time.perf_counter()
        self.thread.join()
        waited = time.perf_counter() - started
        for line in self.lines:
            log(line)
        self.lines = []
        if self.error is not None:
            raise self.error
        return waited
