"""`msss-tf bench`: how close each part of training and inference is to its floor.

Every figure is a ratio measured in one run (ours vs a baseline on the same machine), so
a shared, noisy machine changes the figures less than it changes the seconds. The output
ends with the benchmark's own wall time per part and lists what was skipped with the flag
that turns it on. Run times and the latest figures: docs/performance.md.

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

Modules: `runner` (`run_benchmark`, the TensorFlow backend's parts in order), `tf_step`
(step, floor and ablations), `tf_parts` (input pipeline, embedding throughput), `memory`
(peak RSS of `msss-tf` subprocesses), `jax_backend` (step and input on JAX), `timing`
(the shared timing helpers), `report` (tables, JSON, targets). Why it measures this way,
and what it found: docs/performance.md.
"""

from msss_tf.bench.memory import bench_long_audio, bench_memory, peak_rss_of_command, write_long_wav
from msss_tf.bench.report import (TARGETS, finite_positive_numbers, format_table,
                                  format_wall_table, write_results)
from msss_tf.bench.runner import DEFAULT_PARTS, PARTS, run_benchmark
from msss_tf.bench.tf_parts import bench_embed, bench_input
from msss_tf.bench.tf_step import bench_step, bench_tf_keras_floor

__all__ = ["DEFAULT_PARTS", "PARTS", "TARGETS", "bench_embed", "bench_input",
           "bench_long_audio", "bench_memory", "bench_step", "bench_tf_keras_floor",
           "finite_positive_numbers", "format_table", "format_wall_table",
           "peak_rss_of_command", "run_benchmark", "write_long_wav", "write_results"]
