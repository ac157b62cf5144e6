"""experiments/long_run.py: the long-run recipe end to end, at a toy size."""

import csv
import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

ROOT = REPO_ROOT


def long_run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-m", "experiments.long_run", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow  # two short fits and probes at three points: ~2 minutes on 2 cores
def test_train_resumes_and_the_curve_probes_each_checkpoint(tmp_path):
    from msss_tf.data import prepare_corpus, write_corpus_as_wav

    corpus = tmp_path / "corpus"
    write_corpus_as_wav(str(corpus / "audio"), num_clips=8, clip_seconds=2.0)
    prepare_corpus(str(corpus / "audio"), str(corpus / "shards"), progress=False)
    run = tmp_path / "run"
    small = ["--width_coefficient=0.25", "--depth_coefficient=0.25", "--batch_size=4",
             "--steps_per_epoch=1", f"--run_dir={run}", f"--corpus_dir={corpus}"]
    long_run("train", "--train_steps=1", "--keep_steps=1,2", *small)
    long_run("train", "--train_steps=2", "--keep_steps=1,2", *small)  # resumes: one more epoch
    assert sorted(os.listdir(run / "checkpoints")) == ["epoch-0001.keras", "epoch-0002.keras"]
    assert sorted(os.listdir(run / "kept")) == ["epoch-0001.keras", "epoch-0002.keras"]
    os.remove(run / "checkpoints" / "epoch-0001.keras")  # as the run's pruning would

    out = tmp_path / "curve" / "long_run"
    long_run("curve", f"--run_dirs={run}", "--curve_steps=0,1,2,50", "--tasks=synthetic_scene",
             "--probe_epochs=2", f"--out={out}")
    rows = list(csv.DictReader(open(f"{out}.csv")))
    kinds = {(r["kind"], int(r["step"])) for r in rows}
    assert kinds == {("random init (BN calibrated)", 0), ("random init (BN at init)", 0),
                     ("log-mel mean/std", 0), ("pre-trained", 1), ("pre-trained", 2)}
    assert all(0.0 <= float(r["value"]) <= 1.0 for r in rows)
    assert os.path.getsize(f"{out}.png") > 1000
    table = open(f"{out}.md").read()
    assert "clip+frame+pitch seed 0 | 2 |" in table
    # A second call reuses every probe result (nothing retrained) and gives the same rows.
    long_run("curve", f"--run_dirs={run}", "--curve_steps=0,1,2", "--tasks=synthetic_scene",
             "--probe_epochs=2", f"--out={out}")
    assert list(csv.DictReader(open(f"{out}.csv"))) == rows

    # Which layer: the encoder read at stage 3, untrained (both forms) and at step 2.
    layers = tmp_path / "curve" / "layers"
    long_run("layers", f"--run_dirs={run}", "--curve_steps=0,2", "--layers=stage3",
             "--tasks=synthetic_scene", "--probe_epochs=2", f"--out={layers}")
    rows = list(csv.DictReader(open(f"{layers}.csv")))
    assert {(r["kind"], int(r["step"]), r["layer"]) for r in rows} == {
        ("random init (BN calibrated)", 0, "stage3"), ("random init (BN at init)", 0, "stage3"),
        ("pre-trained", 2, "stage3")}
    assert "| clip+frame+pitch seed 0 | 2 | stage3 |" in open(f"{layers}.md").read()

    # Another seed's run brings its own untrained encoder (the seed sets the init).
    import json
    import shutil

    other = tmp_path / "run-seed1"
    shutil.copytree(run, other)
    config = json.loads((other / "msss_config.json").read_text())
    (other / "msss_config.json").write_text(json.dumps({**config, "seed": 1}))
    long_run("layers", f"--run_dirs={run},{other}", "--curve_steps=0", "--layers=stage3",
             "--tasks=synthetic_scene", "--probe_epochs=2", f"--out={layers}-seeds")
    rows = list(csv.DictReader(open(f"{layers}-seeds.csv")))
    assert {(r["kind"], r["seed"]) for r in rows} == {
        (kind, seed) for kind in ("random init (BN calibrated)", "random init (BN at init)")
        for seed in ("0", "1")}


def test_diagnose_reports_shortcuts_and_collapse():
    import numpy as np

    from experiments.diagnose import diagnose, effective_rank
    from msss_tf.config import MSSSConfig
    from msss_tf.model.msss_model import MSSSModel

    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4,
                        pitch_target="semitones")
    model = MSSSModel(config)
    rng = np.random.default_rng(0)
    anchor = (0.1 * rng.standard_normal((8, config.segment_samples))).astype(np.float32)
    positive = (0.1 * rng.standard_normal((8, config.segment_samples))).astype(np.float32)
    out = diagnose(model, anchor, positive, batch=4)
    for key in ("clip_loss_bn_inference", "clip_accuracy_bn_training", "frame_loss_true_pairs",
                "frame_loss_mismatched", "pitch_loss_true_pairs", "pitch_loss_mismatched",
                "pitch_loss_predict_mean", "embedding_effective_rank"):
        assert np.isfinite(out[key]), key
    assert out["frame_loss_chance"] == np.log(3)  # three 320 ms frames in a 0.96 s window
    assert 1.0 <= out["embedding_effective_rank"] <= 8
    # The effective rank counts directions: 3 equal ones give 3, one alone gives 1.
    basis = np.repeat(np.eye(3), 10, axis=0) * np.array([1, -1] * 15)[:, None]
    assert abs(effective_rank(basis) - 3) < 1e-9
    assert abs(effective_rank(np.outer(np.arange(10.0), np.ones(4))) - 1) < 1e-6


def test_summary_table_gives_mean_and_std_over_seeds():
    sys.path.insert(0, ROOT)
    from experiments.curve_tables import summary_table

    def row(kind, recipe, seed, step, value, task="realistic_keywords", metric="top1_acc"):
        return {"run": f"{recipe} seed {seed}", "recipe": recipe, "seed": seed, "kind": kind,
                "step": step, "task": task, "metric": metric, "value": value}

    rows = [row("pre-trained", "clip", 0, 2000, 0.2), row("pre-trained", "clip", 1, 2000, 0.4),
            row("pre-trained", "clip", 2, 2000, 0.3),
            row("pre-trained", "clip+frame+pitch", 0, 2000, 0.5),
            row("random init (BN at init)", "clip", 0, 0, 0.25),
            row("random init (BN at init)", "clip", 1, 0, 0.35)]
    table = summary_table(rows)
    assert "| clip | 2000 | 3 | 0.300 ± 0.100 |" in table
    assert "| clip+frame+pitch | 2000 | 1 | 0.500 |" in table
    assert "| random init (BN at init) | 0 | 2 | 0.300 ± 0.071 |" in table
    assert "paper: all three (proposed) (AudioSet; its tasks) | 4624 x 1024 | 1 | 0.572 |" in table
    lines = table.splitlines()
    assert lines.index(next(l for l in lines if l.startswith("| clip |"))) < lines.index(
        next(l for l in lines if l.startswith("| random init")))  # pre-trained rows first


def test_layer_rows_of_old_and_new_csvs_at_one_layer(tmp_path):
    sys.path.insert(0, ROOT)
    from experiments.curve_tables import read_layer_rows, summary_table

    old = tmp_path / "old.csv"  # no recipe/seed columns, layers by their body name
    old.write_text("run,kind,step,layer,task,metric,value\n"
                   "clip seed 0,pre-trained,2000,block3a_project_bn,realistic_keywords,top1_acc,0.5\n"
                   "clip seed 0,pre-trained,2000,block4b_add,realistic_keywords,top1_acc,0.9\n"
                   "clip seed 1,pre-trained,2000,block3a_project_bn,realistic_keywords,top1_acc,0.1\n")
    new = tmp_path / "new.csv"  # measures seed 1 again: the later file wins
    new.write_text("run,recipe,seed,kind,step,layer,task,metric,value\n"
                   "clip seed 1,clip,1,pre-trained,2000,stage3,realistic_keywords,top1_acc,0.3\n"
                   "clip seed 1,clip,1,random init (BN at init),0,stage3,realistic_keywords,"
                   "top1_acc,0.2\n")
    rows = read_layer_rows([str(old), str(new)], "stage3", {"block3a_project_bn": "stage3"})
    assert sorted((r["kind"], r["seed"], r["value"]) for r in rows) == [
        ("pre-trained", 0, 0.5), ("pre-trained", 1, 0.3), ("random init (BN at init)", 1, 0.2)]
    assert all(r["recipe"] == "clip" and r["layer"] == "stage3" for r in rows)
    assert "| clip | 2000 | 2 | 0.400 ± 0.141 |" in summary_table(rows)


def test_layers_summary_takes_the_log_mel_rows_of_a_curve_csv_and_plots(tmp_path):
    sys.path.insert(0, ROOT)
    from experiments.curve_tables import read_layer_rows, write_layers_summary

    layers = tmp_path / "layers.csv"
    layers.write_text(
        "run,recipe,seed,kind,step,layer,task,metric,value\n"
        "clip seed 0,clip,0,pre-trained,2000,stage3,realistic_keywords,top1_acc,0.5\n"
        "clip seed 1,clip,1,pre-trained,2000,stage3,realistic_keywords,top1_acc,0.7\n"
        "clip seed 0,clip,0,pre-trained,4000,stage3,realistic_keywords,top1_acc,0.6\n"
        "clip seed 0,clip,0,random init (BN at init),0,stage3,realistic_keywords,top1_acc,0.3\n")
    curve = tmp_path / "long_run.csv"  # a `curve` CSV: no layer column
    curve.write_text(
        "run,recipe,seed,kind,step,task,metric,value\n"
        "clip seed 0,clip,0,log-mel mean/std,0,realistic_keywords,top1_acc,0.45\n"
        "clip seed 0,clip,0,pre-trained,2000,realistic_keywords,top1_acc,0.1\n")
    rows = read_layer_rows([str(layers), str(curve)], "stage3")
    assert sorted((r["kind"], r["step"], r["value"]) for r in rows) == [
        ("log-mel mean/std", 0, 0.45), ("pre-trained", 2000, 0.5), ("pre-trained", 2000, 0.7),
        ("pre-trained", 4000, 0.6), ("random init (BN at init)", 0, 0.3)]
    out = write_layers_summary(rows, str(tmp_path / "docs" / "summary"), "stage3")
    table = (tmp_path / "docs" / "summary.md").read_text()
    assert table.startswith("Read at stage3")
    assert "| clip | 2000 | 2 | 0.600 ± 0.141 |" in table
    assert "| log-mel mean/std | 0 | 1 | 0.450 |" in table
    assert (tmp_path / "docs" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert out == str(tmp_path / "docs" / "summary")


def test_layers_summary_inputs_expand_globs_in_natural_order(tmp_path):
    for name in ("layers10.csv", "layers2.csv", "layers9.csv"):
        (tmp_path / name).write_text("")
    sys.path.insert(0, ROOT)
    from experiments.curve_tables import expand_inputs

    assert [os.path.basename(p) for p in expand_inputs([str(tmp_path / "layers*.csv"),
                                                        "other.csv"])] == [
        "layers2.csv", "layers9.csv", "layers10.csv", "other.csv"]
    with pytest.raises(ValueError, match="matches no file"):
        expand_inputs([str(tmp_path / "nothing*.csv")])


def test_run_labels_name_every_departure_from_the_loss_defaults():
    """Two recipes never share a label (`layers_summary` averages the rows of one label as
    seeds of one recipe)."""
    from experiments.curve_tables import run_label
    from msss_tf.config import MSSSConfig

    assert run_label(MSSSConfig(losses=("clip",), seed=2)) == ("clip seed 2", "clip")
    batch = MSSSConfig(frame_negatives="batch")
    assert run_label(batch)[1] == "clip+frame+pitch (frame negatives: batch)"
    labels = {run_label(batch.replace(**change))[1] for change in (
        {}, {"lambda_pitch": 0.1}, {"lambda_frame": 0.5},
        {"pitch_ratio_min": 0.985, "pitch_ratio_max": 1.015})}
    assert labels == {"clip+frame+pitch (frame negatives: batch)",
                      "clip+frame+pitch (frame negatives: batch, lambda_pitch 0.1)",
                      "clip+frame+pitch (frame negatives: batch, lambda_frame 0.5)",
                      "clip+frame+pitch (frame negatives: batch, pitch shift 0.985-1.015)"}
    # Settings of a loss that is off do not count.
    assert run_label(MSSSConfig(losses=("clip",), lambda_pitch=0.1))[1] == "clip"
    # A front end other than the paper's is another recipe.
    hires = MSSSConfig(losses=("clip",), n_mels=128, stft_window=1024, fft_length=1024)
    assert run_label(hires)[1] == "clip (128 bands, 64 ms window)"


def test_checkpoint_at_step_prefers_kept_milestones_and_refuses_off_epoch_steps(tmp_path):
    from experiments.curve_tables import checkpoint_at_step

    for sub in ("kept", "checkpoints"):
        (tmp_path / sub).mkdir()
    (tmp_path / "checkpoints" / "epoch-0004.keras").write_bytes(b"x")
    (tmp_path / "kept" / "epoch-0008.keras").write_bytes(b"x")
    (tmp_path / "checkpoints" / "epoch-0008.keras").write_bytes(b"x")
    assert checkpoint_at_step(str(tmp_path), 1000, 250) == str(
        tmp_path / "checkpoints" / "epoch-0004.keras")
    assert checkpoint_at_step(str(tmp_path), 2000, 250) == str(tmp_path / "kept" / "epoch-0008.keras")
    assert checkpoint_at_step(str(tmp_path), 500, 250) is None
    with pytest.raises(ValueError, match="not a multiple of the run's 250 steps"):
        checkpoint_at_step(str(tmp_path), 300, 250)
