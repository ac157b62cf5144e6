"""experiments/ship_checkpoint.py: reading the cached probes and choosing the run."""

import csv
import os

import pytest
from absl import app

from experiments import ship_checkpoint as ship

TASKS = ["realistic_keywords", "realistic_pitch", "realistic_events"]


def _write_probe(run_dir, name, values):
    """A `long_run layers` cache for encoder `name` at stage 3: values[split][task]."""
    for task in TASKS:
        folder = os.path.join(run_dir, "layers", f"{name}-stage3", task)
        os.makedirs(folder)
        with open(os.path.join(folder, "results.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["task", "metric", "value", "split"])
            writer.writeheader()
            for split in ("valid", "test"):
                writer.writerow({"task": task, "metric": ship.FIRST_METRIC[task],
                                 "value": values[split][task], "split": split})
                if task == "realistic_pitch":  # a second metric, never used to choose
                    writer.writerow({"task": task, "metric": "chroma_acc", "value": 0.99,
                                     "split": split})


def _run(tmp_path, name, valid, at_init, calibrated, test=0.5):
    run_dir = str(tmp_path / name)
    same = lambda v: dict(zip(TASKS, v))  # noqa: E731
    _write_probe(run_dir, "step-008000", {"valid": same(valid), "test": same([test] * 3)})
    _write_probe(run_dir, "random_init_bn_at_init",
                 {"valid": same(at_init), "test": same([0.9] * 3)})
    _write_probe(run_dir, "random_init_bn_calibrated",
                 {"valid": same(calibrated), "test": same([0.9] * 3)})
    return run_dir


def _candidate(run_dir):
    scores = ship.probe_scores(run_dir, 8000, "stage3", TASKS)
    valid = list(ship.first_metrics(scores["valid"], TASKS).values())
    candidate = {"run": os.path.basename(run_dir), "valid_mean": sum(valid) / len(valid),
                 "scores": scores,
                 "references": {form: ship.probe_scores(run_dir, 0, "stage3", TASKS, form)
                                for form in ship.REFERENCES}}
    candidate["valid_margin"] = ship.validation_margin(candidate, TASKS)
    return candidate


def test_the_margin_rule_and_the_mean_rule_choose_by_validation_only(tmp_path):
    # a: the best mean, but behind its own untrained encoder (calibrated) on pitch.
    a = _candidate(_run(tmp_path, "a", valid=[0.80, 0.55, 0.60], at_init=[0.40, 0.50, 0.30],
                        calibrated=[0.40, 0.60, 0.30], test=0.99))
    # b: a lower mean, ahead of both forms of its own untrained encoder on every task.
    b = _candidate(_run(tmp_path, "b", valid=[0.60, 0.60, 0.45], at_init=[0.40, 0.55, 0.30],
                        calibrated=[0.50, 0.52, 0.35], test=0.01))
    assert b["scores"]["valid"]["realistic_pitch/chroma_acc"] == 0.99  # read, not chosen on
    assert ship.validation_margin(a, TASKS) == pytest.approx(-0.05)
    assert ship.validation_margin(b, TASKS) == pytest.approx(0.05)  # pitch over at-init
    assert ship.choose([a, b], "margin")["run"] == "b"
    assert ship.choose([a, b], "valid_mean")["run"] == "a"
    with pytest.raises(ValueError, match="rule"):
        ship.choose([a, b], "test")


def test_a_missing_probe_names_the_file_and_the_command_that_writes_it(tmp_path):
    run_dir = _run(tmp_path, "a", valid=[0.5] * 3, at_init=[0.4] * 3, calibrated=[0.4] * 3)
    with pytest.raises(app.UsageError, match="step-004000-stage3.*--curve_steps=4000"):
        ship.probe_scores(run_dir, 4000, "stage3", TASKS)
    with pytest.raises(app.UsageError, match="random_init_bn_at_init-stage4.*--curve_steps=0"):
        ship.probe_scores(run_dir, 0, "stage4", TASKS, "random_init_bn_at_init")
