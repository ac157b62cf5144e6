"""Choose a long run's checkpoint by its validation scores and ship it with the package.

    python -m experiments.ship_checkpoint --run_dirs=runs/long/clip-s0,runs/long/clip-s1,... \
        --step=8000 --layer=stage3 --name=cola_realistic_x05 \
        --label="COLA (L_clip), 8000 steps on the realistic corpus" \
        --commit=$(git rev-parse HEAD) --corpus_command="msss-tf corpus --minutes=60 --seed=0"

Every candidate must have been probed at `--step` and `--layer`, and at step 0 (its
untrained encoder in both forms), by `python -m experiments.long_run layers
--curve_steps=0,STEP`: the cached results under `RUN/layers/NAME-LAYER/TASK/results.csv`
are read, nothing is re-run. Test scores play no part in the choice. `--rule`:

* `valid_mean` (the default, the rule of the shipped checkpoint): the highest mean
  validation score over the tasks' first metrics.
* `margin`: the demo sets the shipped encoder beside the untrained network of the same
  seed (batch norm at init and calibrated). This rule picks the run whose smallest
  validation margin over its own untrained encoder, over the tasks' first metrics and
  both forms, is largest. On the 8000-step COLA runs these margins (-0.016 to +0.026)
  were within the validation split's noise (docs/results.md, "Choosing the shipped
  checkpoint").

The chosen model is re-saved without optimizer state to `msss_tf/checkpoints/NAME.keras`,
and `NAME.json` records the recipe, the corpus, the commit, the rule, every candidate's
and reference's scores and the file's SHA-256 (`msss_tf.embedding.shipped` reads it).
"""

from __future__ import annotations

import csv
import json
import os

from absl import app, flags

from experiments.curve_tables import checkpoint_at_step, run_label

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags: defined when run, so that importing this module (tests)
    never clashes with another experiment's flags of the same name."""
    flags.DEFINE_list("run_dirs", None, "Candidate long-run directories.")
    flags.DEFINE_integer("step", 8000, "Training step of the checkpoints to compare.")
    flags.DEFINE_string("layer", "stage3",
                        "Layer the probes read (and the record recommends).")
    flags.DEFINE_string("name", "cola_realistic_x05", "Checkpoint name (file stem).")
    flags.DEFINE_string("label", None, "Short description for tables.")
    flags.DEFINE_string("commit", None, "Commit of the code that trained the runs.")
    flags.DEFINE_string("corpus_command", None, "The command that built the corpus.")
    flags.DEFINE_string("out_dir", None, "Default: msss_tf/checkpoints.")
    flags.DEFINE_list("tasks", ["realistic_keywords", "realistic_pitch", "realistic_events"],
                      "Tasks whose first metric's validation score chooses the run.")
    flags.DEFINE_enum("rule", "valid_mean", ["margin", "valid_mean"], "How the run is chosen "
                      "(module docstring).")


FIRST_METRIC = {"realistic_keywords": "top1_acc", "realistic_pitch": "pitch_acc",
                "realistic_events": "event_onset_fscore"}
# The untrained encoder's two forms, as `experiments.long_run` caches them at step 0.
REFERENCES = ("random_init_bn_at_init", "random_init_bn_calibrated")


def probe_scores(run_dir, step, layer, tasks, encoder=None):
    """{split: {task/metric: value}} from the run's cached `layers` probe results of its
    checkpoint at `step`, or of `encoder` (one of REFERENCES) when given."""
    scores = {}
    name = encoder or f"step-{step:06d}"
    for task in tasks:
        path = os.path.join(run_dir, "layers", f"{name}-{layer}", task, "results.csv")
        if not os.path.exists(path):
            raise app.UsageError(f"{path} is missing: run `python -m experiments.long_run "
                                 f"layers --run_dirs={run_dir} "
                                 f"--curve_steps={0 if encoder else step} "
                                 f"--layers={layer}` first")
        with open(path) as f:
            for row in csv.DictReader(f):
                scores.setdefault(row["split"], {})[f"{task}/{row['metric']}"] = float(
                    row["value"])
    return scores


def first_metrics(scores, tasks):
    """{task/metric: value} of the tasks' first metrics in one split's `scores`."""
    return {f"{t}/{FIRST_METRIC[t]}": scores[f"{t}/{FIRST_METRIC[t]}"] for t in tasks}


def validation_margin(candidate, tasks):
    """The candidate's smallest validation margin over its untrained encoder: the minimum,
    over the tasks' first metrics and both REFERENCES, of candidate - reference."""
    mine = first_metrics(candidate["scores"]["valid"], tasks)
    return min(value - first_metrics(candidate["references"][form]["valid"], tasks)[key]
               for form in REFERENCES for key, value in mine.items())


# The candidate field each rule maximises (computed once per candidate in `main`).
RULE_KEYS = {"margin": "valid_margin", "valid_mean": "valid_mean"}


def choose(candidates, rule):
    """The chosen candidate under `rule` ("margin" or "valid_mean"); ties go to the first."""
    if rule not in RULE_KEYS:
        raise ValueError(f"rule={rule!r}: must be 'margin' or 'valid_mean'")
    return max(candidates, key=lambda c: c[RULE_KEYS[rule]])


SELECTION = {
    "margin": "the largest smallest validation margin over the run's own untrained encoder "
              "(batch norm at init and calibrated; the same seed) over {tasks} (first "
              "metric each)",
    "valid_mean": "the highest mean validation score over {tasks} (first metric each)",
}


def checkpoint_file(run_dir, step):
    with open(os.path.join(run_dir, "long_run.json")) as f:
        path = checkpoint_at_step(run_dir, step, json.load(f)["steps_per_epoch"])
    if path is None:
        raise app.UsageError(f"{run_dir}: no checkpoint at step {step}")
    return path


def main(argv):
    del argv
    from msss_tf.atomic import write_json_atomically
    from msss_tf.embedding.keras_model import load_msss_model
    from msss_tf.atomic import file_sha256
    from msss_tf.embedding.shipped import CHECKPOINT_DIR, RECORD_FORMAT

    if not FLAGS.run_dirs or not FLAGS.label or not FLAGS.commit:
        raise app.UsageError("--run_dirs, --label and --commit are required")
    candidates = []
    for run_dir in FLAGS.run_dirs:
        scores = probe_scores(run_dir, FLAGS.step, FLAGS.layer, FLAGS.tasks)
        valid = list(first_metrics(scores["valid"], FLAGS.tasks).values())
        references = {form: probe_scores(run_dir, 0, FLAGS.layer, FLAGS.tasks, form)
                      for form in REFERENCES}
        candidates.append({"run_dir": run_dir, "valid_mean": sum(valid) / len(valid),
                           "scores": scores, "references": references})
    for c in candidates:
        c["valid_margin"] = validation_margin(c, FLAGS.tasks)
    chosen = choose(candidates, FLAGS.rule)
    model = load_msss_model(checkpoint_file(chosen["run_dir"], FLAGS.step))
    out_dir = FLAGS.out_dir or CHECKPOINT_DIR
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{FLAGS.name}.keras")
    model.save(path)  # loaded without compile: no optimizer state
    config = model.msss_config
    with open(os.path.join(chosen["run_dir"], "long_run.json")) as f:
        manifest_path = json.load(f).get("corpus_manifest")
    corpus = {"command": FLAGS.corpus_command}
    if manifest_path and os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
        corpus.update({k: manifest[k] for k in ("seed", "minutes_requested", "seconds_total",
                                                 "num_clips", "clips_per_kind", "renderers")
                       if k in manifest})
    record = {
        "format": RECORD_FORMAT,
        "format_version": 1,
        "name": FLAGS.name,
        "file": os.path.basename(path),
        "sha256": file_sha256(path),
        "label": FLAGS.label,
        "recipe": run_label(config)[1],
        "train_steps": FLAGS.step,
        "batch_size": config.batch_size,
        "embedding_layer": FLAGS.layer,
        "commit": FLAGS.commit,
        "training_command": (
            f"python -m experiments.long_run train --run_dir=RUN --corpus_dir=CORPUS "
            f"--losses={','.join(config.losses)} --seed={config.seed} "
            f"--train_steps={FLAGS.step} --threads=1"),
        "corpus": corpus,
        "selection_rule": FLAGS.rule,
        "selection": (f"of {len(candidates)} runs at step {FLAGS.step}, "
                      + SELECTION[FLAGS.rule].format(tasks=", ".join(FLAGS.tasks))
                      + f", probes read at {FLAGS.layer}; test scores took no part"),
        "selection_tasks": list(FLAGS.tasks),
        "candidates": [{"run": os.path.basename(c["run_dir"].rstrip("/")),
                        "valid_mean": round(c["valid_mean"], 6),
                        "valid_margin": round(c["valid_margin"], 6),
                        "scores": c["scores"], "references": c["references"]}
                       for c in candidates],
        "chosen": os.path.basename(chosen["run_dir"].rstrip("/")),
        "config": config.to_dict(),
    }
    write_json_atomically(os.path.join(out_dir, f"{FLAGS.name}.json"), record)
    print(f"shipped {record['chosen']} as {path} ({os.path.getsize(path) / 1e6:.1f} MB); "
          f"validation mean / margin: " + ", ".join(
              f"{c['run']} {c['valid_mean']:.3f} / {c['valid_margin']:+.3f}"
              for c in record["candidates"]))


if __name__ == "__main__":
    define_flags()
    app.run(main)
