"""The main job on built-in offline data: pre-train -> probe -> export, with a table.

1. pre-trains on the built-in synthetic corpus;
2. scores held-out pre-training losses, untrained vs trained;
3. probes the three built-in tasks (scene, pitch, events) on the frozen trained encoder
   and, as reference rows, on the same encoder randomly initialised: with its batch-norm
   statistics estimated on the corpus (like for like with the trained encoder), and with
   batch norm at its initial statistics (in effect a random linear map of the log-mel);
4. exports the trained probes as SavedModels (waveform in, probabilities out) and the
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
DEMO_TASKS = ("synthetic_scene", "synthetic_pitch", "synthetic_events")


def held_out_losses(model: MSSSModel, config: MSSSConfig, steps: int = 8) -> dict:
    """Mean losses of `model` on held-out synthetic clips (the same segments for any model)."""
    held_out = config.replace(seed=config.seed + HELD_OUT_SEED_OFFSET)
    dataset = pretrain_dataset("synthetic", held_out, num_clips=min(256, steps * config.batch_size))
    return model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)


def run_demo(config: MSSSConfig, model_dir: str, train_steps: int = 120, synthetic_clips=256,
             export_dir: str = "saved_models", probe_epochs: int = 100):
    from msss_tf.embedding import Embedder
    from msss_tf.evaluation.probe import ProbeSettings, run_probes
    from msss_tf.packages import require_modules

    # Before minutes of pre-training: the events probe and the TFLite export need these.
    require_modules(("sed_eval", "dcase_util") + (("ai_edge_litert",) if export_dir else ()),
                    "msss-tf demo")

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
    print("[3/4] probing the built-in tasks on the frozen trained encoder")
    trained_rows, exports, _ = run_probes(
        Embedder.from_model(result.model), DEMO_TASKS, settings,
        out_dir=os.path.join(model_dir, "probes"), export_dir=export_dir,
        encoder_name="msss_trained", progress=False, print_table=False)
    print("[4/4] the same probes on the same encoder randomly initialised (reference rows)")
    calibration = sample_segments("synthetic", config, count=256,
                                  seed=config.seed + HELD_OUT_SEED_OFFSET,
                                  num_clips=synthetic_clips)
    references = {
        # The like-for-like reference: batch-norm statistics estimated on the corpus, as a
        # trained encoder's are; only the weights differ.
        "random_init": Embedder.random_init(config, seed=config.seed,
                                            calibration_audio=calibration),
        # Batch norm at its initial statistics: every block shrinks its input and the
        # network is in effect a random linear map of the log-mel patch (embed.py).
        "random_init_bn_at_init": Embedder.random_init(config, seed=config.seed),
    }
    reference_rows = {}
    for name, embedder in references.items():
        reference_rows[name], _, _ = run_probes(
            embedder, DEMO_TASKS, settings, out_dir=os.path.join(model_dir, f"probes_{name}"),
            export_dir=None, encoder_name=name, progress=False, print_table=False)

    def test_values(rows):
        return {(r["task"], r["metric"]): float(r["value"]) for r in rows if r["split"] == "test"}

    columns = [test_values(reference_rows[name]) for name in references]
    trained = test_values(trained_rows)
    table = [(task, metric, *(c[(task, metric)] for c in columns), value)
             for (task, metric), value in trained.items()]
    print("\nResults: linear probes on frozen embeddings, test split (higher is better)")
    print(format_table(table, ("task", "metric", "random init (BN calibrated)",
                               "random init (BN at init)", "MSSS pre-trained")))
    # Against each reference: the like-for-like one (BN calibrated) and the stronger one
    # on these tasks (BN at init, in effect a random linear map of the log-mel patch).
    for i, label in enumerate(("random init (BN calibrated)", "random init (BN at init)")):
        wins = sorted({row[0] for row in table if row[-1] > row[2 + i]})
        print(f"MSSS pre-trained beats {label} on {len(wins)} of {len(DEMO_TASKS)} tasks"
              f"{': ' + ', '.join(wins) if wins else ''}")
    print("(a task counts when any of its metrics is higher; at the demo's few hundred "
          "steps on synthetic tones pre-training is not expected to lead: docs/results.md)")
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
        "pretrain_losses": {"untrained": before, "trained": after},
        "probes": {"trained": trained_rows, **reference_rows},
        "exports": {"probes": exports,
                    "encoder": encoder_export["saved_model"] if encoder_export else None},
        "train_steps": result.steps,
        "config": config.to_dict(),
    }
    write_json_atomically(os.path.join(model_dir, "demo_results.json"), summary)
    return summary
