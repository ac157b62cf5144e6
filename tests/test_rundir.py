"""The run-directory layout (msss_tf/rundir.py): which model file a run directory serves."""

import os

from msss_tf.rundir import latest_checkpoint


def test_latest_checkpoint_prefers_a_newer_checkpoint_over_an_older_final_model(tmp_path):
    assert latest_checkpoint(str(tmp_path)) is None
    (tmp_path / "checkpoints").mkdir()
    final, early, late = (tmp_path / "model.keras", tmp_path / "checkpoints" / "epoch-0002.keras",
                          tmp_path / "checkpoints" / "epoch-0005.keras")
    for path, mtime in ((early, 100), (final, 200)):
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
    assert latest_checkpoint(str(tmp_path)) == str(final)  # a finished run: its final model
    late.write_bytes(b"x")
    os.utime(late, (300, 300))  # an interrupted resume trained past it
    assert latest_checkpoint(str(tmp_path)) == str(late)
