"""Output folders that cannot be written (issue 14): the export, the probe results and
the embedding cache fail with an `OutputFolderError` (an OSError and a ValueError, so the
CLI prints `msss-tf CMD: error: ...`, exit 2) that names the folder and the flag, before
any long work where possible, never a raw traceback.

Tests run as root here, where `chmod 555` stops nothing: `read_only` simulates it by
making every write under the folder raise PermissionError; the chmod test runs only as
another user.
"""

import builtins
import errno
import os
import types

import numpy as np
import pytest

from msss_tf.outputs import OutputFolderError, ensure_writable_folder, writing_to


@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): from now on, creating or opening for writing anything under
    `folder` raises PermissionError (EACCES), as for a chmod 555 folder."""

    def install(folder):
        folder = os.path.abspath(folder)

        def inside(path):
            try:
                path = os.path.abspath(os.fspath(path))
            except TypeError:  # a file descriptor
                return False
            return path == folder or path.startswith(folder + os.sep)

        def refuse(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

        real_makedirs, real_open, real_os_open = os.makedirs, builtins.open, os.open

        def makedirs(path, *args, **kwargs):
            if inside(path):
                refuse(path)
            return real_makedirs(path, *args, **kwargs)

        def open_(file, mode="r", *args, **kwargs):
            if inside(file) and any(c in mode for c in "wax+"):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def os_open(path, flags, *args, **kwargs):
            if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "makedirs", makedirs)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        return folder

    return install


def test_the_error_is_a_value_error_naming_the_folder(tmp_path, read_only):
    folder = read_only(str(tmp_path / "out"))
    with pytest.raises(OutputFolderError) as caught:
        ensure_writable_folder(folder, "the probe results (--out_dir)")
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, OSError)
    assert error.errno == errno.EACCES
    assert str(error).startswith(f"cannot write the probe results (--out_dir) to the folder "
                                 f"{folder} (Permission denied)")
    # Other OSErrors (a missing input file, say) pass through unchanged.
    with pytest.raises(FileNotFoundError):
        with writing_to(folder, "x"):
            raise FileNotFoundError(errno.ENOENT, "No such file", "input.wav")


def test_export_to_a_read_only_folder(tmp_path, read_only):
    from msss_tf.config import MSSSConfig
    from msss_tf.embedding import Embedder
    from msss_tf.export import export_encoder, export_probe

    embedder = Embedder.random_init(MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25))
    base = str(tmp_path / "saved_models" / "msss_encoder")
    os.makedirs(base)
    read_only(base)
    with pytest.raises(ValueError, match=f"cannot write the encoder export \\(--export_dir\\) "
                                         f"to the folder {base} \\(Permission denied"):
        export_encoder(embedder, base, tflite=())
    assert os.listdir(base) == []
    probes = read_only(str(tmp_path / "probes"))
    with pytest.raises(OutputFolderError, match=f"folder {probes}"):
        export_probe(embedder, None, ["a", "b"], "scene", os.path.join(probes, "t", "1"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 555 folder anyway; "
                                              "the read_only fixture covers this case")
def test_export_to_a_chmod_555_folder(tmp_path):
    from msss_tf.config import MSSSConfig
    from msss_tf.embedding import Embedder
    from msss_tf.export import export_encoder

    base = tmp_path / "msss_encoder"
    base.mkdir()
    base.chmod(0o555)
    try:
        embedder = Embedder.random_init(MSSSConfig(width_coefficient=0.25,
                                                   depth_coefficient=0.25))
        with pytest.raises(OutputFolderError, match=str(base)):
            export_encoder(embedder, str(base), tflite=())
    finally:
        base.chmod(0o755)


def test_probe_outputs_in_a_read_only_folder(tmp_path, read_only, monkeypatch):
    import msss_tf.data.tasks as tasks_module
    from msss_tf.config import MSSSConfig
    from msss_tf.data.tasks.base import Example, InMemoryTask
    from msss_tf.evaluation.embeddings import embed_split
    from msss_tf.evaluation.probe import ProbeSettings, run_probes, write_results

    def scene_task():
        return InMemoryTask("tones", "scene", "multiclass", ["a", "b"], ["top1_acc"],
                            build_split=lambda split: [
                                Example(f"{split}/{c}", np.full(800, c, np.float32), [c])
                                for c in (0, 1)], source="test")

    class Embedder:  # what the cache needs: config, encoder weights, scene embeddings
        config, hop_ms, calls = MSSSConfig(), 40.0, 0
        encoder = types.SimpleNamespace(weights=[])

        def scene_embeddings(self, audio, batch_size=16):
            self.calls += 1
            return np.asarray(audio)[:, :4]

    monkeypatch.setattr(tasks_module, "load_task", lambda name, data_dir=None: scene_task())
    out = read_only(str(tmp_path / "out"))
    embedder = Embedder()
    with pytest.raises(OutputFolderError, match=f"probe results \\(--out_dir\\) to the folder "
                                                f"{out} "):
        run_probes(embedder, ["tones"], ProbeSettings(), out_dir=out, progress=False)
    assert embedder.calls == 0  # refused before embedding anything
    exports = read_only(str(tmp_path / "exports"))
    with pytest.raises(OutputFolderError, match="--export_dir"):
        run_probes(embedder, ["tones"], ProbeSettings(), out_dir=str(tmp_path / "ok"),
                   export_dir=exports, progress=False)
    with pytest.raises(OutputFolderError, match=f"embedding cache .* folder {out}"):
        embed_split(embedder, scene_task(), "test", cache_dir=out, progress=False)
    with pytest.raises(OutputFolderError, match=f"folder {out} "):
        write_results([], out)


def test_embed_cli_into_a_read_only_folder_names_it(tmp_path, read_only, monkeypatch, capsys):
    import soundfile as sf

    from msss_tf import cli, embedding

    class FakeEmbedder:
        sample_rate = 16000

        def scene_embeddings(self, audio):
            return np.ones((len(audio), 4), np.float32)

        def timestamp_embeddings(self, audio):
            return np.ones((len(audio), 2, 4), np.float32), np.zeros((len(audio), 2), np.float32)

    monkeypatch.setattr(embedding, "load_embedder", lambda path: FakeEmbedder())
    clip = tmp_path / "a.wav"
    sf.write(str(clip), 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    out_dir = read_only(tmp_path / "locked")
    code = cli.main(["msss-tf", "embed", "--model=any", f"--out={out_dir}/e.npz", str(clip)])
    err = capsys.readouterr().err
    assert code == 2 and "locked" in err and "--out" in err
    assert "Traceback" not in err
