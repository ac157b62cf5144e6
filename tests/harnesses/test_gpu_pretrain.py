"""experiments/gpu_pretrain_prep.sh and gpu_pretrain_jax.py at a tiny size on the CPU.

The GPU host has JAX but neither TensorFlow nor soundfile: the JAX runs below see both
blocked (a folder on PYTHONPATH whose `tensorflow` and `soundfile` raise ImportError), with
KERAS_BACKEND=jax and JAX_PLATFORMS=cpu. The prep script writes the corpus arrays subset
(no wheels, .git/info/exclude untouched); one run stops at its time budget with
checkpoints every 2 steps; its final weights load under TensorFlow into MSSSModel (a
separate process) and give finite embeddings; a second run warm-starts from them and
stops at --max_steps. Both JAX runs share a JAX compilation cache, so the second compiles
little. About 1.5 minutes on 2 shared cores.

A second test renders the corpus in the training process (`--render_minutes`, as on the GPU
host, where the corpus wheels are carried and soundfile is real; TensorFlow blocked) with
two spawned render processes and trains two steps on it; the prep script's render mode
prints the matching command. It is skipped where the corpus packages are missing.
"""

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT

ROOT = REPO_ROOT
SCRIPT = os.path.join(ROOT, "experiments", "gpu_pretrain_jax.py")
PREP = os.path.join(ROOT, "experiments", "gpu_pretrain_prep.sh")
TINY = ["--width=0.25", "--depth=0.25", "--batch_size=4", "--set=embedding_dim=64",
        "--checkpoint_steps=2", "--log_every=1", "--workers=2", "--max_queue_size=2",
        "--wall_seconds=240"]
MAX_FILES = 8  # files a device call brings back from $OUT
MAX_FILE_BYTES = 16 * 2**20

LOAD_ON_TENSORFLOW = r"""
import json, os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
sys.path.insert(0, sys.argv[1])
import numpy as np
from msss_tf.config import MSSSConfig
from msss_tf.model.msss_model import MSSSModel

out = sys.argv[2]
model = MSSSModel(MSSSConfig.load(out))
model.load_weights(os.path.join(out, "weights.weights.json"))
values = [np.asarray(v.numpy(), np.float64) for v in model.weights]
config = model.msss_config
wave = np.random.default_rng(0).uniform(-0.3, 0.3, (2, config.segment_samples))
frames = np.asarray(model(wave.astype("float32")))
print(json.dumps({"backend": __import__("keras").backend.backend(), "count": len(values),
                  "sum": float(sum(v.sum() for v in values)),
                  "sum_squares": float(sum(np.square(v).sum() for v in values)),
                  "shape": list(frames.shape), "finite": bool(np.isfinite(frames).all())}))
"""


def tiny_corpus(folder, clips=6, seconds=2.0, rate=16000):
    import soundfile as sf

    os.makedirs(folder)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(clips):
        wave = 0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t) + 0.05 * rng.normal(size=t.size)
        sf.write(os.path.join(folder, f"clip{i}.wav"), wave.astype("float32"), rate,
                 subtype="PCM_16")


def run(command, env_extra, timeout=240):
    env = dict(os.environ, **env_extra)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def jax_env(tmp, block_soundfile=True):
    blocked = tmp / ("blocked" if block_soundfile else "blocked_tf")
    if not blocked.exists():
        (blocked / "tensorflow").mkdir(parents=True)
        paths = [blocked / "tensorflow" / "__init__.py"]
        if block_soundfile:
            paths.append(blocked / "soundfile.py")
        for path in paths:
            path.write_text("raise ModuleNotFoundError('not installed on the GPU host (blocked by "
                            "tests/harnesses/test_gpu_pretrain.py)')\n")
    # XLA's CPU back end compiles faster unoptimised (a third off the first run here); the
    # shared cache serves the second run nearly every compilation (the model's weight
    # initialisers are ~130 small ones, the step one large one).
    return {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(blocked),
            "XLA_FLAGS": "--xla_backend_optimization_level=0 "
                         "--xla_llvm_disable_expensive_passes=true",
            "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", "PYTHONUNBUFFERED": "1"}


def read_rows(out):
    with open(os.path.join(out, "losses.csv")) as f:
        return list(csv.DictReader(f))


def check_output_folder(out):
    names = sorted(os.listdir(out))
    assert all(os.path.isfile(os.path.join(out, n)) for n in names), names  # flat
    assert len(names) <= MAX_FILES - 1, names  # room for the command's train.log
    assert all(os.path.getsize(os.path.join(out, n)) <= MAX_FILE_BYTES for n in names)
    for name in ("weights.weights.json", "weights_00000.weights.h5", "msss_config.json",
                 "losses.csv", "summary.json"):
        assert name in names, names
    with open(os.path.join(out, "weights.weights.json")) as f:
        saved = json.load(f)["weight_map"]
    assert not [p for p in saved if p.startswith("/optimizer")], "optimiser state saved"
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


@pytest.mark.slow  # two JAX runs (one compiling), one TensorFlow load: ~1.5 min
def test_tiny_pretrain_on_jax_checkpoints_and_loads_on_tensorflow(tmp_path):
    # The prep script's arrays subset: the first 0.1 minute of six 2 s files is 3 files.
    tiny_corpus(str(tmp_path / "corpus"))
    arrays = tmp_path / "arrays"
    done = run(["bash", PREP, str(tmp_path / "corpus")],
               {"SKIP_WHEELS": "1", "SKIP_EXCLUDE": "1", "MAX_MINUTES": "0.1",
                "ARRAYS_DIR": str(arrays), "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gpu_pretrain_jax.py --arrays_dir=" in done.stdout
    with open(arrays / "arrays.json") as f:
        assert json.load(f)["num_clips"] == 3

    # 1. A run stopped by its time budget, 3 s after the first (compiling) step.
    out = tmp_path / "out"
    done = run([sys.executable, SCRIPT, f"--arrays_dir={arrays}", f"--out_dir={out}",
                "--train_seconds=3", *TINY], jax_env(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = check_output_folder(out)
    steps = summary["steps"]
    assert summary["status"] == "completed" and summary["stop_reason"] == "train_seconds"
    assert steps >= 2 and summary["global_step"] == steps
    assert summary["tensorflow_imported"] is False
    assert summary["soundfile"] == "placeholder"
    assert summary["keras_backend"] == "jax" and summary["platform"] == "cpu"
    assert summary["device"] and summary["versions"]["jax"] and summary["versions"]["keras"]
    assert summary["config"]["batch_size"] == 4 and summary["config"]["width_coefficient"] \
        == 0.25 and summary["config"]["losses"] == ["clip", "frame", "pitch"]
    assert summary["flags"]["checkpoint_steps"] == 2
    # A checkpoint at every epoch end (2 steps) and at the stop.
    assert summary["checkpoints"] == math.ceil(steps / 2)
    assert [s for s, _ in summary["checkpoint_history"]] == \
        [min(2 * i, steps) for i in range(1, math.ceil(steps / 2) + 1)]
    assert summary["checkpoint_step"] == steps
    assert summary["first_step_seconds"] > 0 and summary["train_seconds"] >= 3
    assert summary["steps_per_second"] > 0 and summary["clips_per_second"] > 0
    assert summary["weights_fingerprint"]["count"] > 0
    rows = read_rows(out)
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))  # --log_every=1
    for row in rows:
        for name in ("loss", "clip_loss", "frame_loss", "pitch_loss", "clip_accuracy"):
            assert math.isfinite(float(row[name])), row
    assert "first step (compile + 1 step)" in done.stdout and "stopping at step" in done.stdout

    # 2. The final weights load under TensorFlow: same values, finite embeddings.
    done = run([sys.executable, "-c", LOAD_ON_TENSORFLOW, ROOT, str(out)],
               {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    expected = summary["weights_fingerprint"]
    assert loaded["backend"] == "tensorflow" and loaded["finite"]
    assert loaded["count"] == expected["count"]
    assert loaded["sum"] == pytest.approx(expected["sum"], rel=1e-9, abs=1e-9)
    assert loaded["sum_squares"] == pytest.approx(expected["sum_squares"], rel=1e-9)
    assert loaded["shape"][0] == 2 and loaded["shape"][-1] > 0

    # 3. A warm start from those weights: the data stream continues, --max_steps stops it.
    out2 = tmp_path / "out2"
    done = run([sys.executable, SCRIPT, f"--arrays_dir={arrays}", f"--out_dir={out2}",
                "--train_seconds=120", "--max_steps=3", f"--start_step={steps}",
                f"--init_weights={out / 'weights.weights.json'}", *TINY], jax_env(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    warm = check_output_folder(out2)
    assert warm["init_weights_fingerprint"] == expected
    assert warm["stop_reason"] == "max_steps" and warm["steps"] == 3
    assert warm["global_step"] == steps + 3 and warm["checkpoint_step"] == steps + 3
    assert [int(r["step"]) for r in read_rows(out2)] == [steps + 1, steps + 2, steps + 3]
    assert warm["weights_fingerprint"] != expected  # it trained


CORPUS_MODULES = ("soundfile", "espeakng_loader", "tinysoundfont", "pretty_midi")


def missing_corpus_modules():
    missing = []
    for name in CORPUS_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):
            missing.append(name)
    if not missing:
        try:
            import soundfile  # noqa: F401  (the wheel without libsndfile raises OSError)
        except (ImportError, OSError):
            missing.append("soundfile (libsndfile)")
    return missing


@pytest.mark.slow  # one JAX run (compiling) after a 0.5-minute render: ~1 min
def test_tiny_pretrain_renders_its_corpus_first(tmp_path):
    missing = missing_corpus_modules()
    if missing:
        pytest.skip(f"the corpus packages are not importable here ({', '.join(missing)}): "
                    "pip install -e '.[corpus]' && pip install --no-deps tinysoundfont")
    # The prep script's render mode (no corpus argument): no arrays, the render command.
    done = run(["bash", PREP], {"SKIP_WHEELS": "1", "SKIP_EXCLUDE": "1",
                                "RENDER_MINUTES": "60", "WHEEL_DIR": str(tmp_path / "whl"),
                                "TRAIN_FLAGS": "--losses=clip", "PYTHON": sys.executable},
               timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gpu_pretrain_jax.py --render_minutes=60 " in done.stdout
    assert "--wall_seconds=540 --losses=clip 2>&1" in done.stdout
    assert "--arrays_dir" not in done.stdout and '".gpu"' not in done.stdout
    call = json.loads(done.stdout[done.stdout.index("{"):])
    assert len(call["command"]) <= 2000 and call["timeout_s"] <= 600
    assert call["carry"] == [str(tmp_path / "whl")]

    # 0.5 minute is 5 clips of 4-10 s; two spawned render processes, as on the host (16).
    out, corpus = tmp_path / "out", tmp_path / "corpus"
    done = run([sys.executable, SCRIPT, "--render_minutes=0.5", "--render_jobs=2",
                "--render_seed=3", f"--render_dir={corpus}", f"--out_dir={out}",
                "--max_steps=2", "--train_seconds=120", *TINY],
               jax_env(tmp_path, block_soundfile=False))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = check_output_folder(out)
    assert summary["status"] == "completed" and summary["stop_reason"] == "max_steps"
    assert summary["steps"] == 2 and summary["tensorflow_imported"] is False
    assert summary["soundfile"] == "present"
    render = summary["render"]
    assert render["clips"] >= 3 and render["array_clips"] == render["clips"]
    assert render["skipped"] == 0 and render["jobs"] == 2 and render["seed"] == 3
    assert 0.45 <= render["minutes"] <= 0.55 and render["seconds"] > 0
    assert render["renderers"]["libespeak-ng"]
    assert summary["corpus"]["clips"] == render["clips"]
    assert summary["corpus"]["folder"] == str(corpus / "arrays")
    assert (corpus / "manifest.json").is_file() and (corpus / "arrays" / "arrays.json").is_file()
    assert "rendered" in done.stdout
    for row in read_rows(out):
        assert math.isfinite(float(row["loss"])), row
