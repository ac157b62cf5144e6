"""The learning-curve tables and plot of `experiments/long_run.py` (no flags here, so
tests and other scripts can import them).

Rows are dicts: run, recipe, seed, kind ("pre-trained" or a reference), step, task,
metric, value (and layer, for `write_layers`).
"""

from __future__ import annotations

import os

from msss_tf.atomic import atomic_path


def checkpoint_at_step(run_dir, step, steps_per_epoch):
    """Path of a long run's checkpoint at `step` (RUN/kept/ first, then RUN/checkpoints/),
    or None when the run has none there. Raises ValueError when `step` is not a multiple
    of `steps_per_epoch` (checkpoints are written once per epoch)."""
    if step % steps_per_epoch:
        raise ValueError(f"{step} is not a multiple of the run's {steps_per_epoch} steps "
                         f"per epoch")
    name = f"epoch-{step // steps_per_epoch:04d}.keras"
    return next((p for p in (os.path.join(run_dir, "kept", name),
                             os.path.join(run_dir, "checkpoints", name))
                 if os.path.exists(p)), None)


def run_label(config):
    """(run, recipe): "clip+frame+pitch (frame negatives: batch) seed 0" and the same
    without the seed. Every loss setting that departs from the defaults is named, and a
    front end other than the paper's, so runs of different recipes never share a row of
    `layers_summary`."""
    from msss_tf.config import MSSSConfig

    default = MSSSConfig()
    notes = []
    if "frame" in config.losses and config.frame_negatives != default.frame_negatives:
        notes.append(f"frame negatives: {config.frame_negatives}")
    if "frame" in config.losses and config.frame_positives != default.frame_positives:
        notes.append(f"frame positives: {config.frame_positives}")
    if "frame" in config.losses and config.lambda_frame != default.lambda_frame:
        notes.append(f"lambda_frame {config.lambda_frame:g}")
    if "pitch" in config.losses and config.lambda_pitch != default.lambda_pitch:
        notes.append(f"lambda_pitch {config.lambda_pitch:g}")
    if config.needs_shifted_view and (config.pitch_ratio_min, config.pitch_ratio_max) != (
            default.pitch_ratio_min, default.pitch_ratio_max):
        notes.append(f"pitch shift {config.pitch_ratio_min:g}-{config.pitch_ratio_max:g}")
    front_end = ("n_mels", "stft_window", "fft_length")
    if any(getattr(config, f) != getattr(default, f) for f in front_end):
        notes.append(f"{config.n_mels} bands, {1000 * config.stft_window / config.sample_rate:g}"
                     f" ms window")
    recipe = "+".join(config.losses) + (f" ({', '.join(notes)})" if notes else "")
    return f"{recipe} seed {config.seed}", recipe


def write_curve(rows, out):
    """CSV, a Markdown table (last step of each run beside the references) and a plot."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fields = ["run", "recipe", "seed", "kind", "step", "task", "metric", "value"]
    with atomic_path(out + ".csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: (r["run"], r["kind"], r["step"],
                                                     r["task"], r["metric"])))
    metrics = sorted({(r["task"], r["metric"]) for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4), squeeze=False)
    for ax, (task, metric) in zip(axes[0], metrics):
        chosen = [r for r in rows if (r["task"], r["metric"]) == (task, metric)]
        for run in sorted({r["run"] for r in chosen}):
            points = sorted((r["step"], r["value"]) for r in chosen
                            if r["run"] == run and r["kind"] == "pre-trained")
            start = [r["value"] for r in chosen
                     if r["kind"] == "random init (BN calibrated)"][:1]  # the shared step 0
            points = [(0, v) for v in start] + points
            if points:
                ax.plot(*zip(*points), marker="o", label=run)
        for kind, style in (("log-mel mean/std", ":"), ("random init (BN at init)", "--")):
            values = [r["value"] for r in chosen if r["kind"] == kind]
            if values:
                ax.axhline(sum(values) / len(values), linestyle=style, color="grey",
                           label=kind)
        ax.set_xscale("symlog", linthresh=1000)
        ax.set_title(f"{task}\n{metric}", fontsize=9)
        ax.set_xlabel("pre-training steps")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=90)
    plt.close(fig)

    lines = ["| run | step | " + " | ".join(f"{t} {m}" for t, m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    keys = sorted({(r["run"], r["kind"], r["step"]) for r in rows},
                  key=lambda k: (k[1] != "pre-trained", k[0], k[2]))
    for run, kind, step in keys:
        values = {(r["task"], r["metric"]): r["value"] for r in rows
                  if (r["run"], r["kind"], r["step"]) == (run, kind, step)}
        label = run if kind == "pre-trained" else f"{kind} ({run})"
        lines.append(f"| {label} | {step} | " + " | ".join(
            f"{values[m]:.3f}" if m in values else "" for m in metrics) + " |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(out + "_summary.md", "w") as f:
        f.write(summary_table(rows) + "\n")
    return out


def summary_table(rows) -> str:
    """Markdown: each recipe at each step and each reference, as mean +- std over the
    seeds that have it (n seeds), the paper's rows (on its own tasks) below."""
    import statistics

    from experiments.study.paper import PAPER_COLUMNS, PAPER_RESULTS

    metrics = sorted({(r["task"], r["metric"]) for r in rows})
    groups = {}
    for r in rows:
        name = r["recipe"] if r["kind"] == "pre-trained" else r["kind"]
        groups.setdefault((r["kind"] != "pre-trained", name, r["step"]), {}).setdefault(
            (r["task"], r["metric"]), {})[r["seed"]] = r["value"]
    lines = ["| encoder | step | seeds | " + " | ".join(f"{t} {m}" for t, m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for (_, name, step), values in sorted(groups.items()):
        seeds = sorted({seed for per_seed in values.values() for seed in per_seed})
        cells = []
        for m in metrics:
            got = list(values.get(m, {}).values())
            if not got:
                cells.append("")
            elif len(got) == 1:
                cells.append(f"{got[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(got):.3f} ± {statistics.stdev(got):.3f}")
        lines.append(f"| {name} | {step} | {len(seeds)} | " + " | ".join(cells) + " |")
    # The paper's Table 1, on AudioSet pre-training and its own tasks, for the shape of the
    # comparison only: Speech Commands ~ keywords, NSynth ~ pitch, DCASE 2016 ~ events.
    analogue = {"speech_commands": "realistic_keywords", "nsynth_pitch": "realistic_pitch",
                "dcase2016_task2": "realistic_events"}
    for row, values in PAPER_RESULTS.items():
        paper = {(analogue[t], m): v for (t, m, _), v in zip(PAPER_COLUMNS, values)}
        lines.append(f"| paper: {row} (AudioSet; its tasks) | 4624 x 1024 | 1 | " + " | ".join(
            f"{paper[m]:.3f}" if m in paper else "" for m in metrics) + " |")
    return "\n".join(lines)


def write_layers(rows, out):
    """CSV and a Markdown table of `layer_rows`."""
    import csv

    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fields = ["run", "recipe", "seed", "kind", "step", "layer", "task", "metric", "value"]
    with open(out + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    metrics = sorted({(r["task"], r["metric"]) for r in rows})
    lines = ["| encoder | step | layer | " + " | ".join(f"{t} {m}" for t, m in metrics) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    keys = []
    for r in rows:
        key = (r["run"], r["kind"], r["step"], r["layer"])
        if key not in keys:
            keys.append(key)
    for run, kind, step, layer in keys:
        values = {(r["task"], r["metric"]): r["value"] for r in rows
                  if (r["run"], r["kind"], r["step"], r["layer"]) == (run, kind, step, layer)}
        label = run if kind == "pre-trained" else f"{kind} ({run})"
        lines.append(f"| {label} | {step} | {layer} | " + " | ".join(
            f"{values[m]:.3f}" if m in values else "" for m in metrics) + " |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    return out


def expand_inputs(items):
    """`layers_summary`'s --inputs as paths: a glob pattern gives its files in natural
    order (layers2.csv before layers10.csv), since a row measured twice keeps the later
    file's value. Raises ValueError for a pattern that matches nothing."""
    import glob
    import re

    def natural(path):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]

    paths = []
    for item in items:
        found = sorted(glob.glob(item), key=natural) if glob.has_magic(item) else [item]
        if not found:
            raise ValueError(f"{item} matches no file")
        paths += found
    return paths


def read_layer_rows(paths, layer, aliases=None):
    """The rows of `write_layers` CSVs read at `layer`, for `summary_table`.

    Older CSVs lack the recipe and seed columns (their run reads "RECIPE seed N") and
    name a stage by its layer (pass `aliases`, e.g. {"block3a_project_bn": "stage3"} for
    the x0.5 encoder). A `write_curve` CSV (no layer column) gives its log-mel rows only:
    they see no encoder, so they belong at every layer. A row measured twice keeps the
    value of the later file."""
    import csv

    aliases = aliases or {}
    kept = {}
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                if "layer" not in r:
                    if r["kind"] != "log-mel mean/std":
                        continue
                elif aliases.get(r["layer"], r["layer"]) != layer:
                    continue
                recipe, seed = r.get("recipe"), r.get("seed")
                if not recipe:
                    recipe, _, seed = r["run"].rpartition(" seed ")
                row = {"run": r["run"], "recipe": recipe, "seed": int(seed), "kind": r["kind"],
                       "step": int(r["step"]), "layer": layer, "task": r["task"],
                       "metric": r["metric"], "value": float(r["value"])}
                name = recipe if r["kind"] == "pre-trained" else r["kind"]
                kept[(name, row["seed"], row["step"], row["task"], row["metric"])] = row
    return list(kept.values())


REFERENCE_STYLES = (("random init (BN at init)", "--"), ("random init (BN calibrated)", "-."),
                    ("log-mel mean/std", ":"))


def write_layers_summary(rows, out, layer):
    """OUT.md (`summary_table` of `read_layer_rows` rows) and OUT.png: each recipe's
    learning curve at `layer`, mean over seeds with their standard deviation as error
    bars, the references (mean over seeds) as horizontal lines."""
    import statistics

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".md", "w") as f:
        f.write(f"Read at {layer}; mean ± std over seeds.\n\n" + summary_table(rows) + "\n")
    metrics = sorted({(r["task"], r["metric"]) for r in rows})
    recipes = sorted({r["recipe"] for r in rows if r["kind"] == "pre-trained"})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8),
                             squeeze=False)
    legend = {}
    for ax, (task, metric) in zip(axes[0], metrics):
        chosen = [r for r in rows if (r["task"], r["metric"]) == (task, metric)]
        for color, recipe in enumerate(recipes):  # one colour per recipe on every panel
            by_step = {}
            for r in chosen:
                if r["kind"] == "pre-trained" and r["recipe"] == recipe:
                    by_step.setdefault(r["step"], []).append(r["value"])
            steps = sorted(by_step)
            means = [statistics.mean(by_step[s]) for s in steps]
            stds = [statistics.stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0
                    for s in steps]
            if steps:
                legend[recipe] = ax.errorbar(steps, means, yerr=stds, marker="o",
                                             markersize=3, capsize=2, color=f"C{color}")
        for kind, style in REFERENCE_STYLES:
            values = [r["value"] for r in chosen if r["kind"] == kind]
            if values:
                legend[kind] = ax.axhline(statistics.mean(values), linestyle=style,
                                          color="grey")
        ax.set_title(f"{task} {metric}", fontsize=9)
        ax.set_xlabel("pre-training steps")
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=2, fontsize=7)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(legend) + 1) // 2), 1, 1))
    fig.savefig(out + ".png", dpi=90)
    plt.close(fig)
    return out
