"""The benchmark's output: the ratio table with targets, the wall-time table, the JSON
file, and the check that every figure is positive and finite."""

from __future__ import annotations

import math

import numpy as np

from msss_tf.atomic import write_json_atomically

TARGETS = {"step_overhead": ("<=", 1.10), "input_headroom": (">=", 3.0)}


def write_results(results: dict, out: str) -> None:
    """The benchmark's JSON, written to a temporary name and renamed into place."""
    write_json_atomically(out, results, default=_json_default)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def target_text(name, value):
    if name not in TARGETS or not isinstance(value, (int, float)):
        return ""
    op, target = TARGETS[name]
    ok = value <= target if op == "<=" else value >= target
    return f"{op} {target:g} {'ok' if ok else 'MISSED'}"


def format_table(results: dict) -> str:
    """The ratios with their absolute figures and targets, one row each."""
    rows = [("figure", "ratio", "absolute", "target")]

    def ms(seconds):
        return f"{seconds * 1000:.0f} ms"

    step = results.get("step")
    if step:
        sec = step["step_seconds"]
        rows.append(("step_overhead (full / floor)", f"{step['step_overhead']:.2f}",
                     f"{ms(sec['full'])} vs {ms(sec['floor'])} per step",
                     target_text("step_overhead", step["step_overhead"])))
        for name, ratio in step["ablation_vs_floor"].items():
            rows.append((f"  {name} step / floor", f"{ratio:.2f}", ms(sec[name]), ""))
        if "concat_vs_separate" in step:
            rows.append(("  one 3B call / three calls", f"{step['concat_vs_separate']:.2f}",
                         ms(sec.get("full_concat", sec.get("full_separate", 0))), ""))
        rows.append(("  front end / full step", f"{step['frontend_fraction_of_step']:.2f}",
                     ms(sec["frontend"]), ""))
        tfk = results.get("floor_vs_tf_keras", "n/a")
        rows.append(("floor_vs_tf_keras (ours / tf_keras)",
                     tfk if isinstance(tfk, str) else f"{tfk:.2f}", "", ""))
    inp = results.get("input")
    if inp and "input_headroom" in inp:
        rows.append(("input_headroom (pipeline / step)", f"{inp['input_headroom']:.1f}",
                     f"{inp['pipeline_examples_per_second']:.0f} vs "
                     f"{inp['step_examples_per_second']:.1f} examples/s",
                     target_text("input_headroom", inp["input_headroom"])))
    emb = results.get("embed")
    if emb:
        for name, rate in emb["audio_seconds_per_second"].items():
            rows.append((f"embed {name}", f"{rate:.1f}x real time", "s audio / s", ""))
        for variant, seconds in emb["tflite_window_latency_seconds_1_thread"].items():
            rows.append((f"tflite {variant} one window, 1 thread", "", ms(seconds), ""))
    mem = results.get("memory")
    if mem:
        for batch, mib in mem["peak_rss_mib"].items():
            rows.append((f"peak RSS pretrain, batch {batch}", "", f"{mib:.0f} MiB", ""))
    for name, figures in (results.get("long_audio") or {}).items():
        shortest = min(figures["peak_rss_mib"], key=float)
        for minutes, mib in figures["peak_rss_mib"].items():
            ratio = figures["ratio_to_shortest"][minutes]
            rows.append((f"peak RSS embed {minutes} min ({name})",
                         f"{ratio:.2f}x of {shortest} min", f"{mib:.0f} MiB",
                         "target <= 1.5x" if minutes != shortest else ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    header = (f"msss-tf bench, {results['date']}; encoder width "
              f"{results['encoder']['width_coefficient']} depth "
              f"{results['encoder']['depth_coefficient']}; batch "
              f"{step.get('batch_size', '?') if step else '?'}"
              f"{'; XLA' if step and step['jit_compile'] else ''}"
              f"{'; ' + step['mixed_precision'] if step and step['mixed_precision'] != 'float32' else ''}")
    text = header + "\n" + "\n".join(lines)
    if results.get("skipped"):
        text += "\nskipped (flag that turns it on):\n" + "\n".join(
            f"  {item}" for item in results["skipped"])
    return text


def format_wall_table(results: dict) -> str:
    """Where the benchmark's own wall time went, one row per part."""
    wall = results.get("wall_seconds_per_part", {})
    rows = [(name, f"{seconds:.0f} s") for name, seconds in wall.items()]
    width = max([len(r[0]) for r in rows] + [len("part")])
    lines = ["bench wall time per part", f"{'part'.ljust(width)}  wall",
             f"{'-' * width}  -----"]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    cpu = results.get("cpu_seconds_per_part")
    if cpu:
        lines.append("CPU seconds (user + sys, all threads; what a loaded machine does not "
                     "change): " + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))
    traces = results.get("step", {}).get("traces")
    if traces:
        lines.append("step traces: " + ", ".join(f"{k} {v}" for k, v in traces.items())
                     + (" (each step function traced once)"
                        if all(v == 1 for v in traces.values()) else " (RETRACED)"))
    return "\n".join(lines)


def finite_positive_numbers(obj, path="") -> list:
    """Every number in a nested JSON object that is not positive and finite, with its path
    (booleans and 'n/a' strings are skipped); the bench test checks this is empty."""
    bad = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            bad += finite_positive_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            bad += finite_positive_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        if not (math.isfinite(obj) and obj > 0):
            bad.append((path, obj))
    return bad
