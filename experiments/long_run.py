"""Long pre-training runs on the realistic corpus, and their learning curves.

    # once: the realistic corpus (msss_tf.data.realistic) and its shards
    msss-tf corpus --out_dir=runs/long/corpus --minutes=60 --seed=0
    # hours, in the background, resumable (the same command continues where it stopped)
    nohup nice -n 19 python -m experiments.long_run train --run_dir=runs/long/all \
        --corpus_dir=runs/long/corpus --losses=clip,frame,pitch --train_steps=30000 &
    # any time: probe the run's checkpoints at --curve_steps on the realistic tasks; with
    # several seeds of a recipe, OUT_summary.md gives mean +- std over them
    python -m experiments.long_run curve --run_dirs=runs/long/all,runs/long/clip \
        --out=docs/results/long_run
    # which layer to embed: probes of the encoder cut at --layers, per checkpoint
    python -m experiments.long_run layers --run_dirs=runs/long/clip --curve_steps=0,4000 \
        --tasks=realistic_keywords,realistic_pitch --out=docs/results/layers
    # every recipe's curve at one layer over those CSVs: mean +- std table and plot
    python -m experiments.long_run layers_summary --layers=stage3 \
        --inputs='docs/results/layers*.csv' --out=docs/results/layers_stage3_summary

`train` is `msss_tf.training.pretrain.pretrain` with the recipe below and a checkpoint every
`--steps_per_epoch` steps (`checkpoints/epoch-NNNN.keras`): the learning curve reads
those, so the run itself never stops to evaluate. The recipe (the demo's, which a
3-seed study found better than the paper's front end for every loss): EfficientNet x0.5,
batch 16, Adam 1e-3, window-mean log-mel with log(mel + 1e-3), pitch target in
semitones.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from experiments.curve_tables import (checkpoint_at_step, expand_inputs, read_layer_rows,
                                      run_label, write_curve, write_layers,
                                      write_layers_summary)

FLAGS = flags.FLAGS


def define_flags():
    """The command's flags: defined when run, so that importing this module (tests)
    never clashes with another experiment's flags of the same name."""
    flags.DEFINE_string("run_dir", None, "The run directory (train, curve).")
    flags.DEFINE_string("corpus_dir", None, "Corpus folder written by `msss-tf corpus`: "
                        "manifest.json, audio/ and shards/ (train).")
    flags.DEFINE_list("losses", ["clip", "frame", "pitch"], "Losses (train).")
    flags.DEFINE_integer("seed", 0, "Seed of the run (train).")
    flags.DEFINE_integer("train_steps", 30000, "Total optimiser steps (train).")
    flags.DEFINE_integer("steps_per_epoch", 250, "Steps between checkpoints (train).")
    flags.DEFINE_integer("batch_size", 16, "Clips per batch (train).")
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (train).")
    flags.DEFINE_float("width_coefficient", 0.5, "Encoder width (train).")
    flags.DEFINE_float("depth_coefficient", 0.5, "Encoder depth (train).")
    flags.DEFINE_multi_string("set", [], "Other MSSSConfig fields, name=JSON value (train).")
    flags.DEFINE_list("run_dirs", None, "Runs to probe and plot together; the untrained "
                      "references come from the first (curve).")
    flags.DEFINE_list("curve_steps", ["0", "1000", "3000", "10000", "30000"], "Steps at which to "
                      "probe each run; 0 is the untrained encoder. Steps without a checkpoint "
                      "yet are left for a later call (curve).")
    flags.DEFINE_list("tasks", ["realistic_keywords", "realistic_pitch", "realistic_events"],
                      "Downstream tasks (curve).")
    flags.DEFINE_string("out", "docs/results/long_run", "Prefix of the CSV, Markdown table and "
                        "plot (curve).")
    flags.DEFINE_integer("probe_epochs", 100, "Most epochs of each probe (curve).")
    flags.DEFINE_list("keep_steps", ["1000", "2000", "3000", "5000", "10000", "20000", "30000"],
                      "Checkpoints kept in RUN_DIR/kept/ for the learning curve (the run itself "
                      "keeps only its newest three) (train).")
    flags.DEFINE_list("inputs", None, "CSV files written by `layers`, and by `curve` for its "
                      "log-mel rows; glob patterns are expanded in natural order "
                      "(layers_summary).")
    flags.DEFINE_list("layer_aliases", [], "OLD=NEW layer names of older CSVs, e.g. "
                      "block3a_project_bn=stage3 for the x0.5 encoder (layers_summary).")
    flags.DEFINE_list("layers", ["stage3", "stage4", "stage6", "top"],
                      "Where to read the embeddings: EfficientNet stages (stage1..stage7, top) "
                      "or layer names of its body, frequency flattened (layers).")
    flags.DEFINE_integer("threads", 0, "TensorFlow intra-op threads (0: TensorFlow's default); "
                         "1 lets two runs share 2 cores without contention (train).")


def recipe_config(losses, seed, overrides=()):
    """The long-run recipe's MSSSConfig."""
    from msss_tf.config import MSSSConfig

    fields = dict(
        losses=tuple(losses), seed=seed, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, width_coefficient=FLAGS.width_coefficient,
        depth_coefficient=FLAGS.depth_coefficient, input_normalization="window_mean",
        log_offset=1e-3, pitch_target="semitones")
    for item in overrides:
        name, raw = item.split("=", 1)
        fields[name] = json.loads(raw)
    return MSSSConfig(**fields)


def keep_milestones(run_dir, steps_per_epoch, steps):
    """Hard-links (or copies) the run's checkpoints at `steps` into RUN_DIR/kept/."""
    import shutil

    kept = os.path.join(run_dir, "kept")
    os.makedirs(kept, exist_ok=True)
    for step in steps:
        if step % steps_per_epoch:
            continue
        name = f"epoch-{step // steps_per_epoch:04d}.keras"
        source, target = os.path.join(run_dir, "checkpoints", name), os.path.join(kept, name)
        if os.path.exists(source) and not os.path.exists(target):
            try:
                os.link(source, target)
            except OSError:  # another file system
                shutil.copyfile(source, target)


def train(run_dir, corpus_dir):
    import keras

    from msss_tf.training.pretrain import pretrain, resolve_config

    if FLAGS.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    shards = os.path.join(corpus_dir, "shards")
    if not os.path.exists(os.path.join(shards, "manifest.json")):
        raise app.UsageError(f"{shards}: no prepared corpus; run msss-tf corpus first")
    config = recipe_config(FLAGS.losses, FLAGS.seed, FLAGS.set)
    config = resolve_config(run_dir, config, set(config.to_dict()))
    os.makedirs(run_dir, exist_ok=True)
    record = {"steps_per_epoch": FLAGS.steps_per_epoch, "shards": os.path.abspath(shards),
              "corpus_manifest": os.path.join(os.path.abspath(corpus_dir), "manifest.json")}
    with open(os.path.join(run_dir, "long_run.json"), "w") as f:
        json.dump(record, f, indent=2)
    started = time.time()
    keep = [int(v) for v in FLAGS.keep_steps]
    milestones = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: keep_milestones(run_dir, FLAGS.steps_per_epoch, keep))
    result = pretrain(config, data=shards, model_dir=run_dir, train_steps=FLAGS.train_steps,
                      steps_per_epoch=FLAGS.steps_per_epoch, verbose=2,
                      extra_callbacks=[milestones])
    keep_milestones(run_dir, FLAGS.steps_per_epoch, keep)  # the last epoch's, saved after
    print(f"trained to step {result.steps} in {time.time() - started:.0f} s: {run_dir}")


def _probe(make_embedder, name, out_dir, tasks):
    """Test-split rows of `make_embedder()` on `tasks`, cached in `out_dir`: results.json
    (several tasks at once) and TASK/results.json (one added later). The embedder is built
    only for the tasks the cache lacks, which alone are probed."""
    from msss_tf.evaluation.probe import ProbeSettings, run_probes

    rows = []
    for path in [os.path.join(out_dir, "results.json")] + [
            os.path.join(out_dir, t, "results.json") for t in tasks]:
        if os.path.exists(path):
            with open(path) as f:
                rows += [r for r in json.load(f)["results"] if r["task"] in tasks]
    missing = [t for t in tasks if t not in {r["task"] for r in rows}]
    if missing:
        settings = ProbeSettings(learning_rates=(1e-3,), max_epochs=FLAGS.probe_epochs,
                                 patience=10, batch_size=32, seed=0)
        embedder = make_embedder()
        for task in missing:
            new, _, _ = run_probes(embedder, [task], settings,
                                   out_dir=os.path.join(out_dir, task), export_dir=None,
                                   encoder_name=name, progress=False, print_table=False)
            rows += new
    return [r for r in rows if r["split"] == "test"]


def run_encoders(run_dir, steps):
    """(config, encoders) of one run: `encoders` lists (kind, step, cache name,
    make_embedder) for the untrained encoder at step 0 (batch norm at its initial
    statistics and calibrated on the corpus) and the run's checkpoints at the other steps
    (those it has)."""
    from msss_tf.config import CONFIG_FILENAME, MSSSConfig
    from msss_tf.data.pipeline import sample_segments
    from msss_tf.embedding import Embedder

    config = MSSSConfig.load(os.path.join(run_dir, CONFIG_FILENAME))
    with open(os.path.join(run_dir, "long_run.json")) as f:
        record = json.load(f)
    per_epoch = record["steps_per_epoch"]
    encoders = []
    for step in steps:
        if step == 0:
            def calibrated():
                calibration = sample_segments(record["shards"], config, count=256,
                                              seed=config.seed + 10_007)
                return Embedder.random_init(config, seed=config.seed,
                                            calibration_audio=calibration)

            encoders += [("random init (BN calibrated)", 0, "random_init_bn_calibrated",
                          calibrated),
                         ("random init (BN at init)", 0, "random_init_bn_at_init",
                          lambda: Embedder.random_init(config, seed=config.seed))]
            continue
        try:
            path = checkpoint_at_step(run_dir, step, per_epoch)
        except ValueError as e:
            raise app.UsageError(f"--curve_steps: {e}") from e
        if path:
            encoders.append(("pre-trained", step, f"step-{step:06d}",
                             lambda path=path: Embedder.from_path(path)))
    return config, encoders


def curve_rows(run_dir, tasks, steps):
    """Probe rows of one run at `steps` (those with a checkpoint), plus its references
    (the untrained encoder in both forms and the log-mel statistics) at step 0."""
    from msss_tf.embedding import LogMelStatsEmbedder

    config, encoders = run_encoders(run_dir, steps)
    if 0 in steps:
        encoders.append(("log-mel mean/std", 0, "logmel_stats",
                         lambda: LogMelStatsEmbedder(config)))
    run, recipe = run_label(config)
    rows = []
    for kind, step, name, make in encoders:
        for r in _probe(make, name, os.path.join(run_dir, "curve", name), tasks):
            rows.append({"run": run, "recipe": recipe, "seed": config.seed, "kind": kind,
                         "step": step, "task": r["task"], "metric": r["metric"],
                         "value": r["value"]})
    return rows


def layer_rows(run_dir, tasks, steps, layers):
    """Probe rows of one run's encoder read at each of `layers` (`Embedder` `layer=`:
    a stage name or a layer of the EfficientNet body), at `steps` (0: the untrained
    encoder in both forms)."""
    from msss_tf.embedding import Embedder
    from msss_tf.model.encoder import encoder_at_layer

    config, encoders = run_encoders(run_dir, steps)
    run, recipe = run_label(config)
    rows = []
    for kind, step, name, make in encoders:
        for layer in layers:
            def cut(make=make, layer=layer):
                whole = make()
                return Embedder(whole.frontend, encoder_at_layer(whole.encoder, layer), config)

            out_dir = os.path.join(run_dir, "layers", f"{name}-{layer}")
            for r in _probe(cut, f"{name}-{layer}", out_dir, tasks):
                rows.append({"run": run, "recipe": recipe, "seed": config.seed, "kind": kind,
                             "step": step, "layer": layer, "task": r["task"],
                             "metric": r["metric"], "value": r["value"]})
    return rows


def run_seed(run_dir):
    from msss_tf.config import CONFIG_FILENAME, MSSSConfig

    return MSSSConfig.load(os.path.join(run_dir, CONFIG_FILENAME)).seed


def main(argv):
    if len(argv) != 2 or argv[1] not in ("train", "curve", "layers", "layers_summary"):
        raise app.UsageError(
            "usage: python -m experiments.long_run train|curve|layers|layers_summary [flags]")
    if argv[1] == "layers_summary":  # mean +- std over seeds of `layers` CSVs at one layer
        if not FLAGS.inputs or len(FLAGS.layers) != 1:
            raise app.UsageError("layers_summary needs --inputs=A.csv,... and one --layers")
        try:
            inputs = expand_inputs(FLAGS.inputs)
        except ValueError as e:
            raise app.UsageError(f"--inputs: {e}") from e
        rows = read_layer_rows(inputs, FLAGS.layers[0],
                               dict(a.split("=", 1) for a in FLAGS.layer_aliases))
        out = write_layers_summary(rows, FLAGS.out, FLAGS.layers[0])
        print(f"layers_summary: {out}.{{md,png}}")
        return
    if argv[1] == "layers":
        if not FLAGS.run_dirs:
            raise app.UsageError("--run_dirs is required")
        steps = [int(v) for v in FLAGS.curve_steps]
        rows, seeds = [], set()
        for run_dir in FLAGS.run_dirs:  # the untrained encoder once per seed, as in curve
            seed = run_seed(run_dir)
            rows += layer_rows(run_dir, FLAGS.tasks, steps if seed not in seeds else
                               [s for s in steps if s], FLAGS.layers)
            seeds.add(seed)
        print(f"layers: {write_layers(rows, FLAGS.out)}.{{csv,md}}")
        return
    if argv[1] == "train":
        if not (FLAGS.run_dir and FLAGS.corpus_dir):
            raise app.UsageError("--run_dir and --corpus_dir are required")
        train(FLAGS.run_dir, FLAGS.corpus_dir)
    else:
        if not FLAGS.run_dirs:
            raise app.UsageError("--run_dirs is required")
        steps = [int(v) for v in FLAGS.curve_steps]
        rows, seeds = [], set()
        for run_dir in FLAGS.run_dirs:
            # The untrained references (step 0) once per seed, from the first run of that
            # seed: the runs compared share the architecture; the seed sets the init.
            seed = run_seed(run_dir)
            rows += curve_rows(run_dir, FLAGS.tasks, steps if seed not in seeds else
                               [s for s in steps if s])
            seeds.add(seed)
        print(f"curve: {write_curve(rows, FLAGS.out)}.{{csv,md,png}}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
