"""`msss-tf bench` on the JAX backend (`KERAS_BACKEND=jax`): the step and input parts.

The same figures as the TensorFlow benchmark (msss_tf.bench.tf_step), measured on what JAX
runs, in one process, each the median over `repeats` rounds of `steps` calls:

* floor: the encoder's three forward+backward passes on log-mel views with a trivial
  loss (the mean of the outputs) and the same optimiser, jit-compiled;
* step_overhead = the model's own JAX train step (waveforms in: front end, pitch shift,
  heads, the three losses; `MSSSModel.train_step(state, data)` under `jax.jit`, as
  Keras's JAX trainer compiles it) / floor;
* the front end of the three views alone, as a fraction of the step;
* input_headroom = segment pairs/s that `SegmentPairs` cuts from int16 corpus arrays
  (the accelerator input path, no TensorFlow) with `input_threads` threads / segment
  pairs/s the step consumes. The float32 figure is reported beside it.

Embedding, memory and long-audio parts measure the TensorFlow export and run on the
TensorFlow backend only; here they are listed as skipped.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Optional, Sequence

import numpy as np

from msss_tf.bench.report import TARGETS, write_results
from msss_tf.bench.timing import timed_rounds, waveform_batch


def _model_step(model, batch):
    """The model's JAX train step, jit-compiled on a constant batch; returns a no-arg
    callable that runs one step (the state is carried from call to call)."""
    import jax

    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    state = [
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in model.optimizer.variables],
        [v.value for v in model.metrics_variables],
    ]
    step = jax.jit(model.train_step, donate_argnums=0)
    batch = {k: jax.numpy.asarray(v) for k, v in batch.items()}

    def run():
        logs, new_state = step(tuple(state), batch)
        state[:] = list(new_state)
        jax.block_until_ready(logs["loss"])

    return run


def _floor_step(config, mixed_precision, batch_size):
    """Three encoder passes on log-mel views, a trivial loss, the same optimiser."""
    import jax
    from keras import ops

    from msss_tf.model.msss_model import build_encoder_with_policy, build_optimizer

    encoder = build_encoder_with_policy(config, mixed_precision)
    optimizer = build_optimizer(config, mixed_precision)
    optimizer.build(encoder.trainable_variables)
    rng = np.random.default_rng(0)
    shape = (batch_size, config.segment_frames, config.n_mels)
    views = [jax.numpy.asarray(rng.normal(size=shape).astype("float32")) for _ in range(3)]

    def loss_fn(trainable, non_trainable):
        loss = 0.0
        for view in views:
            out, non_trainable = encoder.stateless_call(trainable, non_trainable, view,
                                                        training=True)
            loss = loss + ops.mean(ops.cast(out, "float32"))
        return loss, non_trainable

    def step(state):
        trainable, non_trainable, opt = state
        (_, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable)
        trainable, opt = optimizer.stateless_apply(opt, grads, trainable)
        return trainable, non_trainable, opt

    step = jax.jit(step, donate_argnums=0)
    state = [([v.value for v in encoder.trainable_variables],
              [v.value for v in encoder.non_trainable_variables],
              [v.value for v in optimizer.variables])]

    def run():
        state[0] = step(state[0])
        jax.block_until_ready(state[0][0][0])

    return run


def _frontend_views(frontend, batch, config):
    import jax

    ratio = jax.numpy.asarray(np.random.default_rng(0).uniform(
        config.pitch_ratio_min, config.pitch_ratio_max, len(batch["anchor"])).astype("float32"))
    anchor, positive = (jax.numpy.asarray(batch[k]) for k in ("anchor", "positive"))

    @jax.jit
    def views():
        a, s = frontend.anchor_and_shifted(anchor, ratio)
        return a.sum() + s.sum() + frontend(positive).sum()

    return lambda: float(views())


def bench_step(config, batch_size, steps, repeats, mixed_precision=None, log=print) -> dict:
    from msss_tf.model.msss_model import MSSSModel, build_optimizer

    config = config.replace(batch_size=batch_size)
    batch = waveform_batch(config, batch_size)
    fns, warmup = {}, {}

    def add(name, fn):
        started = time.perf_counter()
        fn()  # compiles
        fn()
        warmup[name] = time.perf_counter() - started
        log(f"  compiled and warmed up {name} in {warmup[name]:.1f} s")
        fns[name] = fn

    add("floor", _floor_step(config, mixed_precision, batch_size))
    model = MSSSModel(config, mixed_precision=mixed_precision)
    model.compile(optimizer=build_optimizer(config, mixed_precision))
    add("full", _model_step(model, batch))
    add("frontend", _frontend_views(model.frontend, batch, config))
    started = time.perf_counter()
    timed = timed_rounds(fns, steps, repeats)  # interleaved rounds
    sec = {name: t["median_s"] for name, t in timed.items()}
    return {
        "batch_size": batch_size, "steps_per_round": steps, "repeats": repeats,
        "jit_compile": True, "mixed_precision": mixed_precision or "float32",
        "step_seconds": sec,
        "step_rounds_seconds": {name: t["rounds_s"] for name, t in timed.items()}, "warmup_seconds": warmup,
        "timed_rounds_seconds": time.perf_counter() - started,
        "floor_seconds": sec["floor"], "full_step_seconds": sec["full"],
        "step_overhead": sec["full"] / sec["floor"],
        "frontend_seconds": sec["frontend"],
        "frontend_fraction_of_step": sec["frontend"] / sec["full"],
        "clips_per_second_step": batch_size / sec["full"],
    }


def bench_input(config, batch_size, repeats, workdir, step_seconds=None, threads=4,
                num_clips=64, clip_seconds=10.0) -> dict:
    """Segment pairs/s of `SegmentPairs` on corpus arrays of synthetic clips."""
    import soundfile as sf

    from msss_tf.data.arrays import CorpusArrays, SegmentPairs, pairs_per_second, \
        write_corpus_arrays
    from msss_tf.data.synthetic import synthetic_corpus

    audio_dir = os.path.join(workdir, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    for i, clip in enumerate(synthetic_corpus(num_clips, clip_seconds=clip_seconds,
                                              sample_rate=config.sample_rate)):
        sf.write(os.path.join(audio_dir, f"clip{i:04d}.wav"), clip, config.sample_rate,
                 subtype="PCM_16")
    write_corpus_arrays(audio_dir, os.path.join(workdir, "arrays"), config.sample_rate)
    arrays = CorpusArrays.load(os.path.join(workdir, "arrays"))
    out = {"corpus_clips": num_clips, "corpus_clip_seconds": clip_seconds, "threads": threads}
    for dtype in ("int16", "float32"):
        dataset = SegmentPairs(arrays, batch_size, config.segment_samples, dtype=dtype)
        rates = [pairs_per_second(dataset, batches=8, threads=threads) for _ in range(repeats)]
        out[dtype] = rates[-1]
        best = [max(r["threads_pairs_per_second"], r["single_thread_pairs_per_second"])
                for r in rates]
        out[f"{dtype}_pairs_per_second"] = statistics.median(best)
    if step_seconds:
        out["step_pairs_per_second"] = batch_size / step_seconds
        out["input_headroom"] = out["int16_pairs_per_second"] / out["step_pairs_per_second"]
        out["input_headroom_float32"] = (out["float32_pairs_per_second"]
                                         / out["step_pairs_per_second"])
    return out


def run_jax_benchmark(batch_size: int = 16, steps: int = 3, repeats: int = 3,
                      width_coefficient: float = 0.5, depth_coefficient: float = 0.5,
                      mixed_precision: Optional[str] = None,
                      parts: Sequence[str] = ("step", "input"), input_threads: int = 4,
                      out: Optional[str] = None, log: Callable = print) -> dict:
    import jax
    import keras

    from msss_tf.config import MSSSConfig
    from msss_tf.runs import portable_command

    if mixed_precision in ("", "float32", "none"):
        mixed_precision = None
    config = MSSSConfig(width_coefficient=width_coefficient,
                        depth_coefficient=depth_coefficient, batch_size=batch_size,
                        learning_rate=1e-4)
    started = time.time()
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backend": "jax",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "devices": [str(d) for d in jax.devices()], "jax": jax.__version__,
                    "keras": keras.__version__},
        "command": portable_command(sys.argv),
        "encoder": {"width_coefficient": width_coefficient,
                    "depth_coefficient": depth_coefficient},
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
        "parts": list(parts),
        "skipped": [f"part '{p}': TensorFlow backend only (it measures the TF export)"
                    for p in parts if p not in ("step", "input")],
    }
    step = {}
    if "step" in parts or "input" in parts:
        log(f"step (JAX, jit): batch {batch_size}, {steps} steps x {repeats} rounds")
        step = bench_step(config, batch_size, steps, repeats, mixed_precision, log=log)
        results["step"] = step
        results["step_overhead"] = step["step_overhead"]
    if "input" in parts:
        log(f"input: SegmentPairs on int16 corpus arrays, {input_threads} threads")
        with tempfile.TemporaryDirectory(prefix="msss-bench-") as workdir:
            results["input"] = bench_input(config, batch_size, repeats, workdir,
                                           step.get("full_step_seconds"), input_threads)
        results["input_headroom"] = results["input"].get("input_headroom")
    results["seconds"] = time.time() - started
    log("")
    log(format_table(results))
    if out:
        write_results(results, out)
        log(f"\nwrote {out}")
    return results


def format_table(results: dict) -> str:
    lines = [f"msss-tf bench, backend jax ({', '.join(results['machine']['devices'])})",
             "| figure | value | target |", "|---|---|---|"]
    step = results.get("step")
    if step:
        lines += [
            f"| full step (ms) | {step['full_step_seconds'] * 1e3:.1f} | |",
            f"| floor: 3 encoder passes (ms) | {step['floor_seconds'] * 1e3:.1f} | |",
            f"| step_overhead | {step['step_overhead']:.2f} | <= 1.10 |",
            f"| front end / step | {step['frontend_fraction_of_step']:.2f} | |",
            f"| clips/s (step) | {step['clips_per_second_step']:.0f} | |",
        ]
    inp = results.get("input")
    if inp:
        lines.append(f"| segment pairs/s, int16 | {inp['int16_pairs_per_second']:.0f} | |")
        lines.append(f"| segment pairs/s, float32 | {inp['float32_pairs_per_second']:.0f} | |")
        if "input_headroom" in inp:
            lines.append(f"| input_headroom (int16) | {inp['input_headroom']:.1f} | >= 3 |")
    for line in results.get("skipped", []):
        lines.append(f"skipped: {line}")
    return "\n".join(lines)
