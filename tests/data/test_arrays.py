"""Corpus arrays (msss_tf.data.arrays): writing, loading, segment pairs, the command, and
the promise that none of it needs TensorFlow.

Every audio file is written by the tests themselves (soundfile) into pytest's tmp_path.
"""

import concurrent.futures
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from msss_tf.data.arrays import (CorpusArrays, SegmentPairs, pairs_per_second, to_int16,
                                 write_corpus_arrays)
from msss_tf.data.audio import load_audio
from msss_tf.data.files import SkipReport
from helpers import REPO_ROOT

SR = 16000
S = 15600  # the pre-training segment: 0.975 s at 16 kHz


def noise(seconds, rate=SR, seed=0, channels=1, amp=0.3):
    """Random samples: every window of a clip is distinct, so a crop can be located."""
    rng = np.random.default_rng(seed)
    x = np.clip(amp * rng.standard_normal((int(seconds * rate), channels)), -1, 1)
    return x[:, 0] if channels == 1 else x


def write_folder(root):
    """Four usable files (long, short, stereo, 44.1 kHz) and two that are not."""
    (root / "sub").mkdir(parents=True)
    sf.write(root / "a.wav", noise(2.0, seed=1), SR, subtype="PCM_16")
    sf.write(root / "b.wav", noise(0.5, seed=2), SR, subtype="PCM_16")  # shorter than S
    sf.write(root / "sub" / "c.flac", noise(1.5, seed=3, channels=2), SR)  # stereo
    sf.write(root / "sub" / "d.wav", noise(1.2, rate=44100, seed=4), 44100)  # resampled
    (root / "bad.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    sf.write(root / "silent.wav", np.zeros(SR), SR)
    return root


GOOD = ["a.wav", "b.wav", "sub/c.flac", "sub/d.wav"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(source folder, arrays folder, arrays.json, the SkipReport) of the folder above."""
    base = tmp_path_factory.mktemp("arrays")
    source = write_folder(base / "audio")
    report = SkipReport()
    info = write_corpus_arrays(str(source), str(base / "arrays"), report=report)
    return source, base / "arrays", info, report


@pytest.fixture(scope="module")
def arrays(written):
    return CorpusArrays.load(written[1])


# ------------------------------------------------------------------------------ writing
def test_round_trip_matches_load_audio(written, arrays):
    source, out, info, _ = written
    assert sorted(os.listdir(out)) == ["arrays.json", "audio.npy", "offsets.npy"]
    assert info["files"] == GOOD and info["clips_per_file"] == [1, 1, 1, 1]
    expected = [to_int16(load_audio(str(source / name))) for name in GOOD]
    for i, clip in enumerate(expected):
        # The stored samples are round(clip(x) * 32768) of load_audio's output...
        want = np.clip(np.round(load_audio(str(source / GOOD[i])) * 32768.0), -32768, 32767)
        np.testing.assert_array_equal(clip, want.astype(np.int16))
        np.testing.assert_array_equal(arrays.clip(i), clip)
    # ... so a 16-bit file round-trips exactly.
    pcm, _ = sf.read(source / "a.wav", dtype="int16")
    np.testing.assert_array_equal(arrays.clip(0), pcm)
    assert arrays.clip(3).size == 19200  # 1.2 s at 44.1 kHz, resampled to 16 kHz
    lengths = [c.size for c in expected]
    np.testing.assert_array_equal(arrays.offsets, np.concatenate([[0], np.cumsum(lengths)]))
    assert arrays.offsets.dtype == np.int64 and arrays.audio.dtype == np.int16
    assert isinstance(arrays.audio, np.memmap)
    assert arrays.num_clips == info["num_clips"] == 4
    assert info["num_samples"] == sum(lengths) == arrays.num_samples
    assert info["seconds_total"] == pytest.approx(sum(lengths) / SR, abs=1e-3)
    assert arrays.seconds == pytest.approx(sum(lengths) / SR)
    assert info["format"] == "msss_tf corpus arrays" and info["format_version"] == 1
    assert info["sample_rate"] == arrays.sample_rate == SR
    assert info["source"] == str(source) and info["num_files_seen"] == 6
    assert json.loads((out / "arrays.json").read_text()) == info


def test_corrupt_and_silent_files_are_skipped_with_their_reason(written):
    _, _, info, report = written
    reasons = {os.path.basename(item["path"]): item["reason"] for item in info["skipped"]}
    assert reasons == {"bad.wav": "unreadable", "silent.wav": "silent"}
    assert info["skipped_counts"] == {"unreadable": 1, "silent": 1}
    assert report.count == 2 and report.seen == 6


def test_a_corpus_folder_is_read_in_its_manifest_order(tmp_path):
    audio = tmp_path / "corpus" / "audio"
    audio.mkdir(parents=True)
    for i, seconds in enumerate([1.0, 2.0, 1.5]):
        sf.write(audio / f"{i:06d}.wav", noise(seconds, seed=10 + i), SR, subtype="PCM_16")
    sf.write(audio / "stray.wav", noise(1.0, seed=9), SR)  # not listed: not read
    names = ["000002.wav", "000000.wav", "gone.wav", "000001.wav"]
    (tmp_path / "corpus" / "manifest.json").write_text(json.dumps(
        {"format": "msss_tf realistic corpus", "audio_dir": "audio", "files": names}))
    info = write_corpus_arrays(tmp_path / "corpus", tmp_path / "out")
    assert info["files"] == ["000002.wav", "000000.wav", "000001.wav"]
    assert [(os.path.basename(s["path"]), s["reason"]) for s in info["skipped"]] == [
        ("gone.wav", "not_found")]
    loaded = CorpusArrays.load(tmp_path / "out")
    np.testing.assert_array_equal(loaded.lengths, [1.5 * SR, 1.0 * SR, 2.0 * SR])
    pcm, _ = sf.read(audio / "000002.wav", dtype="int16")
    np.testing.assert_array_equal(loaded.clip(0), pcm)


def test_long_files_are_stored_in_clips(tmp_path):
    sf.write(tmp_path / "long.wav", noise(25.0, seed=5), SR, subtype="PCM_16")
    info = write_corpus_arrays(tmp_path, tmp_path / "out", max_clip_seconds=10.0)
    assert info["num_clips"] == 2 and info["clips_per_file"] == [2]
    loaded = CorpusArrays.load(tmp_path / "out")
    pcm, _ = sf.read(tmp_path / "long.wav", dtype="int16")
    np.testing.assert_array_equal(loaded.audio, pcm)  # the clips cover the file, in order
    np.testing.assert_array_equal(loaded.lengths, [12.5 * SR, 12.5 * SR])


def test_no_usable_audio_names_the_folder_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"garbage")
    sf.write(bad / "quiet.wav", np.zeros(SR), SR)
    with pytest.raises(ValueError, match="no usable audio in .*bad.*unreadable"):
        write_corpus_arrays(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="no usable audio in .*none"):
        write_corpus_arrays(tmp_path / "none", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing"):
        write_corpus_arrays(tmp_path / "missing", tmp_path / "out")
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps({"shards": [], "source": "/data/a"}))
    with pytest.raises(ValueError, match="TFRecord folder.*/data/a"):
        write_corpus_arrays(shards, tmp_path / "out")


def test_a_failed_or_interrupted_write_never_leaves_a_complete_looking_folder(
        written, tmp_path):
    source = written[0]
    out = tmp_path / "out"

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_corpus_arrays(source, out, progress=interrupt)
    assert not out.exists()  # created by the run, removed with its temporary files

    write_corpus_arrays(source, out)
    before = CorpusArrays.load(out)
    with pytest.raises(KeyboardInterrupt):
        write_corpus_arrays(source, out, progress=interrupt)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"garbage")
    with pytest.raises(ValueError):
        write_corpus_arrays(bad, out)
    # Neither the interrupted run nor the failed one touched the earlier, complete arrays.
    assert sorted(os.listdir(out)) == ["arrays.json", "audio.npy", "offsets.npy"]
    np.testing.assert_array_equal(CorpusArrays.load(out).audio, before.audio)


# ------------------------------------------------------------------------------ loading
def test_load_refuses_what_is_not_a_complete_arrays_folder(written, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="not a corpus arrays folder.*not a folder"):
        CorpusArrays.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no arrays.json"):
        CorpusArrays.load(written[0])  # an audio folder

    def copy(name):
        target = tmp_path / name
        shutil.copytree(written[1], target)
        return target

    broken = copy("json")
    (broken / "arrays.json").write_text("{not json")
    with pytest.raises(ValueError, match="arrays.json: unreadable"):
        CorpusArrays.load(broken)
    (broken / "arrays.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="arrays.json: not a corpus arrays"):
        CorpusArrays.load(broken)

    missing = copy("missing")
    os.remove(missing / "audio.npy")
    with pytest.raises(ValueError, match="audio.npy: missing"):
        CorpusArrays.load(missing)

    truncated = copy("truncated")
    with open(truncated / "audio.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match="audio.npy"):
        CorpusArrays.load(truncated)

    for name, offsets, message in [
            ("short", lambda o: o[:-1], "offsets run from 0 to .* expected 0 to"),
            ("order", lambda o: o[[0, 2, 1, 3, 4]], "offsets must increase strictly; clip 1 "),
            ("float", lambda o: o.astype(np.float64), "expected int64"),
            ("int32", lambda o: o.astype(np.int32), None)]:
        folder = copy(name)
        np.save(folder / "offsets.npy", offsets(np.load(written[1] / "offsets.npy")))
        if message is None:
            CorpusArrays.load(folder)  # int32 offsets that match are fine
            continue
        with pytest.raises(ValueError, match=f"offsets.npy: {message}"):
            CorpusArrays.load(folder)

    wrong = copy("dtype")
    np.save(wrong / "audio.npy", np.load(written[1] / "audio.npy").astype(np.float32))
    with pytest.raises(ValueError, match="audio.npy: expected int16"):
        CorpusArrays.load(wrong)

    count = copy("num_clips")
    info = json.loads((count / "arrays.json").read_text())
    (count / "arrays.json").write_text(json.dumps({**info, "num_clips": 7}))
    with pytest.raises(ValueError, match="4 clips, but arrays.json says 7"):
        CorpusArrays.load(count)


def test_load_into_memory_and_pickle_by_folder(written, arrays):
    in_memory = CorpusArrays.load(written[1], mmap=False)
    assert not isinstance(in_memory.audio, np.memmap)
    np.testing.assert_array_equal(in_memory.audio, arrays.audio)
    assert len(pickle.dumps(arrays)) < 10_000  # the folder, not the samples
    copy = pickle.loads(pickle.dumps(arrays))
    assert isinstance(copy.audio, np.memmap)
    np.testing.assert_array_equal(copy.clip(2), arrays.clip(2))
    np.testing.assert_array_equal(arrays.clip(-1), arrays.clip(3))
    with pytest.raises(IndexError):
        arrays.clip(4)


# ------------------------------------------------------------------------ segment pairs
def padded(clip, width=S):
    """The clip with |n - width| zeros on each side: every window of `width` is a crop."""
    pad = abs(clip.size - width)
    return np.concatenate([np.zeros(pad, clip.dtype), clip, np.zeros(pad, clip.dtype)])


def window_offsets(row, clip):
    """The offsets o with padded(clip)[o:o + S] == row."""
    full = padded(clip)
    k = int(np.flatnonzero(row)[0])  # the first sample of the clip in the window
    candidates = np.flatnonzero(full[k:full.size - S + 1 + k] == row[k])
    return [int(o) for o in candidates if np.array_equal(full[o:o + S], row)]


def test_pairs_are_crops_of_their_clips_short_clips_padded_whole(arrays):
    data = SegmentPairs(arrays, batch_size=6, segment_samples=S, dtype="int16", seed=3)
    short_positions = set()
    for step in range(4):
        batch = data.batch(step)
        clips = data.clips(step)
        for name in ("anchor", "positive"):
            assert batch[name].shape == (6, S) and batch[name].dtype == np.int16
        for b, c in enumerate(clips):
            clip = arrays.clip(int(c))
            anchor, positive = batch["anchor"][b], batch["positive"][b]
            assert len(window_offsets(anchor, clip)) == 1
            assert len(window_offsets(positive, clip)) == 1
            if clip.size < S:  # all of the clip, once, with zeros around it
                at = int(np.flatnonzero(anchor)[0])
                np.testing.assert_array_equal(anchor[at:at + clip.size], clip)
                assert not anchor[:at].any() and not anchor[at + clip.size:].any()
                short_positions.add(at)
            else:
                assert not np.array_equal(anchor, positive)  # independent offsets
    assert len(short_positions) > 1  # the short clip moves around in its window


def test_float32_is_int16_over_32768(arrays):
    as_int = SegmentPairs(arrays, 5, S, dtype="int16", seed=1).batch(7)
    as_float = SegmentPairs(arrays, 5, S, dtype="float32", seed=1).batch(7)
    for name in ("anchor", "positive"):
        assert as_float[name].dtype == np.float32 and as_float[name].shape == (5, S)
        np.testing.assert_array_equal(as_float[name],
                                      as_int[name].astype(np.float32) / np.float32(32768))
        assert as_float[name].min() >= -1.0 and as_float[name].max() < 1.0


def test_batches_are_a_pure_function_of_seed_and_step(arrays):
    first = SegmentPairs(arrays, 3, 4000, seed=11)
    again = SegmentPairs(CorpusArrays.load(arrays.folder), 3, 4000, seed=11)
    for step in (0, 5, 1, 5):
        a, b = first.batch(step), again.batch(step)
        np.testing.assert_array_equal(a["anchor"], b["anchor"])
        np.testing.assert_array_equal(a["positive"], b["positive"])
    assert not np.array_equal(first.batch(0)["anchor"], first.batch(1)["anchor"])
    other = SegmentPairs(arrays, 3, 4000, seed=12)
    assert not np.array_equal(first.batch(0)["anchor"], other.batch(0)["anchor"])
    unpickled = pickle.loads(pickle.dumps(first))
    np.testing.assert_array_equal(unpickled.batch(9)["positive"], first.batch(9)["positive"])


@pytest.mark.parametrize("batch_size", [3, 4, 7])  # 4 clips: across passes, > one pass
def test_every_clip_once_per_pass(arrays, batch_size):
    data = SegmentPairs(arrays, batch_size, 2000, seed=5)
    stream = np.concatenate([data.clips(step) for step in range(12)])
    passes = stream[:len(stream) // 4 * 4].reshape(-1, 4)
    for p, order in enumerate(passes):
        assert sorted(order) == [0, 1, 2, 3]
        np.testing.assert_array_equal(order, data.order(p))
    assert len({tuple(order) for order in passes}) > 1  # a new order each pass


def test_threads_in_any_order_give_the_same_batches(arrays):
    data = SegmentPairs(arrays, 4, S, steps_per_epoch=24, seed=2, workers=4)
    expected = [data[i] for i in range(len(data))]
    fresh = SegmentPairs(arrays, 4, S, steps_per_epoch=24, seed=2, workers=4)
    order = list(range(len(fresh)))
    random.Random(0).shuffle(order)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = dict(zip(order, pool.map(fresh.__getitem__, order)))
    for i in range(len(data)):
        np.testing.assert_array_equal(got[i]["anchor"], expected[i]["anchor"])
        np.testing.assert_array_equal(got[i]["positive"], expected[i]["positive"])


def test_length_epochs_and_argument_checks(arrays, tmp_path):
    assert len(SegmentPairs(arrays, 2, S)) == 2  # 4 clips // 2
    assert len(SegmentPairs(arrays, 64, S)) == 1  # at least one
    data = SegmentPairs(arrays.folder, 2, S, steps_per_epoch=3)  # a folder is loaded
    np.testing.assert_array_equal(data[2]["anchor"], data.batch(2)["anchor"])
    data.on_epoch_end()  # the next epoch continues the stream
    assert data.epoch == 1
    np.testing.assert_array_equal(data[0]["anchor"], data.batch(3)["anchor"])
    callback = data.epoch_callback()
    callback.on_epoch_begin(5)
    assert data.epoch == 5
    with pytest.raises(IndexError):
        data[3]
    for kwargs, named in [(dict(batch_size=0), "batch_size"),
                          (dict(segment_samples=0), "segment_samples"),
                          (dict(steps_per_epoch=0), "steps_per_epoch"),
                          (dict(dtype="float16"), "dtype"),
                          (dict(seed=1.5), "seed")]:
        args = {"batch_size": 2, "segment_samples": S, **kwargs}
        with pytest.raises(ValueError, match=named):
            SegmentPairs(arrays, **args)
    with pytest.raises(ValueError, match="CorpusArrays or a folder"):
        SegmentPairs(np.zeros(10, np.int16), 2, S)
    with pytest.raises(ValueError, match="not a corpus arrays folder"):
        SegmentPairs(tmp_path, 2, S)
    with pytest.raises(ValueError, match="at least one clip"):
        CorpusArrays(np.zeros(0, np.int16), np.zeros(1, np.int64), SR)


def test_pairs_per_second_reports_both_settings(arrays):
    result = pairs_per_second(SegmentPairs(arrays, 8, S, dtype="int16"), batches=2, threads=2)
    assert result["batch_size"] == 8 and result["dtype"] == "int16" and result["threads"] == 2
    assert result["single_thread_pairs_per_second"] > 0
    assert result["threads_pairs_per_second"] > 0 and result["speedup"] > 0


# ------------------------------------------------------------------------------ command
def test_arrays_command(written, tmp_path, capsys):
    from msss_tf import cli

    out = tmp_path / "out"
    assert cli.main(["msss-tf", "arrays", f"--source={written[0]}", f"--out_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "arrays: 4 clips, 0.1 min" in printed and f"MB in {out}" in printed
    assert "skipped 2 file(s) (1 unreadable, 1 silent)" in printed
    assert CorpusArrays.load(out).num_clips == 4
    assert cli.main(["msss-tf", "arrays", f"--out_dir={out}"]) == 2
    assert "--source" in capsys.readouterr().err
    assert cli.main(["msss-tf", "arrays", f"--source={tmp_path / 'none'}",
                     f"--out_dir={out}"]) == 2
    assert "none" in capsys.readouterr().err


def test_corpus_command_writes_arrays_on_request(tmp_path, monkeypatch, capsys):
    from msss_tf import cli
    from msss_tf.data import realistic

    def fake_build_corpus(out_dir, minutes, seed, **kwargs):  # the renderers' output shape
        os.makedirs(os.path.join(out_dir, "audio"))
        names = [f"{i:06d}.wav" for i in range(3)]
        for i, name in enumerate(names):
            sf.write(os.path.join(out_dir, "audio", name), noise(1.0 + i, seed=i), SR,
                     subtype="PCM_16")
        manifest = {"audio_dir": "audio", "files": names, "num_clips": 3,
                    "seconds_total": 6.0, "build": {"audio_seconds_per_wall_second": 90.0}}
        with open(os.path.join(out_dir, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        return manifest

    monkeypatch.setattr(realistic, "build_corpus", fake_build_corpus)
    monkeypatch.setattr(cli, "require_modules", lambda *args, **kwargs: None)
    out = tmp_path / "corpus"
    assert cli.main(["msss-tf", "corpus", f"--out_dir={out}", "--noprepare", "--arrays"]) == 0
    assert "arrays: 3 clips, 0.1 min" in capsys.readouterr().out
    loaded = CorpusArrays.load(out / "arrays")
    assert loaded.info["files"] == ["000000.wav", "000001.wav", "000002.wav"]
    np.testing.assert_array_equal(loaded.lengths, [SR, 2 * SR, 3 * SR])
    assert not (out / "shards").exists()


# ------------------------------------------------------------------- without TensorFlow
def test_the_arrays_path_never_imports_tensorflow(written, tmp_path):
    """Under Keras on JAX: importing, writing, loading, batching, the command, and a fit
    on a SegmentPairs, all without TensorFlow in sys.modules."""
    code = textwrap.dedent(f"""
        import sys
        import msss_tf.data.arrays, msss_tf.data.audio
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        from msss_tf.data import SegmentPairs, write_corpus_arrays, CorpusArrays
        import keras
        assert keras.backend.backend() == "jax"
        from msss_tf import cli
        assert cli.main(["msss-tf", "arrays", "--source={written[0]}",
                         "--out_dir={tmp_path / 'out'}"]) == 0
        data = SegmentPairs(CorpusArrays.load({str(tmp_path / 'out')!r}), 4, 400,
                            dtype="int16", workers=2)

        class Model(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(1)

            def call(self, x):
                a = keras.ops.cast(x["anchor"][:, :8], "float32") / 32768.0
                return self.dense(a + keras.ops.cast(x["positive"][:, :8], "float32"))

            def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                             training=True):
                return keras.ops.mean(y_pred ** 2)

        model = Model()
        model.compile(optimizer="sgd")
        model.fit(data, epochs=2, shuffle=False, verbose=0)
        print("tensorflow imported:", "tensorflow" in sys.modules)
        """)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env=env,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "tensorflow imported: False" in result.stdout


def test_every_name_of_msss_tf_data_still_imports():
    import msss_tf.data as data

    for name in data.__all__:
        assert getattr(data, name) is not None, name
        assert name in dir(data)
    from msss_tf.data import SkipReport as eager, tasks  # a submodule, found as before
    from msss_tf.data.files import SkipReport

    assert eager is SkipReport and hasattr(tasks, "load_task")
    with pytest.raises(ImportError):
        from msss_tf.data import no_such_name  # noqa: F401
