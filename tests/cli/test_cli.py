"""The `msss-tf` command end to end: flags, errors, pretrain + resume, audio folders."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from msss_tf import cli

SMALL_FLAGS = ["--width_coefficient=0.25", "--depth_coefficient=0.25", "--batch_size=4"]


def run_cli(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "msss_tf.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def test_help_lists_subcommands_and_explains_flags(capsys):
    assert cli.main(["msss-tf", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("prepare", "pretrain", "demo"):
        assert name in out
    assert cli.main(["msss-tf", "pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--model_dir", "--train_steps", "--losses", "--similarity",
                 "--learning_rate", "--seed", "--batch_size", "--set"):
        assert flag in out
    assert "COLA" in out  # the flags say what they mean, not only their names


@pytest.mark.parametrize(
    "args, expected",
    [
        (["pretrain", "--model_dir=never/written", "--similarity=dot"], "--similarity"),
        (["pretrain", "--model_dir=never/written", "--losses=clip,bogus"], "MSSSConfig.losses"),
        (["pretrain", "--model_dir=never/written", "--batch_size=1"], "MSSSConfig.batch_size"),
        (["pretrain", "--model_dir=never/written", "--set=bogus=1"], "unknown field"),
        (["pretrain", "--model_dir=never/written", "--train_steps=abc"], "--train_steps"),
        (["pretrain"], "--model_dir"),
        (["prepare", "--audio_dir=/nonexistent/audio", "--out_dir=never/written"], "/nonexistent/audio"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_input_stops_with_a_message_naming_it(args, expected, capsys, tmp_path):
    assert cli.main(["msss-tf", *args]) == 2
    captured = capsys.readouterr()
    assert expected in captured.err + captured.out


def test_pretrain_with_missing_data_names_the_path(tmp_path, capsys):
    missing = str(tmp_path / "no_such_folder")
    code = cli.main(["msss-tf", "pretrain", f"--data={missing}",
                     f"--model_dir={tmp_path / 'run'}", *SMALL_FLAGS])
    assert code == 2
    assert missing in capsys.readouterr().err


def _scalar_tags(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for root, _, files in os.walk(log_dir):
        if any("tfevents" in f for f in files):
            acc = EventAccumulator(root)
            acc.Reload()
            tags.update(acc.Tags().get("tensors", []))
            tags.update(acc.Tags().get("scalars", []))
    return tags


@pytest.mark.slow  # an end-to-end fit: the default run stays under 6 minutes
def test_pretrain_writes_run_and_resumes(tmp_path):
    model_dir = tmp_path / "run"
    args = ["pretrain", "--data=synthetic", f"--model_dir={model_dir}", "--train_steps=4",
            "--steps_per_epoch=2", "--synthetic_clips=16", "--log_every=1", *SMALL_FLAGS]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "final metrics" in first.stdout
    for name in ("msss_config.json", "model.keras", "summary.json", "skipped.json"):
        assert (model_dir / name).exists(), name
    assert sorted(os.listdir(model_dir / "checkpoints")) == ["epoch-0001.keras", "epoch-0002.keras"]
    config = json.loads((model_dir / "msss_config.json").read_text())
    assert config["batch_size"] == 4 and config["width_coefficient"] == 0.25
    tags = _scalar_tags(model_dir / "logs")
    for loss in ("clip_loss", "frame_loss", "pitch_loss"):
        assert f"epoch_{loss}" in tags, tags

    # The same command with a larger budget continues from epoch 2, not from scratch.
    again = run_cli(*[a if not a.startswith("--train_steps") else "--train_steps=6" for a in args])
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["resumed_from_epoch"] == 2
    assert summary["steps_this_run"] == 2 and summary["train_steps"] == 6
    import keras

    import msss_tf.model.msss_model  # noqa: F401 (registers MSSSModel for load_model)

    model = keras.models.load_model(model_dir / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 6
    assert "trained 2 step(s) in 1 epoch(s) this run, 6 steps in all" in again.stdout

    # A different configuration on the same run directory is refused, naming the field.
    clash = run_cli(*args, "--losses=clip")
    assert clash.returncode == 2
    assert "losses" in clash.stderr and str(model_dir) in clash.stderr


def _tone(seconds, rate, f0, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * np.sin(2 * np.pi * 3 * f0 * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.slow  # an end-to-end fit: the default run stays under 6 minutes
def test_pretrain_from_an_audio_folder_with_corrupt_files(tmp_path):
    from msss_tf.config import MSSSConfig
    from msss_tf.training.pretrain import pretrain

    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    sf.write(audio / "a.wav", _tone(2.0, 16000, 220), 16000, subtype="PCM_16")
    sf.write(audio / "b.flac", _tone(1.5, 44100, 330, channels=2), 44100)
    sf.write(audio / "sub" / "c.wav", _tone(0.5, 8000, 440), 8000)  # shorter than a segment
    sf.write(audio / "sub" / "d.flac", _tone(3.0, 22050, 550), 22050)
    (audio / "garbage.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    (audio / "empty.flac").write_bytes(b"")
    sf.write(audio / "silent.wav", np.zeros(16000), 16000)
    nan = _tone(1.0, 16000, 200).astype("float32")
    nan[100] = np.nan
    sf.write(audio / "nan.wav", nan, 16000, subtype="FLOAT")

    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4,
                        learning_rate=1e-3)
    result = pretrain(config, data=str(audio), model_dir=str(tmp_path / "run"),
                      train_steps=3, steps_per_epoch=3, verbose=0)
    assert np.isfinite(result.history["loss"][-1])
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    reasons = {os.path.basename(item["path"]): item["reason"] for item in skipped["skipped"]}
    assert set(reasons) == {"garbage.wav", "empty.flac", "silent.wav", "nan.wav"}, reasons
    assert reasons["silent.wav"] == "silent" and reasons["nan.wav"] == "non_finite"


def test_prepare_subcommand(tmp_path, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", _tone(2.0, 16000, 220), 16000)
    sf.write(audio / "b.wav", _tone(1.0, 48000, 440), 48000)
    (audio / "bad.ogg").write_bytes(b"OggS broken")
    out = tmp_path / "shards"
    assert cli.main(["msss-tf", "prepare", f"--audio_dir={audio}", f"--out_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "prepared 2 clips" in printed and "skipped 1 file" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_clips"] == 2
    np.testing.assert_allclose(manifest["total_seconds"], 3.0, atol=1e-3)


def test_export_prints_tflite_parity_and_warns_below_099():
    from msss_tf.cli import tflite_parity_lines

    lines = tflite_parity_lines({
        "float32": {"parity_vs_keras": {"windows": 16, "min_cosine": 0.99999}},
        "int8": {"parity_vs_keras": {"windows": 16, "min_cosine": 0.0923}},
        "dynamic_int8": {"file": "x.tflite"},  # no parity measured: nothing said
    })
    assert lines[0] == "  TFLite float32: min cosine to the Keras encoder 1.0000 over 16 windows"
    assert "int8: min cosine to the Keras encoder 0.0923" in lines[1]
    assert lines[2].startswith("  WARNING: int8 drifts") and len(lines) == 3


def test_probe_reads_the_embedding_layer_asked_for(tmp_path, monkeypatch):
    """`--embedding_layer=stage3` probes the encoder read at its third stage; a name that
    is not a layer is refused by the flag, before any work."""
    import keras

    from msss_tf.evaluation import probe
    from msss_tf.config import MSSSConfig
    from msss_tf.model.msss_model import MSSSModel

    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25)
    keras.utils.set_random_seed(0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config.save(str(run_dir))
    MSSSModel(config).save(str(run_dir / "model.keras"))
    seen = {}
    monkeypatch.setattr(probe, "run_probes", lambda model, tasks, settings, **kw: seen.update(
        model=model, **kw))
    args = ["msss-tf", "probe", f"--model_dir={run_dir}", "--task=synthetic_scene",
            f"--out_dir={tmp_path / 'out'}"]
    assert cli.main(args + ["--embedding_layer=stage3"]) == 0
    assert seen["encoder_name"] == "run@stage3"
    assert seen["model"].scene_embedding_size == 8 * 16  # 8 bands x 16 channels at x0.25
    assert cli.main(args) == 0 and seen["model"] == str(run_dir)  # the encoder's output
    assert cli.main(args + ["--embedding_layer=block9"]) == 2
