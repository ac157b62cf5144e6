"""Committed files travel: none may hold a machine's absolute path."""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A home folder, a scratch disk or this project's own checkout location.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|root|home|Users|tmp|scratch|mnt)/[\w.-]")


def tracked_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in out.decode().split("\0") if name]


def test_no_committed_file_holds_an_absolute_machine_path():
    hits = []
    for name in tracked_files():
        if name == ".gitignore":  # patterns, not paths
            continue
        try:
            text = open(os.path.join(ROOT, name), encoding="utf-8").read()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{name}:{number}: {line.strip()[:120]}")
    assert not hits, "absolute paths of a machine in committed files:\n" + "\n".join(hits)


def test_portable_paths_and_commands(tmp_path, monkeypatch):
    from msss_tf.runs import portable_command, portable_path

    monkeypatch.chdir(tmp_path)
    assert portable_path(str(tmp_path / "runs" / "a")) == os.path.join("runs", "a")
    assert portable_path("runs/a") == "runs/a"
    assert portable_path("/elsewhere/deep/study") == os.path.join("...", "study")
    command = portable_command(["/opt/venv/bin/msss-tf", "bench", "--out=/data/me/b.json",
                                str(tmp_path / "clip.wav"), "--steps=3"])
    assert command == "msss-tf bench --out=.../b.json clip.wav --steps=3"
    assert not MACHINE_PATH.search(command)
