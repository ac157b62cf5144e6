"""`msss-tf export`: the encoder as a TF Serving SavedModel and TFLite files."""

from __future__ import annotations

import json
import os

from absl import flags

from msss_tf.cli.common import UsageError, require

# The flags defined here belong to the caller, msss_tf.cli (one group in --help).
flags.disclaim_key_flags()


def define_export(fv):
    flags.DEFINE_string("model_dir", None, "Pre-trained encoder: a run directory (its model.keras "
                        "or latest checkpoint) or a .keras file.", flag_values=fv)
    flags.DEFINE_string("export_dir", None, "TF Serving base folder, e.g. saved_models/NAME; the "
                        "export goes to EXPORT_DIR/VERSION/ (SavedModel, assets/, tflite/, "
                        "export_summary.json).", flag_values=fv)
    flags.DEFINE_integer("version", None, "Version number (default: the next free one).",
                         flag_values=fv)
    flags.DEFINE_list("tflite", ["float32", "dynamic_int8", "int8"], "TFLite variants of the "
                      "0.96 s window model: float32, dynamic_int8 (int8 weights), int8 (full "
                      "integer encoder, float front end); empty for none.", flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing EXPORT_DIR/VERSION.",
                         flag_values=fv)


def run_export(fv):
    """Exports the encoder (SavedModel + TFLite) and prints the files and their sizes."""
    from msss_tf.export import export_encoder

    require(fv, "model_dir", "export_dir")
    try:
        result = export_encoder(fv.model_dir, fv.export_dir, version=fv.version,
                                tflite=[v for v in fv.tflite if v], overwrite=fv.overwrite)
    except FileExistsError as e:
        raise UsageError(str(e)) from e
    print(f"exported version {result['version']} to {result['export_dir']}")
    for name, size in result["sizes"].items():
        print(f"  {size / 1024:10.1f} KiB  {os.path.join(result['export_dir'], name)}")
    print(f"summary: {result['summary']}")
    with open(result["summary"]) as f:
        for line in tflite_parity_lines(json.load(f).get("tflite", {})):
            print(line)
    return 0


def tflite_parity_lines(variants: dict) -> list:
    """Lines on each TFLite file's fidelity to the Keras encoder (`export_summary.json`'s
    "tflite" entry), with a warning for any below 0.99 minimum cosine."""
    lines = []
    for variant, info in variants.items():
        parity = info.get("parity_vs_keras") or {}
        if "min_cosine" not in parity:
            continue
        cosine = parity["min_cosine"]
        lines.append(f"  TFLite {variant}: min cosine to the Keras encoder {cosine:.4f} over "
                     f"{parity.get('windows')} windows")
        if cosine < 0.99:
            lines.append(f"  WARNING: {variant} drifts from the float encoder (min cosine "
                         f"{cosine:.3f} < 0.99): check it on your task before shipping it, "
                         "or ship float32 / dynamic_int8")
    return lines
