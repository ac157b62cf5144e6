"""The one model-path resolver: which kind of model a path holds, and its embedder.

A model path is one of (told apart by their files, never by guessing):

* a run directory (`msss_tf.rundir`: model.keras, checkpoints/ or msss_config.json) or
  a `.keras` file: kind "keras", the Keras `Embedder` (the run's newest whole model);
* an exported encoder SavedModel: a version folder holding saved_model.pb, or its TF
  Serving base folder (numbered versions; the newest is used): kind "saved_model",
  `SavedModelEncoder`;
* a window `.tflite` from the export: kind "tflite", `TFLiteEmbedder`.

`resolve_model` says which; `load_embedder` loads it. `msss_tf.hear`, `msss-tf embed`,
`Embedder.from_path`, `load_msss_model` and `load_encoder` all resolve paths here. Errors
are FileNotFoundError / ValueError naming the path. Pure `os` code until a model loads.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

from msss_tf.rundir import is_run_dir, latest_checkpoint

MODEL_KINDS = ("keras", "saved_model", "tflite")
SAVED_MODEL_FILE = "saved_model.pb"


def saved_model_version(path: str) -> Optional[str]:
    """`path` if it holds saved_model.pb, else its newest numbered version folder that
    holds one (a TF Serving base folder), else None."""
    if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    if not os.path.isdir(path):
        return None
    versions = [d for d in os.listdir(path)
                if d.isdigit() and os.path.isfile(os.path.join(path, d, SAVED_MODEL_FILE))]
    return os.path.join(path, max(versions, key=int)) if versions else None


def resolve_model(path: str) -> Tuple[str, str]:
    """Which kind of model `path` holds: ("keras" | "saved_model" | "tflite", the path
    to load: the path itself, or a base folder's newest version)."""
    if not path:
        raise ValueError(
            "load_model needs model_file_path: a run directory, a .keras file, an exported "
            "encoder SavedModel folder or a .tflite file (msss-tf ships no default weights)")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file or directory: {path}")
    if os.path.isfile(path):
        if path.endswith(".keras"):
            return "keras", path
        if path.endswith(".tflite"):
            return "tflite", path
        raise ValueError(f"{path}: not a model this loader knows (expected a .keras or "
                         f".tflite file, a run directory or an exported SavedModel folder)")
    version = saved_model_version(path)
    if version is not None:
        return "saved_model", version
    if is_run_dir(path):
        return "keras", path
    raise ValueError(
        f"{path}: neither a run directory (model.keras, checkpoints/, msss_config.json) nor "
        f"an exported encoder SavedModel (saved_model.pb, or numbered version folders)")


def keras_model_file(path: str) -> str:
    """The `.keras` file to load for `path`: the file itself, or a run directory's newest
    whole model (`latest_checkpoint`)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise FileNotFoundError(
                f"{path}: no model.keras or checkpoints/*.keras in this run directory")
        return checkpoint
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file or run directory: {path}")
    return path


def load_embedder(path: str):
    """The embedder for any model path (see `resolve_model`): an `Embedder`, a
    `SavedModelEncoder` or a `TFLiteEmbedder`, each an `AudioEmbedder`."""
    kind, path = resolve_model(path)
    if kind == "keras":
        from msss_tf.embedding.keras_embedder import Embedder

        return Embedder.from_path(path)
    if kind == "saved_model":
        from msss_tf.embedding.saved_model import SavedModelEncoder

        return SavedModelEncoder(path)
    from msss_tf.embedding.tflite import TFLiteEmbedder

    return TFLiteEmbedder(path)
