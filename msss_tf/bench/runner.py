"""`run_benchmark`: the parts of `msss-tf bench` in order on the TensorFlow backend (on
JAX it hands over to `msss_tf.bench.jax_backend`), with the wall and CPU time of each."""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Callable, Optional, Sequence

from msss_tf.bench.memory import bench_long_audio, bench_memory, long_audio_models
from msss_tf.bench.report import TARGETS, format_table, format_wall_table, write_results
from msss_tf.bench.tf_parts import bench_embed, bench_input
from msss_tf.bench.tf_step import bench_step, bench_tf_keras_floor
from msss_tf.bench.timing import Background, children_cpu_seconds, process_age_seconds

DEFAULT_PARTS = ("step", "input", "embed", "memory")
# long_audio: peak RSS of `msss-tf embed` on 1, 10 and 60 minutes (minutes of CPU), on request.
PARTS = DEFAULT_PARTS + ("long_audio",)


def run_benchmark(batch_size: int = 16, steps: int = 3, repeats: int = 3,
                  width_coefficient: float = 0.5, depth_coefficient: float = 0.5,
                  jit_compile: bool = False, mixed_precision: Optional[str] = None,
                  view_batching: str = "separate", parts: Sequence[str] = DEFAULT_PARTS,
                  long_audio_minutes: Sequence[float] = (1.0, 10.0, 60.0),
                  memory_batch_sizes: Optional[Sequence[int]] = None,
                  compare_view_batching: bool = False, ablations: bool = True,
                  memory_in_background: bool = True,
                  out: Optional[str] = None,
                  log: Callable = print) -> dict:
    """Runs the benchmark parts; returns (and writes to `out` if given) the figures.

    With `memory_in_background` (and the step part on), the peak-RSS subprocesses run
    while this process builds and traces the step variants, and are waited for before
    the first timed round, so no timed figure runs beside them."""
    import keras

    if keras.backend.backend() == "jax":
        from msss_tf.bench.jax_backend import run_jax_benchmark

        return run_jax_benchmark(batch_size, steps, repeats, width_coefficient,
                                 depth_coefficient, mixed_precision, parts, out=out, log=log)
    age_at_start = process_age_seconds()
    started_perf = time.perf_counter()
    cpu = {"start-up": time.process_time()}  # CPU seconds (user + sys) per part
    import tensorflow as tf

    from msss_tf.config import MSSSConfig

    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown benchmark part(s) {unknown}; choose from {PARTS}")
    if batch_size < 2 or steps < 1 or repeats < 1:
        raise ValueError("bench: batch_size must be >= 2, steps and repeats >= 1")
    if mixed_precision in ("", "float32", "none"):
        mixed_precision = None
    config = MSSSConfig(width_coefficient=width_coefficient, depth_coefficient=depth_coefficient,
                        batch_size=batch_size, learning_rate=1e-4)
    from msss_tf.runs import portable_command

    started = time.time()
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(),
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
                    "tensorflow": tf.__version__, "keras": keras.__version__},
        "command": portable_command(sys.argv),
        "encoder": {"width_coefficient": width_coefficient,
                    "depth_coefficient": depth_coefficient},
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "parts": list(parts),
    }
    # Wall time per part, in order; a part that ran beside another is marked so.
    wall = {}
    if age_at_start is not None:
        wall["start-up (Python, TensorFlow import)"] = (
            age_at_start + time.perf_counter() - started_perf)
    skipped = []
    if "step" in parts and not ablations:
        skipped.append(("ablation steps clip, clip_frame, clip_pitch", "--ablations"))
    if "step" in parts and not compare_view_batching:
        skipped.append(("one 3B encoder call vs three (view batching)",
                        "--compare_view_batching"))
    for part in PARTS:
        if part not in parts:
            skipped.append((f"part '{part}'", f"--parts=...,{part}"))
    sizes = list(memory_batch_sizes or (max(2, batch_size // 2), batch_size))
    if "embed" in parts:  # before minutes of step timing, not after
        from msss_tf.packages import require_modules

        require_modules(("ai_edge_litert",), "msss-tf bench (part 'embed': TFLite latency)")
    workdir = tempfile.mkdtemp(prefix="msss-bench-")
    memory = None
    try:
        if "memory" in parts and memory_in_background and "step" in parts:
            log(f"peak memory: batch sizes {sizes}, in the background until the first "
                "timed round")
            memory = Background(lambda mlog: bench_memory(config, sizes, workdir, log=mlog))
        step, models = {}, {}
        if "step" in parts or "input" in parts or "embed" in parts:
            log(f"step: batch {batch_size}, {steps} steps x {repeats} rounds")
            waited = {}

            def before_timing():
                if memory is not None:
                    waited["seconds"] = memory.join(log)

            t, c = time.perf_counter(), time.process_time()
            step = bench_step(config, batch_size, steps, repeats, jit_compile, mixed_precision,
                              view_batching, compare_view_batching, ablations, log=log,
                              before_timing=before_timing, models_out=models)
            total = time.perf_counter() - t
            cpu["step"] = time.process_time() - c
            timing = step["timed_rounds_seconds"]
            wall[f"step: build, trace, warm up ({len(step['traces'])} step functions)"] = (
                total - timing - waited.get("seconds", 0.0))
            if memory is not None:
                wall["step: wait for the memory runs"] = waited.get("seconds", 0.0)
            wall["step: timed rounds"] = timing
            results["step"] = step
            results["step_overhead"] = step["step_overhead"]
            t = time.perf_counter()
            results.update(bench_tf_keras_floor(batch_size, steps, repeats,
                                                step["floor_seconds"])
                           if "step" in parts else {"floor_vs_tf_keras": "n/a"})
            if results.get("tf_keras_floor_seconds", "n/a") != "n/a":
                wall["tf_keras floor"] = time.perf_counter() - t
        if "input" in parts:
            log("input pipeline: TFRecord shards")
            t, c = time.perf_counter(), time.process_time()
            results["input"] = bench_input(config, batch_size, steps, repeats, workdir,
                                           step_seconds=step.get("full_step_seconds"))
            results["input_headroom"] = results["input"]["input_headroom"]
            shards = results["input"]["shards_seconds"]
            wall["input: write TFRecord shards"] = shards
            wall["input: pipeline rounds"] = time.perf_counter() - t - shards
            cpu["input"] = time.process_time() - c
        if "embed" in parts:
            log("embedding throughput")
            from msss_tf.model.msss_model import MSSSModel

            t, c = time.perf_counter(), time.process_time()
            if "full" in models and mixed_precision is None:
                model = models["full"]  # float32, the same encoder; its weights do not matter
            else:
                keras.utils.set_random_seed(0)
                model = MSSSModel(config)
            results["embed"] = bench_embed(model, workdir, repeats, log=log)
            export = results["embed"]["export_seconds"]
            wall["embed: export SavedModel + TFLite float32, int8"] = export
            wall["embed: warm-up and rounds"] = time.perf_counter() - t - export
            cpu["embed"] = time.process_time() - c
        if "memory" in parts:
            if memory is None:
                log(f"peak memory: batch sizes {sizes}")
                t = time.perf_counter()
                results["memory"] = bench_memory(config, sizes, workdir, log=log)
                wall[f"memory: {len(sizes)} pre-training subprocesses"] = (
                    time.perf_counter() - t)
            else:
                memory.join(log)  # already done: joined before the timed rounds
                results["memory"] = memory.result
                wall[f"memory: {len(sizes)} pre-training subprocesses (beside step warm-up)"
                     ] = memory.seconds
        if "long_audio" in parts:
            log(f"long audio: peak RSS of msss-tf embed on {list(long_audio_minutes)} minutes")
            t, c = time.perf_counter(), time.process_time()
            results["long_audio"] = bench_long_audio(
                long_audio_models(config, workdir), long_audio_minutes, workdir, log=log)
            wall["long_audio: embed subprocesses"] = time.perf_counter() - t
            cpu["long_audio"] = time.process_time() - c
    finally:
        if memory is not None:
            memory.thread.join()
        shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = time.time() - started
    total = (age_at_start or 0.0) + time.perf_counter() - started_perf
    other = total - sum(v for k, v in wall.items() if "(beside" not in k)
    if other > 0.05:
        wall["other (set-up, tf_keras check, logging)"] = other
    wall["total (process start to table)" if age_at_start is not None
         else "total (bench start to table)"] = total
    results["wall_seconds_per_part"] = wall
    if "memory" in results:
        cpu["memory (subprocesses)"] = sum(results["memory"]["cpu_seconds"].values())
    cpu["total"] = time.process_time() + children_cpu_seconds()
    results["cpu_seconds_per_part"] = cpu
    results["skipped"] = [f"{what}: {flag}" for what, flag in skipped]
    log("")
    log(format_table(results))
    log("")
    log(format_wall_table(results))
    if out:
        write_results(results, out)
        log(f"\nwrote {out}")
    return results
