"""msss_tf.atomic: the one single-file atomic writer."""

import json
import os

import pytest

from msss_tf.atomic import (atomic_path, temporary_path, write_bytes_atomically,
                            write_json_atomically, write_text_atomically)


def test_writes_land_whole_and_leave_no_temporary(tmp_path):
    target = tmp_path / "sub" / "a.json"  # the folder is created
    write_json_atomically(str(target), {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1} and target.read_text().endswith("\n")
    write_text_atomically(str(tmp_path / "b.txt"), "hello")
    write_bytes_atomically(str(tmp_path / "c.bin"), b"\x00\x01")
    assert (tmp_path / "b.txt").read_text() == "hello"
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["b.txt", "c.bin", "sub"]
    assert os.listdir(tmp_path / "sub") == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(str(target)) as tmp, open(tmp, "w") as f:
            f.write("half a ne")
            raise RuntimeError("disk full")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["results.csv"]


def test_the_temporary_name_keeps_a_suffix_and_names_the_process(tmp_path):
    path = str(tmp_path / "clip.wav")
    assert temporary_path(path, ".wav") == f"{path}.tmp-{os.getpid()}.wav"
    with atomic_path(path, ".wav") as tmp:
        assert tmp.endswith(".wav") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "wb").close()
    assert os.listdir(tmp_path) == ["clip.wav"]
