"""msss-tf bench: the figures exist, are positive and finite, and the table shows targets.

Speed targets are not asserted here (timed assertions are flaky on shared machines): the
benchmark prints them beside the measured ratios.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from msss_tf.bench import (finite_positive_numbers, format_table, format_wall_table,
                            run_benchmark)
from helpers import REPO_ROOT

TINY = dict(batch_size=2, steps=1, repeats=1, width_coefficient=0.25, depth_coefficient=0.25)
REPO = REPO_ROOT


def test_finite_positive_numbers_finds_bad_figures():
    figures = {"a": 1.0, "b": {"c": [2, 0.0]}, "d": float("nan"), "e": "n/a", "f": True,
               "g": -1}
    paths = [p for p, _ in finite_positive_numbers(figures)]
    assert set(paths) == {".b.c[1]", ".d", ".g"}


def test_tables_show_targets_skipped_parts_and_wall_time_per_part():
    """The printed tables, from a results dict (no TensorFlow run)."""
    results = {
        "date": "2026-11-26T00:00:00+00:00",
        "encoder": {"width_coefficient": 0.5, "depth_coefficient": 0.5},
        "step": {"batch_size": 16, "jit_compile": False, "mixed_precision": "float32",
                 "step_seconds": {"floor": 0.4, "full": 0.42, "clip": 0.3, "frontend": 0.02},
                 "step_overhead": 1.05, "ablation_vs_floor": {"clip": 0.75},
                 "frontend_fraction_of_step": 0.05, "traces": {"floor": 1, "full": 1}},
        "floor_vs_tf_keras": "n/a",
        "input": {"input_headroom": 2.5, "pipeline_examples_per_second": 100.0,
                  "step_examples_per_second": 40.0},
        "skipped": ["one 3B encoder call vs three (view batching): --compare_view_batching"],
        "wall_seconds_per_part": {"step: timed rounds": 12.3, "total (process start to table)": 200.0},
    }
    table = format_table(results)
    assert "step_overhead" in table and "<= 1.1 ok" in table
    assert "input_headroom" in table and ">= 3 MISSED" in table
    assert "skipped" in table and "--compare_view_batching" in table
    wall = format_wall_table(results)
    assert "bench wall time per part" in wall and "12 s" in wall and "200 s" in wall
    assert "traced once" in wall


@pytest.mark.slow  # every part: 6 step tracings, an export with int8, 2 subprocesses
def test_bench_cli_every_part(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", "--batch_size=2", "--steps=1",
         "--repeats=1", "--width_coefficient=0.25", "--depth_coefficient=0.25",
         "--memory_batch_sizes=2,4", "--compare_view_batching", f"--out={out}"],
        cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert finite_positive_numbers(figures) == []
    for key in ("step_overhead", "input_headroom", "floor_vs_tf_keras", "date", "machine"):
        assert key in figures, key
    step, pipeline = figures["step"], figures["input"]
    assert {"floor", "full", "frontend"} <= set(step["step_seconds"])
    assert step["step_overhead"] == pytest.approx(step["full_step_seconds"] / step["floor_seconds"])
    assert pipeline["input_headroom"] == pytest.approx(
        pipeline["pipeline_examples_per_second"] / pipeline["step_examples_per_second"])
    if importlib.util.find_spec("tf_keras") is None:
        assert figures["floor_vs_tf_keras"] == "n/a"
    assert set(figures["step"]["ablation_vs_floor"]) == {"clip", "clip_frame", "clip_pitch"}
    assert figures["step"]["concat_vs_separate"] > 0
    rates = figures["embed"]["audio_seconds_per_second"]
    assert set(rates) == {f"{m}_{k}" for m in ("keras", "saved_model", "tflite_float32",
                                               "tflite_int8") for k in ("scene", "timestamp")}
    assert set(figures["embed"]["tflite_window_latency_seconds_1_thread"]) == {"float32", "int8"}
    assert set(figures["memory"]["peak_rss_mib"]) == {"2", "4"}
    assert "step_overhead" in proc.stdout and "<= 1.1" in proc.stdout and "peak RSS" in proc.stdout
    assert "input_headroom" in proc.stdout and ">= 3" in proc.stdout
    assert "bench wall time per part" in proc.stdout
    assert "step: timed rounds" in figures["wall_seconds_per_part"]
    assert all(n == 1 for n in figures["step"]["traces"].values()), figures["step"]["traces"]
    assert figures["skipped"] == ["part 'long_audio': --parts=...,long_audio"]
    assert any("beside step warm-up" in k for k in figures["wall_seconds_per_part"])


@pytest.mark.slow  # two jit compilations of B0's smallest sibling on JAX
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_bench_on_the_jax_backend_reports_step_and_input(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "msss_tf.cli", "bench", "--batch_size=2", "--steps=1",
         "--repeats=1", "--width_coefficient=0.25", "--depth_coefficient=0.25",
         f"--out={out}"], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["backend"] == "jax"
    assert finite_positive_numbers(figures) == []
    assert figures["step"]["step_overhead"] == figures["step_overhead"] > 0
    assert figures["step"]["jit_compile"] is True
    assert figures["input"]["int16_pairs_per_second"] > 0
    assert figures["input_headroom"] == figures["input"]["input_headroom"] > 0
    assert figures["skipped"] == [f"part '{p}': TensorFlow backend only (it measures the "
                                  "TF export)" for p in ("embed", "memory")]
    assert "backend jax" in proc.stdout and "input_headroom" in proc.stdout


@pytest.mark.slow  # an export and 4 embed subprocesses
def test_bench_long_audio_peak_rss_per_length(tmp_path):
    lines = []
    figures = run_benchmark(**TINY, parts=("long_audio",), long_audio_minutes=(0.1, 0.4),
                            log=lines.append)
    long_audio = figures["long_audio"]
    assert set(long_audio) == {"run directory", "SavedModel"}
    for name, result in long_audio.items():
        assert set(result["peak_rss_mib"]) == {"0.1", "0.4"}
        assert result["ratio_to_shortest"]["0.1"] == 1.0
        assert result["ratio_to_shortest"]["0.4"] == pytest.approx(
            result["peak_rss_mib"]["0.4"] / result["peak_rss_mib"]["0.1"])
        assert 0.8 < result["ratio_to_shortest"]["0.4"] < 1.5, result
    table = "\n".join(lines)
    assert "peak RSS embed 0.4 min (SavedModel)" in table and "target <= 1.5x" in table


def test_long_audio_rows_in_the_table():
    results = {"date": "2026-11-30T00:00:00+00:00",
               "encoder": {"width_coefficient": 0.25, "depth_coefficient": 0.25},
               "long_audio": {"SavedModel": {"peak_rss_mib": {"1": 900.0, "60": 990.0},
                                             "ratio_to_shortest": {"1": 1.0, "60": 1.1}}}}
    table = format_table(results)
    assert "peak RSS embed 60 min (SavedModel)" in table and "1.10x of 1 min" in table
    assert "990 MiB" in table and "target <= 1.5x" in table


def test_bench_refuses_unknown_parts():
    with pytest.raises(ValueError, match="unknown benchmark part"):
        run_benchmark(**TINY, parts=("step", "gpu"))


def _gpu_check(env_overrides, tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHON=sys.executable, **env_overrides)
    return subprocess.run(["bash", os.path.join(REPO, "experiments", "gpu_check.sh"),
                           str(tmp_path / "gpu")], cwd=REPO, env=env, capture_output=True,
                          text=True)


@pytest.mark.slow  # the default run stays under 6 minutes
def test_gpu_check_fails_clearly_without_a_gpu(tmp_path):
    proc = _gpu_check({}, tmp_path)
    assert proc.returncode == 2
    assert "no GPU visible" in proc.stderr
    assert not (tmp_path / "gpu").exists()


@pytest.mark.slow  # one bench run; XLA is left out (minutes of compiling on a CPU, and
# tests/model/test_msss_model.py already checks the XLA step)
def test_gpu_check_runs_its_bench_calls_on_cpu_at_a_tiny_size(tmp_path):
    proc = _gpu_check({"GPU_CHECK_ALLOW_CPU": "1", "GPU_CHECK_BATCHES": "2",
                       "GPU_CHECK_VARIANTS": "bf16", "GPU_CHECK_STEPS": "1",
                       "GPU_CHECK_REPEATS": "1", "GPU_CHECK_WIDTH": "0.25",
                       "GPU_CHECK_DEPTH": "0.25"}, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu" / "gpu_check.json").read_text())
    assert set(summary["table"]) == {"2-bf16"}
    assert summary["runs"]["2-bf16"]["step"]["jit_compile"] is False
    assert summary["runs"]["2-bf16"]["step"]["mixed_precision"] == "mixed_bfloat16"
    assert finite_positive_numbers(summary["table"]) == []
