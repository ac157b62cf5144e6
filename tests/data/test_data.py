"""Tests of msss_tf.data: audio reading and checks, synthetic corpus, TFRecords, pipeline.

Every audio file is written by the tests themselves (soundfile) into pytest's tmp_path.
"""

import json
import os
import pickle
import threading

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.data import (
    AUDIO_EXTENSIONS,
    AudioError,
    SkipReport,
    find_audio_files,
    is_prepared_dir,
    load_audio,
    prepare_corpus,
    pretrain_dataset,
    read_manifest,
    sample_segment_pair,
    synthetic_corpus,
    tfrecord_dataset,
    write_corpus_as_wav,
)
from msss_tf.data.pipeline import check_audio_folder

SR = 16000
SEGMENT = MSSSConfig().segment_samples  # 15600


def tone(freq=440.0, seconds=1.0, sr=SR, amp=0.5):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, data, sr=SR, **kwargs):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    sf.write(str(path), data, sr, **kwargs)
    return str(path)


def garbage(path, nbytes=2000):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8).tobytes())
    return str(path)


def peak_hz(x, sr=SR):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.argmax(spectrum) * sr / x.size


def reason_of(path, **kwargs):
    with pytest.raises(AudioError) as info:
        load_audio(str(path), **kwargs)
    assert info.value.path == str(path)
    return info.value.reason


# ------------------------------------------------------------------------- load_audio
def test_load_16bit_wav_at_16k_is_exact(tmp_path):
    x = tone()
    path = write(tmp_path / "a.wav", x, subtype="PCM_16")
    y = load_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1 / 32768)


@pytest.mark.parametrize("source_rate", [8000, 44100, 48000])
def test_resampling_keeps_length_and_pitch(tmp_path, source_rate):
    path = write(tmp_path / "a.wav", tone(440.0, 1.0, source_rate), source_rate)
    y = load_audio(path, sample_rate=SR)
    assert y.shape == (SR,)  # 1 s at any rate -> 16000 samples
    assert peak_hz(y) == pytest.approx(440.0, abs=1.0)


@pytest.mark.parametrize("subtype,atol", [
    ("PCM_U8", 1 / 64), ("PCM_24", 1e-6), ("PCM_32", 1e-6), ("FLOAT", 1e-7), ("DOUBLE", 1e-7)])
def test_wav_sample_formats(tmp_path, subtype, atol):
    x = tone()
    y = load_audio(write(tmp_path / "a.wav", x, subtype=subtype))
    np.testing.assert_allclose(y, x, atol=atol)


def test_flac_aiff_and_ogg(tmp_path):
    x = tone(440.0, 1.0)
    np.testing.assert_allclose(load_audio(write(tmp_path / "a.flac", x)), x, atol=1 / 32768)
    np.testing.assert_allclose(load_audio(write(tmp_path / "a.aiff", x)), x, atol=1 / 32768)
    y = load_audio(write(tmp_path / "a.ogg", x, format="OGG", subtype="VORBIS"))
    assert abs(y.size - x.size) <= 64  # lossy codec; the length survives
    assert peak_hz(y) == pytest.approx(440.0, abs=2.0)


def test_stereo_is_averaged_to_mono(tmp_path):
    x = tone()
    same = write(tmp_path / "same.wav", np.stack([x, x], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(load_audio(same), x, atol=1e-7)
    opposite = write(tmp_path / "opposite.wav", np.stack([x, -x], axis=1), subtype="FLOAT")
    assert reason_of(opposite) == "silent"


def test_loud_float_wav_is_scaled_to_peak_one(tmp_path):
    x = 2.0 * tone(amp=1.0)
    y = load_audio(write(tmp_path / "loud.wav", x, subtype="FLOAT"))
    assert np.max(np.abs(y)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(y, x / np.max(np.abs(x)), atol=1e-6)


def test_rejections_have_the_right_reason(tmp_path):
    assert reason_of(garbage(tmp_path / "garbage.wav")) == "unreadable"
    with open(write(tmp_path / "full.wav", tone()), "rb") as f:
        header = f.read(20)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(header)
    assert reason_of(truncated) == "unreadable"
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 50)
    assert reason_of(text) == "unreadable"
    assert reason_of(write(tmp_path / "empty.wav", np.zeros(0, np.float32))) == "empty"
    assert reason_of(write(tmp_path / "one.wav", np.array([0.5], np.float32))) == "too_short"
    assert reason_of(write(tmp_path / "silent.wav", np.zeros(SR, np.float32))) == "silent"
    nan = tone()
    nan[100] = np.nan
    assert reason_of(write(tmp_path / "nan.wav", nan, subtype="FLOAT")) == "non_finite"
    inf = tone()
    inf[5] = np.inf
    assert reason_of(write(tmp_path / "inf.wav", inf, subtype="FLOAT")) == "non_finite"
    assert reason_of(tmp_path / "missing.wav") == "not_found"
    # min_samples counts samples after resampling: 100 samples at 8 kHz are 200 at 16 kHz.
    short = write(tmp_path / "short.wav", tone(seconds=100 / 8000, sr=8000), 8000)
    assert load_audio(short, min_samples=200).size == 200
    assert reason_of(short, min_samples=201) == "too_short"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied(tmp_path):
    path = write(tmp_path / "locked.wav", tone())
    os.chmod(path, 0)
    assert reason_of(path) == "permission_denied"


def test_audio_error_message_and_pickling(tmp_path):
    error = AudioError("/x/y.wav", "silent", "peak 0")
    assert isinstance(error, ValueError)
    assert "/x/y.wav" in str(error) and "silent" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, str(copy)) == (error.path, error.reason, str(error))


# ------------------------------------------------------------------- find_audio_files
def test_find_audio_files(tmp_path):
    for name in ["b.wav", "a.WAV", "sub/c.Flac", "sub/deeper/d.ogg", "sub/e.aif", "f.AIFF",
                 "g.oga", "notes.txt", "h.wav.bak", "sub/i.mp4", "j.MP3", "k.opus", "l.m4a"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    unsupported = []
    found = [os.path.relpath(p, tmp_path) for p in find_audio_files(str(tmp_path), unsupported)]
    # libsndfile 1.1+ (the soundfile wheels) reads MP3: it is listed, not passed over.
    assert "MP3" in sf.available_formats()
    assert found == sorted(["a.WAV", "b.wav", "f.AIFF", "g.oga", "j.MP3", "k.opus",
                            "sub/c.Flac", "sub/deeper/d.ogg", "sub/e.aif"])
    assert [os.path.relpath(p, tmp_path) for p in unsupported] == ["l.m4a"]
    assert {".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3"} <= set(AUDIO_EXTENSIONS)


def test_find_audio_files_follows_symlinked_dirs_once(tmp_path):
    (tmp_path / "real" / "inner").mkdir(parents=True)
    (tmp_path / "real" / "a.wav").write_bytes(b"x")
    (tmp_path / "real" / "inner" / "b.wav").write_bytes(b"x")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    os.symlink(tmp_path / "real", corpus / "linked")          # a symlinked sub-folder
    os.symlink(tmp_path / "real", corpus / "linked_again")    # the same folder twice
    os.symlink(corpus, tmp_path / "real" / "inner" / "loop")  # a cycle back up the tree
    found = []
    thread = threading.Thread(target=lambda: found.extend(find_audio_files(str(corpus))))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "find_audio_files hangs on a symlink loop"
    assert [os.path.relpath(p, corpus) for p in found] == ["linked/a.wav", "linked/inner/b.wav"]


def test_find_audio_files_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_audio_files(str(tmp_path / "nowhere"))
    (tmp_path / "file.wav").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="file.wav"):
        find_audio_files(str(tmp_path / "file.wav"))


# ------------------------------------------------------------------------- SkipReport
def test_skip_report(tmp_path):
    report = SkipReport()
    report.note_seen(10)
    assert report.add("a.wav", "unreadable")
    assert report.add("b.wav", "silent")
    assert report.add("c.wav", "unreadable")
    assert not report.add("a.wav", "unreadable")  # recorded once
    assert report.count == 3 and "a.wav" in report
    assert report.by_reason() == {"unreadable": 2, "silent": 1}
    summary = report.summary()
    assert summary.splitlines()[0] == "skipped 3 of 10 files: 2 unreadable, 1 silent"
    assert "a.wav: unreadable" in summary
    assert "and 1 more" in report.summary(max_paths=2)

    path = tmp_path / "out" / "skipped.json"
    report.write(str(path))
    data = json.loads(path.read_text())
    assert data == {
        "skipped": [{"path": "a.wav", "reason": "unreadable"},
                    {"path": "b.wav", "reason": "silent"},
                    {"path": "c.wav", "reason": "unreadable"}],
        "counts": {"unreadable": 2, "silent": 1},
        "total_seen": 10,
    }
    assert os.listdir(path.parent) == ["skipped.json"]  # no temporary file left behind
    assert SkipReport().summary() == "skipped 0 files"


# -------------------------------------------------------------------------- synthetic
def test_synthetic_corpus_basics():
    corpus = synthetic_corpus(num_clips=16, clip_seconds=2.0, seed=3)
    assert corpus.shape == (16, 32000) and corpus.dtype == np.float32
    assert np.isfinite(corpus).all()
    peaks = np.max(np.abs(corpus), axis=1)
    assert peaks.max() <= 1.0 and peaks.min() >= 0.3
    np.testing.assert_array_equal(corpus, synthetic_corpus(16, 2.0, seed=3))
    assert not np.array_equal(corpus, synthetic_corpus(16, 2.0, seed=4))
    # Clip i does not depend on how many clips are drawn.
    np.testing.assert_array_equal(corpus[:5], synthetic_corpus(5, 2.0, seed=3))
    # Every clip's content changes over time: no 0.5 s window is silent.
    windows = corpus.reshape(16, 4, 8000)
    assert np.max(np.abs(windows), axis=2).min() > 1e-3


def _log_spectra(x, frame=512, hop=256):
    """Log power spectra of the frames of `x` [..., n] -> [..., frames, bins]."""
    frames = np.lib.stride_tricks.sliding_window_view(x, frame, axis=-1)[..., ::hop, :]
    return np.log(np.abs(np.fft.rfft(frames * np.hanning(frame), axis=-1)) ** 2 + 1e-8)


def test_synthetic_corpus_has_clip_identity():
    # Two segments of a clip resemble each other more than segments of different clips:
    # nearest-neighbour retrieval on the crude mean log spectrum finds the same clip far
    # above chance (1 / 32), though not always (notes differ: the encoder has work to do).
    corpus = synthetic_corpus(num_clips=32, seed=0)
    first = _log_spectra(corpus[:, :SEGMENT]).mean(axis=1)
    second = _log_spectra(corpus[:, -SEGMENT:]).mean(axis=1)  # 2.1 s later, no overlap
    distances = np.linalg.norm(first[:, None, :] - second[None, :, :], axis=-1)
    same = np.diag(distances)
    different = distances[~np.eye(32, dtype=bool)]
    assert same.mean() < 0.65 * different.mean()
    assert np.mean(np.argmin(distances, axis=1) == np.arange(32)) >= 0.4


def test_synthetic_corpus_changes_within_a_clip():
    # Frames 16 ms apart are more alike than frames ~1 s apart (the frame loss's premise).
    spectra = _log_spectra(synthetic_corpus(num_clips=16, seed=1))  # [16, frames, bins]
    near = np.linalg.norm(spectra[:, 1:] - spectra[:, :-1], axis=-1).mean()
    far = np.linalg.norm(spectra[:, 62:] - spectra[:, :-62], axis=-1).mean()
    assert near < 0.8 * far


def test_synthetic_corpus_is_pitched():
    # Most 64 ms frames are strongly periodic with a period of 0.5-12.5 ms (80 Hz-2 kHz).
    corpus = synthetic_corpus(num_clips=16, seed=2)
    frames = corpus.reshape(-1, 1024)
    spectrum = np.abs(np.fft.rfft(frames, 2048, axis=-1)) ** 2
    autocorr = np.fft.irfft(spectrum, axis=-1)[:, :1024]
    normalised = autocorr / np.maximum(autocorr[:, :1], 1e-12)
    periodicity = normalised[:, 8:200].max(axis=1)  # lags 0.5-12.5 ms
    assert np.mean(periodicity > 0.5) > 0.6


def test_write_corpus_as_wav(tmp_path):
    paths = write_corpus_as_wav(str(tmp_path / "wavs"), num_clips=3, clip_seconds=1.0, seed=5)
    assert [os.path.basename(p) for p in paths] == [
        "clip_00000.wav", "clip_00001.wav", "clip_00002.wav"]
    corpus = synthetic_corpus(3, 1.0, seed=5)
    for path, clip in zip(paths, corpus):
        assert sf.info(path).subtype == "PCM_16"
        np.testing.assert_allclose(load_audio(path), clip, atol=1 / 32768)


# ---------------------------------------------------------------------------- tfrecord
@pytest.fixture
def mixed_folder(tmp_path):
    """3 good files (WAV 16 kHz, FLAC 44.1 kHz, nested WAV 8 kHz), all shorter than a
    segment, and 3 bad ones."""
    root = tmp_path / "audio"
    good = [
        write(root / "a.wav", tone(440.0, 0.9), subtype="PCM_16"),
        write(root / "b.flac", tone(660.0, 0.5, 44100), 44100),
        write(root / "sub" / "c.wav", tone(220.0, 0.75, 8000), 8000),
    ]
    bad = {
        garbage(root / "corrupt.wav"): "unreadable",
        write(root / "sub" / "silent.wav", np.zeros(8000, np.float32)): "silent",
        write(root / "empty.flac", np.zeros(0, np.float32)): "empty",
    }
    (root / "readme.txt").write_text("ignored")
    return str(root), good, bad


def _matches(decoded, expected, atol=1.01 / 32768):
    """Every expected waveform equals exactly one decoded one (order-free)."""
    assert len(decoded) == len(expected)
    for x in expected:
        hits = [y for y in decoded if y.shape == x.shape and np.max(np.abs(y - x)) <= atol]
        assert len(hits) == 1


def test_prepare_corpus(mixed_folder, tmp_path):
    root, good, bad = mixed_folder
    out = str(tmp_path / "prepared")
    report = SkipReport()
    manifest = prepare_corpus(root, out, num_shards=2, report=report, progress=False)

    assert manifest["num_clips"] == 3 and manifest["num_shards"] == 2
    assert manifest["sample_rate"] == SR
    assert manifest["total_seconds"] == pytest.approx(0.9 + 0.5 + 0.75)
    assert manifest["skipped"] == {"unreadable": 1, "silent": 1, "empty": 1}
    assert manifest["shards"] == ["shard-00000-of-00002.tfrecord",
                                  "shard-00001-of-00002.tfrecord"]
    assert json.loads(open(os.path.join(out, "manifest.json")).read()) == manifest
    assert sorted(os.listdir(out)) == sorted(manifest["shards"] + ["manifest.json",
                                                                   "skipped.json"])
    assert is_prepared_dir(out) and not is_prepared_dir(root)

    skipped = json.load(open(os.path.join(out, "skipped.json")))
    assert {item["path"]: item["reason"] for item in skipped["skipped"]} == bad
    assert skipped["total_seen"] == 6 and report.count == 3

    decoded = [w.numpy() for w in tfrecord_dataset(out, sample_rate=SR)]
    assert all(w.dtype == np.float32 for w in decoded)
    _matches(decoded, [load_audio(p) for p in good])

    # The stored path is relative to the audio folder.
    record = next(iter(tf.data.TFRecordDataset(os.path.join(out, manifest["shards"][0]))))
    example = tf.train.Example.FromString(record.numpy())
    assert example.features.feature["path"].bytes_list.value[0].decode() in {
        os.path.relpath(p, root) for p in good}


def test_prepare_corpus_reruns_replace_shards(mixed_folder, tmp_path, capsys):
    root, good, _ = mixed_folder
    out = str(tmp_path / "prepared")
    prepare_corpus(root, out, num_shards=3, progress=False)
    manifest = prepare_corpus(root, out, progress=True)  # size-based: one small shard
    assert manifest["shards"] == ["shard-00000-of-00001.tfrecord"]
    assert sorted(os.listdir(out)) == ["manifest.json", "shard-00000-of-00001.tfrecord",
                                       "skipped.json"]
    assert "6/6" in capsys.readouterr().out  # the progress bar went over all 6 files
    _matches([w.numpy() for w in tfrecord_dataset(out)], [load_audio(p) for p in good])


def test_prepare_and_pretrain_folder_read_mp3_and_symlinked_folders(tmp_path):
    """An MP3 and a file in a symlinked sub-folder are used, a format libsndfile cannot read
    is skipped with its reason: by `prepare` and by a folder read straight (pretrain)."""
    real = tmp_path / "elsewhere"
    mp3 = write(tmp_path / "audio" / "song.mp3", tone(440.0, 1.0), format="MP3")
    write(real / "speech.wav", tone(330.0, 0.8))
    os.symlink(real, tmp_path / "audio" / "linked")
    (tmp_path / "audio" / "phone.m4a").write_bytes(b"x" * 100)
    root = str(tmp_path / "audio")

    out = str(tmp_path / "prepared")
    manifest = prepare_corpus(root, out, progress=False)
    assert manifest["num_clips"] == 2
    assert manifest["skipped"] == {"unsupported_format": 1}
    skipped = json.load(open(os.path.join(out, "skipped.json")))
    assert [(i["path"], i["reason"]) for i in skipped["skipped"]] == [
        (os.path.join(root, "phone.m4a"), "unsupported_format")]
    decoded = sorted(w.numpy().size for w in tfrecord_dataset(out, sample_rate=SR))
    assert decoded[0] == int(0.8 * SR) and abs(decoded[1] - SR) < 0.1 * SR  # MP3 pads a little

    report = SkipReport()
    usable = check_audio_folder(root, report)
    assert usable == [os.path.join(root, "linked", "speech.wav"), mp3]
    assert report.by_reason() == {"unsupported_format": 1}


def test_only_a_prepare_manifest_makes_a_prepared_dir(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "manifest.json").write_text(json.dumps(
        {"format": "msss_tf realistic corpus", "files": ["000000.wav"]}))
    assert not is_prepared_dir(str(tmp_path / "corpus"))  # a builder's folder of audio
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    assert is_prepared_dir(str(tmp_path / "broken"))  # read_manifest then says what is wrong
    with pytest.raises(ValueError):
        read_manifest(str(tmp_path / "broken"))


def test_prepare_corpus_with_no_usable_audio(tmp_path):
    root = tmp_path / "bad"
    garbage(root / "x.wav")
    garbage(root / "y.flac")
    write(root / "z.wav", np.zeros(1000, np.float32))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"no usable audio in .*bad: 3 files, all skipped "
                                         r"\(2 unreadable, 1 silent\)"):
        prepare_corpus(str(root), str(out), progress=False)
    assert not is_prepared_dir(str(out))
    assert not [n for n in os.listdir(out) if "shard" in n]  # temporaries removed
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="none"):
        prepare_corpus(str(tmp_path / "none"), str(out), progress=False)
    with pytest.raises(FileNotFoundError):
        prepare_corpus(str(tmp_path / "missing"), str(out), progress=False)


def test_tfrecord_dataset_errors(mixed_folder, tmp_path):
    root, _, _ = mixed_folder
    with pytest.raises(FileNotFoundError, match="audio.*manifest.json"):
        tfrecord_dataset(root)
    out = tmp_path / "prepared"
    manifest = prepare_corpus(root, str(out), num_shards=2, progress=False)
    with pytest.raises(ValueError, match="prepared at 16000 Hz"):
        tfrecord_dataset(str(out), sample_rate=22050)
    os.remove(out / manifest["shards"][1])
    with pytest.raises(FileNotFoundError, match="prepared.*missing.*shard-00001"):
        read_manifest(str(out))
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="prepared.*corrupt manifest"):
        tfrecord_dataset(str(out))
    (out / "manifest.json").write_text(json.dumps({"shards": manifest["shards"]}))
    with pytest.raises(ValueError, match="sample_rate"):
        tfrecord_dataset(str(out))


# ---------------------------------------------------------------------------- pipeline
def _pair(waveform, seed, length=SEGMENT):
    a, p = sample_segment_pair(tf.constant(waveform, tf.float32), length,
                               tf.constant(seed, tf.int64))
    return a.numpy(), p.numpy()


def test_sample_segment_pair_long_clip():
    clip = np.arange(20000, dtype=np.float32)
    offsets = []
    for seed in range(100):
        a, p = _pair(clip, [7, seed], length=1000)
        for segment in (a, p):
            assert segment.shape == (1000,)
            np.testing.assert_array_equal(segment, clip[int(segment[0]):int(segment[0]) + 1000])
            offsets.append(int(segment[0]))
    assert min(offsets) < 1000 and max(offsets) > 18000  # spread over [0, 19000]
    np.testing.assert_array_equal(_pair(clip, [1, 2]), _pair(clip, [1, 2]))
    assert not np.array_equal(_pair(clip, [1, 2]), _pair(clip, [1, 3]))
    exact = np.arange(1000, dtype=np.float32)
    np.testing.assert_array_equal(_pair(exact, [0, 0], length=1000)[0], exact)


def test_sample_segment_pair_pads_short_clip():
    clip = np.arange(1, 101, dtype=np.float32)  # 100 non-zero samples
    starts = set()
    for seed in range(50):
        for segment in _pair(clip, [3, seed], length=1000):
            nonzero = np.flatnonzero(segment)
            assert nonzero.size == 100  # the whole clip, once, zeros elsewhere
            np.testing.assert_array_equal(segment[nonzero[0]:nonzero[0] + 100], clip)
            starts.add(int(nonzero[0]))
    assert min(starts) >= 0 and max(starts) <= 900 and len(starts) > 20


def _holds_whole_clip(segment, clip, atol=1e-4):
    """True if `segment` is `clip` somewhere inside zeros (it may start with zero samples)."""
    first = np.flatnonzero(segment)[0]
    for start in range(max(first - 3, 0), first + 1):
        end = start + clip.size
        if (end <= segment.size and np.allclose(segment[start:end], clip, atol=atol)
                and not segment[:start].any() and not segment[end:].any()):
            return True
    return False


def _batches(dataset, n=2):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(n)]


def _assert_same(batches_a, batches_b):
    for a, b in zip(batches_a, batches_b):
        for key in ("anchor", "positive"):
            np.testing.assert_array_equal(a[key], b[key])


def _assert_pair_batch(batch, batch_size):
    for key in ("anchor", "positive"):
        assert batch[key].shape == (batch_size, SEGMENT) and batch[key].dtype == np.float32
    assert not np.array_equal(batch["anchor"], batch["positive"])


def test_pretrain_dataset_synthetic():
    config = MSSSConfig(batch_size=4, seed=1)
    dataset = pretrain_dataset("synthetic", config, num_clips=8)
    for key in ("anchor", "positive"):
        assert dataset.element_spec[key].shape == (4, SEGMENT)
        assert dataset.element_spec[key].dtype == tf.float32
    batches = _batches(dataset, 4)  # two epochs of 8 clips
    for batch in batches:
        _assert_pair_batch(batch, 4)
        assert np.abs(batch["anchor"]).max() <= 1.0
    _assert_same(batches, _batches(pretrain_dataset("synthetic", config, num_clips=8), 4))
    other = _batches(pretrain_dataset("synthetic", config, seed=2, num_clips=8), 1)[0]
    assert not np.array_equal(other["anchor"], batches[0]["anchor"])
    # Epoch 2 holds the same 8 clips, cut at new offsets: no segment repeats.
    epoch1 = np.concatenate([b["anchor"] for b in batches[:2]])
    epoch2 = np.concatenate([b["anchor"] for b in batches[2:]])
    assert not any(np.array_equal(x, y) for x in epoch1 for y in epoch2)
    # batch_size and seed override the config; the corpus follows config.seed.
    assert _batches(pretrain_dataset("synthetic", config, 2, num_clips=8), 1)[0][
        "anchor"].shape == (2, SEGMENT)


def test_pretrain_dataset_prepared_dir(mixed_folder, tmp_path):
    root, good, _ = mixed_folder
    out = str(tmp_path / "prepared")
    prepare_corpus(root, out, num_shards=2, progress=False)
    config = MSSSConfig(batch_size=3, seed=0)
    batches = _batches(pretrain_dataset(out, config, shuffle_buffer=8), 3)
    clips = [load_audio(p) for p in good]
    for batch in batches:
        _assert_pair_batch(batch, 3)
        # All clips are shorter than a segment: each segment holds one whole clip.
        for segment in batch["anchor"]:
            assert any(_holds_whole_clip(segment, c) for c in clips)
    _assert_same(batches, _batches(pretrain_dataset(out, config, shuffle_buffer=8), 3))


def test_pretrain_dataset_audio_folder(tmp_path):
    root = tmp_path / "audio"
    write_corpus_as_wav(str(root / "synth"), num_clips=3, clip_seconds=1.5, seed=0)
    short = write(root / "short.wav", tone(330.0, 0.25))  # 4000 samples: padded
    corrupt = garbage(root / "corrupt.wav")
    silent = write(root / "silent.flac", np.zeros(SR, np.float32))  # header is fine
    config = MSSSConfig(batch_size=4, seed=5)

    report = SkipReport()
    dataset = pretrain_dataset(str(root), config, report=report)
    assert report.items == [(corrupt, "unreadable")]  # found from the headers, at once
    batches = _batches(dataset, 6)
    for batch in batches:
        _assert_pair_batch(batch, 4)
    assert set(report.items) == {(corrupt, "unreadable"), (silent, "silent")}
    assert report.seen == 6
    # The short clip appears whole, zero-padded, at a random place.
    short_wave = load_audio(short)
    padded = [s for b in batches for s in b["anchor"] if np.count_nonzero(s) <= short_wave.size]
    assert padded
    assert all(_holds_whole_clip(segment, short_wave) for segment in padded)
    _assert_same(batches, _batches(pretrain_dataset(str(root), config, report=SkipReport()), 6))


def test_pretrain_dataset_bad_sources(tmp_path):
    config = MSSSConfig(batch_size=2)
    with pytest.raises(ValueError, match="synthtic"):
        pretrain_dataset("synthtic", config)
    with pytest.raises(ValueError, match="nowhere"):
        pretrain_dataset(str(tmp_path / "nowhere"), config)
    bad = tmp_path / "bad"
    garbage(bad / "a.wav")
    write(bad / "b.wav", np.zeros(0, np.float32))
    with pytest.raises(ValueError, match=r"no usable audio in .*bad: 2 files, all skipped"):
        pretrain_dataset(str(bad), config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        pretrain_dataset(str(tmp_path / "empty"), config)


def test_pretrain_dataset_folder_that_only_fails_to_decode_raises(tmp_path):
    # Headers are fine but every clip is silent: iterating must fail, not spin forever.
    root = tmp_path / "silent"
    write(root / "a.wav", np.zeros(SR, np.float32))
    write(root / "b.wav", np.zeros(SR, np.float32))
    report = SkipReport()
    dataset = pretrain_dataset(str(root), MSSSConfig(batch_size=2), report=report)
    with pytest.raises(tf.errors.OpError, match="no usable audio"):
        next(iter(dataset))
    assert report.by_reason() == {"silent": 2}
