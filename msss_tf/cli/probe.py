"""`msss-tf probe`: linear / MLP probes on a frozen encoder (`msss_tf.evaluation.probe`)."""

from __future__ import annotations

import os

from absl import flags

from msss_tf.cli.common import UsageError, require
from msss_tf.config import EMBEDDING_LAYERS

# The flags defined here belong to the caller, msss_tf.cli (one group in --help).
flags.disclaim_key_flags()


def define_probe(fv):
    flags.DEFINE_string("model_dir", None, "Pre-trained encoder: a run directory (its model.keras "
                        "or latest checkpoint) or a .keras file.", flag_values=fv)
    flags.DEFINE_list("task", None, "Task(s): speech_commands, nsynth_pitch, dcase2016_task2, "
                      "synthetic_scene, synthetic_pitch, synthetic_events, or the path of a "
                      "folder in the HEAR 2021 task layout; comma-separated for several.",
                      flag_values=fv)
    flags.DEFINE_enum("probe", "linear", ["linear", "mlp"], "linear: one Dense layer after "
                      "dropout 0.1 (the paper); mlp: hidden layers of 1024 (HEAR's kit).",
                      flag_values=fv)
    flags.DEFINE_integer("hidden_layers", 1, "Hidden layers of the mlp probe (1 or 2).",
                         flag_values=fv)
    flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir holding pre-downloaded "
                        "speech_commands / nsynth, or the folder holding the HEAR "
                        "dcase2016_task2-hear2021-full folder. Nothing is downloaded.",
                        flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where results.json, results.csv and the embedding "
                        "cache go.", flag_values=fv)
    flags.DEFINE_string("export_dir", "saved_models", "Base folder of the probe SavedModels "
                        "(TF Serving layout NAME/VERSION; a scene probe's version also holds "
                        "tflite/classifier_float32.tflite for MediaPipe); empty: no export.", flag_values=fv)
    flags.DEFINE_list("learning_rates", ["1e-3", "1e-4"], "Learning-rate grid, chosen on the "
                      "validation split.", flag_values=fv)
    flags.DEFINE_integer("max_epochs", 250, "Most probe epochs (early stopping on validation).",
                         flag_values=fv)
    flags.DEFINE_integer("patience", 20, "Early-stopping patience in epochs.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the probe initialisation.", flag_values=fv)
    flags.DEFINE_enum("embedding_layer", "output", list(EMBEDDING_LAYERS), "Where to read "
                      "the frozen encoder's embeddings: output (the encoder's, the paper's) "
                      "or an EfficientNet stage (stage1..stage7, top; frequency flattened).",
                      flag_values=fv)


def run_probe(fv):
    from msss_tf.evaluation.probe import ProbeSettings, run_probes

    require(fv, "model_dir", "task", "out_dir")
    try:
        learning_rates = tuple(float(v) for v in fv.learning_rates)
    except ValueError as e:
        raise UsageError(f"--learning_rates: {e}") from e
    settings = ProbeSettings(
        probe=fv.probe, hidden_layers=fv.hidden_layers, learning_rates=learning_rates,
        max_epochs=fv.max_epochs, patience=fv.patience, seed=fv.seed,
    )
    model, name = fv.model_dir, None
    if fv.embedding_layer != "output":
        from msss_tf.embedding import Embedder

        model = Embedder.from_path(fv.model_dir, layer=fv.embedding_layer)
        name = f"{os.path.basename(os.path.normpath(fv.model_dir))}@{fv.embedding_layer}"
    run_probes(model, fv.task, settings, out_dir=fv.out_dir, data_dir=fv.data_dir,
               export_dir=fv.export_dir or None, encoder_name=name)
    return 0
