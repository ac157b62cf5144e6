"""A study's report: results.csv, results.md and one plot per task / metric from its
run results, and the docs page (docs/results.md) with its hand-written notes kept."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from experiments.study.budgets import (CONFIG_BY_KEY, CONFIGURATIONS, PLOT_DIR, RESULTS_CSV,
                                       RESULTS_MD, STUDY_FILE, read_run_result)
from experiments.study.paper import (PAPER_COLUMNS, PAPER_RESULTS, TASK_ANALOGUE, claims_md,
                                     evaluate_claims, paper_summary, paper_table, task_metrics)
from msss_tf.atomic import atomic_path, write_text_atomically
from msss_tf.runs import portable_command, portable_path


# ---------------------------------------------------------------------- the report
def collect_results(out_dir: str, split: str = "test") -> List[dict]:
    """Per-run result rows of every finished run of the study: dicts with configuration,
    seed, task, metric, value."""
    with open(os.path.join(out_dir, STUDY_FILE)) as f:
        record = json.load(f)
    rows = []
    for key in record["configurations"]:
        for seed in record["seeds"]:
            result = read_run_result(out_dir, key, seed)
            if result is None:
                continue
            for r in result["rows"]:
                if r["split"] == split:
                    rows.append({"configuration": key, "seed": seed, "task": r["task"],
                                 "metric": r["metric"], "value": float(r["value"])})
    return rows


def aggregate(rows: Iterable[dict]) -> List[dict]:
    """Mean and standard deviation over seeds per (configuration, task, metric).

    std is the sample standard deviation (n - 1 in the denominator); 0.0 for one seed.
    Rows keep the order of `CONFIGURATIONS`, then the order tasks/metrics first appear.
    """
    groups: Dict[Tuple[str, str, str], List[Tuple[int, float]]] = {}
    for r in rows:
        groups.setdefault((r["configuration"], r["task"], r["metric"]), []).append(
            (int(r["seed"]), float(r["value"])))
    order = {c.key: i for i, c in enumerate(CONFIGURATIONS)}
    task_order = {}
    for key in groups:
        task_order.setdefault(key[1:], len(task_order))
    out = []
    for (config, task, metric), pairs in sorted(
            groups.items(), key=lambda kv: (order.get(kv[0][0], 99), task_order[kv[0][1:]])):
        pairs.sort()
        values = np.array([v for _, v in pairs], np.float64)
        out.append({
            "configuration": config,
            "label": CONFIG_BY_KEY[config].label if config in CONFIG_BY_KEY else config,
            "task": task, "metric": metric, "n": len(values),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "seeds": [s for s, _ in pairs], "values": [float(v) for v in values],
        })
    return out


def _paper_value(config_key: str, task: str, metric: str) -> Optional[float]:
    row = CONFIG_BY_KEY[config_key].paper_row if config_key in CONFIG_BY_KEY else None
    if row is None:
        return None
    real = TASK_ANALOGUE.get(task, task)
    return paper_table()[row].get((real, metric))


def write_results_csv(summary: List[dict], path: str) -> str:
    import csv

    fields = ("configuration", "label", "task", "metric", "n", "mean", "std", "values",
              "paper_real_task", "paper_value")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in summary:
            paper = _paper_value(r["configuration"], r["task"], r["metric"])
            writer.writerow({
                "configuration": r["configuration"], "label": r["label"], "task": r["task"],
                "metric": r["metric"], "n": r["n"], "mean": f"{r['mean']:.6f}",
                "std": f"{r['std']:.6f}", "values": ";".join(f"{v:.6f}" for v in r["values"]),
                "paper_real_task": TASK_ANALOGUE.get(r["task"], r["task"]) if paper is not None else "",
                "paper_value": "" if paper is None else f"{paper:.3f}",
            })
    return path


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table_md(summary: List[dict]) -> str:
    """Our table: one row per configuration, one column per task / metric, mean +- std."""
    columns = task_metrics(summary)
    cell = {(r["configuration"], r["task"], r["metric"]): r for r in summary}
    configs = list(dict.fromkeys(r["configuration"] for r in summary))
    body = []
    for key in configs:
        cells = []
        for task, metric in columns:
            r = cell.get((key, task, metric))
            cells.append("" if r is None else f"{r['mean']:.3f} ± {r['std']:.3f}")
        n = {cell[(key, t, m)]["n"] for t, m in columns if (key, t, m) in cell}
        body.append([CONFIG_BY_KEY[key].label if key in CONFIG_BY_KEY else key, *cells,
                     "/".join(str(x) for x in sorted(n))])
    return _md_table(["configuration", *(f"{t} {m}" for t, m in columns), "seeds"], body)


def paper_table_md() -> str:
    body = [[row, *(f"{v:.3f}" for v in values)] for row, values in PAPER_RESULTS.items()]
    return _md_table(["pre-training (paper, AudioSet)", *(label for _, _, label in PAPER_COLUMNS)],
                     body)


def plot_results(summary: List[dict], plot_dir: str) -> List[str]:
    """One bar chart per task / metric: mean over seeds, error bar = std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    paths = []
    for task, metric in task_metrics(summary):
        chosen = [r for r in summary if r["task"] == task and r["metric"] == metric]
        labels = [r["label"] for r in chosen]
        colours = ["#4c72b0" if CONFIG_BY_KEY.get(r["configuration"]) is None
                   or CONFIG_BY_KEY[r["configuration"]].kind == "pretrained" else "#999999"
                   for r in chosen]
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        x = np.arange(len(chosen))
        ax.bar(x, [r["mean"] for r in chosen], yerr=[r["std"] for r in chosen], capsize=4,
               color=colours)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
        n = sorted({r["n"] for r in chosen})
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {metric} (test; mean ± std over {'/'.join(map(str, n))} seed(s))",
                     fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = os.path.join(plot_dir, f"{task}-{metric}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(out_dir: str) -> dict:
    """results.csv, results.md and the plots of a study directory, from its run results."""
    summary = aggregate(collect_results(out_dir))
    if not summary:
        raise ValueError(f"{out_dir}: no finished runs to report")
    csv_path = write_results_csv(summary, os.path.join(out_dir, RESULTS_CSV))
    plots = plot_results(summary, os.path.join(out_dir, PLOT_DIR))
    with open(os.path.join(out_dir, STUDY_FILE)) as f:
        record = json.load(f)
    md = [
        f"# Ablation study: budget `{record['budget']['name']}`",
        "",
        "Linear probes on frozen embeddings, test split, mean ± sample standard deviation "
        "over seeds (higher is better).",
        "",
        results_table_md(summary),
        "",
        "## The paper's numbers (its REAL tasks, not ours)",
        "",
        "Table 1 / Table 2 of the paper (method.md): pre-training on AudioSet, then Speech "
        "Commands, DCASE 2016 task 2 and NSynth. Our built-in tasks play the same parts "
        "(synthetic_scene ~ keywords, synthetic_events ~ DCASE events, synthetic_pitch ~ "
        "NSynth pitch) but are different data: compare directions, not values.",
        "",
        paper_table_md(),
        "",
        "## The paper's claims on these numbers",
        "",
        claims_md(evaluate_claims(summary), evaluate_claims(paper_summary())),
        "",
    ]
    md_path = os.path.join(out_dir, RESULTS_MD)
    write_text_atomically(md_path, "\n".join(md))
    return {"csv": csv_path, "md": md_path, "plots": plots, "summary": summary}


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# --------------------------------------------------------------- docs/results.md
NOTES_BEGIN = "<!-- BEGIN LEAD NOTES (kept when this page is re-rendered) -->"
NOTES_END = "<!-- END LEAD NOTES -->"
NOTES_PLACEHOLDER = "_(The lead's reading of these results goes here.)_"


def read_notes(path: str) -> str:
    """The hand-written block between NOTES_BEGIN and NOTES_END of an existing page."""
    if not os.path.exists(path):
        return NOTES_PLACEHOLDER
    with open(path) as f:
        text = f.read()
    match = re.search(re.escape(NOTES_BEGIN) + r"\n?(.*?)\n?" + re.escape(NOTES_END), text, re.S)
    return match.group(1) if match else NOTES_PLACEHOLDER


def task_descriptions() -> str:
    from msss_tf.data.tasks import synthetic_tasks

    doc = synthetic_tasks.__doc__ or ""
    # From the first task entry to the end of the sizes paragraph.
    start = doc.find("  synthetic_scene")
    end = doc.find("\nDeterminism")
    return doc[start:end if end > 0 else None].rstrip() if start >= 0 else doc.strip()


def _load_note(invocations, cores) -> str:
    loads = [inv[k] for inv in invocations for k in ("load_average_start", "load_average_end")
             if inv.get(k) is not None]
    if not loads:
        return ""
    return (f"; 1-minute load average {min(loads):g}-{max(loads):g} (above the core count: "
            "other jobs shared the CPU and stretched the wall time)"
            if max(loads) > (cores or 1) + 0.5 else f"; 1-minute load average {min(loads):g}-{max(loads):g}")


def render_docs(out_dir: str, docs_path: str = "docs/results.md") -> str:
    """Writes `docs_path` from a finished study directory; plots are copied into
    `<docs dir>/results/`. The block between the lead-notes markers of an existing page
    is kept."""
    report = write_report(out_dir)
    summary = report["summary"]
    with open(os.path.join(out_dir, STUDY_FILE)) as f:
        record = json.load(f)
    docs_dir = os.path.dirname(os.path.abspath(docs_path))
    image_dir = os.path.join(docs_dir, "results")
    os.makedirs(image_dir, exist_ok=True)
    images = []
    for path in report["plots"]:
        target = os.path.join(image_dir, os.path.basename(path))
        shutil.copyfile(path, target)
        images.append(os.path.relpath(target, docs_dir))
    notes = read_notes(docs_path)
    budget = record["budget"]
    machine = record.get("machine", {})
    invocations = record.get("invocations", [])
    first = invocations[0] if invocations else {}
    last = invocations[-1] if invocations else {}
    wall = sum(inv.get("wall_seconds", 0.0) for inv in invocations)
    config = budget["config"]
    encoder = (f"EfficientNet width x{config.get('width_coefficient', 1.0)}, depth "
               f"x{config.get('depth_coefficient', 1.0)}"
               + (" (B0)" if config.get("width_coefficient", 1.0) == 1.0
                  and config.get("depth_coefficient", 1.0) == 1.0 else
                  " (a reduced member of the B0 family, to fit the CPU budget; B0 is x1, x1)"))
    lines = [
        "# Results: the paper's ablations on the built-in tasks",
        "",
        "Generated by `experiments.study.render_docs` from the study directory "
        f"`{portable_path(out_dir)}`; every number below comes from its run results.",
        "",
        *([f"**This page comes from the `{budget['name']}` budget, a check of the runner "
           f"({budget['train_steps']} pre-training steps): its numbers say nothing about the "
           "method. The default-budget study replaces it.**", ""]
          if budget["name"] == "smoke" else []),
        NOTES_BEGIN,
        notes,
        NOTES_END,
        "",
        "## How it was run",
        "",
        "```bash",
        portable_command(shlex.split(first["command"])) if "command" in first else "?",
        "```",
        "",
        f"* Budget `{budget['name']}`: {budget['train_steps']} pre-training steps of batch "
        f"{config.get('batch_size')} at learning rate {config.get('learning_rate')} on the "
        f"built-in synthetic corpus ({budget['synthetic_clips']} clips), {encoder}; "
        f"configuration fields shared by every row: `{json.dumps(config, sort_keys=True)}`; "
        f"linear probes: batch {budget.get('probe_batch_size', 1024)}, up to "
        f"{budget['probe_epochs']} epochs (patience "
        f"{budget['probe_patience']}), learning rates {budget['probe_learning_rates']}; task "
        f"scale {budget['task_scale']}.",
        f"* Seeds: {', '.join(map(str, record['seeds']))} (model initialisation, pre-training "
        "data and views, probe initialisation).",
        f"* Machine: {machine.get('cpu_cores')} usable CPU core(s) of {machine.get('cpu_model')} "
        f"({machine.get('platform')}, Python {machine.get('python')}).",
        f"* Date: started {first.get('started', '?')}, last finished "
        f"{last.get('ended', last.get('started', '?'))}; wall time of the study "
        f"{clock(wall)} over {len(invocations)} invocation(s)"
        + (" (resumed)" if len(invocations) > 1 else "")
        + _load_note(invocations, machine.get("cpu_cores")) + ".",
        "",
        "## Measured (built-in tasks, linear probe, test split, mean ± std over seeds)",
        "",
        results_table_md(summary),
        "",
        *[f"![{os.path.splitext(os.path.basename(p))[0]}]({p})" for p in images],
        "",
        "## The paper's numbers (real tasks after AudioSet pre-training, not comparable "
        "in value)",
        "",
        paper_table_md(),
        "",
        "Our synthetic_scene plays the part of Speech Commands (keywords), synthetic_pitch "
        "of NSynth pitch, synthetic_events of DCASE 2016 task 2.",
        "",
        "## Discussion: the paper's claims, evaluated on the measured numbers",
        "",
        "A difference \"exceeds the spread\" when |difference of means| > sqrt(std_a² + "
        "std_b²), the standard deviations over seeds. The verdict in brackets applies the "
        "same test to the paper's own table.",
        "",
        claims_md(evaluate_claims(summary), evaluate_claims(paper_summary())),
        "",
        "What testing the claims at the paper's scale needs: EfficientNet-B0 (x1, x1), "
        "pre-training on AudioSet's balanced train set (18,939 10 s clips) for 250 epochs "
        "at batch 1024, learning rate 1e-4, and probing on the real tasks (Speech Commands "
        "v2, NSynth pitch, DCASE 2016 task 2 from HEAR 2021) with the same seeds; the "
        "recipes are in WORKSPACE.md (\"The real scale\"). On one CPU this is out of "
        "reach; it needs an accelerator.",
        "",
        "## The built-in tasks",
        "",
        "From `msss_tf/data/tasks/synthetic_tasks.py` (the study uses task scale "
        f"{budget['task_scale']}):",
        "",
        "```text",
        task_descriptions(),
        "```",
        "",
        "The reference rows: *random init* is the same encoder untrained (inference-mode "
        "batch norm); *log-mel mean+std* is no encoder at all: the mean and standard "
        "deviation over time of the 64 log-mel bands (over the clip for scene tasks, over "
        "±160 ms around each 40 ms timestamp for events).",
        "",
    ]
    os.makedirs(docs_dir, exist_ok=True)
    write_text_atomically(docs_path, "\n".join(lines))
    return docs_path
