"""Fault injection (issue 14): `msss-tf pretrain` SIGKILLed at random points (mid-epoch and
inside the steps of a save), resumed each time with the same command, ends holding exactly
`--train_steps` optimiser steps with the same weights, step for step, as a run that was
never killed; and nothing a killed write leaves behind is ever read.

The kill points are drawn from `random.Random(SEED)`: a failure names the seed and the
points, and the same seed replays the same kills (set MSSS_TF_FAULT_SEED to draw others).
Each point is named, so no kill depends on timing:

* `step` and `checkpoint-written` use pretrain's own test hook (MSSS_TF_TEST_PAUSE, see
  docs/reliability.md): the run pauses after global step N, or with epoch E's checkpoint
  written to `epoch-000E.tmp.keras` but not yet renamed, and this test SIGKILLs it.
* The other seven points are inside the writes themselves. The child process runs the real CLI
  behind `_CHILD` below, which wraps `os.replace` and `zipfile.ZipFile.open` (in that
  process only; nothing in msss_tf changes) and SIGKILLs itself at the k-th time it reaches
  the named point: half-way through a checkpoint's zip (a torn `.tmp.keras`), before or
  after the backup's weights rename, before or after the rename that commits the backup's
  `training_metadata.json` (after it: the epoch is committed but `train_log.jsonl` has no
  `epoch_end` for it), before the final `model.keras` rename, before the final
  `summary.json` rename.

Each seed draws four kills: one mid-epoch, one in a checkpoint's write, one in the backup's
write (in a random order, each at a random step or epoch), then one in the final saves.

Exact equality with an uninterrupted run is possible on CPU, with one caveat. Every file
restores exactly (weights, Adam state, step counts), but a resumed process re-seeds its data
with the committed epoch (by design: see "Determinism" in docs/reliability.md) and its
views' SeedGenerator starts from the seed again (its state is not among the saved weights),
so a run resumed at epoch E is not bitwise the run that went through E without stopping.
The reference is therefore the same command run in clean segments that stop
(`--train_steps`) at the epochs the killed chain resumed from: that is what the chain must
equal, epoch by epoch, to the last bit of every fingerprint.

Subprocesses run with `tf.config.run_functions_eagerly(True)` (no trace of the train step:
seconds per process, not minutes) and the reference in this process with the model compiled
eagerly (tests/helpers.py); both give bitwise the same fingerprints on CPU.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest

from msss_tf import cli
from msss_tf.training.reliability import TEST_PAUSE_ENV, TEST_PAUSE_MARKER, read_run_log
from helpers import run_pretrain_eagerly

# Seed 10 draws (point, where, committed epoch before, after): ("backup-committed", 2nd
# epoch, 0, 2), ("step", 6, 2, 2), ("checkpoint-torn", 2nd epoch, 2, 3),
# ("final-model-written", 1, 3, 4).
SEED = int(os.environ.get("MSSS_TF_FAULT_SEED", "10"))
TRAIN_STEPS, STEPS_PER_EPOCH = 7, 2  # epochs of 2, 2, 2 and 1 steps
EPOCHS = -(-TRAIN_STEPS // STEPS_PER_EPOCH)
KEEP = 3  # AtomicModelCheckpoint keeps the newest three checkpoints

SMALL_FLAGS = ["--width_coefficient=0.25", "--depth_coefficient=0.25", "--batch_size=4",
               "--learning_rate=1e-3", "--losses=clip"]

# Points inside an epoch, in the order they come: its training, then its end-of-epoch
# saves (the checkpoint, then the backup: the commit point).
CHECKPOINT_POINTS = (
    "checkpoint-torn",          # half-way through writing checkpoints/epoch-000E.tmp.keras
    "checkpoint-written",       # that file complete, not renamed (the pause hook)
)
BACKUP_POINTS = (
    "backup-weights-written",   # backup/.tmp-epoch-00000E.weights.h5 complete, not renamed
    "backup-weights-renamed",   # renamed; training_metadata.json still names epoch E-1
    "backup-metadata-written",  # training_metadata.json.tmp-PID complete, not renamed
    "backup-committed",         # renamed: epoch E committed; no epoch_end in the log yet
)
EPOCH_POINTS = ("step", *CHECKPOINT_POINTS, *BACKUP_POINTS)  # "step": after global step N
# Points after the last step: the final model and summary.
END_POINTS = ("final-model-written", "summary-written")

KILL_ENV, KILL_MARKER_ENV = "MSSS_TF_FAULT_KILL", "MSSS_TF_FAULT_MARKER"

# The `msss-tf` command, killing itself at MSSS_TF_FAULT_KILL="POINT@K" (the K-th time it
# reaches POINT) after writing POINT to MSSS_TF_FAULT_MARKER. Test-only: the wrappers exist
# in this child process alone.
_CHILD = r"""
import os, signal, sys, zipfile
import tensorflow as tf
tf.config.run_functions_eagerly(True)
point, _, nth = os.environ.get("MSSS_TF_FAULT_KILL", "").partition("@")
nth, seen = int(nth or 0), [0]

def reached(name):
    if name != point:
        return
    seen[0] += 1
    if seen[0] == nth:
        with open(os.environ["MSSS_TF_FAULT_MARKER"], "w") as f:
            f.write(name)
        os.kill(os.getpid(), signal.SIGKILL)

# (before the rename, after it) for the temporary names pretrain renames into place.
RENAMES = (
    (lambda n: n.startswith(".tmp-epoch-") and n.endswith(".weights.h5"),
     "backup-weights-written", "backup-weights-renamed"),
    (lambda n: n.startswith("training_metadata.json.tmp-"),
     "backup-metadata-written", "backup-committed"),
    (lambda n: n == "model.tmp.keras", "final-model-written", None),
    (lambda n: n.startswith("summary.json.tmp-"), "summary-written", None),
)
real_replace = os.replace

def replace(src, dst, *args, **kwargs):
    name = os.path.basename(os.fspath(src))
    hits = [(before, after) for match, before, after in RENAMES if match(name)]
    for before, _ in hits:
        reached(before)
    real_replace(src, dst, *args, **kwargs)
    for _, after in hits:
        if after:
            reached(after)

os.replace = replace
real_open = zipfile.ZipFile.open

def zip_open(self, name, mode="r", *args, **kwargs):
    target = os.path.basename(str(self.filename or ""))
    if mode == "w" and name == "config.json" and target.startswith("epoch-") \
            and target.endswith(".tmp.keras"):
        self.fp.flush()  # the first member is on disk; the rest (and the index) never is
        reached("checkpoint-torn")
    return real_open(self, name, mode, *args, **kwargs)

zipfile.ZipFile.open = zip_open
from msss_tf.cli import main
sys.exit(main(["msss-tf", *sys.argv[1:]]))
"""


def _args(run, train_steps=TRAIN_STEPS):
    return ["pretrain", "--data=synthetic", f"--model_dir={run}", f"--train_steps={train_steps}",
            f"--steps_per_epoch={STEPS_PER_EPOCH}", "--synthetic_clips=8", "--log_every=1",
            *SMALL_FLAGS]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    for name in (TEST_PAUSE_ENV, KILL_ENV, KILL_MARKER_ENV):
        env.pop(name, None)
    env.update(extra)
    return env


def _committed(run):
    """(epochs, optimiser steps, batches) of the committed backup; zeros if none."""
    path = os.path.join(run, "backup", "training_metadata.json")
    if not os.path.exists(path):
        return 0, 0, 0
    with open(path) as f:
        meta = json.load(f)
    return int(meta["epoch"]), int(meta["step"]), int(meta["batches"])


def _kill_at(run, marker, point, where, timeout=400):
    """Runs the command until it is SIGKILLed at `point` (`where`: global step N, epoch E
    or the K-th time the point is reached in this process)."""
    if point in ("step", "checkpoint-written"):
        hook = f"{'step' if point == 'step' else 'checkpoint'}:{where}"
        env, pause = _env(**{TEST_PAUSE_ENV: hook}), os.path.join(run, TEST_PAUSE_MARKER)
    else:
        env, pause = _env(**{KILL_ENV: f"{point}@{where}", KILL_MARKER_ENV: marker}), None
    for path in (marker, pause):
        if path and os.path.exists(path):
            os.remove(path)
    log = marker + ".log"  # a file, not a pipe: a paused child never blocks on its output

    def output():
        with open(log, errors="replace") as f:
            return f.read()[-3000:]

    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, *_args(run)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    try:
        if pause:  # our SIGKILL, at the pause
            while not os.path.exists(pause):
                assert proc.poll() is None, f"exited before {point} {where}:\n{output()}"
                assert time.time() < deadline, f"no pause at {point} {where} in {timeout} s"
                time.sleep(0.1)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=max(1, deadline - time.time()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, \
        f"not killed at {point} {where} (exit {proc.returncode}):\n{output()}"
    if pause:
        os.remove(pause)
    else:
        with open(marker) as f:
            assert f.read() == point


def _complete_zip(path):
    """Whether `path` is a whole zip archive (every member's CRC checks)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return zf.testzip() is None


def _check_after_kill(run, point):
    """What must hold however the run died: a readable commit naming a whole weights file,
    whole checkpoints only, and `latest_checkpoint` on one of them."""
    import h5py

    from msss_tf.rundir import latest_checkpoint

    backup = os.path.join(run, "backup")
    if os.path.exists(os.path.join(backup, "training_metadata.json")):
        with open(os.path.join(backup, "training_metadata.json")) as f:
            meta = json.load(f)
        assert meta["step"] == min(meta["epoch"] * STEPS_PER_EPOCH, TRAIN_STEPS), meta
        assert h5py.is_hdf5(os.path.join(backup, meta["weights"])), meta
    checkpoints = os.path.join(run, "checkpoints")
    names = sorted(os.listdir(checkpoints)) if os.path.isdir(checkpoints) else []
    for name in names:
        if not name.endswith(".tmp.keras"):
            assert _complete_zip(os.path.join(checkpoints, name)), (point, name)
    tmp = [n for n in names if n.endswith(".tmp.keras")]
    if point == "checkpoint-torn":  # the hook fired mid-write: a torn file, never read
        assert len(tmp) == 1 and not _complete_zip(os.path.join(checkpoints, tmp[0])), names
    if point == "checkpoint-written":
        assert len(tmp) == 1 and _complete_zip(os.path.join(checkpoints, tmp[0])), names
    latest = latest_checkpoint(str(run))
    if latest is not None:
        assert ".tmp" not in os.path.basename(latest) and _complete_zip(latest), latest


def _fingerprint(variables):
    """As train_log.jsonl's (msss_tf.training.reliability.runlog): sum of |values| in float64."""
    return float(sum(np.abs(np.asarray(v.numpy(), np.float64)).sum() for v in variables))


def _chain(events):
    """{epoch: (optimiser step, weights fingerprint, optimiser fingerprint)} of the
    committed states a log records: each epoch_end, and the state each resumed start
    restored (the only record of an epoch killed between its commit and its log line)."""
    chain = {}
    for e in events:
        epoch = e["epoch"] if e["event"] == "epoch_end" else e.get("initial_epoch")
        if e["event"] in ("epoch_end", "start") and epoch:
            state = (e["optimizer_step"], e["weights_fingerprint"], e["optimizer_fingerprint"])
            assert chain.setdefault(epoch, state) == state, (epoch, chain[epoch], state)
    return chain


def _reference(run, stops, monkeypatch):
    """The command, never killed, run in clean segments ending at `stops` (optimiser
    steps) and then at TRAIN_STEPS; returns its train_log.jsonl events."""
    run_pretrain_eagerly(monkeypatch)
    for steps in [*stops, TRAIN_STEPS]:
        assert cli.main(["msss-tf", *_args(run, steps)]) == 0
    return read_run_log(str(run))


def _draw_kills(rng):
    """Four kill points: mid-epoch, in a checkpoint's write and in a backup's write (in a
    random order, each at a random step or epoch), then in the final saves."""
    points = ["step", rng.choice(CHECKPOINT_POINTS), rng.choice(BACKUP_POINTS)]
    rng.shuffle(points)
    return [*points, rng.choice(END_POINTS)]


@pytest.mark.slow  # five processes of the real command and a reference: ~2.5 min, 2 cores
def test_sigkill_at_random_points_then_resume_equals_the_uninterrupted_run(tmp_path,
                                                                            monkeypatch):
    import msss_tf.model.msss_model  # noqa: F401 (registers MSSSModel for load_model)

    rng = random.Random(SEED)
    run, marker = str(tmp_path / "run"), str(tmp_path / "killed-at")
    kills = []  # (point, where, committed epoch before, committed epoch after)
    points = _draw_kills(rng)
    for i, point in enumerate(points):
        epoch, step, batches = _committed(run)
        assert step == batches  # no undone steps here
        # The most epochs this kill may leave committed: later epoch kills need an epoch
        # still to train (one to commit, for "backup-committed").
        later = [p for p in points[i + 1:] if p in EPOCH_POINTS]
        limit = (EPOCHS - 1 if later else EPOCHS) - ("backup-committed" in later)
        if point == "step":  # global step N (counted across resumes)
            where = rng.randint(batches + 1, min(TRAIN_STEPS, (limit + 1) * STEPS_PER_EPOCH))
        elif point == "checkpoint-written":  # global epoch E
            where = rng.randint(epoch + 1, min(EPOCHS, limit + 1))
        elif point == "backup-committed":  # the K-th epoch of this process
            where = rng.randint(1, limit - epoch)
        elif point in EPOCH_POINTS:
            where = rng.randint(1, min(EPOCHS, limit + 1) - epoch)
        else:
            where = 1
        context = f"seed {SEED}, kills so far {kills}, now {point} {where}"
        _kill_at(run, marker, point, where)
        _check_after_kill(run, point)
        # The backup holds exactly the epochs committed before that point: never a lost
        # commit, never one of an epoch whose save was cut.
        after = _committed(run)[0]
        assert after == {
            "step": (where - 1) // STEPS_PER_EPOCH,  # the pause comes before the epoch's end
            "checkpoint-written": where - 1,
            "backup-committed": epoch + where,
        }.get(point, epoch + where - 1 if point in EPOCH_POINTS else EPOCHS), context
        kills.append((point, where, epoch, after))
    context = f"seed {SEED}, kills {kills}"
    print(context)  # (point, step / epoch / K-th time, committed epoch before, after)

    final = subprocess.run([sys.executable, "-c", _CHILD, *_args(run)], env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, context + final.stdout[-2000:] + final.stderr[-3000:]
    assert "Traceback" not in final.stderr, final.stderr[-3000:]
    assert f"{TRAIN_STEPS} steps" in final.stdout, final.stdout[-2000:]

    # Exactly the steps asked for, everywhere they are recorded.
    assert _committed(run) == (EPOCHS, TRAIN_STEPS, TRAIN_STEPS), context
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    assert (summary["status"], summary["train_steps"], summary["train_steps_requested"]) == (
        "completed", TRAIN_STEPS, TRAIN_STEPS), context

    # The log's chain: each start restored the last commit before it (the epoch the
    # backup held at the kill), no committed epoch was trained twice, each at its step.
    events = read_run_log(run)
    starts = [e for e in events if e["event"] == "start"]
    assert [s["initial_epoch"] for s in starts] == [0] + [k[3] for k in kills], context
    ends = [e["epoch"] for e in events if e["event"] == "epoch_end"]
    assert ends == sorted(set(ends)), context
    chain = _chain(events)
    assert sorted(chain) == list(range(1, EPOCHS + 1)), context
    for epoch, (step, _, _) in chain.items():
        assert step == min(epoch * STEPS_PER_EPOCH, TRAIN_STEPS), (context, epoch)

    # The same command in clean segments, stopped where the chain resumed: every epoch's
    # weights and optimiser state equal, to the bit.
    stops = sorted({min(s["initial_epoch"] * STEPS_PER_EPOCH, TRAIN_STEPS)
                    for s in starts} - {0, TRAIN_STEPS})
    reference = _chain(_reference(str(tmp_path / "reference"), stops, monkeypatch))
    assert chain == reference, context

    # The files hold that state: the final model and each checkpoint kept (whole files).
    checkpoints = os.path.join(run, "checkpoints")
    assert sorted(os.listdir(checkpoints)) == [
        f"epoch-{e:04d}.keras" for e in range(EPOCHS - KEEP + 1, EPOCHS + 1)], context
    for epoch, path in [(EPOCHS, os.path.join(run, "model.keras")),
                        *[(e, os.path.join(checkpoints, f"epoch-{e:04d}.keras"))
                          for e in range(EPOCHS - 1, EPOCHS + 1)]]:
        model = keras.models.load_model(path)
        step, weights, optimizer = reference[epoch]
        assert int(model.optimizer.iterations.numpy()) == step, (context, path)
        assert _fingerprint(model.weights) == weights, (context, path)
        assert _fingerprint(model.optimizer.variables) == optimizer, (context, path)

    # Nothing a killed write left is still there (TensorBoard's files aside).
    leftovers = [os.path.relpath(os.path.join(root, name), run)
                 for root, _, files in os.walk(run) if "logs" not in root.split(os.sep)
                 for name in files if "tmp" in name.lower() or name == TEST_PAUSE_MARKER]
    assert leftovers == [], context


# ----------------------------------------------------- leftovers of killed writes, planted
def test_leftovers_of_killed_writes_are_never_read_and_the_next_start_removes_them(
        tmp_path, monkeypatch):
    # What SIGKILLs inside saves leave (issue 14: a run killed during saves held
    # epoch-0007.tmp.keras files beside its checkpoints), planted on a real run: the newest
    # and highest-numbered files of all, so a reader going by name or time would take them.
    from msss_tf.config import MSSSConfig
    from msss_tf.training.pretrain import holds_trained_state, pretrain, remove_leftovers
    from msss_tf.rundir import last_good_checkpoint, latest_checkpoint

    run_pretrain_eagerly(monkeypatch)
    run = tmp_path / "run"
    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4,
                        learning_rate=1e-3, losses=("clip",))

    def train(steps):
        return pretrain(config, "synthetic", str(run), train_steps=steps, steps_per_epoch=1,
                        synthetic_clips=8, verbose=0)

    # Only a torn checkpoint: no checkpoint, nothing trained (the flags may still change).
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch-0001.tmp.keras").write_bytes(b"PK\x03\x04torn")
    assert last_good_checkpoint(str(run / "checkpoints")) is None
    assert latest_checkpoint(str(run)) is None and not holds_trained_state(str(run))

    train(1)
    leftovers = {
        "checkpoints/epoch-0007.tmp.keras": b"PK\x03\x04torn",  # a torn checkpoint
        "kept/epoch-0007.tmp.keras": b"PK\x03\x04torn",  # in long_run's own folder
        "model.tmp.keras": b"PK\x03\x04torn",  # the final model's write
        "summary.json.tmp-4242": b'{"status": "compl',
        "pretrain_run.json.tmp-4242": b'{"steps_per_epoch": 9',
        "skipped.json.tmp-4242": b"{",
        "msss_config.json.tmp": b"{",
        "backup/.tmp-epoch-000007.weights.h5": b"\x89HDF\r\n",  # the backup's weights write
        "backup/training_metadata.json.tmp-4242": b'{"epoch": 7, "weights": "epoch-0000',
    }
    later = time.time() + 60
    for name, data in leftovers.items():
        path = run / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (later, later))
    assert latest_checkpoint(str(run)) == str(run / "model.keras")
    assert last_good_checkpoint(str(run / "checkpoints")) == str(
        run / "checkpoints" / "epoch-0001.keras")
    (run / "model.keras").unlink()  # as if killed before the final model's rename
    assert latest_checkpoint(str(run)) == str(run / "checkpoints" / "epoch-0001.keras")

    # The same command again reads none of them: it restores the backup's epoch 1 (not
    # "epoch 7"), holds the step asked for and writes the final model again ...
    result = train(1)
    assert (result.initial_step, result.steps, result.steps_this_run) == (1, 1, 0)
    starts = [e for e in read_run_log(str(run)) if e["event"] == "start"]
    assert [(s["initial_epoch"], s["optimizer_step"]) for s in starts] == [(0, 0), (1, 1)]
    # ... and removes pretrain's own leftovers; another program's folder (kept/) is not
    # pretrain's to clean (long_run reads only exact epoch-NNNN.keras names there).
    left = sorted(os.path.relpath(os.path.join(root, name), run)
                  for root, _, files in os.walk(run) if "logs" not in root.split(os.sep)
                  for name in files if "tmp" in name)
    assert left == ["kept/epoch-0007.tmp.keras"]
    assert sorted(os.listdir(run / "checkpoints")) == ["epoch-0001.keras"]
    assert json.loads((run / "summary.json").read_text())["train_steps"] == 1
    assert latest_checkpoint(str(run)) == str(run / "model.keras")
    assert remove_leftovers(str(run)) == []
