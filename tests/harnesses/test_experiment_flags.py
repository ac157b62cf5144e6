"""The experiment scripts share flag names (--out, --steps, --tasks). absl keeps one global
flag registry, so a script that defined its flags on import made any process importing two
of them (a test session running their tests together) fail with DuplicateFlagError. Each
script defines its flags when run as a command."""
import importlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMANDS = ["ablation", "diagnose", "frontend_ceiling", "int8_distill", "long_run",
            "ship_checkpoint"]


def test_every_experiment_module_imports_beside_the_others():
    code = ("import importlib, pkgutil, experiments\n"
            "for m in pkgutil.iter_modules(experiments.__path__):\n"
            "    importlib.import_module('experiments.' + m.name)\n"
            "print('imported')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "imported" in proc.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_defines_its_flags_when_run(name):
    sys.path.insert(0, ROOT)
    try:
        module = importlib.import_module(f"experiments.{name}")
    finally:
        sys.path.remove(ROOT)
    assert callable(module.define_flags)
    from absl import flags

    assert module.__name__ not in flags.FLAGS.flags_by_module_dict()  # nothing on import


@pytest.mark.parametrize("name", ["diagnose", "int8_distill"])
def test_commands_not_run_elsewhere_in_the_tests_still_parse_their_flags(name):
    proc = subprocess.run([sys.executable, "-m", f"experiments.{name}", "--helpshort"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    # (absl's --helpshort exits 1 after printing the flags)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "--out:" in proc.stdout and "--steps:" in proc.stdout
