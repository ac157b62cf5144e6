"""Tests of msss_tf.data.tasks: tfds loaders (on tfds.testing.mock_data), HEAR folders,
the built-in synthetic tasks, and the "what to fetch" errors.

Nothing here touches the network: a module-wide fixture makes every socket connection fail,
and the absent-data tests also make `DatasetBuilder.download_and_prepare` fail if called.
"""

import json
import os
import socket

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
import tensorflow_datasets as tfds

from msss_tf.data import synthetic_corpus
from msss_tf.data.tasks import (
    TASK_NAMES,
    Example,
    MissingTaskFilesError,
    Task,
    TaskDataNotFoundError,
    load_task,
    synthetic_task,
    write_hear_task,
)

SR = 16000
Q = 1.0 / 32768  # int16 quantisation step


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def mock_tfds(num_examples=None, as_dataset_fn=None):
    # USE_CODE: no tfds metadata exists offline, so the features come from the builder code.
    kwargs = {"policy": tfds.testing.MockPolicy.USE_CODE}
    if num_examples is not None:
        kwargs["num_examples"] = num_examples
    if as_dataset_fn is not None:
        kwargs["as_dataset_fn"] = as_dataset_fn
    return tfds.testing.mock_data(**kwargs)


def fake_dataset(records, calls, absent_configs=()):
    """An `as_dataset_fn` for mock_data: fixed records; logs (config, split) requested."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        config = self.builder_config.name if self.builder_config else None
        if config in absent_configs:
            raise AssertionError(f"Dataset {self.name}: could not find data in {self.data_dir}.")
        calls.append((config, str(split)))
        return tf.data.Dataset.from_generator(
            lambda: iter(records),
            output_signature={k: spec(v) for k, v in records[0].items()})

    return as_dataset


def spec(value):
    value = np.asarray(value)
    if value.dtype.kind in "US":
        return tf.TensorSpec((), tf.string)
    return tf.TensorSpec((None,) * value.ndim, tf.as_dtype(value.dtype))


# ---------------------------------------------------------------------------- speech commands
def test_speech_commands_on_mock_data(tmp_path):
    with mock_tfds(num_examples=7):
        task = load_task("speech_commands", data_dir=str(tmp_path))
        assert task.kind == "scene" and task.prediction_type == "multiclass"
        assert task.metrics == ["top1_acc"] and task.clip_seconds == 1.0
        assert len(task.label_names) == 12 and task.label_names[-2:] == ["_silence_", "_unknown_"]
        for split in ("train", "valid", "test"):
            examples = list(task.examples(split))
            assert len(examples) == 7
            for ex in examples:
                assert ex.waveform.dtype == np.float32 and ex.waveform.shape == (16000,)
                assert np.all(np.abs(ex.waveform) <= 1.0)
                assert len(ex.label) == 1 and 0 <= ex.label[0] < 12
            # Mock clips are a few dozen samples long: every one was padded, and said so.
            assert task.count("padded", split) == 7
            assert task.num_examples(split) == 7
        assert len({ex.id for split in task.splits for ex in task.examples(split)}) == 21
    assert task.padded_count == 21
    assert "padded 7" in task.report()


def test_speech_commands_scaling_padding_cropping_and_split_names(tmp_path, caplog):
    audio = [np.arange(100, dtype=np.int16) * 300, np.full(16000, -32768, np.int16),
             np.full(20000, 16384, np.int16)]
    records = [{"audio": a, "label": np.int64(i)} for i, a in enumerate(audio)]
    calls = []
    with mock_tfds(as_dataset_fn=fake_dataset(records, calls)):
        task = load_task("speech_commands", data_dir=str(tmp_path))
        calls.clear()
        short, exact, long = list(task.examples("valid"))
        assert calls == [(None, "validation")]  # valid -> tfds "validation"
        list(task.examples("validation"))  # the tfds name is accepted too
    np.testing.assert_array_equal(short.waveform[:100], audio[0] / np.float32(32768))
    assert not short.waveform[100:].any()  # zeros at the end
    assert exact.waveform.min() == -1.0
    assert long.waveform.shape == (16000,) and np.all(long.waveform == 0.5)
    assert [short.label, exact.label, long.label] == [[0], [1], [2]]
    assert task.count("padded", "valid") == 1 and task.count("cropped", "valid") == 1
    assert "speech_commands/valid: 3 examples; cropped 1, padded 1" in caplog.text  # logged


# ---------------------------------------------------------------------------- nsynth
def test_nsynth_pitch_on_mock_data(tmp_path):
    with mock_tfds(num_examples=40):
        task = load_task("nsynth_pitch", data_dir=str(tmp_path))
        assert task.config == "full" and "nsynth/full" in task.source
        assert task.metrics == ["pitch_acc", "chroma_acc"] and task.clip_seconds == 4.0
        np.testing.assert_array_equal(task.midi_of_label, np.arange(21, 109))
        assert task.num_examples("train") is None  # unknown before a pass (pitch filter)
        examples = list(task.examples("valid"))
        raw = list(tfds.as_numpy(tfds.load("nsynth/full", split="valid",
                                           data_dir=str(tmp_path), download=False)))
    in_range = [r for r in raw if 21 <= r["pitch"] <= 108]
    assert 0 < len(in_range) < len(raw)  # the mock draws pitches 0..127
    assert len(examples) == len(in_range) == task.num_examples("valid")
    assert task.count("out_of_range", "valid") == len(raw) - len(in_range)
    for ex, r in zip(examples, in_range):
        assert ex.waveform.dtype == np.float32 and ex.waveform.shape == (64000,)
        assert np.all(np.abs(ex.waveform) <= 1.0)
        assert ex.label == [int(r["pitch"]) - 21]
        assert task.midi_of_label[ex.label[0]] == r["pitch"]
        assert ex.id == "valid/" + r["id"].decode()
    assert "out_of_range" in task.report()


def test_nsynth_falls_back_to_gansynth_subset_and_maps_pitches(tmp_path):
    pitches = [20, 21, 60, 108, 109]
    records = [{"id": f"note-{p}", "audio": np.full(64000, 0.25, np.float32),
                "pitch": np.int64(p)} for p in pitches]
    calls = []
    with mock_tfds(as_dataset_fn=fake_dataset(records, calls, absent_configs=("full",))):
        task = load_task("nsynth_pitch", data_dir=str(tmp_path))
        calls.clear()
        examples = list(task.examples("valid"))
    assert task.config == "gansynth_subset" and "gansynth_subset" in task.source
    assert any("gansynth_subset" in note for note in task.notes)
    assert calls == [("gansynth_subset", "valid")]
    assert [ex.label for ex in examples] == [[0], [39], [87]]
    assert [ex.id for ex in examples] == ["valid/note-21", "valid/note-60", "valid/note-108"]
    assert task.count("out_of_range", "valid") == 2


# ---------------------------------------------------------------------------- absent data
def test_absent_tfds_data_gives_what_to_fetch_and_downloads_nothing(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("download_and_prepare was called")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(TaskDataNotFoundError) as info:
        load_task("speech_commands", data_dir=data_dir)
    message = str(info.value)
    assert "tfds build speech_commands" in message and "download_and_prepare()" in message
    assert data_dir in message and "--data_dir" in message and "0.0.3" in message
    with pytest.raises(TaskDataNotFoundError) as info:
        load_task("nsynth_pitch", data_dir=data_dir)
    message = str(info.value)
    assert "nsynth/full" in message and "nsynth/gansynth_subset" in message
    assert "tfds build nsynth/full" in message and data_dir in message
    with pytest.raises(TaskDataNotFoundError):
        load_task("nsynth_pitch", data_dir=data_dir, config="gansynth_subset")
    assert not os.path.exists(data_dir) or not os.listdir(data_dir)  # nothing written


def test_dcase2016_task2_absent_and_present(tmp_path):
    with pytest.raises(TaskDataNotFoundError) as info:
        load_task("dcase2016_task2", data_dir=str(tmp_path))
    message = str(info.value)
    assert "dcase2016_task2-hear2021-full" in message and "--data_dir" in message
    assert str(tmp_path) in message and "hearbenchmark.com" in message
    with pytest.raises(TaskDataNotFoundError):
        load_task("dcase2016_task2")  # no data_dir at all

    source = synthetic_task("synthetic_events", scale=0.05)
    source.name = "dcase2016_task2"
    folder = tmp_path / "dcase2016_task2-hear2021-full"
    write_hear_task(source, str(folder))
    for data_dir in (tmp_path, folder):  # the parent, or the folder itself
        task = load_task("dcase2016_task2", data_dir=str(data_dir))
        assert task.name == "dcase2016_task2" and task.kind == "event"
        assert task.metrics == ["event_onset_fscore"]


# ---------------------------------------------------------------------------- HEAR folders
def write_wav(path, data, sr=SR, subtype="PCM_16"):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)


def make_hear_folder(root, kind="event", labels=None, sr=SR, metadata=None, vocabulary=None):
    """A hand-made HEAR folder; labels: {split: {filename: labels}}; 1 s tone per file."""
    meta = {"task_name": "tiny", "mode": "full", "embedding_type": kind,
            "prediction_type": "multilabel" if kind == "event" else "multiclass",
            "split_mode": "trainvaltest", "sample_duration": None,
            "evaluation": ["event_onset_200ms_fms", "segment_1s_er"] if kind == "event"
            else ["top1_acc"]}
    meta.update(metadata or {})
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "task_metadata.json"), "w") as f:
        json.dump(meta, f)
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    for split, files in labels.items():
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump(files, f)
        for name in files:
            write_wav(os.path.join(root, str(sr), split, name), tone, sr)
    if vocabulary is not None:
        with open(os.path.join(root, "labelvocabulary.csv"), "w") as f:
            f.write("idx,label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(vocabulary)))
    return str(root)


EVENT_LABELS = {
    "train": {"a.wav": [{"label": "dog", "start": 1500, "end": 2250.5},
                        {"label": "bell", "start": 100.0, "end": 300.0}]},
    "valid": {"b.wav": []},
    "test": {"c.wav": [{"label": "dog", "start": 0, "end": 10}]},
}


def test_hear_events_ms_to_seconds_metrics_and_resampling(tmp_path):
    root = make_hear_folder(tmp_path / "tiny", labels=EVENT_LABELS, sr=48000)
    task = load_task(root)
    assert task.name == "tiny" and task.kind == "event" and task.clip_seconds is None
    assert task.metrics == ["event_onset_fscore"]  # segment_1s_er dropped, with a note
    assert any("segment_1s_er" in note for note in task.notes)
    assert task.label_names == ["bell", "dog"]  # derived and sorted: no labelvocabulary.csv
    (a,) = list(task.examples("train"))
    assert a.id == "a.wav"
    assert a.label == [{"label": "bell", "onset": 0.1, "offset": 0.3},
                       {"label": "dog", "onset": 1.5, "offset": 2.2505}]
    assert a.waveform.shape == (SR,)  # 48 kHz audio resampled to 16 kHz
    assert task.audio_dir.endswith("48000")
    assert list(task.examples("valid"))[0].label == []


def test_hear_scene_round_trip(tmp_path):
    source = synthetic_task("synthetic_scene", scale=0.1)
    root = write_hear_task(source, str(tmp_path / "scene"))
    assert os.path.isfile(os.path.join(root, "labelvocabulary.csv"))
    assert os.path.isfile(os.path.join(root, "16000", "train", "train_00000.wav"))
    task = load_task(root)
    assert (task.kind, task.prediction_type, task.metrics, task.label_names, task.clip_seconds) \
        == (source.kind, source.prediction_type, source.metrics, source.label_names, 1.0)
    for split in source.splits:
        originals, loaded = list(source.examples(split)), list(task.examples(split))
        assert len(originals) == len(loaded) == task.num_examples(split)
        for o, l in zip(originals, loaded):
            assert l.id == o.id.replace("/", "_") + ".wav"
            assert l.label == o.label
            np.testing.assert_allclose(l.waveform, o.waveform, atol=Q)


def test_hear_event_round_trip_and_pitch_labels(tmp_path):
    source = synthetic_task("synthetic_events", scale=0.05)
    task = load_task(write_hear_task(source, str(tmp_path / "events")))
    assert task.kind == "event" and task.metrics == ["event_onset_fscore"]
    assert task.clip_seconds == 4.0
    for split in source.splits:
        for o, l in zip(source.examples(split), task.examples(split)):
            assert [e["label"] for e in l.label] == [e["label"] for e in o.label]
            np.testing.assert_allclose([[e["onset"], e["offset"]] for e in l.label],
                                       [[e["onset"], e["offset"]] for e in o.label], atol=1e-9)
            np.testing.assert_allclose(l.waveform, o.waveform, atol=Q)
    with open(os.path.join(tmp_path, "events", "train.json")) as f:
        first = next(iter(json.load(f).values()))[0]
    assert first["start"] == pytest.approx(next(source.examples("train")).label[0]["onset"] * 1000)

    pitch = load_task(write_hear_task(synthetic_task("synthetic_pitch", scale=0.125),
                                      str(tmp_path / "pitch")))
    assert pitch.metrics == ["pitch_acc", "chroma_acc"]
    np.testing.assert_array_equal(pitch.midi_of_label, np.arange(48, 84))


def test_hear_missing_files_are_named(tmp_path):
    root = make_hear_folder(tmp_path / "t", labels=EVENT_LABELS)
    os.remove(os.path.join(root, "16000", "train", "a.wav"))
    with pytest.raises(MissingTaskFilesError) as info:
        load_task(root)
    assert os.path.join("16000", "train", "a.wav") in str(info.value)
    assert info.value.paths == [os.path.join(root, "16000", "train", "a.wav")]

    many = {"train": {f"x{i}.wav": ["a"] for i in range(9)}, "valid": {"v.wav": ["a"]},
            "test": {"t.wav": ["b"]}}
    root = make_hear_folder(tmp_path / "many", kind="scene", labels=many)
    for i in range(9):
        os.remove(os.path.join(root, "16000", "train", f"x{i}.wav"))
    with pytest.raises(FileNotFoundError, match=r"9 audio file\(s\).*x0\.wav.*and 4 more"):
        load_task(root)

    root = make_hear_folder(tmp_path / "nolabels", labels=EVENT_LABELS)
    os.remove(os.path.join(root, "valid.json"))
    with pytest.raises(FileNotFoundError, match="valid.json"):
        load_task(root)

    root = make_hear_folder(tmp_path / "nometa", labels=EVENT_LABELS)
    os.remove(os.path.join(root, "task_metadata.json"))
    with pytest.raises(FileNotFoundError) as info:
        load_task(root)
    assert os.path.join(root, "task_metadata.json") in str(info.value)


def test_hear_corrupt_audio_is_skipped_and_counted(tmp_path):
    labels = {"train": {"good.wav": ["a"], "bad.wav": ["b"], "quiet.wav": ["a"]},
              "valid": {"v.wav": ["a"]}, "test": {"t.wav": ["b"]}}
    root = make_hear_folder(tmp_path / "t", kind="scene", labels=labels)
    with open(os.path.join(root, "16000", "train", "bad.wav"), "wb") as f:
        f.write(b"RIFF\x00\x00not really a wave file" * 20)
    write_wav(os.path.join(root, "16000", "train", "quiet.wav"), np.zeros(SR))
    task = load_task(root)
    assert task.num_examples("train") == 3  # listed
    examples = list(task.examples("train"))
    assert [ex.id for ex in examples] == ["good.wav", "quiet.wav"]  # a silent clip is kept
    assert task.num_examples("train") == 2  # exact after a pass
    assert task.skipped.count == 1 and task.skipped.by_reason() == {"unreadable": 1}
    assert task.count("skipped", "train") == 1 and task.count("silent", "train") == 1
    assert "bad.wav" in task.report()
    list(task.examples("train"))
    assert task.skipped.count == 1 and task.skipped.seen == 3  # a second pass adds nothing


def test_hear_vocabulary_folds_and_bad_labels(tmp_path):
    folds = {f"fold{i:02d}": {f"f{i}.wav": ["b" if i % 2 else "a"]} for i in range(4)}
    root = make_hear_folder(tmp_path / "folds", kind="scene", labels=folds,
                            metadata={"split_mode": "new_split_kfold", "nfolds": 4,
                                      "evaluation": ["top1_acc", "d_prime"]},
                            vocabulary=["b", "a"])
    task = load_task(root)
    assert task.label_names == ["b", "a"]  # labelvocabulary.csv order
    assert [ex.id for ex in task.examples("test")] == ["f0.wav"]
    assert [ex.id for ex in task.examples("valid")] == ["f1.wav"]
    assert [ex.id for ex in task.examples("train")] == ["f2.wav", "f3.wav"]
    assert [ex.label for ex in task.examples("train")] == [[1], [0]]
    last = load_task(root, test_fold=3)
    assert [ex.id for ex in last.examples("valid")] == ["f0.wav"]
    assert any("test=fold03" in note for note in last.notes)

    labels = {"train": {"x.wav": ["a", "b"]}, "valid": {"v.wav": ["a"]}, "test": {"t.wav": ["a"]}}
    with pytest.raises(ValueError, match="exactly one label"):
        load_task(make_hear_folder(tmp_path / "two", kind="scene", labels=labels))
    labels["train"]["x.wav"] = ["zebra"]
    with pytest.raises(ValueError, match="zebra"):
        load_task(make_hear_folder(tmp_path / "vocab", kind="scene", labels=labels,
                                   vocabulary=["a"]))


def test_load_task_rejects_unknown_names_and_options(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        load_task("not_a_task")
    with pytest.raises(TypeError, match="seed"):
        load_task("speech_commands", seed=1)
    with pytest.raises(ValueError, match="size"):
        load_task("synthetic_scene", size="huge")


# ---------------------------------------------------------------------------- synthetic
SYNTHETIC = ("synthetic_scene", "synthetic_pitch", "synthetic_events")


@pytest.fixture(scope="module")
def default_tasks():
    return {name: load_task(name) for name in SYNTHETIC}


def test_synthetic_sizes_and_interface(default_tasks):
    sizes = {"synthetic_scene": (320, 80, 80), "synthetic_pitch": (288, 72, 72),
             "synthetic_events": (80, 20, 20)}
    for name, task in default_tasks.items():
        assert name in TASK_NAMES and isinstance(task, Task)
        assert task.splits == ("train", "valid", "test") and task.sample_rate == SR
        assert tuple(task.num_examples(s) for s in task.splits) == sizes[name]
    assert synthetic_task("synthetic_scene", scale=0.25).num_examples("valid") == 8 * 3
    np.testing.assert_array_equal(default_tasks["synthetic_pitch"].midi_of_label,
                                  np.arange(48, 84))
    assert default_tasks["synthetic_events"].prediction_type == "multilabel"


def test_synthetic_audio_and_labels(default_tasks):
    for name, task in default_tasks.items():
        for split in task.splits:
            examples = list(task.examples(split))
            assert len({ex.id for ex in examples}) == len(examples)
            waves = np.stack([ex.waveform for ex in examples])
            assert waves.dtype == np.float32 and waves.shape[1] == task.clip_samples
            assert np.isfinite(waves).all() and np.abs(waves).max() <= 1.0
            assert np.abs(waves).max(axis=1).min() > 0.05  # none silent
            if task.kind == "scene":
                labels = [ex.label for ex in examples]
                assert all(len(l) == 1 and 0 <= l[0] < task.num_classes for l in labels)
                if split == "train":
                    assert {l[0] for l in labels} == set(range(task.num_classes))
            else:
                events = [e for ex in examples for e in ex.label]
                assert all(ex.label for ex in examples)
                assert all(0 <= e["onset"] < e["offset"] <= task.clip_seconds for e in events)
                assert all(0.099 <= e["offset"] - e["onset"] <= 1.001 for e in events)
                assert {e["label"] for e in events} <= set(task.label_names)
                if split == "train":
                    assert {e["label"] for e in events} == set(task.label_names)


def test_synthetic_is_deterministic_and_seeded(default_tasks):
    for name in SYNTHETIC:
        again = synthetic_task(name, seed=0)
        other = synthetic_task(name, seed=1)
        for a, b, c in zip(default_tasks[name].examples("test"), again.examples("test"),
                           other.examples("test")):
            np.testing.assert_array_equal(a.waveform, b.waveform)
            assert a.label == b.label and a.id == b.id
            assert not np.array_equal(a.waveform, c.waveform)
    # Train and test are different draws, not copies.
    scene = default_tasks["synthetic_scene"]
    assert not np.array_equal(next(scene.examples("train")).waveform,
                              next(scene.examples("test")).waveform)


def test_synthetic_tasks_are_not_pretraining_clips(default_tasks):
    corpus = synthetic_corpus(num_clips=16, clip_seconds=1.0, seed=0)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    for name in ("synthetic_scene", "synthetic_pitch"):
        waves = np.stack([ex.waveform for ex in default_tasks[name].examples("train")])
        waves /= np.linalg.norm(waves, axis=1, keepdims=True)
        assert np.abs(waves @ corpus.T).max() < 0.5


def test_synthetic_pitch_labels_match_the_audio(default_tasks):
    task = default_tasks["synthetic_pitch"]
    hits = 0
    examples = list(task.examples("test"))
    for ex in examples:  # autocorrelation pitch over 120-1050 Hz, compared in chroma
        segment = ex.waveform[1600:1600 + 4096] * np.hanning(4096)
        ac = np.fft.irfft(np.abs(np.fft.rfft(segment, 8192)) ** 2)[:4096]
        lag = 15 + int(np.argmax(ac[15:134]))
        midi = int(round(69 + 12 * np.log2(SR / lag / 440)))
        hits += (midi - task.midi_of_label[ex.label[0]]) % 12 == 0
    assert hits / len(examples) > 0.75


def test_example_is_a_plain_dataclass():
    ex = Example("x", np.zeros(3, np.float32), [1])
    assert (ex.id, ex.label) == ("x", [1])
