"""Exact resume and graceful stops (issue 14): the step count asked for is the step count
the run holds at the end, or the start is refused with the reason; nothing is written
before the inputs are checked; SIGINT/SIGTERM stop at a step boundary, save that step,
write summary.json and say how to resume. In-process runs compile the model eagerly
(seconds per step, no trace); the subprocess test at the end runs the real command."""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import keras
import pytest

from msss_tf import cli
from msss_tf.training.reliability import (TEST_PAUSE_ENV, TEST_PAUSE_MARKER, GracefulStop,
                                 TrainingAborted, TrainingInterrupted, read_run_log)
from helpers import run_pretrain_eagerly

SMALL = dict(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4, learning_rate=1e-3,
             losses=("clip",))
SMALL_FLAGS = ["--width_coefficient=0.25", "--depth_coefficient=0.25", "--batch_size=4",
               "--learning_rate=1e-3", "--losses=clip"]


_run_eagerly = run_pretrain_eagerly  # tests/helpers.py


def _pretrain(model_dir, train_steps, steps_per_epoch=None, **kwargs):
    from msss_tf.config import MSSSConfig
    from msss_tf.training.pretrain import pretrain

    return pretrain(MSSSConfig(**SMALL), "synthetic", str(model_dir), train_steps=train_steps,
                    steps_per_epoch=steps_per_epoch, synthetic_clips=8, verbose=0, **kwargs)


def _held(model_dir):
    """(optimizer step, epoch) of the committed backup."""
    meta = json.loads((model_dir / "backup" / "training_metadata.json").read_text())
    return meta["step"], meta["epoch"]


def _summary(model_dir):
    return json.loads((model_dir / "summary.json").read_text())


def _snapshot(directory):
    """{relative path: (size, mtime_ns)} of every file under `directory`."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            stat = os.stat(path)
            out[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return out


class _SignalAt(keras.callbacks.Callback):
    """Sends `signals` to this process as this run's batch `step` (1-based) begins, as a
    Ctrl-C during that step would."""

    def __init__(self, step, *signals):
        super().__init__()
        self.step, self.signals, self.seen = step, signals, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            for signum in self.signals:
                os.kill(os.getpid(), signum)
                time.sleep(0.05)  # the handler runs at the next bytecode


# --------------------------------------------------------------------- exact step counts
def test_train_steps_are_exact_and_a_resume_keeps_the_recorded_epoch_length(
        tmp_path, monkeypatch, capsys):
    _run_eagerly(monkeypatch)
    run = tmp_path / "run"
    # 3 steps in epochs of 2: the last epoch is 1 step long, not rounded up to 4.
    first = _pretrain(run, train_steps=3, steps_per_epoch=2)
    assert first.steps == first.steps_this_run == 3 and first.epochs_run == 2
    assert int(first.model.optimizer.iterations.numpy()) == 3
    assert _held(run) == (3, 2)
    assert json.loads((run / "pretrain_run.json").read_text())["steps_per_epoch"] == 2
    assert _summary(run)["train_steps"] == 3 and _summary(run)["status"] == "completed"
    first_metrics = _summary(run)["final_metrics"]
    assert first_metrics

    # Issue 14: a finished run re-run with a larger --train_steps and no --steps_per_epoch
    # trained nothing (the default 100 made the run look finished) and printed the asked
    # count. Now the recorded epoch length is kept and the run continues to exactly 4.
    args = ["msss-tf", "pretrain", "--data=synthetic", f"--model_dir={run}",
            "--synthetic_clips=8", "--train_steps=4", *SMALL_FLAGS]
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "trained 1 step(s) in 1 epoch(s) this run, 4 steps in all" in capsys.readouterr().out
    assert _held(run) == (4, 3)
    model = keras.models.load_model(run / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 4
    # Every commit at its step; the log's step counts continue across the resume.
    events = read_run_log(run)
    assert [e["optimizer_step"] for e in events if e["event"] == "epoch_end"] == [2, 3, 4]
    assert [e["fit_step"] for e in events if e["event"] == "epoch_end"] == [2, 3, 4]

    # The same command again: nothing to train, said so; the summary keeps the metrics.
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "already holds 4 steps" in out
    assert "final metrics:" in out
    summary = _summary(run)
    assert summary["steps_this_run"] == 0 and summary["train_steps"] == 4
    assert summary["final_metrics"] == summary["invocations"][1]["final_metrics"] != {}
    assert [i["steps_this_run"] for i in summary["invocations"]] == [3, 1, 0]
    assert summary["invocations"][0]["final_metrics"] == first_metrics
    assert summary["invocations"][0]["command"] is None  # the Python API gave none
    assert "--train_steps=4" in summary["invocations"][2]["command"]


@pytest.mark.slow  # the default run stays under 6 minutes
def test_another_steps_per_epoch_on_resume_applies_from_the_held_step(tmp_path, monkeypatch,
                                                                      capsys):
    # Steps are counted, not epochs: a new epoch length applies from the held step on and
    # the total stays exact (before: epoch 2 of ceil(4 / 3) = 2 ran 3 steps, 2 + 3 = 5).
    _run_eagerly(monkeypatch)
    run = tmp_path / "run"
    _pretrain(run, train_steps=2, steps_per_epoch=2)
    result = _pretrain(run, train_steps=4, steps_per_epoch=3)
    assert "recorded --steps_per_epoch=2; from step 2 on, epochs (checkpoints) are 3" in \
        capsys.readouterr().out
    assert (result.steps, result.steps_this_run, result.epochs_run) == (4, 2, 1)
    assert _held(run) == (4, 2)
    assert json.loads((run / "pretrain_run.json").read_text())["steps_per_epoch"] == 3
    assert [e["optimizer_step"] for e in read_run_log(run) if e["event"] == "epoch_end"] == [
        2, 4]


def _fake_run(model_dir, step, epoch, steps_per_epoch):
    """A run directory holding `step` steps, as far as the start-up checks read it."""
    from msss_tf.config import MSSSConfig

    (model_dir / "backup").mkdir(parents=True)
    (model_dir / "backup" / "training_metadata.json").write_text(json.dumps(
        {"epoch": epoch, "batch": 0, "weights": f"epoch-{epoch:06d}.weights.h5",
         "step": step, "batches": step}))
    (model_dir / "pretrain_run.json").write_text(json.dumps(
        {"steps_per_epoch": steps_per_epoch, "train_steps": step}))
    MSSSConfig(**SMALL).save(str(model_dir))
    (model_dir / "summary.json").write_text(json.dumps(
        {"status": "completed", "train_steps": step, "final_metrics": {"loss": 1.0}}))


def test_train_steps_below_what_the_run_holds_is_refused_naming_it(tmp_path, capsys):
    run = tmp_path / "run"
    _fake_run(run, step=400, epoch=4, steps_per_epoch=100)
    before = _snapshot(run)
    code = cli.main(["msss-tf", "pretrain", "--data=synthetic", f"--model_dir={run}",
                     "--train_steps=20", "--steps_per_epoch=2", "--synthetic_clips=8"])
    assert code == 2
    err = capsys.readouterr().err
    assert "already holds 400 optimizer steps" in err and "--train_steps=20" in err
    assert "--train_steps=400 or more" in err
    assert _snapshot(run) == before  # nothing written


# ------------------------------------------------------------------ failed first start
def test_a_failed_first_start_writes_nothing_and_the_corrected_command_works(
        tmp_path, monkeypatch, capsys):
    _run_eagerly(monkeypatch)
    run = tmp_path / "run"
    missing = tmp_path / "nosuchdir"
    common = [f"--model_dir={run}", "--train_steps=1", "--synthetic_clips=8",
              "--width_coefficient=0.25", "--depth_coefficient=0.25", "--losses=clip"]
    assert cli.main(["msss-tf", "pretrain", f"--data={missing}", "--batch_size=8", *common]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not run.exists()  # no msss_config.json, nothing at all
    # The corrected command, with another batch size, is not "a different configuration".
    assert cli.main(["msss-tf", "pretrain", "--data=synthetic", "--batch_size=4", *common]) == 0
    assert json.loads((run / "msss_config.json").read_text())["batch_size"] == 4
    assert _held(run)[0] == 1


def test_a_config_left_by_a_start_that_never_trained_does_not_bind(tmp_path):
    from msss_tf.config import MSSSConfig
    from msss_tf.training.pretrain import resolve_config

    run = tmp_path / "run"
    MSSSConfig(batch_size=8, seed=3).save(str(run))  # what an older version left behind
    config = resolve_config(str(run), MSSSConfig(batch_size=4), {"batch_size"})
    assert config.batch_size == 4 and config.seed == 3  # the flags win, the rest is kept
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch-0001.keras").write_text("trained")
    with pytest.raises(ValueError, match="batch_size: saved 8, asked 4"):
        resolve_config(str(run), MSSSConfig(batch_size=4), {"batch_size"})


def test_summary_written_before_invocations_were_kept_becomes_the_first(tmp_path):
    from msss_tf.training.pretrain import write_summary

    (tmp_path / "summary.json").write_text(json.dumps(
        {"status": "completed", "train_steps": 8, "final_metrics": {"loss": 2.0}}))
    summary = write_summary(str(tmp_path), {"status": "completed", "train_steps": 8,
                                            "steps_this_run": 0, "final_metrics": {}})
    assert summary["final_metrics"] == {"loss": 2.0}
    assert [i["train_steps"] for i in summary["invocations"]] == [8, 8]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


# --------------------------------------------------------------------- signals, in-process
def test_graceful_stop_flags_the_first_signal_aborts_on_the_second_and_restores():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(TrainingAborted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) == before
    # Python installs handlers in the main thread only: elsewhere the block does nothing.
    errors = []

    def in_thread():
        try:
            with GracefulStop() as other:
                errors.append(other.requested)
        except Exception as e:  # pragma: no cover - the failure itself
            errors.append(e)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert errors == [False]


@pytest.mark.slow  # the default run stays under 6 minutes
def test_sigint_and_sigterm_stop_at_a_step_and_the_rerun_completes_exactly(tmp_path,
                                                                             monkeypatch):
    _run_eagerly(monkeypatch)
    # What the run must restore: Python's default_int_handler, or SIG_IGN where the test
    # process was started in the background by a non-interactive shell (`cmd &`).
    sigint_before = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    # SIGINT during step 1 of an epoch of 4: that step is committed (backup + checkpoint).
    with pytest.raises(TrainingInterrupted) as info:
        _pretrain(run, 3, steps_per_epoch=4, extra_callbacks=[_SignalAt(1, signal.SIGINT)])
    assert (info.value.step, info.value.exit_code) == (1, 130)
    assert _held(run) == (1, 1)
    assert sorted(os.listdir(run / "checkpoints")) == ["epoch-0001.keras"]
    assert not (run / "model.keras").exists()  # not a final model
    summary = _summary(run)
    assert summary["status"] == "interrupted" and summary["signal"] == "SIGINT"
    assert summary["train_steps"] == 1 and summary["train_steps_requested"] == 3
    assert summary["final_metrics"]
    # SIGTERM during the resumed run's first step.
    with pytest.raises(TrainingInterrupted) as info:
        _pretrain(run, 3, extra_callbacks=[_SignalAt(1, signal.SIGTERM)])
    assert (info.value.step, info.value.exit_code) == (2, 143)
    assert _held(run) == (2, 2)
    # The same call again: exactly 3 steps.
    result = _pretrain(run, 3)
    assert (result.initial_step, result.steps, result.epochs_run) == (2, 3, 1)
    assert result.steps_per_epoch == 4  # recorded
    assert int(keras.models.load_model(run / "model.keras").optimizer.iterations.numpy()) == 3
    assert [i["status"] for i in _summary(run)["invocations"]] == [
        "interrupted", "interrupted", "completed"]
    assert signal.getsignal(signal.SIGINT) is sigint_before  # restored


def test_a_second_signal_aborts_at_once_and_keeps_the_last_commit(tmp_path, monkeypatch):
    _run_eagerly(monkeypatch)
    run = tmp_path / "run"
    with pytest.raises(TrainingAborted) as info:
        _pretrain(run, 3, steps_per_epoch=4,
                  extra_callbacks=[_SignalAt(1, signal.SIGINT, signal.SIGINT)])
    assert info.value.exit_code == 130
    assert not (run / "backup" / "training_metadata.json").exists()  # nothing committed
    summary = _summary(run)
    assert summary["status"] == "aborted" and summary["train_steps"] == 0


# ---------------------------------------------------------------- signals, real command
_EAGER_CLI = ("import sys, tensorflow as tf; tf.config.run_functions_eagerly(True); "
              "from msss_tf.cli import main; sys.exit(main(['msss-tf', *sys.argv[1:]]))")


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop(TEST_PAUSE_ENV, None)
    env.update(extra)
    return env


def _signal_when_paused(args, model_dir, step, signum, timeout=400):
    """Runs `msss-tf ARGS` paused after global step `step`, sends `signum`; returns
    (exit code, stdout, stderr)."""
    marker = os.path.join(model_dir, TEST_PAUSE_MARKER)
    if os.path.exists(marker):
        os.remove(marker)
    proc = subprocess.Popen([sys.executable, "-c", _EAGER_CLI, *args],
                            env=_env(**{TEST_PAUSE_ENV: f"step:{step}"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    try:
        while not os.path.exists(marker):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, f"no pause at step {step} within {timeout} s"
            time.sleep(0.2)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    os.remove(marker)
    return proc.returncode, out, err


@pytest.mark.slow  # three runs of the real command (~2 min on 2 cores)
def test_ctrl_c_and_sigterm_on_the_command_then_the_same_command_resumes(tmp_path):
    run = tmp_path / "run"
    args = ["pretrain", "--data=synthetic", f"--model_dir={run}", "--train_steps=5",
            "--steps_per_epoch=4", "--synthetic_clips=16", "--log_every=1", *SMALL_FLAGS]
    for step, signum, code, held in [(2, signal.SIGINT, 130, 2), (3, signal.SIGTERM, 143, 3)]:
        returncode, out, err = _signal_when_paused(args, str(run), step, signum)
        assert returncode == code, out[-3000:] + err[-3000:]
        assert "Traceback" not in out + err, err[-3000:]
        name = signal.Signals(signum).name
        hints = [line for line in out.splitlines() if "To resume, run the same command" in line]
        assert len(hints) == 1, out
        assert f"interrupted by {name} at step {held} of 5" in hints[0]
        command = shlex.split(hints[0].split("run the same command again: ", 1)[1])
        assert command[:2] == ["msss-tf", "pretrain"]
        assert sorted(command[2:]) == sorted(f"--{k}={v}" for k, v in [
            ("data", "synthetic"), ("model_dir", run), ("train_steps", 5),
            ("steps_per_epoch", 4), ("synthetic_clips", 16), ("log_every", 1),
            ("width_coefficient", 0.25), ("depth_coefficient", 0.25), ("batch_size", 4),
            ("learning_rate", 0.001), ("losses", "clip")])
        assert f"{name} received: stopping after this step" in err
        summary = _summary(run)
        assert summary["status"] == "interrupted" and summary["train_steps"] == held
        assert _held(run)[0] == held

    # The command the hint printed, as printed.
    again = subprocess.run([sys.executable, "-c", _EAGER_CLI, *command[1:]], env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trained 2 step(s) in 1 epoch(s) this run, 5 steps in all" in again.stdout
    assert _held(run)[0] == 5
    model = keras.models.load_model(run / "model.keras")
    assert int(model.optimizer.iterations.numpy()) == 5
    assert [i["status"] for i in _summary(run)["invocations"]] == [
        "interrupted", "interrupted", "completed"]
    starts = [e for e in read_run_log(run) if e["event"] == "start"]
    assert [s["optimizer_step"] for s in starts] == [0, 2, 3]
