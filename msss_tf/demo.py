"""The main job on built-in offline data: pre-train -> probe -> export, with a table.

1. pre-trains on the built-in synthetic corpus (minutes);
2. scores held-out pre-training losses, untrained vs trained;
3. probes held-out tasks with linear probes on frozen embeddings. With the realistic
   renderers installed (the `corpus` extra) these are the realistic tasks (keywords by
   unseen speakers, pitch of unseen instruments, overlapping events), and the encoders
   are: this run's, the pre-trained checkpoint shipped with the package (a long run on
   the realistic corpus, `msss_tf.embedding.shipped`), and three references: the
   log-mel statistics and the same network untrained, with its batch-norm statistics
   estimated on realistic audio (like for like) and at their initial values. Networks
   are read at the shipped checkpoint's recommended layer. Without the renderers the
   synthetic tasks stand in, read at the encoder's output, without the shipped column;
4. exports this run's probes as SavedModels (waveform in, probabilities out) and its
   encoder as a TF Serving SavedModel and a float32 TFLite file.
"""

from __future__ import annotations

import math
import os

from msss_tf.config import MSSSConfig
from msss_tf.data import pretrain_dataset
from msss_tf.data.pipeline import sample_segments
from msss_tf.atomic import write_json_atomically
from msss_tf.model.msss_model import MSSSModel, build_optimizer
from msss_tf.training.pretrain import pretrain
from msss_tf.evaluation.probe import format_table

HELD_OUT_SEED_OFFSET = 10_007  # held-out clips come from another corpus seed
SYNTHETIC_TASKS = ("synthetic_scene", "synthetic_pitch", "synthetic_events")
REALISTIC_TASKS = ("realistic_keywords", "realistic_pitch", "realistic_events")
CALIBRATION_MINUTES = 4.0  # realistic audio for the batch-norm statistics of the reference


def demo_config(batch_size: int = 16, width_coefficient: float = 0.5,
                depth_coefficient: float = 0.5, seed: int = 0) -> MSSSConfig:
    """The demo's recipe: the long-run recipe of the shipped checkpoint, at the demo's size."""
    return MSSSConfig(
        batch_size=batch_size,
        # Four departures from the paper's defaults; the reasons and their measurements
        # are in docs/findings.md ("The demo's settings, and why", 2026-11-30).
        learning_rate=1e-3,  # COLA's rate for small batches; the paper's 1e-4 is for 1024
        pitch_target="semitones",  # rho - 1 barely trains in the demo's few hundred steps
        input_normalization="window_mean",  # the input level no longer reaches the network
        log_offset=1e-3,  # YAMNet's: padding and silence do not blow up the activations
        width_coefficient=width_coefficient,
        depth_coefficient=depth_coefficient,
        seed=seed,
    )


def held_out_losses(model: MSSSModel, config: MSSSConfig, steps: int = 8) -> dict:
    """Mean losses of `model` on held-out synthetic clips (the same segments for any model)."""
    held_out = config.replace(seed=config.seed + HELD_OUT_SEED_OFFSET)
    dataset = pretrain_dataset("synthetic", held_out, num_clips=min(256, steps * config.batch_size))
    return model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)


def realistic_tasks(scale=1.0, seed: int = 0):
    """The realistic tasks (not yet rendered), or (None, why) without their renderers."""
    from msss_tf.data.realistic.deps import MissingCorpusPackageError
    from msss_tf.data.tasks import load_task

    try:
        return [load_task(name, scale=scale, seed=seed) for name in REALISTIC_TASKS], None
    except MissingCorpusPackageError as e:
        return None, str(e)


def realistic_calibration(config: MSSSConfig, out_dir: str):
    """256 segments of a small realistic corpus (another seed than the shipped run's
    corpus), for the batch-norm statistics of the untrained reference."""
    from msss_tf.data.realistic import build_corpus

    build_corpus(out_dir, minutes=CALIBRATION_MINUTES, seed=config.seed + HELD_OUT_SEED_OFFSET)
    return sample_segments(os.path.join(out_dir, "audio"), config, count=256,
                           seed=config.seed + HELD_OUT_SEED_OFFSET)


def run_demo(config: MSSSConfig, model_dir: str, train_steps: int = 120, synthetic_clips=256,
             export_dir: str = "saved_models", probe_epochs: int = 100, tasks: str = "auto",
             task_scale=1.0):
    """Runs the demo; returns its summary (also written to `model_dir/demo_results.json`).

    Args:
      tasks: "realistic", "synthetic", or "auto" (realistic when their renderers are
        installed, else synthetic, with a note saying how to get the realistic table).
      task_scale: size of the built-in tasks' splits (1: the documented sizes).
    """
    from msss_tf.embedding import Embedder, LogMelStatsEmbedder, shipped_checkpoint
    from msss_tf.evaluation.probe import ProbeSettings, run_probes
    from msss_tf.packages import require_modules

    if tasks not in ("auto", "realistic", "synthetic"):
        raise ValueError(f"tasks={tasks!r}: expected auto, realistic or synthetic")
    # Before minutes of pre-training: the events probe and the TFLite export need these,
    # and the realistic tasks their renderers.
    require_modules(("sed_eval", "dcase_util") + (("ai_edge_litert",) if export_dir else ()),
                    "msss-tf demo")
    task_list, why_not = (None, "--tasks=synthetic") if tasks == "synthetic" else \
        realistic_tasks(task_scale, seed=0)
    if task_list is None and tasks == "realistic":
        raise ValueError(f"msss-tf demo --tasks=realistic: {why_not}")
    realistic = task_list is not None
    checkpoint, layer = None, "output"
    if realistic:
        checkpoint = shipped_checkpoint()
        layer = checkpoint.layer
        differs = checkpoint.same_architecture(config)
        if differs:
            print(f"note: the shipped checkpoint's network differs from this run's in "
                  f"{', '.join(differs)}; its column is left out (the references would not "
                  f"be the same network)")
            checkpoint = None
    else:
        task_list = list(SYNTHETIC_TASKS)
        print(f"note: the built-in synthetic tasks stand in for the realistic ones ({why_not})")

    print(f"[1/4] pre-training on the built-in synthetic corpus ({synthetic_clips} clips): "
          f"{train_steps} steps of batch {config.batch_size}, losses {'+'.join(config.losses)}, "
          f"EfficientNet width x{config.width_coefficient} depth x{config.depth_coefficient}"
          f"{' (B0)' if config.width_coefficient == config.depth_coefficient == 1 else ''}")
    result = pretrain(
        config,
        data="synthetic",
        model_dir=model_dir,
        train_steps=train_steps,
        steps_per_epoch=max(1, math.ceil(train_steps / 4)),
        synthetic_clips=synthetic_clips,
    )
    print("[2/4] held-out pre-training losses, untrained vs trained")
    untrained = MSSSModel(config)
    untrained.compile(optimizer=build_optimizer(config))
    before = held_out_losses(untrained, config)
    after = held_out_losses(result.model, config)
    names = [n for n in ("loss", "clip_loss", "frame_loss", "pitch_loss", "clip_accuracy")
             if n in after]
    loss_rows = [(n, float(before[n]), float(after[n])) for n in names]
    print(format_table(loss_rows, ("metric", "untrained", "trained")))

    # Batch 32, not the paper's 1024: the built-in tasks have a few hundred clips, and at
    # batch 1024 an epoch is one optimiser step, so the probe would stop undertrained.
    settings = ProbeSettings(learning_rates=(1e-3,), max_epochs=probe_epochs, patience=10,
                             batch_size=32, seed=config.seed)
    task_names = [getattr(t, "name", t) for t in task_list]
    print(f"[3/4] probing {', '.join(task_names)} on this run's frozen encoder"
          f"{f' (read at {layer})' if layer != 'output' else ''}")
    trained_rows, exports, _ = run_probes(
        Embedder.from_model(result.model, layer=layer), task_list, settings,
        out_dir=os.path.join(model_dir, "probes"), export_dir=export_dir,
        encoder_name="msss_trained", progress=False, print_table=False)
    print("[4/4] the same probes on the reference encoders"
          + (" and the shipped pre-trained checkpoint" if checkpoint else ""))
    # The untrained references are the network of the encoder the table is about, before
    # training: the shipped checkpoint's seed when it is shown.
    reference_seed = checkpoint.config().seed if checkpoint else config.seed
    if reference_seed != config.seed:
        print(f"note: the untrained references are the shipped checkpoint's network before "
              f"training (seed {reference_seed}); this run starts from seed {config.seed}")
    if realistic:
        calibration = realistic_calibration(config, os.path.join(model_dir, "calibration_corpus"))
    else:
        calibration = sample_segments("synthetic", config, count=256,
                                      seed=config.seed + HELD_OUT_SEED_OFFSET,
                                      num_clips=synthetic_clips)
    # (key, column label, embedder factory)
    columns = [
        ("logmel_stats", "log-mel mean/std", lambda: LogMelStatsEmbedder(config)),
        # The like-for-like reference: batch-norm statistics estimated on the audio, as a
        # trained encoder's are; only the weights differ.
        ("random_init", "random init (BN calibrated)",
         lambda: Embedder.random_init(config, seed=reference_seed, layer=layer,
                                      calibration_audio=calibration)),
        # Batch norm at its initial statistics: every block shrinks its input and the
        # network is in effect a random linear map of the log-mel patch (embed.py).
        ("random_init_bn_at_init", "random init (BN at init)",
         lambda: Embedder.random_init(config, seed=reference_seed, layer=layer)),
    ]
    if not realistic:
        columns = columns[1:]  # the synthetic tasks are solved by the log-mel average
    if checkpoint:
        columns.append(("shipped", "shipped pre-trained", checkpoint.embedder))
    reference_rows = {}
    for key, _, make in columns:
        reference_rows[key], _, _ = run_probes(
            make(), task_list, settings, out_dir=os.path.join(model_dir, f"probes_{key}"),
            export_dir=None, encoder_name=key, progress=False, print_table=False)

    def test_values(rows):
        return {(r["task"], r["metric"]): float(r["value"]) for r in rows if r["split"] == "test"}

    # Columns: the references, this run, then the shipped checkpoint (the one the table is about).
    values = {key: test_values(reference_rows[key]) for key, _, _ in columns}
    values["trained"] = test_values(trained_rows)
    trained_label = "this run (MSSS pre-trained)" if checkpoint else "MSSS pre-trained"
    order = [(key, label) for key, label, _ in columns if key != "shipped"]
    order += [("trained", trained_label)]
    order += [(key, label) for key, label, _ in columns if key == "shipped"]
    headers = [label for _, label in order]
    table = [(task, metric, *(values[key][(task, metric)] for key, _ in order))
             for task, metric in values["trained"]]
    print("\nResults: linear probes on frozen embeddings, test split (higher is better)")
    print(format_table(table, ("task", "metric", *headers)))
    print(f"MSSS pre-trained: this run, {result.steps} steps on synthetic tones"
          + (f"; shipped pre-trained: {checkpoint.label} ({checkpoint.record['recipe']}, "
             f"msss_tf/checkpoints/{checkpoint.record['file']})" if checkpoint else "")
          + (f"; networks read at {layer}" if layer != "output" else ""))
    wins = win_counts(table, headers, len(task_names))
    for line in wins:
        print(line)
    print("(a task counts when its first metric is strictly higher"
          + ("; at the demo's few hundred steps on synthetic tones pre-training is not "
             "expected to lead: docs/results.md)" if not checkpoint else ")"))
    encoder_export = None
    if export_dir:
        from msss_tf.export import CLASSIFIER_TFLITE, TFLITE_DIR, export_encoder

        print("\nexporting the encoder (SavedModel for TF Serving + float32 TFLite) ...")
        encoder_export = export_encoder(result.model, os.path.join(export_dir, "msss_demo_encoder"),
                                        tflite=("float32",))
        print("Exported (all take waveform float32 [batch, samples] at 16 kHz):")
        print(f"  encoder SavedModel: {encoder_export['saved_model']}")
        for variant, path in encoder_export["tflite"].items():
            print(f"  encoder TFLite ({variant}, one 0.96 s window): {path}")
        for task, path in exports.items():
            print(f"  {task} probe SavedModel: {path}")
            classifier = os.path.join(path, TFLITE_DIR, CLASSIFIER_TFLITE)
            if os.path.exists(classifier):
                print(f"  {task} classifier TFLite (MediaPipe AudioClassifier): {classifier}")
    summary = {
        "tasks": task_names,
        "layer": layer,
        "shipped_checkpoint": checkpoint.record["name"] if checkpoint else None,
        "seed": config.seed,
        "reference_seed": reference_seed,
        "pretrain_losses": {"untrained": before, "trained": after},
        "probes": {"trained": trained_rows, **reference_rows},
        "table": {"headers": ["task", "metric", *headers], "rows": table},
        "wins": wins,
        "exports": {"probes": exports,
                    "encoder": encoder_export["saved_model"] if encoder_export else None},
        "train_steps": result.steps,
        "config": config.to_dict(),
    }
    write_json_atomically(os.path.join(model_dir, "demo_results.json"), summary)
    return summary


def win_counts(table, headers, num_tasks):
    """Lines "<pre-trained column> beats <reference column> on k of n tasks: ...".

    `table` rows are (task, metric, *values in `headers` order). A task counts when its
    first metric (the headline one: pitch_acc before chroma_acc) is strictly higher, so
    a tie, or a lead on a secondary metric alone, is not a win. Pre-trained columns are
    those whose header says "pre-trained"; every other column is a reference.
    """
    headline = {}
    for row in table:
        headline.setdefault(row[0], row)
    trained = [i for i, h in enumerate(headers) if "pre-trained" in h]
    lines = []
    for t in trained:
        for r, label in enumerate(headers):
            if r in trained:
                continue
            wins = sorted(task for task, row in headline.items() if row[2 + t] > row[2 + r])
            lines.append(f"{headers[t]} beats {label} on {len(wins)} of {num_tasks} tasks"
                         f"{': ' + ', '.join(wins) if wins else ''}")
    return lines
