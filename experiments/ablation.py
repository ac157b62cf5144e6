"""The paper's ablation study (Table 1, Table 2) on the built-in offline tasks.

    python -m experiments.ablation --budget=smoke --out_dir=runs/ablation_smoke
    python -m experiments.ablation --budget=default --seeds=3 --out_dir=runs/ablation \
        --docs=docs/results.md

Pre-trains each configuration of method.md's results table (COLA, clip + frame,
clip + pitch, all three, all three with cosine similarity) with the same budget and seeds,
probes each on the built-in tasks (and on the real tasks whose data is under --data_dir),
adds two reference rows (random init, log-mel front end alone), and writes results.csv,
results.md and one bar chart per task/metric into --out_dir. Starting the same command
again resumes: finished (configuration, seed) runs are skipped. The budgets and every
training hyper-parameter are in `experiments.study.BUDGETS` (experiments/study/budgets.py).
"""

from __future__ import annotations

import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags: defined when run, so that importing this module (tests)
    never clashes with another experiment's flags of the same name."""
    flags.DEFINE_string("budget", "default", "smoke | default | a JSON file of "
                        "experiments.study.Budget fields (\"base\": NAME overrides a named "
                        "budget).")
    flags.DEFINE_integer("seeds", None, "Seeds 0..N-1 per configuration (default: the budget's "
                         "default_seeds: 1 for smoke, 3 for default).")
    flags.DEFINE_string("out_dir", None, "The study directory (resumed when it exists).")
    flags.DEFINE_string("data_dir", None, "Optional: where the real tasks' data is (tfds data_dir "
                        "for speech_commands / nsynth, the folder holding the HEAR "
                        "dcase2016_task2-hear2021-full folder); those found are probed too.")
    flags.DEFINE_list("configs", None, "Optional subset of: clip, clip_frame, clip_pitch, all, "
                      "all_cosine, random_init, logmel (default: all of them).")
    flags.DEFINE_list("tasks", None, "Optional explicit task list (default: the three built-in "
                      "tasks plus the real ones found under --data_dir).")
    flags.DEFINE_string("docs", None, "Optional: also render this page (e.g. docs/results.md) "
                        "from the study; its lead-notes block is kept.")
    flags.DEFINE_integer("jobs", 0, "Runs at a time, each in its own worker process (0: the "
                         "budget's default: 2 for smoke, whose tiny tensors keep TensorFlow "
                         "on one core; 1 otherwise). Numbers do not depend on it, only wall "
                         "time.")
    flags.DEFINE_boolean("report_only", False, "Only (re)write the report (and --docs) from the "
                         "finished runs of --out_dir; train nothing.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.out_dir:
        raise app.UsageError("--out_dir is required")
    from experiments import study

    if not FLAGS.report_only:
        budget = study.load_budget(FLAGS.budget)
        seeds = FLAGS.seeds if FLAGS.seeds is not None else budget.default_seeds
        command = "python -m experiments.ablation " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        study.run_study(FLAGS.out_dir, budget, seeds=seeds, configs=FLAGS.configs,
                        tasks=FLAGS.tasks, data_dir=FLAGS.data_dir, command=command,
                        jobs=FLAGS.jobs or None)
    else:
        paths = study.write_report(FLAGS.out_dir)
        print(f"report: {paths['md']}, {paths['csv']}")
    if FLAGS.docs:
        print(f"docs: {study.render_docs(FLAGS.out_dir, FLAGS.docs)}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
