"""What a user meets in the first second: flags checked before TensorFlow loads, a quiet
start, and a job that names a missing package before it starts any work."""

import os
import subprocess
import sys
import textwrap

import pytest


def run_python(code, timeout=300, **env):
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environ.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=environ)


@pytest.mark.parametrize("args, expected", [
    (["pretrain", "--model_dir=never/written", "--bogus=1"], "bogus"),
    (["pretrain", "--train_steps=abc"], "--train_steps"),
    (["probe", "--model_dir=runs/x"], "--task"),
    (["demo", "--probe_epochs=many"], "--probe_epochs"),
    (["export", "--tflite=float32"], "--model_dir"),
    (["pretrain", "--help"], "--model_dir"),
    (["--help"], "pretrain"),
])
def test_flags_are_checked_before_tensorflow_is_imported(args, expected):
    result = run_python(f"""
        import sys
        from msss_tf import cli
        code = cli.main(["msss-tf", *{args!r}])
        print("exit", code, "tensorflow loaded:", "tensorflow" in sys.modules)
        """)
    assert "tensorflow loaded: False" in result.stdout, result.stdout + result.stderr
    assert expected in result.stdout + result.stderr


_HIDE = """
    import importlib.util, sys
    real = importlib.util.find_spec
    hidden = {hidden!r}
    importlib.util.find_spec = lambda name, *a: None if name in hidden else real(name, *a)
    from msss_tf import cli
    code = cli.main(["msss-tf", *{args!r}])
    print("exit", code, "tensorflow loaded:", "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("hidden, args, named", [
    (["sed_eval"], ["demo", "--model_dir={tmp}/run"], "sed_eval"),
    (["dcase_util"], ["probe", "--model_dir={tmp}/run", "--task=synthetic_scene,synthetic_events",
                      "--out_dir={tmp}/run"], "dcase_util"),
    (["ai_edge_litert"], ["export", "--model_dir={tmp}/run", "--export_dir={tmp}/run"],
     "ai-edge-litert"),
    (["ai_edge_litert"], ["bench", "--out={tmp}/run/bench.json"], "ai-edge-litert"),
    (["tinysoundfont"], ["corpus", "--out_dir={tmp}/run"], "--no-deps"),
])
def test_a_missing_package_stops_the_job_before_any_work(tmp_path, hidden, args, named):
    args = [a.format(tmp=tmp_path) for a in args]
    result = run_python(_HIDE.format(hidden=hidden, args=args))
    assert "exit 2 tensorflow loaded: False" in result.stdout, result.stdout + result.stderr
    assert named in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written, nothing to lose


def test_the_same_jobs_pass_the_check_with_the_packages_installed(tmp_path):
    from msss_tf import cli
    from msss_tf.packages import missing_modules

    assert missing_modules(["sed_eval", "dcase_util", "ai_edge_litert"]) == []
    fv = cli.flags.FlagValues()
    cli.define_demo(fv)
    fv(["msss-tf"])
    cli.check_packages("demo", fv)  # raises if anything were missing


@pytest.mark.slow  # four TensorFlow start-ups in subprocesses: ~12 s
def test_tensorflow_start_up_lines_are_silenced_unless_asked_for(tmp_path):
    # embed loads TensorFlow, then fails on the missing model: enough to see the start-up.
    args = ["embed", f"--model={tmp_path}/none", f"--out={tmp_path}/e.npz", "x.wav"]
    code = f"from msss_tf import cli; raise SystemExit(cli.main(['msss-tf', *{args!r}]))"
    quiet = run_python(code)
    assert quiet.returncode == 2 and "no such model" in quiet.stderr
    for noise in ("oneDNN", "cudart_stub", "cuInit", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in quiet.stderr, quiet.stderr
    verbose = run_python(code.replace("'x.wav'", "'x.wav', '--verbose'"))
    by_env = run_python(code, TF_CPP_MIN_LOG_LEVEL="0")
    assert verbose.returncode == by_env.returncode == 2
    # The switch really brings the lines back. Which lines depends on the machine (oneDNN
    # is announced only where TF turns it on, e.g. with AVX-512; cudart_stub only without
    # a GPU), but absl's notice comes with the first of them, whichever it is.
    for stderr in (verbose.stderr, by_env.stderr):
        assert "absl::InitializeLog" in stderr, stderr
        assert any(line in stderr for line in ("oneDNN", "cudart_stub", "cuInit",
                                                "cpu_feature_guard")), stderr
