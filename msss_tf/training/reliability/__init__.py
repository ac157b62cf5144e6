"""What keeps a long pre-training run safe: atomic backups and checkpoints, a guard
against non-finite losses, and a log of every start, committed epoch and bad step.

Used by `msss_tf.training.pretrain`; each piece is a Keras callback (or a small helper) that works
in any `model.fit`:

* `AtomicBackupAndRestore`: Keras' `BackupAndRestore`, but every backup is committed
  atomically. The weights (model + optimiser) go to a new file that is renamed into
  place, then `training_metadata.json` (written atomically too) is switched to name it;
  the previous weights file is deleted only after that. A SIGKILL at any instant leaves
  either the old or the new state, never a mix (Keras' own callback writes its weights
  and its JSON in place: a kill between them resumes with the next epoch's weights under
  the previous epoch's counter, and a kill inside the JSON write breaks the resume).
* `AtomicModelCheckpoint`: the full model per epoch, written to `*.tmp.keras` then
  renamed; leftovers of a killed write are removed on the next start.
* `NonFiniteGuard` (+ `install_nonfinite_skip`): a non-finite loss or non-finite weights
  either stop the run with `NonFiniteLossError` naming the step (policy "stop") before
  anything is saved, or the step is undone and training goes on (policy "skip").
* `RunLog`: `train_log.jsonl` in the run directory, one JSON object per event: "start"
  (initial epoch, optimiser step, fingerprints of the restored state), "epoch_end" (after
  the epoch's backup is committed), "nonfinite" (a skipped or fatal step).
* `GracefulStop` + `StopAtStep`: SIGINT (Ctrl-C) and SIGTERM (schedulers) only set a
  flag; `StopAtStep` ends `fit` at the next step boundary, where the epoch-end callbacks
  commit the state of that step (checkpoint, backup), and the caller raises
  `TrainingInterrupted`. A second signal raises `TrainingAborted` at once. `StopAtStep`
  also ends `fit` when the optimiser reaches the step budget, so the last epoch may be
  shorter and the step count is exact.
* Step numbers: "step N" in messages, `train_log.jsonl` ("fit_step") and the test hook is
  the N-th batch of the run, counted across resumes (the backup records it as "batches");
  the optimiser's own count ("optimizer_step", backup "step") leaves out undone steps.
* Test hooks: the environment variable `MSSS_TF_TEST_PAUSE` ("step:N" or
  "checkpoint:E") makes a run stop and sleep right after global step N, or after epoch
  E's checkpoint is written but before it is renamed, after touching
  `<model_dir>/.test-paused`; tests SIGKILL the process there, or send it SIGINT/SIGTERM
  (a caught signal ends the pause). Unset in normal use.

Modules: `signals` (GracefulStop, StopAtStep, the interrupt errors), `hooks` (the test
pause, the shared batch counter), `checkpoints` (atomic checkpoints and backups),
`nonfinite` (the guard), `runlog` (train_log.jsonl). This package re-exports their names.
"""

from msss_tf.training.reliability.checkpoints import (METADATA, AtomicBackupAndRestore,
                                             AtomicModelCheckpoint, read_backup_metadata,
                                             save_model_atomically)
from msss_tf.training.reliability.hooks import TEST_PAUSE_ENV, TEST_PAUSE_MARKER, test_hook_callbacks
from msss_tf.rundir import last_good_checkpoint  # where the run layout lives
from msss_tf.training.reliability.nonfinite import (NONFINITE_POLICIES, NonFiniteGuard,
                                           NonFiniteLossError, install_nonfinite_skip)
from msss_tf.training.reliability.runlog import TRAIN_LOG, RunLog, read_run_log
from msss_tf.training.reliability.signals import (GracefulStop, StopAtStep, TrainingAborted,
                                         TrainingInterrupted, signal_name, stop_requested)

__all__ = [
    "METADATA", "NONFINITE_POLICIES", "TEST_PAUSE_ENV", "TEST_PAUSE_MARKER", "TRAIN_LOG",
    "AtomicBackupAndRestore", "AtomicModelCheckpoint", "GracefulStop", "NonFiniteGuard",
    "NonFiniteLossError", "RunLog", "StopAtStep", "TrainingAborted", "TrainingInterrupted",
    "install_nonfinite_skip", "last_good_checkpoint", "read_backup_metadata", "read_run_log",
    "save_model_atomically", "signal_name", "stop_requested", "test_hook_callbacks",
]
