"""`msss-tf bench`: the train step against its floor, input headroom, embedding
throughput and memory (`msss_tf.bench`)."""

from __future__ import annotations

from absl import flags

from msss_tf.cli.common import UsageError, define_performance_flags, parse_jit_compile

# The flags defined here belong to the caller, msss_tf.cli (one group in --help).
flags.disclaim_key_flags()


def define_bench(fv):
    flags.DEFINE_integer("batch_size", 16, "Clips per step (the paper's 1024 needs a GPU).",
                         flag_values=fv)
    flags.DEFINE_integer("steps", 3, "Timed steps per round (after warm-up).", flag_values=fv)
    flags.DEFINE_integer("repeats", 3, "Rounds; figures are medians over rounds.",
                         flag_values=fv)
    flags.DEFINE_float("width_coefficient", 0.5, "Encoder width (1.0 = EfficientNet-B0; the "
                       "default 0.5, the demo's, keeps a run to minutes on 2 CPU cores).",
                       flag_values=fv)
    flags.DEFINE_float("depth_coefficient", 0.5, "Encoder depth (1.0 = EfficientNet-B0).",
                       flag_values=fv)
    flags.DEFINE_list("parts", ["step", "input", "embed", "memory"], "What to measure: step "
                      "(floor, overhead, ablations), input (pipeline headroom), embed "
                      "(throughput, TFLite latency), memory (peak RSS, subprocesses); "
                      "long_audio (peak RSS of embed on long files) on request.",
                      flag_values=fv)
    flags.DEFINE_list("long_audio_minutes", ["1", "10", "60"], "File lengths of the "
                      "long_audio part, in minutes.", flag_values=fv)
    flags.DEFINE_list("memory_batch_sizes", None, "Batch sizes of the peak-RSS runs (default "
                      "batch_size/2 and batch_size).", flag_values=fv)
    flags.DEFINE_boolean("ablations", True, "Also time the clip, clip+frame and clip+pitch "
                         "steps.", flag_values=fv)
    flags.DEFINE_boolean("compare_view_batching", False, "Also time the full step with the "
                         "other --view_batching (one more step trace, ~1 min on 2 cores).",
                         flag_values=fv)
    flags.DEFINE_boolean("memory_in_background", True, "Run the peak-RSS subprocesses while "
                         "the step variants are traced (they finish before any timed round).",
                         flag_values=fv)
    flags.DEFINE_string("out", None, "JSON file for every figure.", flag_values=fv)
    define_performance_flags(fv, strategy=False)


def run_bench(fv):
    from msss_tf.bench import run_benchmark

    jit = parse_jit_compile(fv.jit_compile)
    try:
        memory = [int(v) for v in fv.memory_batch_sizes] if fv.memory_batch_sizes else None
    except ValueError as e:
        raise UsageError(f"--memory_batch_sizes: {e}") from e
    try:
        minutes = [float(v) for v in fv.long_audio_minutes]
    except ValueError as e:
        raise UsageError(f"--long_audio_minutes: {e}") from e
    if not minutes or min(minutes) <= 0:
        raise UsageError(f"--long_audio_minutes={','.join(fv.long_audio_minutes)}: "
                         f"lengths must be > 0 minutes")
    run_benchmark(batch_size=fv.batch_size, steps=fv.steps, repeats=fv.repeats,
                  width_coefficient=fv.width_coefficient,
                  depth_coefficient=fv.depth_coefficient,
                  jit_compile=False if jit == "auto" else jit,
                  mixed_precision=fv.mixed_precision, view_batching=fv.view_batching,
                  parts=[p for p in fv.parts if p], memory_batch_sizes=memory,
                  long_audio_minutes=minutes,
                  ablations=fv.ablations, compare_view_batching=fv.compare_view_batching,
                  memory_in_background=fv.memory_in_background, out=fv.out)
    return 0
