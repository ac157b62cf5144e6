"""The pre-trained encoder that ships with the package (`msss_tf/checkpoints/`).

A small checkpoint produced by the long-run recipe (`experiments/long_run.py`) on the
realistic corpus, so that a user sees a pre-trained encoder at work without hours of
training: the demo probes it beside its own minutes-long run. Each checkpoint is a
`.keras` file (an `MSSSModel`, no optimizer state) and a JSON record beside it with its
recipe, corpus, code commit, how it was chosen, its probe scores and the file's SHA-256.

    from msss_tf.embedding import shipped_checkpoint

    checkpoint = shipped_checkpoint()            # the default one
    embedder = checkpoint.embedder()             # read at its recommended layer
    embeddings = embedder.scene_embeddings(audio)  # float32 [n, D]

`experiments/ship_checkpoint.py` writes a new one from a long run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional

from msss_tf.atomic import file_sha256

CHECKPOINT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "checkpoints")
DEFAULT_CHECKPOINT = "cola_realistic_x05"
RECORD_FORMAT = "msss_tf shipped checkpoint"

# What must match for the shipped encoder and a freshly built one to be the same network:
# the untrained references of a comparison are built from these.
ARCHITECTURE_FIELDS = ("sample_rate", "stft_window", "stft_hop", "fft_length", "n_mels",
                       "mel_fmin", "mel_fmax", "spectrum_power", "log_compress", "log_offset",
                       "segment_frames", "width_coefficient", "depth_coefficient",
                       "frequency_pooling", "input_normalization")


class ShippedCheckpointError(ValueError):
    """A shipped checkpoint is missing, unreadable or does not match its record."""


@dataclasses.dataclass(frozen=True)
class ShippedCheckpoint:
    """One shipped checkpoint: its `.keras` path and its record (`record`, a dict).

    Record fields used here: `file`, `sha256`, `embedding_layer` (where its probes read
    it, e.g. "stage3"), `label` (a short description for tables), `config` (the
    `MSSSConfig` dict it was trained with).
    """

    name: str
    path: str
    record: Dict

    @property
    def layer(self) -> str:
        return self.record["embedding_layer"]

    @property
    def label(self) -> str:
        return self.record["label"]

    def config(self):
        from msss_tf.config import MSSSConfig

        return MSSSConfig.from_dict(self.record["config"])

    def same_architecture(self, config) -> List[str]:
        """The `ARCHITECTURE_FIELDS` on which `config` differs from this checkpoint's."""
        mine = self.record["config"]
        theirs = config.to_dict()
        return [f for f in ARCHITECTURE_FIELDS if mine.get(f) != theirs.get(f)]

    def load_model(self):
        """The `MSSSModel`, after checking the file against the record's SHA-256."""
        from msss_tf.embedding.keras_model import load_msss_model

        actual = file_sha256(self.path)
        if actual != self.record["sha256"]:
            raise ShippedCheckpointError(
                f"{self.path}: the shipped checkpoint {self.name!r} is damaged: its SHA-256 "
                f"is {actual}, its record says {self.record['sha256']}; reinstall msss-tf "
                f"(or `git checkout -- {os.path.relpath(self.path)}` in a clone)")
        return load_msss_model(self.path)

    def embedder(self, layer: Optional[str] = None, **kwargs):
        """An `Embedder` of the checkpoint, read at `layer` (default: its record's)."""
        from msss_tf.embedding.keras_embedder import Embedder

        return Embedder.from_model(self.load_model(), layer=layer or self.layer, **kwargs)


def shipped_checkpoint_names() -> List[str]:
    """Names of the checkpoints in `CHECKPOINT_DIR` (each a `NAME.json` record)."""
    if not os.path.isdir(CHECKPOINT_DIR):
        return []
    return sorted(f[:-5] for f in os.listdir(CHECKPOINT_DIR) if f.endswith(".json"))


def shipped_checkpoint(name: str = DEFAULT_CHECKPOINT) -> ShippedCheckpoint:
    """The shipped checkpoint `name` (see `shipped_checkpoint_names`).

    Raises:
      ShippedCheckpointError: no such checkpoint, or its record or file is missing or
        malformed (the message names the file).
    """
    record_path = os.path.join(CHECKPOINT_DIR, f"{name}.json")
    if not os.path.isfile(record_path):
        raise ShippedCheckpointError(
            f"no shipped checkpoint {name!r}: {record_path} does not exist (shipped: "
            f"{', '.join(shipped_checkpoint_names()) or 'none'}); an install without the "
            f"package data lacks them: reinstall msss-tf")
    try:
        with open(record_path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ShippedCheckpointError(f"{record_path}: unreadable record ({e})") from e
    missing = [k for k in ("format", "file", "sha256", "embedding_layer", "label", "config")
               if k not in record]
    if missing or record.get("format") != RECORD_FORMAT:
        raise ShippedCheckpointError(
            f"{record_path}: not a shipped-checkpoint record (format "
            f"{record.get('format')!r}, missing fields: {', '.join(missing) or 'none'})")
    path = os.path.join(CHECKPOINT_DIR, record["file"])
    if not os.path.isfile(path):
        raise ShippedCheckpointError(
            f"{path}: the shipped checkpoint {name!r} named by {record_path} is missing; "
            f"reinstall msss-tf")
    return ShippedCheckpoint(name=name, path=path, record=record)
