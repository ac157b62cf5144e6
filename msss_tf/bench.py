"""`msss-tf bench`: how close each part of training and inference is to its floor.

Every figure is a ratio measured in one run (ours vs a baseline on the same machine), so
a shared, noisy machine changes the figures less than it changes the seconds. The output
ends with the benchmark's own wall time per part and lists what was skipped with the flag
that turns it on. Run times and the latest figures: docs/performance.md.

Where the time goes: tracing dominates (each step function is a graph of ~20k ops:
three encoder passes, their gradients and Adam's updates). Each variant is traced once:
the optimiser's slots are built before the first call, as `fit` does (otherwise
`tf.function` traces a step twice, once with and once without creating them). The
ablations keep their own traces: a loss switched off by a zero weight would still run
its head, its loss and their gradients (and the clip-only step would still encode the
shifted view), so one shared trace would not measure what an ablation saves. The peak-RSS
subprocesses run beside the tracing (single-threaded Python) and are waited for before
the first timed round.

Everything is measured in one process (peak memory in subprocesses), after warm-up, as
the median over `repeats` rounds; in each round every step variant runs `steps` steps in
turn, so a noisy shared machine slows them alike and the ratios stay meaningful.

Figures (all in the JSON; the headline ratios under `step_overhead`, `input_headroom`):

* floor: the encoder's three forward+backward passes (anchor, positive, shifted anchor,
  log-mel inputs) with a trivial loss (the mean of the outputs) and the same optimiser.
* step_overhead = full MSSS train step (waveforms in: front end, pitch shift, heads, the
  three losses) / floor. Target <= 1.10.
* ablation steps (clip-only = COLA, two passes; clip+frame; clip+pitch) / floor.
* view batching (`--compare_view_batching`, off by default): the full step with one
  encoder call on the 3B concatenation / the default three calls.
* front end: the log-mel of the three views alone (anchor and shifted from one STFT),
  as a fraction of the full step (it runs inside the compiled step).
* input_headroom = examples/s of the input pipeline alone, reading TFRecord shards
  written by `prepare_corpus` (shuffle, two random segments per clip, batching) /
  examples/s the full step consumes. Target >= 3.
* embedding throughput, seconds of audio per second of wall clock, scene and timestamp
  (40 ms hop, the nearest to HEAR's 50 ms that the exact tiling allows), for the Keras
  encoder, the exported SavedModel and the TFLite float32 and int8 files; the latency of
  one 0.96 s window through TFLite float32 and int8 on one thread.
* peak RSS of `msss-tf pretrain` (one step) at two batch sizes, each in a subprocess
  (its own VmHWM: ru_maxrss would include the parent benchmark's size, see below).
* floor_vs_tf_keras: the floor of tf_keras's EfficientNet-B0 / ours ("n/a" unless
  tf_keras is installed; it is not a dependency).
* long_audio (`--parts=long_audio`, on request): peak RSS of `msss-tf embed` on one file
  of each length in `--long_audio_minutes`, from a run directory and from an exported
  SavedModel, each in its own process, and each as a ratio to the shortest's.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np

TARGETS = {"step_overhead": ("<=", 1.10), "input_headroom": (">=", 3.0)}
DEFAULT_PARTS = ("step", "input", "embed", "memory")
# long_audio: peak RSS of `msss-tf embed` on 1, 10 and 60 minutes (minutes of CPU), on request.
PARTS = DEFAULT_PARTS + ("long_audio",)


# ----------------------------------------------------------------------------- timing
def _timed_rounds(fns: Dict[str, Callable[[], None]], calls: int, repeats: int) -> Dict[str, dict]:
    """Seconds per call of each fn: median over `repeats` interleaved rounds of `calls`."""
    rounds = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            rounds[name].append((time.perf_counter() - start) / calls)
    return {name: {"median_s": statistics.median(v), "rounds_s": v} for name, v in rounds.items()}


def _waveform_batch(config, batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(config.segment_samples) / config.sample_rate
    f0 = rng.uniform(100, 1000, size=(batch_size, 1))
    tone = 0.3 * np.sin(2 * np.pi * f0 * t)
    noise = rng.normal(scale=0.05, size=(2, batch_size, config.segment_samples))
    return {"anchor": (tone + noise[0]).astype("float32"),
            "positive": (tone + noise[1]).astype("float32")}


def _train_function(model, batch):
    """The compiled `fit` step of `model` on a constant batch; returns a no-arg callable
    that runs one step and waits for it, and a list whose length is the number of times
    the step was traced.

    The optimiser's slots are built first, as `fit` does (its symbolic build): if the
    first call created them, `tf.function` would trace the whole step a second time (a
    function that creates variables is retraced without them), which doubled every
    warm-up here."""
    import tensorflow as tf

    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    traces = []
    train_step = model.train_step

    def counted_train_step(data):
        traces.append(1)  # Python runs only while tracing
        return train_step(data)

    model.train_step = counted_train_step
    model.make_train_function()
    train = model.train_function

    def step():
        logs = train(iterator)
        float(logs["loss"])  # waits for the step

    return step, traces


def _floor_model(config, mixed_precision, views: int, concat: bool):
    """The floor: `views` encoder passes with a trivial loss and the same optimiser."""
    import keras
    import tensorflow as tf

    from msss_tf.model import build_encoder_with_policy

    class FloorModel(keras.Model):
        def __init__(self):
            super().__init__(name="floor")
            self.encoder = build_encoder_with_policy(config, mixed_precision)

        def call(self, x, training=False):
            return self.encoder(x, training=training)

        def train_step(self, data):
            mels = [data[f"view{i}"] for i in range(views)]
            with tf.GradientTape() as tape:
                if concat:
                    outputs = [self.encoder(tf.concat(mels, 0), training=True)]
                else:
                    outputs = [self.encoder(m, training=True) for m in mels]
                loss = tf.add_n([tf.reduce_mean(tf.cast(o, tf.float32)) for o in outputs])
                scaled = self.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            return {"loss": loss}

    return FloorModel()


def _log_mel_views(config, batch_size, views=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch_size, config.segment_frames, config.n_mels)
    return {f"view{i}": rng.normal(size=shape).astype("float32") for i in range(views)}


# ------------------------------------------------------------------------------ parts
def bench_step(config, batch_size, steps, repeats, jit_compile=False, mixed_precision=None,
               view_batching="separate", compare_view_batching=False, ablations=True,
               log=print, before_timing: Optional[Callable[[], None]] = None,
               models_out: Optional[dict] = None) -> dict:
    """Full step, ablations and the concatenated-views variant against the floor.

    `before_timing` runs after every warm-up, before the timed rounds (run_benchmark
    waits there for the background memory runs); `models_out` receives the models."""
    import keras
    import tensorflow as tf

    from msss_tf.model import MSSSModel, build_optimizer

    config = config.replace(batch_size=batch_size)
    batch = _waveform_batch(config, batch_size)
    variants = {
        "full": dict(losses=("clip", "frame", "pitch")),
        "clip": dict(losses=("clip",)),
        "clip_frame": dict(losses=("clip", "frame")),
        "clip_pitch": dict(losses=("clip", "pitch")),
    }
    if not ablations:
        variants = {"full": variants["full"]}
    fns, models = {}, {}
    compile_seconds, traces = {}, {}

    def add(name, model, data):
        model.compile(optimizer=build_optimizer(config, mixed_precision), jit_compile=jit_compile)
        started = time.perf_counter()
        fn, traced = _train_function(model, data)
        fn()  # warm-up: traces (and compiles, with XLA) the step
        fn()
        compile_seconds[name] = time.perf_counter() - started
        traces[name] = len(traced)
        log(f"  warmed up {name} step in {compile_seconds[name]:.1f} s "
            f"({len(traced)} trace{'s' if len(traced) != 1 else ''})")
        fns[name] = fn
        models[name] = model

    # Seed once: tf.function retraces every step function after tf.random.set_seed.
    keras.utils.set_random_seed(config.seed)
    floor = _floor_model(config, mixed_precision, views=3, concat=view_batching == "concat")
    add("floor", floor, _log_mel_views(config, batch_size))
    for name, changes in variants.items():
        add(name, MSSSModel(config.replace(**changes), view_batching=view_batching,
                            mixed_precision=mixed_precision), batch)
    other = "concat" if view_batching == "separate" else "separate"
    if compare_view_batching:
        add(f"full_{other}", MSSSModel(config, view_batching=other,
                                       mixed_precision=mixed_precision), batch)

    # The front end of the three views alone (what the step computes before the encoder).
    frontend = models["full"].frontend
    ratio = tf.random.uniform((batch_size,), config.pitch_ratio_min, config.pitch_ratio_max)
    anchor, positive = tf.constant(batch["anchor"]), tf.constant(batch["positive"])

    @tf.function(jit_compile=bool(jit_compile))
    @tf.autograph.experimental.do_not_convert
    def frontend_views():
        a, s = frontend.anchor_and_shifted(anchor, ratio)
        return tf.reduce_sum(a) + tf.reduce_sum(s) + tf.reduce_sum(frontend(positive))

    fns["frontend"] = lambda: float(frontend_views())
    fns["frontend"]()

    if before_timing is not None:
        before_timing()
    started = time.perf_counter()
    timed = _timed_rounds(fns, steps, repeats)
    timing_seconds = time.perf_counter() - started
    if models_out is not None:
        models_out.update(models)
    sec = {name: t["median_s"] for name, t in timed.items()}
    floor_s = sec["floor"]
    out = {
        "batch_size": batch_size,
        "steps_per_round": steps,
        "repeats": repeats,
        "jit_compile": bool(jit_compile),
        "mixed_precision": mixed_precision or "float32",
        "view_batching": view_batching,
        "step_seconds": sec,
        "step_rounds_seconds": {name: t["rounds_s"] for name, t in timed.items()},
        "warmup_seconds": compile_seconds,
        "traces": traces,
        "timed_rounds_seconds": timing_seconds,
        "floor_seconds": floor_s,
        "full_step_seconds": sec["full"],
        "step_overhead": sec["full"] / floor_s,
        "ablation_vs_floor": {name: sec[name] / floor_s for name in variants if name != "full"},
        "frontend_seconds": sec["frontend"],
        "frontend_fraction_of_step": sec["frontend"] / sec["full"],
        "examples_per_second_step": batch_size / sec["full"],
        "clips_per_second_step": batch_size / sec["full"],
    }
    if compare_view_batching:
        concat_s = sec["full_concat"] if other == "concat" else sec["full"]
        separate_s = sec["full"] if other == "concat" else sec["full_separate"]
        out["concat_vs_separate"] = concat_s / separate_s
    return out


def _write_corpus_shards(config, directory, num_clips, clip_seconds, seed=0) -> str:
    """Synthetic clips -> WAV files -> `prepare_corpus` shards; returns the shard folder."""
    import soundfile as sf

    from msss_tf.data.synthetic import synthetic_corpus
    from msss_tf.data.tfrecord import prepare_corpus

    audio_dir = os.path.join(directory, "audio")
    shard_dir = os.path.join(directory, "shards")
    os.makedirs(audio_dir, exist_ok=True)
    corpus = synthetic_corpus(num_clips, clip_seconds=clip_seconds,
                              sample_rate=config.sample_rate, seed=seed)
    for i, clip in enumerate(corpus):
        sf.write(os.path.join(audio_dir, f"clip{i:04d}.wav"), clip, config.sample_rate,
                 subtype="PCM_16")
    prepare_corpus(audio_dir, shard_dir, sample_rate=config.sample_rate,
                   num_shards=min(4, num_clips), progress=False)
    return shard_dir


def bench_input(config, batch_size, steps, repeats, workdir, step_seconds=None,
                num_clips=64, clip_seconds=10.0) -> dict:
    """Examples/s of `pretrain_dataset` alone on prepared TFRecord shards."""
    from msss_tf.data import pretrain_dataset

    config = config.replace(batch_size=batch_size)
    started = time.perf_counter()
    shard_dir = _write_corpus_shards(config, workdir, num_clips, clip_seconds)
    shards_seconds = time.perf_counter() - started
    dataset = pretrain_dataset(shard_dir, config, batch_size, shuffle_buffer=num_clips)
    iterator = iter(dataset)
    for _ in range(3):  # warm-up: fills the shuffle buffer and the prefetch
        next(iterator)
    batches = max(10, 4 * steps)

    def take():
        for _ in range(batches):
            batch = next(iterator)
        batch["anchor"].numpy()

    timed = _timed_rounds({"pipeline": take}, 1, repeats)["pipeline"]
    seconds = timed["median_s"] / batches
    out = {
        "pipeline_batch_seconds": seconds,
        "pipeline_examples_per_second": batch_size / seconds,
        "pipeline_rounds_seconds": [r / batches for r in timed["rounds_s"]],
        "shards_seconds": shards_seconds,
        "corpus_clips": num_clips,
        "corpus_clip_seconds": clip_seconds,
    }
    if step_seconds:
        out["step_examples_per_second"] = batch_size / step_seconds
        out["input_headroom"] = out["pipeline_examples_per_second"] / out["step_examples_per_second"]
    return out


def bench_embed(model, workdir, repeats, num_clips=4, clip_seconds=10.0, latency_calls=20,
                log=print) -> dict:
    """Seconds of audio embedded per second: Keras, SavedModel, TFLite float32 / int8."""
    from msss_tf.data.synthetic import synthetic_corpus
    from msss_tf.embedding import Embedder, TFLiteEmbedder, load_encoder
    from msss_tf.export import export_encoder

    config = model.msss_config
    audio = synthetic_corpus(num_clips, clip_seconds=clip_seconds,
                             sample_rate=config.sample_rate, seed=3)
    audio_seconds = audio.size / config.sample_rate
    started = time.perf_counter()
    exported = export_encoder(model, os.path.join(workdir, "export"), version=1,
                              tflite=("float32", "int8"), overwrite=True,
                              representative_audio=audio[:2])
    export_seconds = time.perf_counter() - started
    log(f"  exported SavedModel + TFLite in {export_seconds:.1f} s")
    embedders = {
        "keras": Embedder.from_model(model),
        "saved_model": load_encoder(exported["saved_model"]),
        "tflite_float32": TFLiteEmbedder(exported["tflite"]["float32"]),
        "tflite_int8": TFLiteEmbedder(exported["tflite"]["int8"]),
    }
    fns = {}
    for name, embedder in embedders.items():
        fns[f"{name}_scene"] = lambda e=embedder: e.scene_embeddings(audio)
        fns[f"{name}_timestamp"] = lambda e=embedder: e.timestamp_embeddings(audio)
    for fn in fns.values():
        fn()  # warm-up (tracing)
    timed = _timed_rounds(fns, 1, repeats)
    out = {
        "audio_seconds": audio_seconds,
        "timestamp_hop_ms": embedders["keras"].hop_ms,
        "export_seconds": export_seconds,
        "audio_seconds_per_second": {
            name: audio_seconds / t["median_s"] for name, t in timed.items()},
    }
    window = audio[:1, :config.segment_samples]
    latency = {}
    for variant in ("float32", "int8"):
        single = TFLiteEmbedder(exported["tflite"][variant], num_threads=1)
        single.window(window)
        calls = []
        for _ in range(latency_calls):
            start = time.perf_counter()
            single.window(window)
            calls.append(time.perf_counter() - start)
        latency[variant] = statistics.median(calls)
    out["tflite_window_latency_seconds_1_thread"] = latency
    return out


# The peak is VmHWM, this process's own high-water mark: on Linux, ru_maxrss survives
# exec, so a child started by a large parent reports at least the parent's size (the
# benchmark's main process holds ~3 GB by the end of a run).
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
        cpu_before = _children_cpu_seconds()
        out[str(batch_size)] = peak_rss_of_command(args, f"memory run at batch {batch_size}")
        cpu[str(batch_size)] = _children_cpu_seconds() - cpu_before
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


def _long_audio_models(config, workdir) -> dict:
    """An untrained model of the benchmark's size as a run directory and as an exported
    SavedModel (memory does not depend on the weights)."""
    import keras

    from msss_tf.export import export_encoder
    from msss_tf.model import MSSSModel

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


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_tf_keras_floor(batch_size, steps, repeats, floor_seconds) -> dict:
    """tf_keras EfficientNet-B0 3-pass floor, if tf_keras is installed (not a dependency)."""
    if importlib.util.find_spec("tf_keras") is None or not floor_seconds:
        return {"floor_vs_tf_keras": "n/a", "tf_keras_floor_seconds": "n/a"}
    import tensorflow as tf
    import tf_keras

    net = tf_keras.applications.EfficientNetB0(include_top=False, weights=None,
                                               input_shape=(96, 64, 1), pooling="avg")
    optimizer = tf_keras.optimizers.Adam(1e-4)
    views = [tf.random.normal((batch_size, 96, 64, 1)) for _ in range(3)]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(net(v, training=True)) for v in views])
        optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables),
                                      net.trainable_variables))
        return loss

    fn = lambda: float(step())  # noqa: E731
    fn()
    seconds = _timed_rounds({"tf_keras": fn}, steps, repeats)["tf_keras"]["median_s"]
    return {"floor_vs_tf_keras": floor_seconds / seconds, "tf_keras_floor_seconds": seconds}


# ------------------------------------------------------------------------------- main
def _process_age_seconds() -> Optional[float]:
    """Seconds since this process started (Linux /proc), else None."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class _Background:
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
        from msss_tf.bench_jax import run_jax_benchmark

        return run_jax_benchmark(batch_size, steps, repeats, width_coefficient,
                                 depth_coefficient, mixed_precision, parts, out=out, log=log)
    age_at_start = _process_age_seconds()
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
            memory = _Background(lambda mlog: bench_memory(config, sizes, workdir, log=mlog))
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
            from msss_tf.model import MSSSModel

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
                _long_audio_models(config, workdir), long_audio_minutes, workdir, log=log)
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
    cpu["total"] = time.process_time() + _children_cpu_seconds()
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


def write_results(results: dict, out: str) -> None:
    """The benchmark's JSON, written to a temporary name and renamed into place."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, out)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _target_text(name, value):
    if name not in TARGETS or not isinstance(value, (int, float)):
        return ""
    op, target = TARGETS[name]
    ok = value <= target if op == "<=" else value >= target
    return f"{op} {target:g} {'ok' if ok else 'MISSED'}"


def format_table(results: dict) -> str:
    """The ratios with their absolute figures and targets, one row each."""
    rows = [("figure", "ratio", "absolute", "target")]

    def ms(seconds):
        return f"{seconds * 1000:.0f} ms"

    step = results.get("step")
    if step:
        sec = step["step_seconds"]
        rows.append(("step_overhead (full / floor)", f"{step['step_overhead']:.2f}",
                     f"{ms(sec['full'])} vs {ms(sec['floor'])} per step",
                     _target_text("step_overhead", step["step_overhead"])))
        for name, ratio in step["ablation_vs_floor"].items():
            rows.append((f"  {name} step / floor", f"{ratio:.2f}", ms(sec[name]), ""))
        if "concat_vs_separate" in step:
            rows.append(("  one 3B call / three calls", f"{step['concat_vs_separate']:.2f}",
                         ms(sec.get("full_concat", sec.get("full_separate", 0))), ""))
        rows.append(("  front end / full step", f"{step['frontend_fraction_of_step']:.2f}",
                     ms(sec["frontend"]), ""))
        tfk = results.get("floor_vs_tf_keras", "n/a")
        rows.append(("floor_vs_tf_keras (ours / tf_keras)",
                     tfk if isinstance(tfk, str) else f"{tfk:.2f}", "", ""))
    inp = results.get("input")
    if inp and "input_headroom" in inp:
        rows.append(("input_headroom (pipeline / step)", f"{inp['input_headroom']:.1f}",
                     f"{inp['pipeline_examples_per_second']:.0f} vs "
                     f"{inp['step_examples_per_second']:.1f} examples/s",
                     _target_text("input_headroom", inp["input_headroom"])))
    emb = results.get("embed")
    if emb:
        for name, rate in emb["audio_seconds_per_second"].items():
            rows.append((f"embed {name}", f"{rate:.1f}x real time", "s audio / s", ""))
        for variant, seconds in emb["tflite_window_latency_seconds_1_thread"].items():
            rows.append((f"tflite {variant} one window, 1 thread", "", ms(seconds), ""))
    mem = results.get("memory")
    if mem:
        for batch, mib in mem["peak_rss_mib"].items():
            rows.append((f"peak RSS pretrain, batch {batch}", "", f"{mib:.0f} MiB", ""))
    for name, figures in (results.get("long_audio") or {}).items():
        shortest = min(figures["peak_rss_mib"], key=float)
        for minutes, mib in figures["peak_rss_mib"].items():
            ratio = figures["ratio_to_shortest"][minutes]
            rows.append((f"peak RSS embed {minutes} min ({name})",
                         f"{ratio:.2f}x of {shortest} min", f"{mib:.0f} MiB",
                         "target <= 1.5x" if minutes != shortest else ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    header = (f"msss-tf bench, {results['date']}; encoder width "
              f"{results['encoder']['width_coefficient']} depth "
              f"{results['encoder']['depth_coefficient']}; batch "
              f"{step.get('batch_size', '?') if step else '?'}"
              f"{'; XLA' if step and step['jit_compile'] else ''}"
              f"{'; ' + step['mixed_precision'] if step and step['mixed_precision'] != 'float32' else ''}")
    text = header + "\n" + "\n".join(lines)
    if results.get("skipped"):
        text += "\nskipped (flag that turns it on):\n" + "\n".join(
            f"  {item}" for item in results["skipped"])
    return text


def format_wall_table(results: dict) -> str:
    """Where the benchmark's own wall time went, one row per part."""
    wall = results.get("wall_seconds_per_part", {})
    rows = [(name, f"{seconds:.0f} s") for name, seconds in wall.items()]
    width = max([len(r[0]) for r in rows] + [len("part")])
    lines = ["bench wall time per part", f"{'part'.ljust(width)}  wall",
             f"{'-' * width}  -----"]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    cpu = results.get("cpu_seconds_per_part")
    if cpu:
        lines.append("CPU seconds (user + sys, all threads; what a loaded machine does not "
                     "change): " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
    traces = results.get("step", {}).get("traces")
    if traces:
        lines.append("step traces: " + ", ".join(f"{k} {v}" for k, v in traces.items())
                     + (" (each step function traced once)"
                        if all(v == 1 for v in traces.values()) else " (RETRACED)"))
    return "\n".join(lines)


def finite_positive_numbers(obj, path="") -> list:
    """Every number in a nested JSON object that is not positive and finite, with its path
    (booleans and 'n/a' strings are skipped); the bench test checks this is empty."""
    bad = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad += finite_positive_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            bad += finite_positive_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if not (math.isfinite(obj) and obj > 0):
            bad.append((path, obj))
    return bad
