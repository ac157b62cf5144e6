"""Reliability (issue 6): kill and resume, non-finite losses, hostile corpora, bad input to
artefacts, determinism, memory on long files. Pre-training runs use the x0.25 encoder and
a few steps: graph tracing dominates their time."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from msss_tf.training.reliability import (TEST_PAUSE_ENV, TEST_PAUSE_MARKER, NonFiniteLossError,
                                 read_run_log)
from helpers import run_pretrain_eagerly

SMALL = dict(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4, learning_rate=1e-3)
CLIP_ONLY = dict(SMALL, losses=("clip",))  # one loss: cheaper steps, same machinery
SMALL_FLAGS = ["--width_coefficient=0.25", "--depth_coefficient=0.25", "--batch_size=4",
               "--learning_rate=1e-3"]


# `msss-tf` with every tf.function run eagerly: the same CLI, callbacks and files, without
# the 1-3 minutes of tracing the train step per process (the slow kill test traces).
_EAGER_CLI = ("import sys, tensorflow as tf; tf.config.run_functions_eagerly(True); "
              "from msss_tf.cli import main; sys.exit(main(['msss-tf', *sys.argv[1:]]))")


def _cli(*args, eager=False):
    if eager:
        return [sys.executable, "-c", _EAGER_CLI, *args]
    return [sys.executable, "-m", "msss_tf.cli", *args]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop(TEST_PAUSE_ENV, None)
    env.update(extra)
    return env


def _run_until_paused(args, model_dir, pause, timeout=400, eager=False):
    """Starts `msss-tf ARGS` with the test pause hook, waits for the pause, SIGKILLs it."""
    marker = os.path.join(model_dir, TEST_PAUSE_MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    proc = subprocess.Popen(_cli(*args, eager=eager), env=_env(**{TEST_PAUSE_ENV: pause}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    try:
        while not os.path.exists(marker):
            if proc.poll() is not None:
                raise AssertionError(f"exited before pausing at {pause}:\n{proc.stdout.read()[-3000:]}")
            if time.time() > deadline:
                raise AssertionError(f"no pause at {pause} within {timeout} s")
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    os.remove(marker)


def _committed(model_dir):
    """(committed epochs, start events) from train_log.jsonl."""
    events = read_run_log(model_dir)
    return ([e["epoch"] for e in events if e["event"] == "epoch_end"],
            [e for e in events if e["event"] == "start"], events)


def _pretrain_args(model_dir, steps=6):
    # The clip loss alone traces the train step faster (two encoder calls, not three);
    # resuming does not depend on which losses are on.
    return ["pretrain", "--data=synthetic", f"--model_dir={model_dir}", f"--train_steps={steps}",
            "--steps_per_epoch=2", "--synthetic_clips=16", "--log_every=1", "--losses=clip",
            *SMALL_FLAGS]


def _check_resumed_state(model_dir, killed_after_epoch):
    """The second run started from the committed state of `killed_after_epoch`."""
    epochs, starts, events = _committed(model_dir)
    assert len(starts) == 2, events
    commit = [e for e in events if e["event"] == "epoch_end"
              and e["epoch"] == killed_after_epoch and e["pid"] == starts[0]["pid"]][0]
    resumed = starts[1]
    assert resumed["initial_epoch"] == killed_after_epoch
    # Step counter and optimiser state (Adam moments, iterations) are those committed.
    assert resumed["optimizer_step"] == commit["optimizer_step"] == 2 * killed_after_epoch
    assert resumed["optimizer_fingerprint"] == commit["optimizer_fingerprint"] > 0
    assert resumed["weights_fingerprint"] == commit["weights_fingerprint"]
    # Every epoch committed exactly once, in order, each at its step.
    assert epochs == [1, 2, 3], events
    assert [e["optimizer_step"] for e in events if e["event"] == "epoch_end"] == [2, 4, 6]


@pytest.mark.slow  # an end-to-end fit: the default run stays under 6 minutes
def test_sigkill_mid_epoch_then_resume(tmp_path):
    import keras

    import msss_tf.model.msss_model  # noqa: F401 (registers MSSSModel for load_model)

    model_dir = str(tmp_path / "run")
    args = _pretrain_args(model_dir)
    _run_until_paused(args, model_dir, "step:3", eager=True)  # after epoch 2's first batch
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == ["epoch-0001.keras"]
    assert json.load(open(os.path.join(model_dir, "backup", "training_metadata.json")))["epoch"] == 1
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))

    again = subprocess.run(_cli(*args, eager=True), env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _check_resumed_state(model_dir, killed_after_epoch=1)
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert summary["resumed_from_epoch"] == 1 and summary["steps_this_run"] == 4
    assert summary["status"] == "completed"
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    assert int(model.optimizer.iterations.numpy()) == 6
    assert sorted(os.listdir(os.path.join(model_dir, "checkpoints"))) == [
        "epoch-0001.keras", "epoch-0002.keras", "epoch-0003.keras"]


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_then_resume(tmp_path):
    import keras

    from msss_tf.rundir import latest_checkpoint

    model_dir = str(tmp_path / "run")
    args = _pretrain_args(model_dir)
    # Epoch 2's checkpoint is fully written to its temporary name, not yet renamed.
    _run_until_paused(args, model_dir, "checkpoint:2")
    checkpoints = os.path.join(model_dir, "checkpoints")
    assert sorted(os.listdir(checkpoints)) == ["epoch-0001.keras", "epoch-0002.tmp.keras"]
    # The commit point (backup) comes after the checkpoint: epoch 2 is not committed.
    assert json.load(open(os.path.join(model_dir, "backup", "training_metadata.json")))["epoch"] == 1
    latest = latest_checkpoint(model_dir)
    assert latest.endswith("epoch-0001.keras")
    keras.models.load_model(latest)  # the latest checkpoint is intact

    again = subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _check_resumed_state(model_dir, killed_after_epoch=1)
    assert sorted(os.listdir(checkpoints)) == [
        "epoch-0001.keras", "epoch-0002.keras", "epoch-0003.keras"]  # the .tmp is gone
    model = keras.models.load_model(os.path.join(model_dir, "model.keras"))
    assert int(model.optimizer.iterations.numpy()) == 6


# --------------------------------------------------------------------------- non-finite
_run_eagerly = run_pretrain_eagerly  # tests/helpers.py


def _poison_batches(monkeypatch, bad_batches):
    """Makes the pre-training pipeline yield NaN anchors at the given 0-based batches."""
    import msss_tf.training.pretrain as pretrain_module

    real = pretrain_module.pretrain_dataset

    def poisoned(*args, **kwargs):
        bad = tf.constant(sorted(bad_batches), tf.int64)

        def poison(i, batch):
            hit = tf.reduce_any(tf.equal(i, bad))
            anchor = tf.where(hit, tf.fill(tf.shape(batch["anchor"]), np.float32("nan")),
                              batch["anchor"])
            return {**batch, "anchor": anchor}

        return real(*args, **kwargs).enumerate().map(poison)

    monkeypatch.setattr(pretrain_module, "pretrain_dataset", poisoned)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import keras

    from msss_tf.config import MSSSConfig
    from msss_tf.training.pretrain import pretrain

    _run_eagerly(monkeypatch)
    _poison_batches(monkeypatch, [2])  # step 3 = epoch 2, batch 1
    model_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 3 \(epoch 2\)"
                       ) as info:
        pretrain(MSSSConfig(**CLIP_ONLY), "synthetic", str(model_dir), train_steps=6,
                 steps_per_epoch=2, synthetic_clips=16, verbose=0)
    assert info.value.checkpoint.endswith("epoch-0001.keras")
    assert "epoch-0001.keras" in str(info.value)
    # Nothing of epoch 2 was saved: the checkpoint and the backup are epoch 1's, finite.
    assert sorted(os.listdir(model_dir / "checkpoints")) == ["epoch-0001.keras"]
    assert json.loads((model_dir / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert not (model_dir / "model.keras").exists()
    model = keras.models.load_model(model_dir / "checkpoints" / "epoch-0001.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert int(model.optimizer.iterations.numpy()) == 2
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped_at_step"] == 3
    assert "step 3" in summary["error"]
    assert [e["step"] for e in read_run_log(model_dir) if e["event"] == "nonfinite"] == [3]


@pytest.mark.slow  # a graph trace (~1-3 min here): the undo must work inside tf.function
def test_nonfinite_steps_are_undone_with_skip(tmp_path, monkeypatch):
    import keras

    from msss_tf.config import MSSSConfig
    from msss_tf.training.pretrain import pretrain

    _poison_batches(monkeypatch, [1])
    model_dir = tmp_path / "run"
    result = pretrain(MSSSConfig(**CLIP_ONLY), "synthetic", str(model_dir), train_steps=3,
                      steps_per_epoch=3, synthetic_clips=16, verbose=0, on_nonfinite="skip")
    assert all(np.isfinite(v[-1]) for k, v in result.history.items())
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["nonfinite_skipped_steps"] == [2]
    model = keras.models.load_model(model_dir / "model.keras")
    assert all(np.isfinite(w).all() for w in model.get_weights())
    # The undone step did not count (Adam's iterations included): 4 batches ran for the
    # 3 optimiser steps asked for.
    assert int(model.optimizer.iterations.numpy()) == 3 == result.steps
    assert [e["step"] for e in read_run_log(model_dir) if e["event"] == "nonfinite"] == [2]
    assert json.loads((model_dir / "backup" / "training_metadata.json").read_text())[
        "batches"] == 4


@pytest.mark.slow  # two eager fits: ~8-13 s
def test_undone_steps_do_not_count_towards_train_steps(tmp_path, monkeypatch):
    """Eager twin of the test above: the budget is optimiser steps, so an undone step is
    made up by one more batch (a second, one-step fit), and resuming counts both."""
    from msss_tf.config import MSSSConfig
    from msss_tf.training.pretrain import pretrain

    _run_eagerly(monkeypatch)
    _poison_batches(monkeypatch, [1])
    model_dir = tmp_path / "run"
    result = pretrain(MSSSConfig(**CLIP_ONLY), "synthetic", str(model_dir), train_steps=2,
                      steps_per_epoch=2, synthetic_clips=16, verbose=0, on_nonfinite="skip")
    assert int(result.model.optimizer.iterations.numpy()) == 2 == result.steps
    assert result.epochs_run == 2  # 2 batches (1 undone), then 1 more
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["nonfinite_skipped_steps"] == [2] and summary["train_steps"] == 2
    meta = json.loads((model_dir / "backup" / "training_metadata.json").read_text())
    assert (meta["step"], meta["batches"], meta["epoch"]) == (2, 3, 2)
    events = read_run_log(model_dir)
    assert [(e["fit_step"], e["optimizer_step"]) for e in events
            if e["event"] == "epoch_end"] == [(2, 1), (3, 2)]


# ----------------------------------------------------------------------- hostile corpora
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from msss_tf.data.audio import REASONS  # noqa: E402

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
GOOD_FORMATS = [("wav", "PCM_U8"), ("wav", "PCM_16"), ("wav", "PCM_24"), ("wav", "FLOAT"),
                ("flac", "PCM_16"), ("flac", "PCM_24"), ("ogg", "VORBIS")]
RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000]


def _signal(seconds, rate, channels, amplitude, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(max(1, int(seconds * rate))) / rate
    x = np.sin(2 * np.pi * rng.uniform(100, 3000) * t)[:, None] * np.ones(channels)
    x += 0.1 * rng.standard_normal(x.shape)
    return (amplitude * x / np.abs(x).max()).astype(np.float32)


def _wav_bytes(tmp, seconds=0.5):
    sf.write(tmp, _signal(seconds, 16000, 1, 0.5, 0), 16000, subtype="PCM_16")
    with open(tmp, "rb") as f:
        return f.read()


# Each kind writes one file and says what prepare must do with it: None = use it, else
# the skip reason. (Root reads chmod-000 files: then they are used.)
def _write_case(root, index, case):
    kind, a, b, c = case
    name = os.path.join(root, f"f{index:02d}_{kind}")
    if kind == "good":
        ext, subtype = GOOD_FORMATS[a % len(GOOD_FORMATS)]
        rate, channels = RATES[b % len(RATES)], 1 + c % 6
        amplitude = 1e30 if subtype == "FLOAT" and c % 2 else 0.5  # huge float values
        path = f"{name}.{ext}"
        sf.write(path, _signal(0.2 + 0.3 * (a % 4), rate, channels, amplitude, index), rate,
                 subtype=subtype)
        return path, None
    if kind == "truncated_header":
        path = f"{name}.wav"
        data = _wav_bytes(path)
        # Cut before the end of the "data" chunk marker (byte 40): from there on the
        # header is complete but for the chunk size, and libsndfile may open the file as
        # zero frames ("empty") or refuse it ("unreadable"), both fine, not one reason.
        cut = a % 40
        with open(path, "wb") as f:
            f.write(data[:cut])
        return path, "empty" if cut == 0 else "unreadable"
    if kind == "truncated_body":  # a valid header promising more than the file holds
        path = f"{name}.wav"
        data = _wav_bytes(path)
        with open(path, "wb") as f:
            f.write(data[:44 + 2 * (4000 + a * 100)])
        return path, None
    if kind == "one_sample":
        path = f"{name}.wav"
        sf.write(path, np.array([[0.5]], np.float32), RATES[b % len(RATES)])
        return path, "too_short"
    if kind == "zero_frames":
        path = f"{name}.flac"
        sf.write(path, np.zeros((0, 1), np.float32), 16000)
        return path, "empty"
    if kind == "non_finite":
        path = f"{name}.wav"
        x = _signal(0.5, 16000, 1 + c % 3, 0.5, index)
        x[a % len(x), 0] = [np.nan, np.inf, -np.inf][b % 3]
        sf.write(path, x, 16000, subtype="FLOAT")
        return path, "non_finite"
    if kind == "silent":
        path = f"{name}.flac"
        sf.write(path, np.zeros((8000, 1 + c % 2), np.float32), 16000)
        return path, "silent"
    if kind == "not_audio":
        ext = [".wav", ".flac", ".ogg", ".aiff"][a % 4]
        path = name + ext
        payloads = [np.random.default_rng(index).bytes(100 + 37 * b),
                    b"\x89PNG\r\n\x1a\n" + bytes(200), b"PK\x03\x04" + bytes(300),
                    ("not audio at all\n" * (1 + b)).encode(), b"RIFF\x00\x00\x00\x00WAVE"]
        with open(path, "wb") as f:
            f.write(payloads[c % len(payloads)])
        return path, "unreadable"
    if kind == "unreadable":
        path = f"{name}.wav"
        sf.write(path, _signal(0.5, 16000, 1, 0.5, index), 16000)
        os.chmod(path, 0)
        return path, None if RUNNING_AS_ROOT else "permission_denied"
    if kind == "symlink_loop":
        path = f"{name}.wav"
        other = f"{name}_other.wav"
        os.symlink(os.path.basename(other), path)
        os.symlink(os.path.basename(path), other)
        return [(path, "broken_link"), (other, "broken_link")], None
    if kind == "dangling_link":
        path = f"{name}.ogg"
        os.symlink(f"{name}_missing.ogg", path)
        return path, "broken_link"
    if kind == "fifo":
        path = f"{name}.wav"
        os.mkfifo(path)
        return path, "not_a_file"
    raise AssertionError(kind)


KINDS = ["good", "truncated_header", "truncated_body", "one_sample", "zero_frames",
         "non_finite", "silent", "not_audio", "unreadable", "symlink_loop", "dangling_link",
         "fifo"]
CASE = st.tuples(st.sampled_from(KINDS), st.integers(0, 100), st.integers(0, 100),
                 st.integers(0, 100))


def write_hostile_corpus(root, cases):
    """Writes `cases` under `root`; returns {path: expected reason or None (usable)}."""
    os.makedirs(root, exist_ok=True)
    os.makedirs(os.path.join(root, "dir.wav"))  # a directory named like audio: not listed
    expected = {}
    for i, case in enumerate(cases):
        written, reason = _write_case(root, i, case)
        for path, why in written if isinstance(written, list) else [(written, reason)]:
            expected[path] = why
    return expected


def _records(out_dir):
    from msss_tf.data.tfrecord import read_manifest

    paths, waves = [], []
    for shard in read_manifest(out_dir)["shards"]:
        for record in tf.data.TFRecordDataset(os.path.join(out_dir, shard)):
            example = tf.train.Example.FromString(record.numpy())
            paths.append(example.features.feature["path"].bytes_list.value[0].decode())
            pcm = np.frombuffer(example.features.feature["audio"].bytes_list.value[0], "<i2")
            waves.append(pcm)
    return paths, waves


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cases=st.lists(CASE, min_size=1, max_size=10))
def test_prepare_and_the_folder_pipeline_survive_hostile_corpora(tmp_path_factory, cases):
    from msss_tf.config import MSSSConfig
    from msss_tf.data import SkipReport, prepare_corpus, pretrain_dataset

    base = tmp_path_factory.mktemp("hostile")
    root, out = str(base / "audio"), str(base / "prepared")
    expected = write_hostile_corpus(root, cases)
    usable = {p for p, why in expected.items() if why is None}
    report = SkipReport()
    if not usable:
        with pytest.raises(ValueError, match=r"no usable audio .* all skipped"):
            prepare_corpus(root, out, report=report, progress=False)
    else:
        manifest = prepare_corpus(root, out, report=report, progress=False)
        paths, waves = _records(out)
        assert sorted(set(paths)) == sorted(os.path.relpath(p, root) for p in usable)
        assert manifest["num_clips"] == len(paths) == len(usable)
        assert all(w.size >= 160 and np.abs(w).max() > 0 for w in waves)
        saved = json.load(open(os.path.join(out, "skipped.json")))
        assert {s["path"]: s["reason"] for s in saved["skipped"]} == {
            p: why for p, why in expected.items() if why is not None}
    # Every file is accounted for: used, or skipped with its reason.
    assert dict(report.items) == {p: why for p, why in expected.items() if why is not None}
    assert report.seen == len(expected) and set(report.by_reason()) <= set(REASONS)

    # The pre-training pipeline on the raw folder: no crash, finite batches, same skips.
    config = MSSSConfig(batch_size=2, seed=len(cases))
    folder_report = SkipReport()
    if not usable:
        # All headers bad: said when the dataset is built; all decodes bad: on first use.
        with pytest.raises((ValueError, tf.errors.OpError), match="no usable audio"):
            next(iter(pretrain_dataset(root, config, report=folder_report)))
        return
    for batch in pretrain_dataset(root, config, report=folder_report).take(2):
        for view in ("anchor", "positive"):
            assert np.isfinite(batch[view].numpy()).all()
            assert np.abs(batch[view].numpy()).max() <= 1.0
    assert set(dict(folder_report.items)) <= set(expected) - usable


# The corpus of the README's example: every kind of file at least once.
README_CASES = [
    ("good", 0, 5, 1), ("good", 2, 6, 5), ("good", 4, 0, 0), ("good", 6, 6, 5),
    ("good", 3, 2, 1), ("good", 1, 3, 0), ("truncated_header", 30, 0, 0),
    ("truncated_header", 0, 0, 0), ("one_sample", 0, 0, 0), ("zero_frames", 0, 0, 0),
    ("non_finite", 3, 0, 0), ("silent", 0, 0, 0), ("not_audio", 0, 0, 1),
    ("not_audio", 1, 2, 3), ("unreadable", 0, 0, 0), ("symlink_loop", 0, 0, 0),
    ("dangling_link", 0, 0, 0), ("fifo", 0, 0, 0), ("truncated_body", 0, 0, 0)]


@pytest.mark.slow
def test_pretrain_trains_on_the_rest_of_a_hostile_corpus(tmp_path):
    root, model_dir = str(tmp_path / "corpus"), str(tmp_path / "run")
    expected = write_hostile_corpus(root, README_CASES)
    done = subprocess.run(_cli("pretrain", f"--data={root}", f"--model_dir={model_dir}",
                               "--train_steps=4", "--steps_per_epoch=2", "--losses=clip",
                               *SMALL_FLAGS), env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    bad = {p: why for p, why in expected.items() if why is not None}
    assert f"skipped {len(bad)} of {len(expected)} files" in done.stdout
    skipped = json.load(open(os.path.join(model_dir, "skipped.json")))
    assert {s["path"]: s["reason"] for s in skipped["skipped"]} == bad
    summary = json.load(open(os.path.join(model_dir, "summary.json")))
    assert summary["status"] == "completed" and summary["skipped"] == skipped
    assert np.isfinite(summary["final_metrics"]["loss"])


# ---------------------------------------------------------------------------- determinism
def _first_losses_and_embeddings(seed, steps=2):
    """What `pretrain` does first, eagerly (no graph tracing): seeded pipeline, seeded
    initial weights, `steps` train steps; then scene embeddings of fixed audio."""
    import keras

    from msss_tf.config import MSSSConfig
    from msss_tf.data import pretrain_dataset
    from msss_tf.model.msss_model import MSSSModel, build_optimizer

    config = MSSSConfig(**SMALL, seed=seed)
    keras.utils.set_random_seed(config.seed)
    batches = list(pretrain_dataset("synthetic", config, num_clips=8).take(steps))
    keras.utils.set_random_seed(config.seed)
    model = MSSSModel(config)
    model.compile(optimizer=build_optimizer(config))
    losses = [{k: float(v) for k, v in model.train_step(b).items()} for b in batches]
    # Embeddings are means of encoder frames of 0.96 s windows (msss_tf.embedding); the
    # frames of one window, computed eagerly (the Embedder's tf.functions would trace).
    window = np.sin(np.linspace(0, 600, 15600, dtype=np.float32))[None] * 0.3
    return losses, model(window, training=False).numpy()


@pytest.mark.slow  # two fits from scratch: the default run stays under 6 minutes
def test_same_seed_same_first_losses_and_embeddings_on_cpu():
    losses, emb = _first_losses_and_embeddings(seed=7)
    again, emb_again = _first_losses_and_embeddings(seed=7)
    assert losses == again  # bitwise, every loss of every step
    np.testing.assert_array_equal(emb, emb_again)
    other, emb_other = _first_losses_and_embeddings(seed=8, steps=1)
    assert other[0]["loss"] != losses[0]["loss"]
    assert np.abs(emb_other - emb).max() > 0


# ----------------------------------------------------------------------- resource bounds
RSS_SCRIPT = r"""
import os, resource, sys, time
from msss_tf.data import prepare_corpus
audio_dir, out_dir, clip = sys.argv[1], sys.argv[2], float(sys.argv[3])
import numpy as np, soundfile as sf
small = os.path.join(out_dir + "_warm_audio")
os.makedirs(small, exist_ok=True)
sf.write(os.path.join(small, "warm.wav"), 0.3 * np.sin(np.arange(16000) / 5.0), 16000)
prepare_corpus(small, out_dir + "_warm", progress=False)   # imports and TF warm-up

def status(field):  # KiB
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith(field)).split()[1])

try:  # reset the peak (VmHWM) to the current RSS: the import's transient peak is gone
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base, peak_of = status("VmRSS:"), lambda: status("VmHWM:")
except OSError:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_of = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.time()
manifest = prepare_corpus(audio_dir, out_dir, progress=False, max_clip_seconds=clip)
print(base, peak_of(), manifest["num_clips"], manifest["total_seconds"], time.time() - started)
"""


def _write_long_wav(path, seconds, rate=16000):
    """An int16 WAV of `seconds`, written a minute at a time (never held whole)."""
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for minute in range(int(np.ceil(seconds / 60))):
            n = int(min(60, seconds - 60 * minute) * rate)
            t = (np.arange(n) + minute * 60 * rate) / rate
            f.write((0.3 * np.sin(2 * np.pi * (200 + minute) * t)).astype(np.float32))


def measure_prepare_rss(tmp_path, seconds=3600, max_clip_seconds=10.0):
    """(RSS before, peak RSS during, both KiB; clips; seconds of audio; wall s) of prepare
    in a fresh process on one `seconds`-long WAV. The peak is VmHWM after resetting it
    through /proc/self/clear_refs (else ru_maxrss, which includes the import's peak)."""
    audio = tmp_path / "long"
    audio.mkdir(exist_ok=True)
    wav = audio / "hour.wav"
    if not wav.exists():
        _write_long_wav(str(wav), seconds)
    out = str(tmp_path / f"prepared_{max_clip_seconds:g}")
    proc = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(audio), out,
                           str(max_clip_seconds)], capture_output=True, text=True,
                          timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    base, peak, clips, total, wall = proc.stdout.split()[-5:]
    return int(base), int(peak), int(clips), float(total), float(wall)


@pytest.mark.slow
def test_prepare_of_a_one_hour_wav_stays_small_in_memory(tmp_path):
    base, peak, clips, total, wall = measure_prepare_rss(tmp_path)
    print(f"prepare, 1 h 16 kHz int16 WAV (115 MB): RSS before {base / 1024:.0f} MiB, "
          f"peak {peak / 1024:.0f} MiB (+{(peak - base) / 1024:.0f} MiB), {clips} clips, "
          f"{wall:.1f} s")
    assert clips == 360 and total == pytest.approx(3600.0)
    # Decoding the hour at once needs 230 MB of float32 alone; chunks need ~1 MB each.
    assert peak - base < 64 * 1024


def test_long_files_are_read_in_chunks_and_excerpts(tmp_path):
    from msss_tf.data.audio import chunk_bounds, iter_audio_chunks, load_audio, load_audio_excerpt

    assert chunk_bounds(100, 40) == [(0, 50), (50, 100)]
    assert chunk_bounds(59, 40) == [(0, 59)] and chunk_bounds(61, 40) == [(0, 30), (30, 61)]
    path = str(tmp_path / "long.wav")
    _write_long_wav(path, 125, rate=8000)
    whole = load_audio(path)
    chunks = list(iter_audio_chunks(path, 16000, chunk_seconds=10.0))
    np.testing.assert_allclose([s for s, _ in chunks], [125 * i / 12 for i in range(12)],
                               atol=1e-3)
    assert sum(c.size for _, c in chunks) == whole.size
    # Same samples as the whole file, up to resampling edge effects at chunk borders.
    np.testing.assert_allclose(chunks[3][1][2000:-2000],
                               whole[int(chunks[3][0] * 16000):][:chunks[3][1].size][2000:-2000],
                               atol=2e-3)
    excerpt = load_audio_excerpt(path, 16000, max_seconds=10.0, position=0.5)
    assert excerpt.size == 160000
    start = int(0.5 * (125 - 10) * 16000)
    np.testing.assert_allclose(excerpt[2000:-2000], whole[start + 2000:start + 158000],
                               atol=2e-3)
    short = str(tmp_path / "short.wav")
    sf.write(short, whole[:16000], 16000)
    np.testing.assert_array_equal(load_audio_excerpt(short, 16000, 10.0, 0.7), load_audio(short))
    # A long file with a silent stretch: that clip alone is skipped, named by its start.
    from msss_tf.data import SkipReport, prepare_corpus

    x, _ = sf.read(path, dtype="float32")
    x[8000 * 30:8000 * 42] = 0.0
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "gap.wav", x, 8000)
    report = SkipReport()
    manifest = prepare_corpus(str(audio), str(tmp_path / "out"), report=report, progress=False)
    assert manifest["num_clips"] == 11
    assert report.items == [(f"{audio / 'gap.wav'}@31.2s", "silent")]


# ----------------------------------------------------------------- artefacts, bad input
def test_loaders_name_truncated_and_foreign_models(tmp_path):
    import keras

    from msss_tf import hear
    from msss_tf.embedding import load_encoder

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "model.keras").write_bytes(b"PK\x03\x04" + bytes(100))  # a zip cut short
    with pytest.raises(ValueError, match=f"{run / 'model.keras'}: cannot load an MSSS model"):
        hear.load_model(str(run))
    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(other)
    with pytest.raises(ValueError, match=f"{other}: holds a Sequential, not an MSSSModel"):
        hear.load_model(str(other))
    empty_run = tmp_path / "empty_run"
    (empty_run / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"{empty_run}: no model.keras"):
        hear.load_model(str(empty_run))

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def __call__(self, x):
            return 2 * x

    saved = tmp_path / "saved" / "1"
    tf.saved_model.save(Tiny(), str(saved))
    with pytest.raises(ValueError, match=f"{saved}: not an msss-tf encoder export"):
        hear.load_model(str(saved.parent))  # the base folder: its newest version
    pb = saved / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:50])
    with pytest.raises(ValueError, match=f"{saved}: cannot load the SavedModel"):
        load_encoder(str(saved))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "variables").mkdir()
    with pytest.raises(ValueError, match="junk: neither a run directory"):
        hear.load_model(str(tmp_path / "junk"))


def test_run_log_event_after_a_torn_line_keeps_both(tmp_path):
    """A last line torn by a power cut or a full disk does not swallow the next event."""
    from msss_tf.training.reliability import TRAIN_LOG, RunLog

    log = RunLog(str(tmp_path / TRAIN_LOG))
    log.event("start", epoch=0)
    with open(tmp_path / TRAIN_LOG, "a") as f:
        f.write('{"event": "epoch_end", "ep')  # torn
    log.event("start", epoch=1)
    log.event("epoch_end", epoch=2)
    events = read_run_log(str(tmp_path))
    assert [(e["event"], e["epoch"]) for e in events] == [("start", 0), ("start", 1),
                                                           ("epoch_end", 2)]
    assert open(tmp_path / TRAIN_LOG).read().count("\n") == 4
