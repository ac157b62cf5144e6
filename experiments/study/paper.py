"""The paper's numbers (Table 1 / Table 2, on its real tasks) and its claims, evaluated
on a study's summary (`report.aggregate`) or on the paper's own table."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from experiments.study.budgets import CONFIGURATIONS

# The paper's Table 1 / Table 2 (method.md), on its REAL tasks: Speech Commands v2 top-1,
# DCASE 2016 task 2 onset F-measure, NSynth pitch and chroma accuracy. Not our tasks.
PAPER_COLUMNS = (
    ("speech_commands", "top1_acc", "Speech Commands acc"),
    ("dcase2016_task2", "event_onset_fscore", "DCASE 2016 T2 onset F"),
    ("nsynth_pitch", "pitch_acc", "NSynth pitch acc"),
    ("nsynth_pitch", "chroma_acc", "NSynth chroma acc"),
)
PAPER_RESULTS = {
    "PANNs (supervised, full AudioSet)": (0.083, 0.754, 0.012, 0.096),
    "COLA (L_clip)": (0.459, 0.232, 0.434, 0.470),
    "L_clip + L_frame": (0.535, 0.344, 0.424, 0.462),
    "L_clip + L_pitch": (0.585, 0.244, 0.428, 0.463),
    "all three (proposed)": (0.572, 0.278, 0.452, 0.487),
    "all three, cosine similarity": (0.401, 0.094, 0.212, 0.238),
}
# Which of our tasks plays the part of which real task (same shape of problem).
TASK_ANALOGUE = {"synthetic_scene": "speech_commands", "synthetic_pitch": "nsynth_pitch",
                 "synthetic_events": "dcase2016_task2"}


def paper_table() -> Dict[str, Dict[Tuple[str, str], float]]:
    """{paper row: {(real task, metric): value}}."""
    return {row: {(t, m): v for (t, m, _), v in zip(PAPER_COLUMNS, values)}
            for row, values in PAPER_RESULTS.items()}


def task_metrics(summary: List[dict]) -> List[Tuple[str, str]]:
    return list(dict.fromkeys((r["task"], r["metric"]) for r in summary))


# ------------------------------------------------------------------------- claims
def _compare(a: Optional[dict], b: Optional[dict]) -> Optional[dict]:
    """a vs b (summary cells): difference of means and whether it exceeds the spread,
    sqrt(std_a^2 + std_b^2) (None when either has a single seed)."""
    if a is None or b is None:
        return None
    diff = a["mean"] - b["mean"]
    spread = math.hypot(a["std"], b["std"])
    exceeds = None if min(a["n"], b["n"]) < 2 else abs(diff) > spread
    return {"a": a["mean"], "b": b["mean"], "diff": diff, "spread": spread, "exceeds": exceeds}


def _cells(summary: List[dict]) -> Dict[Tuple[str, str, str], dict]:
    return {(r["configuration"], r["task"], r["metric"]): r for r in summary}


def _metrics_of(summary, task_kind_filter=None):
    return [tm for tm in task_metrics(summary)
            if task_kind_filter is None or task_kind_filter(tm[0])]


def _is_events(task):
    return "event" in task or task.startswith("dcase")


def _is_keywords(task):
    return task in ("synthetic_scene", "speech_commands")


def _is_pitch(task, metric):
    return (task in ("synthetic_pitch", "nsynth_pitch")) and metric == "pitch_acc"


def evaluate_claims(summary: List[dict]) -> List[dict]:
    """Each claim of the paper, evaluated on `summary` (the output of `aggregate`).

    Returns dicts: claim, holds (True / False / None when the rows it needs are absent),
    comparisons [{task, metric, a_label, b_label, a, b, diff, spread, exceeds}], note.
    "exceeds": |difference of means| > sqrt(std_a^2 + std_b^2) over seeds (None: 1 seed).
    """
    cells = _cells(summary)
    metrics = task_metrics(summary)

    def cmp(a_key, b_key, task, metric):
        c = _compare(cells.get((a_key, task, metric)), cells.get((b_key, task, metric)))
        if c is not None:
            c.update(task=task, metric=metric, a_label=a_key, b_label=b_key)
        return c

    def all_better(claim, a_key, b_key, note=""):
        comps = [c for c in (cmp(a_key, b_key, t, m) for t, m in metrics) if c is not None]
        holds = None if not comps else all(c["diff"] > 0 for c in comps)
        return {"claim": claim, "holds": holds, "comparisons": comps, "note": note}

    claims = [all_better("all three losses beat clip-only (COLA) on every task", "all", "clip")]

    # L_frame helps event detection most.
    gains = [c for c in (cmp("clip_frame", "clip", t, m) for t, m in metrics) if c is not None]
    event_gains = [c for c in gains if _is_events(c["task"])]
    pitch_on_events = [c for c in (cmp("clip_pitch", "clip", t, m) for t, m in metrics
                                   if _is_events(t)) if c is not None]
    if event_gains and len(gains) > 1:
        best = max(gains, key=lambda c: c["diff"])
        holds = (best in event_gains and best["diff"] > 0
                 and all(e["diff"] > p["diff"] for e in event_gains for p in pitch_on_events))
    else:
        holds = None
    claims.append({
        "claim": "the frame loss helps event detection most",
        "holds": holds, "comparisons": gains + pitch_on_events,
        "note": "holds when the gain of clip+frame over clip-only is positive and largest on "
                "the event task, and larger there than the gain of clip+pitch",
    })
    for name, keep in (("keywords", lambda t, m: _is_keywords(t)),
                       ("pitch", lambda t, m: _is_pitch(t, m))):
        comps = [c for c in (cmp("clip_pitch", "clip", t, m) for t, m in metrics if keep(t, m))
                 if c is not None]
        claims.append({
            "claim": f"the pitch loss helps {name} (clip+pitch beats clip-only)",
            "holds": None if not comps else all(c["diff"] > 0 for c in comps),
            "comparisons": comps, "note": "",
        })
    claims.append(all_better("bilinear similarity beats cosine (all three losses)", "all",
                             "all_cosine"))
    claims.append(all_better("pre-training (all three) beats a randomly initialised encoder",
                             "all", "random_init", note="not in the paper: our sanity check"))
    claims.append(all_better("pre-training (all three) beats the log-mel front end alone",
                             "all", "logmel", note="not in the paper: our sanity check"))
    return claims


def paper_summary() -> List[dict]:
    """The paper's table as a one-seed summary (for evaluating its own claims)."""
    key_of_row = {c.paper_row: c.key for c in CONFIGURATIONS if c.paper_row}
    out = []
    for row, values in PAPER_RESULTS.items():
        if row not in key_of_row:
            continue
        for (task, metric, _), v in zip(PAPER_COLUMNS, values):
            out.append({"configuration": key_of_row[row], "label": row, "task": task,
                        "metric": metric, "n": 1, "mean": v, "std": 0.0, "seeds": [0],
                        "values": [v]})
    return out


def _verdict(holds) -> str:
    return {True: "holds", False: "does not hold", None: "not measured"}[holds]


def claims_md(claims: List[dict], paper_claims: Optional[List[dict]] = None) -> str:
    paper_by_claim = {c["claim"]: c for c in (paper_claims or [])}
    lines = []
    for c in claims:
        paper = paper_by_claim.get(c["claim"])
        paper_note = (f" (in the paper's own table: {_verdict(paper['holds'])})"
                      if paper is not None and paper["holds"] is not None else "")
        lines.append(f"* **{c['claim']}**: {_verdict(c['holds'])}{paper_note}."
                     + (f" {c['note'][0].upper()}{c['note'][1:]}." if c["note"] else ""))
        for comp in c["comparisons"]:
            exceeds = ("one seed: no spread" if comp["exceeds"] is None else
                       f"{'exceeds' if comp['exceeds'] else 'within'} the spread "
                       f"{comp['spread']:.3f}")
            lines.append(
                f"  * {comp['task']} {comp['metric']}: {comp['a_label']} {comp['a']:.3f} vs "
                f"{comp['b_label']} {comp['b']:.3f}, difference {comp['diff']:+.3f} "
                f"({exceeds})")
    return "\n".join(lines)
