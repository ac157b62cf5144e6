"""Pre-trains MSSSModel with Keras 3 on JAX, where TensorFlow is not installed (a lent GPU).

The GPU machines lent to this project carry JAX (with CUDA) but neither TensorFlow nor
keras; keras (and, to render the corpus there, the corpus renderers and soundfile) travel
as wheels made by `experiments/gpu_pretrain_prep.sh`, which also prints the device command.
This script:

* sets KERAS_BACKEND=jax itself, then imports only TensorFlow-free modules: `msss_tf.config`,
  `msss_tf.model.msss_model` (front end in `keras.ops`), `msss_tf.data.arrays` and, with
  `--render_minutes`, `msss_tf.data.realistic`; where the `soundfile` package cannot be
  imported (the GPU host without the corpus wheels), a placeholder stands in for it, since
  reading corpus arrays never decodes audio (summary.json says which one was used);
* with `--render_minutes=N` (instead of `--arrays_dir`), first renders N minutes of the
  realistic corpus (`build_corpus`, `--render_jobs` processes, default one per CPU) into
  `--render_dir` (default msss_corpus in the temporary folder, outside `--out_dir`) and writes its corpus
  arrays there (`write_corpus_arrays`), before JAX is imported; the render's clips,
  minutes and seconds go to the log and to summary.json's "render";
* reads the corpus arrays (`--arrays_dir`, or the rendered ones) through `SegmentPairs` in
  host threads, int16 by default (half the host-to-device bytes; the model divides by
  32768);
* trains with `model.fit` and the model's own step (`MSSSModel.train_step`, compiled by
  Keras's JAX trainer, jit on) for `--train_seconds` after the first, compiling step, or
  until `--wall_seconds` after the process started, or `--max_steps`, or SIGTERM, and then
  stops cleanly (`model.stop_training`);
* one fit epoch is `--checkpoint_steps` batches: at each epoch's end (where Keras has
  synced the model's variables) it writes the weights and summary.json, so a run killed
  later still leaves its last checkpoint.

Output folder (`--out_dir`): the weights in shards, msss_config.json, losses.csv and
summary.json; `gpu_pretrain_outputs.py` says what each holds.

Mixed precision: `--mixed_precision` defaults to float32. On the H200 (2026-11-26,
docs/performance.md) the same layers under jit ran 162 ms per batch of 1024 in float32
and 238 ms in mixed_bfloat16 (not profiled; the likely reasons given there: XLA runs
float32 convolutions on TF32 tensor cores already, and bf16 adds casts around each batch
norm), and float32 has no bf16 numerics to question. mixed_bfloat16 stays a flag (the saved weights are float32 either way).

Resumption: not within this script (the optimiser state, 3x the weights, is not saved: it
would not come back from the device). `--init_weights PATH --start_step N` warm-starts a
new run from saved weights with a fresh optimiser (and a fresh warm-up, if any), its data
stream continuing at batch N; summary.json's global_step adds N.

Seeds: `random` and `numpy` are seeded with --seed before the model is built (Keras's
default initialisers draw their seeds from `random`); `keras.utils.set_random_seed` is
not called, since it imports TensorFlow where TensorFlow is installed.

    python experiments/gpu_pretrain_jax.py --arrays_dir=.gpu/arrays --out_dir=OUT
    python experiments/gpu_pretrain_jax.py --render_minutes=240 --out_dir=OUT
    # tiny CPU checks (tests/harnesses/test_gpu_pretrain.py runs them, and --render_minutes=0.5):
    JAX_PLATFORMS=cpu python experiments/gpu_pretrain_jax.py --arrays_dir=A --out_dir=O \\
        --width=0.25 --depth=0.25 --batch_size=4 --checkpoint_steps=2 --train_seconds=5
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import signal
import sys
import tempfile
import time

STARTED = time.monotonic()  # --wall_seconds counts from here
os.environ["KERAS_BACKEND"] = "jax"  # before keras is imported, whatever was set

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
if HERE not in sys.path:  # its two helper modules, beside it
    sys.path.insert(0, HERE)

from gpu_pretrain_corpus import render_corpus, soundfile_or_placeholder  # noqa: E402
from gpu_pretrain_outputs import (device_memory, save_weights, weights_fingerprint,  # noqa: E402
                                  write_json)

SUMMARY_NAME = "summary.json"
LOSSES_NAME = "losses.csv"
LOSS_COLUMNS = ("loss", "clip_loss", "frame_loss", "pitch_loss", "clip_accuracy")
MAX_RETURNED_FILES = 8  # what one device call brings back from $OUT

_STOP = {"reason": None}  # set by SIGTERM


def say(text):
    """print, flushed; a closed stdout (the `| tee` killed first) must not stop training."""
    try:
        print(text, flush=True)
    except (BrokenPipeError, OSError):
        pass


def _on_sigterm(signum, frame):
    _STOP["reason"] = "sigterm"
    say("SIGTERM: stopping after the current step")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--arrays_dir", default="", help="corpus arrays folder (audio.npy, offsets.npy, "
        "arrays.json), e.g. .gpu/arrays from gpu_pretrain_prep.sh; or --render_minutes")
    add("--render_minutes", type=float, default=0.0,
        help="instead of --arrays_dir: render this many minutes of the realistic corpus "
             "first (needs espeakng-loader, tinysoundfont, pretty-midi, soundfile); exits 4 "
             "if that took over half of --wall_seconds")
    add("--render_seed", type=int, default=0, help="the rendered corpus's seed")
    add("--render_jobs", type=int, default=0,
        help="render processes (0: one per CPU this process may use)")
    add("--render_dir", default=os.path.join(tempfile.gettempdir(), "msss_corpus"),
        help="the rendered corpus's folder (audio/, manifest.json, arrays/); keep it "
             "outside --out_dir")
    add("--out_dir", required=True, help="output folder (flat; created)")
    add("--width", type=float, default=1.0, help="width_coefficient (1.0: B0)")
    add("--depth", type=float, default=1.0, help="depth_coefficient (1.0: B0)")
    add("--batch_size", type=int, default=1024)
    add("--learning_rate", type=float, default=None, help="default: MSSSConfig's")
    add("--warmup_steps", type=int, default=None, help="default: MSSSConfig's")
    add("--losses", default="clip,frame,pitch", help="comma-separated subset")
    add("--frame_negatives", choices=("segment", "batch"), default=None,
        help="default: MSSSConfig's (segment)")
    add("--seed", type=int, default=0)
    add("--set", action="append", default=[], metavar="FIELD=VALUE",
        help="any other MSSSConfig field (VALUE parsed as JSON, else a string); repeatable")
    add("--mixed_precision", choices=("float32", "mixed_bfloat16", "mixed_float16"),
        default="float32", help="the encoder's dtype policy (see the docstring)")
    add("--view_batching", choices=("separate", "concat"), default="separate")
    add("--jit_compile", choices=("true", "false"), default="true")
    add("--train_seconds", type=float, default=540.0,
        help="stop this long after the first (compiling) step ends")
    add("--wall_seconds", type=float, default=0.0,
        help="also stop this long after the process started (0: no such limit); on the "
             "device, the command's time limit minus a margin")
    add("--max_steps", type=int, default=0, help="also stop after this many steps (0: none)")
    add("--checkpoint_steps", type=int, default=250,
        help="steps per fit epoch; weights and summary.json are written at each epoch end")
    add("--log_every", type=int, default=10, help="steps per losses.csv row and progress line")
    add("--input_dtype", choices=("int16", "float32"), default="int16")
    add("--workers", type=int, default=8, help="SegmentPairs threads")
    add("--max_queue_size", type=int, default=8, help="batches computed ahead")
    add("--max_shard_mb", type=float, default=15.0,
        help="largest weights shard, in MB of 10^6 bytes")
    add("--init_weights", default="", help="warm start: a .weights.json or .weights.h5")
    add("--start_step", type=int, default=0,
        help="warm start: the data stream's first batch (the earlier run's global_step)")
    add("--require_gpu", action="store_true",
        help="exit 3 unless JAX's default backend is a GPU (no silent CPU run)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "checkpoint_steps", "log_every", "workers", "max_queue_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}={getattr(args, name)}: must be >= 1")
    for name in ("max_steps", "start_step", "render_jobs"):
        if getattr(args, name) < 0:
            parser.error(f"--{name}={getattr(args, name)}: must be >= 0")
    if args.render_minutes < 0:
        parser.error(f"--render_minutes={args.render_minutes}: must be >= 0")
    if bool(args.arrays_dir) == (args.render_minutes > 0):
        parser.error("give exactly one of --arrays_dir and --render_minutes (> 0)")
    if args.render_minutes > 0:
        render_dir = os.path.abspath(args.render_dir)
        out_dir = os.path.abspath(args.out_dir)
        if os.path.commonpath([render_dir, out_dir]) in (render_dir, out_dir):
            parser.error(f"--render_dir={args.render_dir} and --out_dir={args.out_dir} must "
                         "not contain one another (the output folder stays small and flat)")
    if args.train_seconds <= 0 or args.wall_seconds < 0 or args.max_shard_mb <= 0:
        parser.error("--train_seconds and --max_shard_mb must be > 0, --wall_seconds >= 0")
    return args


def make_config(args):
    from msss_tf.config import MSSSConfig

    fields = {"width_coefficient": args.width, "depth_coefficient": args.depth,
              "batch_size": args.batch_size, "seed": args.seed,
              "losses": [name.strip() for name in args.losses.split(",") if name.strip()]}
    if args.learning_rate is not None:
        fields["learning_rate"] = args.learning_rate
    if args.warmup_steps is not None:
        fields["warmup_steps"] = args.warmup_steps
    if args.frame_negatives is not None:
        fields["frame_negatives"] = args.frame_negatives
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set={item!r}: expected FIELD=VALUE")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        fields[name.strip()] = value
    return MSSSConfig.from_dict(fields)


def main(argv=None):
    args = parse_args(argv)
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    render = render_corpus(args, say, STARTED) if args.render_minutes > 0 else None
    if render and args.wall_seconds and time.monotonic() - STARTED > args.wall_seconds / 2:
        # Model building and the first step's compile would leave no time to train.
        write_json(os.path.join(out_dir, SUMMARY_NAME),
                   {"status": "failed", "stop_reason": "render_too_slow", "render": render,
                    "seconds_total": round(time.monotonic() - STARTED, 2),
                    "flags": vars(args)})
        say(f"the render took over half of --wall_seconds={args.wall_seconds:g}; not "
            "training (lower --render_minutes)")
        return 4
    arrays_dir = render["arrays_dir"] if render else args.arrays_dir
    soundfile = soundfile_or_placeholder()  # after rendering: only where there is none

    import jax
    import keras
    import numpy as np

    from msss_tf.data import arrays as arrays_module
    from msss_tf.model.msss_model import MSSSModel, build_optimizer

    device = jax.devices()[0]
    device_name = getattr(device, "device_kind", str(device))
    say(f"device {device_name} ({device.platform}, {len(jax.devices())} device(s)), "
        f"jax {jax.__version__}, keras {keras.__version__}, numpy {np.__version__}, "
        f"python {platform.python_version()}, soundfile {soundfile}")
    if args.require_gpu and jax.default_backend() != "gpu":
        say(f"--require_gpu: JAX's default backend is {jax.default_backend()!r}, not 'gpu' "
            f"(devices {jax.devices()}); not training on it")
        return 3

    config = make_config(args)
    config.save(out_dir)
    arrays = arrays_module.CorpusArrays.load(arrays_dir)
    if arrays.sample_rate != config.sample_rate:
        raise SystemExit(f"{arrays_dir}: sample_rate {arrays.sample_rate}, the config "
                         f"wants {config.sample_rate}")

    class Pairs(arrays_module.SegmentPairs):
        """SegmentPairs whose batch i of epoch e is stream batch start + e * len + i."""

        def __init__(self, *a, start_step=0, **k):
            super().__init__(*a, **k)
            self.start_step = int(start_step)

        def __getitem__(self, index):
            if not 0 <= index < self.steps_per_epoch:
                raise IndexError(f"batch {index} out of range: {self.steps_per_epoch}")
            return self.batch(self.start_step + self.epoch * self.steps_per_epoch + index)

    dataset = Pairs(arrays, config.batch_size, config.segment_samples,
                    steps_per_epoch=args.checkpoint_steps, seed=config.seed,
                    dtype=args.input_dtype, workers=args.workers,
                    max_queue_size=args.max_queue_size, start_step=args.start_step)
    clips_per_batch = config.batch_size / arrays.num_clips
    say(f"corpus {arrays.num_clips} clips, {arrays.seconds / 60:.1f} min; batch "
        f"{config.batch_size} ({clips_per_batch:.1f} x the clips), segment "
        f"{config.segment_samples} samples, {args.input_dtype}")
    if clips_per_batch > 1:
        say(f"note: a batch holds each clip ~{clips_per_batch:.1f} times (other segments): "
            "the clip loss counts those copies among an anchor's negatives")

    random.seed(config.seed)
    np.random.seed(config.seed)
    mixed = None if args.mixed_precision == "float32" else args.mixed_precision
    built_at = time.monotonic()
    model = MSSSModel(config, view_batching=args.view_batching, mixed_precision=mixed)
    init_fingerprint = None
    if args.init_weights:
        model.load_weights(args.init_weights)
        init_fingerprint = weights_fingerprint(model)
    model.compile(build_optimizer(config, mixed), jit_compile=args.jit_compile == "true")
    build_seconds = time.monotonic() - built_at
    parameters = int(sum(int(np.prod(v.shape)) for v in model.weights))
    say(f"model: {parameters:,} weights ({parameters * 4 / 2**20:.1f} MiB float32), built "
        f"in {build_seconds:.1f} s; policy {args.mixed_precision}")

    summary = {
        "status": "starting", "stop_reason": None,
        "steps": 0, "start_step": args.start_step, "global_step": args.start_step,
        "device": device_name, "platform": device.platform,
        "devices": [str(d) for d in jax.devices()],
        "versions": {"jax": jax.__version__, "jaxlib": getattr(
            __import__("jaxlib"), "__version__", None), "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()},
        "keras_backend": keras.backend.backend(), "soundfile": soundfile,
        "config": config.to_dict(), "flags": vars(args),
        "render": render,
        "corpus": {"folder": os.path.abspath(arrays_dir), "clips": arrays.num_clips,
                   "seconds": round(arrays.seconds, 1),
                   "batch_over_clips": round(clips_per_batch, 2)},
        "parameters": parameters, "build_seconds": round(build_seconds, 2),
        "init_weights_fingerprint": init_fingerprint,
        "checkpoints": 0, "checkpoint_step": None, "checkpoint_history": [],
        "weights_files": [],
    }
    losses_path = os.path.join(out_dir, LOSSES_NAME)
    with open(losses_path, "w", newline="") as f:
        csv.writer(f).writerow(("step", "steps", "seconds") + LOSS_COLUMNS
                               + ("clips_per_second",))

    def finish_summary(status):
        state.update_summary(summary, status)
        summary["tensorflow_imported"] = "tensorflow" in sys.modules
        summary["seconds_total"] = round(time.monotonic() - STARTED, 2)
        summary["device_memory"] = device_memory(device)
        write_json(os.path.join(out_dir, SUMMARY_NAME), summary)

    class Progress(keras.callbacks.Callback):
        """Time budget, losses.csv rows, progress lines and checkpoints."""

        def __init__(self):
            super().__init__()
            self.step = 0  # steps of this run
            self.in_epoch = 0
            self.fit_began = self.first_done = None
            self.first_step_seconds = None
            self.mark = None  # (step, in-epoch step, running means, time) of the last row
            self.last_sync = None  # (step, time)
            self.last_row = {}
            self.stop_reason = None

        def on_train_begin(self, logs=None):
            self.fit_began = time.monotonic()

        def on_epoch_begin(self, epoch, logs=None):
            self.in_epoch = 0
            if self.mark is not None:
                self.mark = (self.mark[0], 0, {}, self.mark[3])

        def _row(self, means):
            """A losses.csv row for the steps since the last row, from the running means
            (Keras's trackers average over the epoch so far)."""
            now = time.monotonic()
            step0, in0, means0, t0 = self.mark
            count = self.in_epoch - in0
            if count <= 0:
                return
            window = {}
            for name in LOSS_COLUMNS:
                if name in means:
                    window[name] = (self.in_epoch * means[name]
                                    - in0 * means0.get(name, 0.0)) / count
            rate = (self.step - step0) * config.batch_size / max(now - t0, 1e-9)
            with open(losses_path, "a", newline="") as f:
                csv.writer(f).writerow(
                    [args.start_step + self.step, self.step - step0,
                     f"{now - self.fit_began:.3f}"]
                    + [f"{window[n]:.6g}" if n in window else "" for n in LOSS_COLUMNS]
                    + [f"{rate:.1f}"])
            self.last_row = window
            self.mark = (self.step, self.in_epoch, means, now)
            self.last_sync = (self.step, now)
            elapsed = now - self.fit_began
            text = " ".join(f"{n} {window[n]:.4f}" for n in LOSS_COLUMNS if n in window)
            say(f"step {args.start_step + self.step:6d}  {elapsed:7.1f} s  "
                f"{rate:8.1f} clips/s  {text}")

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            self.in_epoch = batch + 1
            if self.step == 1:  # the compiling step: wait for it, then time from here
                jax.block_until_ready(logs)
                self.first_done = time.monotonic()
                self.first_step_seconds = self.first_done - self.fit_began
                means = {k: float(v) for k, v in logs.items()}
                self.mark = (0, 0, {}, self.fit_began)
                say(f"first step (compile + 1 step) {self.first_step_seconds:.1f} s; "
                    f"{time.monotonic() - STARTED:.1f} s since start")
                self._row(means)
            now = time.monotonic()
            reason = _STOP["reason"]
            if now - self.first_done >= args.train_seconds:
                reason = "train_seconds"
            if args.wall_seconds and now - STARTED >= args.wall_seconds:
                reason = "wall_seconds"
            if args.max_steps and self.step >= args.max_steps:
                reason = "max_steps"
            if reason or self.step % args.log_every == 0:
                self._row({k: float(v) for k, v in logs.items()})  # float() syncs
            if reason and not self.model.stop_training:
                self.stop_reason = reason
                self.model.stop_training = True
                say(f"stopping at step {args.start_step + self.step}: {reason}")

        def on_epoch_end(self, epoch, logs=None):
            # Keras has synced the variables from the JAX state (jax_state_sync).
            if self.mark is not None and self.in_epoch > self.mark[1]:
                self._row({k: float(v) for k, v in (logs or {}).items()})
            written = save_weights(self.model, out_dir, args.max_shard_mb)
            summary["checkpoints"] += 1
            summary["checkpoint_step"] = args.start_step + self.step
            summary["checkpoint_history"].append(
                [args.start_step + self.step, round(time.monotonic() - STARTED, 2)])
            summary["weights_files"] = [{"name": n, "bytes": b} for n, b in written]
            finish_summary("running")
            mb = sum(b for _, b in written) / 2**20
            say(f"checkpoint at step {args.start_step + self.step}: {len(written)} files, "
                f"{mb:.1f} MiB, largest {max(b for _, b in written) / 2**20:.1f} MiB")
            files = len(os.listdir(out_dir)) + 1  # and the device command's train.log
            if files > MAX_RETURNED_FILES:
                say(f"WARNING: {files} files in {out_dir}; a device call brings back "
                    f"{MAX_RETURNED_FILES}: raise --max_shard_mb or save less")

        def update_summary(self, target, status):
            target["status"] = status
            target["stop_reason"] = self.stop_reason
            target["steps"] = self.step
            target["global_step"] = args.start_step + self.step
            target["first_step_seconds"] = (None if self.first_step_seconds is None
                                            else round(self.first_step_seconds, 2))
            if self.first_done is not None and self.last_sync is not None:
                steps, seconds = self.last_sync[0] - 1, self.last_sync[1] - self.first_done
                target["train_seconds"] = round(seconds, 2)
                target["timed_steps"] = steps
                rate = steps / seconds if steps > 0 and seconds > 0 else None
                target["steps_per_second"] = None if rate is None else round(rate, 4)
                target["clips_per_second"] = (None if rate is None
                                              else round(rate * config.batch_size, 1))
            target["last_losses"] = dict(self.last_row)

    state = Progress()
    epochs = (math.ceil(args.max_steps / args.checkpoint_steps) if args.max_steps
              else 10**9)
    finish_summary("starting")
    say(f"training: {args.checkpoint_steps} steps per checkpoint, stop after "
        f"{args.train_seconds:.0f} s of training"
        + (f" or {args.wall_seconds:.0f} s since start" if args.wall_seconds else "")
        + (f" or {args.max_steps} steps" if args.max_steps else ""))
    try:
        model.fit(dataset, epochs=epochs, shuffle=False, verbose=0,
                  callbacks=[dataset.epoch_callback(), state])
    except BaseException as error:
        summary["error"] = f"{type(error).__name__}: {error}"[:4000]
        finish_summary("failed")
        raise
    if summary["checkpoint_step"] != args.start_step + state.step:  # not expected
        written = save_weights(model, out_dir, args.max_shard_mb)
        summary["checkpoints"] += 1
        summary["checkpoint_step"] = args.start_step + state.step
        summary["weights_files"] = [{"name": n, "bytes": b} for n, b in written]
    summary["weights_fingerprint"] = weights_fingerprint(model)
    finish_summary("completed" if state.stop_reason else "epochs_exhausted")
    say(f"done: {state.step} steps, {summary.get('steps_per_second')} steps/s, "
        f"{summary.get('clips_per_second')} clips/s after the first step; first step "
        f"{summary['first_step_seconds']} s; {summary['seconds_total']} s in all; "
        f"tensorflow imported: {summary['tensorflow_imported']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
