"""The ablation study runner and its report (experiments/study/, experiments/ablation.py)."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from experiments import study
from helpers import REPO_ROOT

ROOT = REPO_ROOT
METHOD_MD = os.path.join(ROOT, "..", "shared", "reference", "method.md")
TASK_METRICS = (("synthetic_scene", "top1_acc"), ("synthetic_pitch", "pitch_acc"),
                ("synthetic_pitch", "chroma_acc"), ("synthetic_events", "event_onset_fscore"))


# ------------------------------------------------------------------ hand-made studies
def make_study(out_dir, values, budget=study.BUDGETS["smoke"]):
    """A study directory written by hand: values[config][seed] = {(task, metric): value}."""
    os.makedirs(out_dir, exist_ok=True)
    seeds = sorted({s for per_seed in values.values() for s in per_seed})
    record = {"budget": budget.to_dict(), "seeds": seeds, "configurations": list(values),
              "tasks": ["synthetic_scene", "synthetic_pitch", "synthetic_events"],
              "machine": study.machine_info(),
              "invocations": [{"command": "python -m experiments.ablation --budget=smoke",
                               "started": "2026-01-01 10:00:00 UTC",
                               "ended": "2026-01-01 10:02:05 UTC", "wall_seconds": 125.0,
                               "load_average_start": 0.5, "load_average_end": 9.25}]}
    with open(os.path.join(out_dir, study.STUDY_FILE), "w") as f:
        json.dump(record, f)
    for key, per_seed in values.items():
        for seed, cells in per_seed.items():
            rows = []
            for (task, metric), value in cells.items():
                for split, v in (("test", value), ("valid", 1.0 - value)):
                    rows.append({"task": task, "metric": metric, "value": v, "split": split,
                                 "encoder": key, "probe": "linear", "learning_rate": 1e-3,
                                 "seed": seed, "extras": "{}"})
            path = os.path.join(study.run_dir(out_dir, key, seed), study.RUN_RESULT)
            os.makedirs(os.path.dirname(path))
            with open(path, "w") as f:
                json.dump({"configuration": key, "seed": seed, "rows": rows}, f)
    return out_dir


def summary_of(means, stds=None, n=3):
    """A hand-made aggregate: means[config] = {(task, metric): mean}."""
    out = []
    for key, cells in means.items():
        for (task, metric), mean in cells.items():
            std = (stds or {}).get(key, {}).get((task, metric), 0.0)
            out.append({"configuration": key, "label": key, "task": task, "metric": metric,
                        "n": n, "mean": mean, "std": std, "seeds": list(range(n)),
                        "values": [mean] * n})
    return out


# --------------------------------------------------------------------- aggregation
def test_aggregate_mean_and_sample_std():
    rows = [{"configuration": "all", "seed": s, "task": "t", "metric": "m", "value": v}
            for s, v in ((2, 0.3), (0, 0.1), (1, 0.2))]
    rows += [{"configuration": "clip", "seed": 0, "task": "t", "metric": "m", "value": 0.5}]
    out = study.aggregate(rows)
    assert [r["configuration"] for r in out] == ["clip", "all"]  # table order, not input order
    clip, three = out
    assert three["n"] == 3 and three["values"] == [0.1, 0.2, 0.3] and three["seeds"] == [0, 1, 2]
    assert three["mean"] == pytest.approx(0.2)
    assert three["std"] == pytest.approx(0.1)  # sqrt(((-.1)^2 + 0 + .1^2) / (3 - 1))
    assert clip["n"] == 1 and clip["mean"] == 0.5 and clip["std"] == 0.0


def test_report_numbers_equal_the_run_results(tmp_path):
    rng = np.random.default_rng(0)
    values = {key: {seed: {tm: float(np.round(rng.uniform(0.1, 0.9), 6)) for tm in TASK_METRICS}
                    for seed in (0, 1, 2)}
              for key in ("clip", "all", "random_init", "logmel")}
    out = make_study(str(tmp_path / "study"), values)
    paths = study.write_report(out)

    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 * len(TASK_METRICS)
    for row in table:
        per_seed = [values[row["configuration"]][s][(row["task"], row["metric"])]
                    for s in (0, 1, 2)]
        assert float(row["mean"]) == pytest.approx(np.mean(per_seed), abs=1e-6)
        assert float(row["std"]) == pytest.approx(np.std(per_seed, ddof=1), abs=1e-6)
        assert [float(v) for v in row["values"].split(";")] == pytest.approx(per_seed, abs=1e-6)
        assert row["n"] == "3"
        if row["configuration"] == "all" and row["task"] == "synthetic_scene":
            assert (row["paper_real_task"], row["paper_value"]) == ("speech_commands", "0.572")
        if row["configuration"] in ("random_init", "logmel"):
            assert row["paper_value"] == ""  # not in the paper

    with open(paths["md"]) as f:
        md = f.read()
    cell = values["clip"]
    per_seed = [cell[s][("synthetic_events", "event_onset_fscore")] for s in (0, 1, 2)]
    assert f"{np.mean(per_seed):.3f} ± {np.std(per_seed, ddof=1):.3f}" in md
    assert "| COLA (L_clip) |" in md and "| log-mel mean+std (reference) |" in md
    assert "REAL tasks" in md and "| all three, cosine similarity | 0.401 | 0.094 |" in md
    assert len(paths["plots"]) == len(TASK_METRICS)
    for path in paths["plots"]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_render_docs_keeps_the_lead_notes(tmp_path):
    values = {key: {0: {tm: 0.5 for tm in TASK_METRICS}, 1: {tm: 0.6 for tm in TASK_METRICS}}
              for key in ("clip", "all")}
    out = make_study(str(tmp_path / "study"), values)
    docs = str(tmp_path / "docs" / "results.md")
    study.render_docs(out, docs)
    with open(docs) as f:
        text = f.read()
    assert study.NOTES_PLACEHOLDER in text
    assert "This page comes from the `smoke` budget" in text  # make_study's budget
    assert "python -m experiments.ablation --budget=smoke" in text  # the exact command
    assert "2m05s" in text and "2026-01-01 10:00:00" in text  # wall time and date
    assert "load average 0.5-9.25 (above the core count" in text
    assert study.machine_info()["cpu_model"] in text
    assert "synthetic_events  4 s clips" in text  # task descriptions from the docstring
    assert "0.550 ± 0.071" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == len(TASK_METRICS)
    assert all(os.path.exists(os.path.join(tmp_path, "docs", p)) for p in images)

    notes = "The lead's reading.\n\nSecond paragraph, with | a pipe."
    text = text.replace(study.NOTES_PLACEHOLDER, notes)
    with open(docs, "w") as f:
        f.write(text)
    study.render_docs(out, docs)  # re-render: the notes stay
    with open(docs) as f:
        again = f.read()
    assert notes in again and study.NOTES_PLACEHOLDER not in again
    assert again.count(study.NOTES_BEGIN) == 1


# ---------------------------------------------------------------------------- claims
def test_claims_on_hand_made_numbers():
    scene, pitch, chroma, events = TASK_METRICS
    means = {
        "clip": {scene: 0.50, pitch: 0.40, chroma: 0.45, events: 0.20},
        "clip_frame": {scene: 0.52, pitch: 0.39, chroma: 0.44, events: 0.35},
        "clip_pitch": {scene: 0.60, pitch: 0.45, chroma: 0.46, events: 0.22},
        "all": {scene: 0.58, pitch: 0.46, chroma: 0.50, events: 0.30},
        "all_cosine": {scene: 0.40, pitch: 0.20, chroma: 0.25, events: 0.10},
        "random_init": {scene: 0.30, pitch: 0.10, chroma: 0.20, events: 0.05},
        "logmel": {scene: 0.35, pitch: 0.30, chroma: 0.40, events: 0.40},
    }
    stds = {"all": {scene: 0.03}, "clip": {scene: 0.04}}
    claims = {c["claim"]: c for c in study.evaluate_claims(summary_of(means, stds))}
    verdicts = {k: c["holds"] for k, c in claims.items()}
    assert verdicts == {
        "all three losses beat clip-only (COLA) on every task": True,
        "the frame loss helps event detection most": True,
        "the pitch loss helps keywords (clip+pitch beats clip-only)": True,
        "the pitch loss helps pitch (clip+pitch beats clip-only)": True,
        "bilinear similarity beats cosine (all three losses)": True,
        "pre-training (all three) beats a randomly initialised encoder": True,
        "pre-training (all three) beats the log-mel front end alone": False,  # events 0.30 < 0.40
    }
    first = {c["task"]: c for c in claims["all three losses beat clip-only (COLA) on every task"]
             ["comparisons"]}
    # scene: +0.08 vs spread sqrt(0.03^2 + 0.04^2) = 0.05 -> exceeds; events: +0.10 vs 0.
    assert first["synthetic_scene"]["diff"] == pytest.approx(0.08)
    assert first["synthetic_scene"]["spread"] == pytest.approx(0.05)
    assert first["synthetic_scene"]["exceeds"] is True
    stds["all"][scene] = 0.09  # spread ~0.098 > 0.08
    claims = {c["claim"]: c for c in study.evaluate_claims(summary_of(means, stds))}
    scene_cmp = claims["all three losses beat clip-only (COLA) on every task"]["comparisons"][0]
    assert scene_cmp["exceeds"] is False and claims[
        "all three losses beat clip-only (COLA) on every task"]["holds"] is True

    # The pitch loss, not the frame loss, gives events its largest gain: the claim fails.
    means["clip_pitch"][events] = 0.40
    claims = {c["claim"]: c for c in study.evaluate_claims(summary_of(means))}
    assert claims["the frame loss helps event detection most"]["holds"] is False
    # The frame loss helps keywords more than events: fails too.
    means["clip_pitch"][events] = 0.22
    means["clip_frame"][scene] = 0.70
    claims = {c["claim"]: c for c in study.evaluate_claims(summary_of(means))}
    assert claims["the frame loss helps event detection most"]["holds"] is False
    # Cosine better on one metric: bilinear-beats-cosine fails.
    means["all_cosine"][chroma] = 0.51
    claims = {c["claim"]: c for c in study.evaluate_claims(summary_of(means))}
    assert claims["bilinear similarity beats cosine (all three losses)"]["holds"] is False
    # One seed: no spread to compare with.
    claims = study.evaluate_claims(summary_of(means, n=1))
    assert all(c["exceeds"] is None for claim in claims for c in claim["comparisons"])
    # Rows absent: not measured.
    only = {k: means[k] for k in ("clip", "all")}
    claims = {c["claim"]: c for c in study.evaluate_claims(summary_of(only))}
    assert claims["bilinear similarity beats cosine (all three losses)"]["holds"] is None
    assert "not measured" in study.claims_md(list(claims.values()))
    text = study.claims_md(study.evaluate_claims(summary_of(means, stds)))
    assert "synthetic_scene top1_acc: all 0.580 vs clip 0.500, difference +0.080 (within the " \
           "spread 0.098)" in text


def test_claims_on_the_papers_own_table():
    claims = {c["claim"]: c["holds"] for c in study.evaluate_claims(study.paper_summary())}
    assert claims["all three losses beat clip-only (COLA) on every task"] is True
    assert claims["the frame loss helps event detection most"] is True
    assert claims["the pitch loss helps keywords (clip+pitch beats clip-only)"] is True
    assert claims["the pitch loss helps pitch (clip+pitch beats clip-only)"] is False  # .428<.434
    assert claims["bilinear similarity beats cosine (all three losses)"] is True
    assert claims["pre-training (all three) beats a randomly initialised encoder"] is None


@pytest.mark.skipif(not os.path.exists(METHOD_MD), reason="shared/reference/method.md absent")
def test_paper_numbers_match_method_md():
    with open(METHOD_MD) as f:
        text = f.read()
    for row, values in study.PAPER_RESULTS.items():
        line = next(l for l in text.splitlines() if l.startswith(f"| {row} |"))
        cells = [float(c) for c in line.strip("| \n").split("|")[1:]]
        assert tuple(cells) == values, row
    for c in study.CONFIGURATIONS:
        assert c.paper_row is None or c.paper_row in study.PAPER_RESULTS


# ---------------------------------------------------------------------------- budgets
def test_budgets_and_json_budget(tmp_path):
    for budget in study.BUDGETS.values():
        config = budget.msss_config(losses=("clip",), seed=3)
        assert config.seed == 3 and config.losses == ("clip",)
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"base": "default", "train_steps": 7,
                                "config": {"lambda_frame": 0.1}}))
    budget = study.load_budget(str(path))
    default = study.BUDGETS["default"]
    assert budget.name == "b" and budget.train_steps == 7
    assert budget.config == {**default.config, "lambda_frame": 0.1}
    assert budget.task_scale == default.task_scale
    path.write_text(json.dumps({"base": "smoke", "config": {"losses": ["clip"]}}))
    with pytest.raises(ValueError, match="losses"):
        study.load_budget(str(path))
    path.write_text(json.dumps({"base": "smoke", "config": {"widht_coefficient": 1}}))
    with pytest.raises(ValueError, match="unknown field"):
        study.load_budget(str(path))
    with pytest.raises(ValueError, match="smoke"):
        study.load_budget("no-such-budget")
    with pytest.raises(ValueError, match="unknown"):
        study.select_configurations(["clip", "nope"])
    assert [c.key for c in study.select_configurations(None)] == [
        "clip", "clip_frame", "clip_pitch", "all", "all_cosine", "random_init", "logmel"]
    assert [c.key for c in study.select_configurations(["logmel", "random_init_bn_at_init"])] \
        == ["random_init_bn_at_init", "logmel"]


# ------------------------------------------------------------------- the runner
def _check_finished_study(out, keys, seeds):
    for key in keys:
        for seed in seeds:
            result = study.read_run_result(out, key, seed)
            assert result is not None and result["configuration"] == key
            test_rows = [r for r in result["rows"] if r["split"] == "test"]
            assert {(r["task"], r["metric"]) for r in test_rows} == set(TASK_METRICS)
            assert all(0.0 <= r["value"] <= 1.0 for r in test_rows)
    with open(os.path.join(out, study.RESULTS_CSV)) as f:
        table = list(csv.DictReader(f))
    assert {r["configuration"] for r in table} == set(keys)
    for row in table:  # the table's numbers are the run results'
        runs = [study.read_run_result(out, row["configuration"], s) for s in seeds]
        vals = [next(r["value"] for r in run["rows"] if r["split"] == "test" and
                     (r["task"], r["metric"]) == (row["task"], row["metric"])) for run in runs]
        assert float(row["mean"]) == pytest.approx(np.mean(vals), abs=1e-6)
    assert len(os.listdir(os.path.join(out, study.PLOT_DIR))) == len(TASK_METRICS)
    assert os.path.exists(os.path.join(out, study.RESULTS_MD))


@pytest.mark.filterwarnings("ignore:Even though the .*run_functions_eagerly")
@pytest.mark.slow  # an end-to-end fit: the default run stays under 6 minutes
def test_smoke_study_one_configuration_and_references_then_resume(tmp_path, monkeypatch, capsys):
    """The smoke budget end to end on clip-only + the two reference rows, then a second
    invocation that must neither pre-train nor probe again."""
    out = str(tmp_path / "smoke")
    keys = ["clip", "random_init", "logmel"]
    study.run_study(out, study.BUDGETS["smoke"], seeds=1, configs=keys, command="test run",
                    jobs=2)
    printed = capsys.readouterr().out
    assert "ETA" in printed and "elapsed" in printed
    assert "3 runs in 2 worker processes" in printed
    _check_finished_study(out, keys, [0])
    # A run in a worker process gives the numbers the same run gives in this process.
    (logmel,) = study.select_configurations(["logmel"])
    tasks = study.load_tasks(list(study.BUILTIN_TASKS), study.BUDGETS["smoke"])
    here = study.run_one(logmel, 0, study.BUDGETS["smoke"], tasks, str(tmp_path / "here"))
    assert here["rows"] == study.read_run_result(out, "logmel", 0)["rows"]
    model = os.path.join(study.run_dir(out, "clip", 0), "pretrain", "model.keras")
    assert os.path.exists(model)
    with open(os.path.join(study.run_dir(out, "clip", 0), "pretrain", "summary.json")) as f:
        assert json.load(f)["train_steps"] == study.BUDGETS["smoke"].train_steps
    reference = study.read_run_result(out, "random_init", 0)
    assert reference["calibration_passes"] == study.BUDGETS["smoke"].calibration_passes > 0
    stamps = {p: os.stat(p).st_mtime_ns for p in
              [model] + [os.path.join(study.run_dir(out, k, 0), study.RUN_RESULT) for k in keys]}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr(study.runner, "make_embedder", refuse)
    monkeypatch.setattr(study.runner, "probe_all", refuse)
    record = study.run_study(out, study.BUDGETS["smoke"], seeds=1, configs=keys,
                             command="second run")
    assert "3 of 3 runs already done" in capsys.readouterr().out
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps
    assert [i["command"] for i in record["invocations"]] == ["test run", "second run"]
    assert record["invocations"][-1]["runs_done"] == 0

    other = study.BUDGETS["smoke"].to_dict()
    other["train_steps"] += 1
    with pytest.raises(ValueError, match="train_steps"):
        study.run_study(out, study.Budget(**other), seeds=1, configs=keys)


@pytest.mark.slow  # the study CLI in a subprocess: ~5-8 s
def test_ablation_cli_report_only(tmp_path):
    values = {key: {0: {tm: 0.25 for tm in TASK_METRICS}} for key in ("clip", "logmel")}
    out = make_study(str(tmp_path / "study"), values)
    docs = str(tmp_path / "docs" / "results.md")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.ablation", "--report_only", f"--out_dir={out}",
         f"--docs={docs}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.exists(os.path.join(out, study.RESULTS_CSV)) and os.path.exists(docs)
    assert "report:" in proc.stdout and "docs:" in proc.stdout


@pytest.mark.slow
def test_smoke_study_all_rows_through_the_cli(tmp_path):
    out = str(tmp_path / "smoke")
    proc = subprocess.run([sys.executable, "-m", "experiments.ablation", "--budget=smoke",
                           f"--out_dir={out}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_finished_study(out, [c.key for c in study.CONFIGURATIONS if c.default], [0])


def test_real_tasks_found_under_data_dir(tmp_path, capsys):
    from msss_tf.data.tasks import DCASE2016_FOLDER, synthetic_task, write_hear_task

    assert study.available_real_tasks(None) == []
    assert study.available_real_tasks(str(tmp_path)) == []  # nothing there: none, no error
    assert "dcase2016_task2: not used" in capsys.readouterr().out
    write_hear_task(synthetic_task("synthetic_events", scale=0.05),
                    str(tmp_path / DCASE2016_FOLDER))
    assert study.available_real_tasks(str(tmp_path)) == ["dcase2016_task2"]
    (task,) = study.load_tasks(["dcase2016_task2"], study.BUDGETS["smoke"], str(tmp_path))
    assert task.kind == "event" and task.metrics == ["event_onset_fscore"]
