"""The pre-trained checkpoint shipped in msss_tf/checkpoints/ and its record."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from msss_tf.demo import demo_config
from msss_tf.embedding import shipped
from msss_tf.atomic import file_sha256
from msss_tf.embedding.shipped import (ShippedCheckpointError, shipped_checkpoint,
                                       shipped_checkpoint_names)


def test_the_default_checkpoint_is_shipped_with_a_complete_record():
    checkpoint = shipped_checkpoint()
    record = checkpoint.record
    assert checkpoint.name in shipped_checkpoint_names()
    assert file_sha256(checkpoint.path) == record["sha256"]
    assert os.path.getsize(checkpoint.path) < 8e6  # "a few MB"
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    assert record["corpus"]["seed"] == 0 and record["corpus"]["command"]
    assert record["train_steps"] > 0 and record["training_command"]
    # The choice followed the recorded rule (experiments/ship_checkpoint.py), recomputed
    # here from the validation scores alone, whatever the test scores.
    firsts = ["realistic_keywords/top1_acc", "realistic_pitch/pitch_acc",
              "realistic_events/event_onset_fscore"]
    for candidate in record["candidates"]:
        valid = candidate["scores"]["valid"]
        assert candidate["valid_mean"] == pytest.approx(
            np.mean([valid[k] for k in firsts]), abs=1e-6)
        if record.get("selection_rule", "valid_mean") == "margin":
            # Smallest margin over the run's own untrained encoder, both forms, every task.
            references = candidate["references"]
            assert set(references) == {"random_init_bn_at_init", "random_init_bn_calibrated"}
            margin = min(valid[k] - ref["valid"][k] for ref in references.values()
                         for k in firsts)
            assert candidate["valid_margin"] == pytest.approx(margin, abs=1e-6)
    key = {"margin": "valid_margin", "valid_mean": "valid_mean"}[
        record.get("selection_rule", "valid_mean")]
    assert record["chosen"] == max(record["candidates"], key=lambda c: c[key])["run"]


def test_the_checkpoint_is_the_demo_network_and_embeds_at_its_layer():
    checkpoint = shipped_checkpoint()
    # The demo's untrained references are built from its own config: the same network.
    assert checkpoint.same_architecture(demo_config()) == []
    assert checkpoint.same_architecture(demo_config(width_coefficient=1.0)) == [
        "width_coefficient"]
    embedder = checkpoint.embedder()  # loads the model after checking its SHA-256
    assert embedder.config.to_dict() == checkpoint.config().to_dict()
    audio = 0.1 * np.random.default_rng(0).standard_normal((2, 16000)).astype("float32")
    embeddings = embedder.scene_embeddings(audio)
    assert embeddings.shape[0] == 2 and embeddings.shape[1] > 0
    assert np.isfinite(embeddings).all() and embeddings.std() > 0


def _copy_checkpoints(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    shutil.copytree(shipped.CHECKPOINT_DIR, folder)
    monkeypatch.setattr(shipped, "CHECKPOINT_DIR", str(folder))
    return folder


def test_a_damaged_checkpoint_is_refused_naming_the_file(tmp_path, monkeypatch):
    folder = _copy_checkpoints(tmp_path, monkeypatch)
    checkpoint = shipped_checkpoint()
    with open(checkpoint.path, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    with pytest.raises(ShippedCheckpointError, match=re.escape(str(folder))):
        checkpoint.load_model()


def test_missing_or_malformed_records_say_which_file(tmp_path, monkeypatch):
    folder = _copy_checkpoints(tmp_path, monkeypatch)
    name = shipped.DEFAULT_CHECKPOINT
    with pytest.raises(ShippedCheckpointError, match=f"no shipped checkpoint 'nope'.*{name}"):
        shipped_checkpoint("nope")
    record = json.loads((folder / f"{name}.json").read_text())
    del record["sha256"]
    (folder / f"{name}.json").write_text(json.dumps(record))
    with pytest.raises(ShippedCheckpointError, match="missing fields: sha256"):
        shipped_checkpoint(name)
    record["sha256"] = "0"
    (folder / f"{name}.json").write_text(json.dumps(record))
    os.remove(folder / record["file"])
    with pytest.raises(ShippedCheckpointError, match=re.escape(record["file"])):
        shipped_checkpoint(name)
