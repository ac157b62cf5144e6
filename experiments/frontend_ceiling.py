"""How much of a task does the front end itself keep? Probes on log-mel statistics at
several time-frequency resolutions.

    python -m experiments.frontend_ceiling --tasks=realistic_pitch --probes=linear,mlp \
        --out=experiments/results/frontend_ceiling-2026-12-01

Every encoder sees the world through its front end: what the log-mel patch does not
resolve, no network fed with it can recover. The log-mel mean/std embedding
(`LogMelStatsEmbedder`, the reference row of every table) is probed at the model's front
end (64 bands, 25 ms window, the paper's) and at finer ones; a large gap says the task is
capped by the front end, not by what pre-training learns. The probes are the long runs'
(`experiments.long_run`: lr 1e-3, batch 32, early stopping on validation). Writes
OUT.json and OUT.md (valid and test scores per front end and probe).
"""

from __future__ import annotations

import os

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags: defined when run, so that importing this module (tests)
    never clashes with another experiment's flags of the same name."""
    flags.DEFINE_list("tasks", ["realistic_pitch"], "Built-in tasks to probe.")
    flags.DEFINE_list("probes", ["linear"], "Probe kinds: linear and/or mlp.")
    flags.DEFINE_list("front_ends", None, "Names from FRONT_ENDS (default: all).")
    flags.DEFINE_string("out", "experiments/results/frontend_ceiling",
                        "Prefix of OUT.{json,md}.")
    flags.DEFINE_string("cache_dir", "runs/frontend_ceiling", "Where the probes' embeddings and "
                        "results are cached.")
    flags.DEFINE_float("scale", 1.0,
                       "Size of the built-in tasks' splits (1: the documented sizes).")
    flags.DEFINE_integer("threads", 0, "TensorFlow intra-op threads (0: TensorFlow's default).")


# name -> MSSSConfig changes; the model's front end first.
FRONT_ENDS = {
    "64 bands / 25 ms window (the model's)": {},
    "128 bands / 25 ms window": {"n_mels": 128},
    "128 bands / 64 ms window": {"n_mels": 128, "stft_window": 1024, "fft_length": 1024},
    "256 bands / 128 ms window": {"n_mels": 256, "stft_window": 2048, "fft_length": 2048},
}


def probe_front_ends(tasks, probes, front_ends, cache_dir, threads=0, scale=1.0):
    """[{front_end, probe, task, split, metric, value}] of log-mel mean/std probes."""
    import tensorflow as tf

    from msss_tf.config import MSSSConfig
    from msss_tf.data.tasks import load_task
    from msss_tf.embedding import LogMelStatsEmbedder
    from msss_tf.evaluation.probe import ProbeSettings, run_probes

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    base = MSSSConfig(input_normalization="window_mean", log_offset=1e-3)  # the demo's
    loaded = [load_task(name, scale=scale, seed=0) for name in tasks]  # rendered once
    rows = []
    for name in front_ends:
        config = base.replace(**FRONT_ENDS[name])
        # The cache is keyed by the front end itself, so any subset of names reuses it.
        key = f"mels{config.n_mels}-window{config.stft_window}-fft{config.fft_length}"
        for probe in probes:
            settings = ProbeSettings(probe=probe, learning_rates=(1e-3,), max_epochs=100,
                                     patience=10, batch_size=32, seed=0)
            result, _, _ = run_probes(LogMelStatsEmbedder(config), loaded, settings,
                                      out_dir=os.path.join(cache_dir, f"{key}-{probe}"),
                                      export_dir=None, encoder_name=name, progress=False,
                                      print_table=False)
            rows += [{"front_end": name, "probe": probe, "task": r["task"],
                      "split": r["split"], "metric": r["metric"],
                      "value": round(float(r["value"]), 6)} for r in result]
            print(f"{name}, {probe} probe: " + ", ".join(
                f"{r['task']} {r['metric']} {r['value']:.3f}" for r in result
                if r["split"] == "test"), flush=True)
    return rows


def markdown(rows):
    """One row per front end and probe; columns task metric (test, valid in brackets)."""
    columns = sorted({(r["task"], r["metric"]) for r in rows})
    values = {(r["front_end"], r["probe"], r["task"], r["metric"], r["split"]): r["value"]
              for r in rows}
    keys = list(dict.fromkeys((r["front_end"], r["probe"]) for r in rows))
    lines = ["| log-mel mean/std front end | probe | "
             + " | ".join(f"{t} {m} test (valid)" for t, m in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for front_end, probe in keys:
        cells = [f"{values[(front_end, probe, t, m, 'test')]:.3f} "
                 f"({values[(front_end, probe, t, m, 'valid')]:.3f})" for t, m in columns]
        lines.append(f"| {front_end} | {probe} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    from msss_tf.atomic import write_json_atomically

    names = FLAGS.front_ends or list(FRONT_ENDS)
    unknown = [n for n in names if n not in FRONT_ENDS]
    if unknown:
        raise app.UsageError(f"--front_ends: unknown {unknown}; known: {list(FRONT_ENDS)}")
    if not set(FLAGS.probes) <= {"linear", "mlp"}:
        raise app.UsageError(f"--probes: linear and/or mlp, got {FLAGS.probes}")
    rows = probe_front_ends(FLAGS.tasks, FLAGS.probes, names, FLAGS.cache_dir, FLAGS.threads,
                            FLAGS.scale)
    os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
    write_json_atomically(FLAGS.out + ".json", {"front_ends": {n: FRONT_ENDS[n] for n in names},
                                                "rows": rows})
    with open(FLAGS.out + ".md", "w") as f:
        f.write(markdown(rows))
    print(f"frontend_ceiling: {FLAGS.out}.{{json,md}}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
