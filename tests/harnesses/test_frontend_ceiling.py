"""experiments/frontend_ceiling.py: log-mel statistics probed at several front ends."""

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

from experiments import frontend_ceiling


def test_every_front_end_is_a_valid_config_with_its_own_resolution():
    from msss_tf.config import MSSSConfig
    from msss_tf.embedding import LogMelStatsEmbedder

    sizes = []
    for name, change in frontend_ceiling.FRONT_ENDS.items():
        config = MSSSConfig().replace(**change)  # validates (e.g. fft_length >= window)
        sizes.append(LogMelStatsEmbedder(config).scene_embedding_size)
    assert list(frontend_ceiling.FRONT_ENDS)[0].endswith("(the model's)")
    assert sizes == [128, 256, 256, 512]  # mean and std of each band


@pytest.mark.slow  # renders a small task and trains four probes: ~30 s on 2 cores
def test_the_cli_probes_each_front_end_and_writes_the_table(tmp_path):
    out = tmp_path / "ceiling"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "experiments.frontend_ceiling", "--tasks=synthetic_pitch",
         "--scale=0.25", "--probes=linear",
         "--front_ends=64 bands / 25 ms window (the model's),128 bands / 25 ms window",
         f"--out={out}", f"--cache_dir={tmp_path / 'cache'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads((tmp_path / "ceiling.json").read_text())["rows"]
    assert {(r["front_end"], r["split"]) for r in rows} == {
        (f, s) for f in ("64 bands / 25 ms window (the model's)", "128 bands / 25 ms window")
        for s in ("valid", "test")}
    assert all(0.0 <= r["value"] <= 1.0 for r in rows)
    table = (tmp_path / "ceiling.md").read_text()
    assert "| 128 bands / 25 ms window | linear | " in table and "test (valid)" in table


def test_an_unknown_front_end_is_named():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "experiments.frontend_ceiling", "--front_ends=1024 bands"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0 and "1024 bands" in result.stderr
