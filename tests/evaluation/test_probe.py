"""Probes on frozen embeddings: targets, training and selection, caching, results, export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from msss_tf import cli
from msss_tf.data.tasks.base import Example, InMemoryTask
from msss_tf.evaluation.embeddings import embed_split
from msss_tf.evaluation.probe import (ProbeSettings, frame_targets, multi_hot, probe_task,
                           run_probes)

FAST = ProbeSettings(learning_rates=(3e-2,), max_epochs=120, patience=15)
FREQS = (200.0, 400.0, 800.0, 1600.0)


class SpectrumEmbedder:
    """A stand-in encoder: log energy in 32 bands (scene) or per 40 ms frame (timestamps).

    Linearly separable for tone-coded classes, so a working probe must score near 1.
    """

    sample_rate = 16000
    scene_embedding_size = timestamp_embedding_size = 32
    hop_ms = 40.0

    def __init__(self):
        self.calls = 0
        from msss_tf.config import MSSSConfig

        self.config = MSSSConfig()
        self.encoder = type("E", (), {"weights": []})()

    def _bands(self, frames):
        spec = np.abs(np.fft.rfft(frames, n=1024, axis=-1))[..., :512]
        return np.log(spec.reshape(*spec.shape[:-1], 32, 16).sum(-1) + 1e-3).astype(np.float32)

    def scene_embeddings(self, audio, batch_size=16):
        self.calls += 1
        return self._bands(np.asarray(audio))

    def timestamp_embeddings(self, audio, batch_size=8):
        self.calls += 1
        audio = np.asarray(audio)
        n = audio.shape[1] // 640 + 1
        padded = np.pad(audio, ((0, 0), (320, 1024)))
        frames = np.stack([padded[:, 640 * q:640 * q + 640] for q in range(n)], axis=1)
        ts = np.tile(np.arange(n, dtype=np.float32) * 40.0, (len(audio), 1))
        return self._bands(frames), ts


def tone(f, seconds=0.5, phase=0.0):
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.5 * np.sin(2 * np.pi * f * t + phase)).astype(np.float32)


def scene_task():
    def build(split):
        rng = np.random.default_rng({"train": 0, "valid": 1, "test": 2}[split])
        count = {"train": 12, "valid": 4, "test": 4}[split]
        return [Example(f"{split}/{c}-{i}", tone(FREQS[c] * rng.uniform(0.97, 1.03),
                                                  phase=rng.uniform(0, 6)), [c])
                for c in range(4) for i in range(count)]

    return InMemoryTask("tones", "scene", "multiclass", [f"{f:.0f}Hz" for f in FREQS],
                        ["top1_acc"], build_split=build, source="test tones")


def event_task():
    def build(split):
        rng = np.random.default_rng({"train": 10, "valid": 11, "test": 12}[split])
        examples = []
        for i in range({"train": 16, "valid": 6, "test": 6}[split]):
            clip = np.zeros(3 * 16000, np.float32)
            events = []
            for c, start in zip(rng.permutation(4)[:2], (0.3 + rng.uniform(0, 0.2), 1.6)):
                length = rng.uniform(0.4, 0.9)
                a, b = int(start * 16000), int((start + length) * 16000)
                clip[a:b] += tone(FREQS[c], (b - a) / 16000)
                events.append({"label": f"{FREQS[c]:.0f}Hz", "onset": start,
                               "offset": start + length})
            examples.append(Example(f"{split}/{i}", clip, events))
        return examples

    return InMemoryTask("tone_events", "event", "multilabel", [f"{f:.0f}Hz" for f in FREQS],
                        ["event_onset_fscore"], build_split=build, source="test tone events")


def test_frame_targets_and_multi_hot():
    events = [{"label": "b", "onset": 0.05, "offset": 0.12}, {"label": "a", "onset": 0.0,
                                                               "offset": 0.04}]
    y = frame_targets(events, [0.0, 40.0, 80.0, 120.0], ["a", "b"])
    # t=0: a (0 <= 0 < 0.04); t=40 ms: neither (a ended at 40, b starts at 50);
    # t=80: b; t=120: b ends at 120 (exclusive).
    np.testing.assert_array_equal(y, [[1, 0], [0, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(multi_hot([[0, 2], [1]], 3), [[1, 0, 1], [0, 1, 0]])


@pytest.mark.slow  # the default run stays under 6 minutes
def test_scene_probe_learns_separable_classes_and_caches(tmp_path):
    embedder = SpectrumEmbedder()
    result = probe_task(scene_task(), embedder, FAST, cache_dir=str(tmp_path), progress=False)
    assert result.metrics["top1_acc"] == 1.0
    assert result.learning_rate in FAST.learning_rates
    calls = embedder.calls
    again = embed_split(embedder, scene_task(), "test", str(tmp_path), progress=False)
    assert embedder.calls == calls  # read from the cache, not embedded again
    assert again["x"].shape == (16, 32) and again["labels"][0] == [0]


@pytest.mark.slow  # the default run stays under 6 minutes
def test_event_probe_finds_the_onsets(tmp_path):
    result = probe_task(event_task(), SpectrumEmbedder(), FAST, progress=False)
    assert result.metrics["event_onset_fscore"] > 0.8, result
    assert set(result.extras) == {"threshold", "median_filter_ms"}


@pytest.mark.slow  # an end-to-end fit: the default run stays under 6 minutes
def test_results_table_json_csv_and_probe_export_in_a_fresh_process(tmp_path, capsys):
    from msss_tf.config import MSSSConfig
    from msss_tf.data.tasks import load_task
    from msss_tf.embedding import Embedder
    from msss_tf.model.msss_model import MSSSModel

    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25)
    run = tmp_path / "run"
    run.mkdir()
    MSSSModel(config).save(str(run / "model.keras"))  # an encoder to probe, untrained
    out = tmp_path / "out"
    exports = tmp_path / "saved_models"
    args = ["msss-tf", "probe", f"--model_dir={run}", "--task=synthetic_scene",
            f"--out_dir={out}", f"--export_dir={exports}", "--max_epochs=3",
            "--learning_rates=1e-3"]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "synthetic_scene" in printed and "top1_acc" in printed
    rows = json.loads((out / "results.json").read_text())["results"]
    assert {r["split"] for r in rows} == {"test", "valid"}
    assert {r["encoder"] for r in rows} == {"run"} and rows[0]["probe"] == "linear"
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header == "task,metric,value,split,encoder,probe,learning_rate,seed,extras"
    export = exports / "synthetic_scene_linear" / "1"
    assert (export / "saved_model.pb").exists()
    labels = (export / "assets" / "labels.txt").read_text().split()
    assert len(labels) == 8
    # Beside it, the classifier .tflite for MediaPipe's AudioClassifier, and how often its
    # top class (mean of its windows' scores) is the SavedModel's on the test split.
    summary = json.loads((export / "export_summary.json").read_text())
    assert summary["classifier_tflite"] == os.path.join("tflite", "classifier_float32.tflite")
    agreement = summary["test_agreement"]
    assert agreement["split"] == "test" and agreement["clips"] == len(
        load_task("synthetic_scene").split_examples("test"))
    # The same windows give the same top class; whole clips (windowed differently) are
    # reported, and an untrained encoder's unsure probe may flip on some.
    assert agreement["window_agreement"] >= 0.99, agreement
    assert agreement["windows"] >= agreement["clips"]
    assert 0.0 <= agreement["agreement"] <= 1.0
    assert "classifier" in printed and f"{agreement['agree']}/{agreement['clips']}" in printed
    from msss_tf.evaluation.tflite_classifier import TFLiteClassifier

    classifier = TFLiteClassifier(str(export / summary["classifier_tflite"]))
    assert classifier.label_names == labels

    # The API on the same export base writes version 2, never over version 1; its
    # in-memory predictions are what the export reproduces in a fresh process.
    from msss_tf.data.tasks import load_task
    from msss_tf.embedding import Embedder

    _, paths, results = run_probes(str(run), ["synthetic_scene"], ProbeSettings(max_epochs=3),
                                   out_dir=str(out), export_dir=str(exports), progress=False)
    export = exports / "synthetic_scene_linear" / "2"
    assert paths["synthetic_scene"] == str(export)
    assert (exports / "synthetic_scene_linear" / "1" / "saved_model.pb").exists()
    task = load_task("synthetic_scene")
    clips = np.stack([e.waveform for e in task.split_examples("test")[:3]])
    np.save(tmp_path / "clips.npy", clips)
    embeddings = Embedder.from_path(str(run)).scene_embeddings(clips)
    expected = results["synthetic_scene"].probe(embeddings).numpy()
    code = (
        "import numpy as np, tensorflow as tf, sys\n"
        f"m = tf.saved_model.load({str(export)!r})\n"
        f"x = np.load({str(tmp_path / 'clips.npy')!r})\n"
        "out = m.signatures['serving_default'](waveform=tf.constant(x))\n"
        f"np.save({str(tmp_path / 'fresh.npy')!r}, out['probabilities'].numpy())\n"
        "print([s.decode() for s in out['label_names'].numpy()])\n"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "fresh.npy"), expected, atol=1e-5)
    assert eval(fresh.stdout.strip().splitlines()[-1]) == task.label_names
    assert np.allclose(np.load(tmp_path / "fresh.npy").sum(-1), 1.0, atol=1e-5)


def test_unknown_task_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["msss-tf", "probe", f"--model_dir={tmp_path}", "--task=no_such_task",
                     f"--out_dir={tmp_path}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no_such_task" in err or "model.keras" in err


def test_results_are_written_after_every_task(tmp_path, monkeypatch):
    """A task that fails keeps the finished tasks' results on disk."""
    import types

    import msss_tf.data.tasks as tasks_module
    from msss_tf.evaluation import probe as probe_module
    from msss_tf.evaluation.probe import ProbeResult, run_probes

    def fake_task(name):
        return types.SimpleNamespace(name=name, kind="scene", label_names=["a", "b"],
                                     report=lambda: f"task {name}")

    monkeypatch.setattr(tasks_module, "load_task", lambda name, data_dir=None: fake_task(name))

    def fake_probe(task, *args, **kwargs):
        if task.name == "second":
            raise RuntimeError("the second task failed")
        return ProbeResult(task.name, {"top1_acc": 0.75}, {"top1_acc": 0.5}, 1e-3, None, {})

    monkeypatch.setattr(probe_module, "probe_task", fake_probe)
    embedder = types.SimpleNamespace()
    monkeypatch.setattr(probe_module, "Embedder", type(embedder))
    with pytest.raises(RuntimeError, match="second"):
        run_probes(embedder, ["first", "second"], ProbeSettings(), out_dir=str(tmp_path),
                   encoder_name="enc")
    saved = json.load(open(tmp_path / "results.json"))["results"]
    assert {(r["task"], r["split"], r["value"]) for r in saved} == {
        ("first", "test", 0.75), ("first", "valid", 0.5)}


# ------------------------------------------------------- the embedding cache (issue 14)
def _cache_files(cache_dir, task, split):
    (folder,) = [root for root, _, files in os.walk(cache_dir)
                 if f"{split}.npz" in files and os.path.basename(os.path.dirname(root)) == task]
    return os.path.join(folder, f"{split}.npz"), os.path.join(folder, f"{split}.json")


def _assert_same_split(a, b):
    assert a["ids"] == b["ids"] and a["labels"] == b["labels"]
    assert set(a) == set(b)
    for key in ("x", "timestamps_ms"):
        if key in a:
            assert len(a[key]) == len(b[key])
            for u, v in zip(a[key], b[key]):
                np.testing.assert_array_equal(u, v)
                assert np.asarray(u).dtype == np.asarray(v).dtype == np.float32


@pytest.mark.parametrize("make_task", [scene_task, event_task])
def test_cached_and_fresh_embeddings_are_equal_and_the_cache_holds_no_pickle(
        make_task, tmp_path):
    import warnings

    embedder = SpectrumEmbedder()
    task = make_task()
    uncached = embed_split(embedder, task, "test", None, progress=False)
    fresh = embed_split(embedder, task, "test", str(tmp_path), progress=False)
    calls = embedder.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact entry is used without a word
        cached = embed_split(embedder, task, "test", str(tmp_path), progress=False)
    assert embedder.calls == calls
    _assert_same_split(fresh, cached)
    _assert_same_split(uncached, cached)
    npz, sidecar = _cache_files(tmp_path, task.name, "test")
    with np.load(npz, allow_pickle=False) as archive:  # no object array anywhere
        assert all(archive[name].dtype != object for name in archive.files)
    meta = json.load(open(sidecar))
    assert meta["source"] == task.source and meta["task"] == task.name
    assert len(meta["fingerprint"]) == 16 and len(meta["npz_sha256"]) == 64
    assert meta["ids"] == fresh["ids"] and meta["arrays"]["x"]["dtype"] == "float32"


class _Payload:
    """Unpickling it creates the marker file: proof that pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_old_format(npz, sidecar, marker):
    os.remove(sidecar)  # the old format: one pickled dict, no sidecar
    np.savez(npz, data=np.array([_Payload(marker)], dtype=object))


def _plant_object_array_with_a_valid_sidecar(npz, sidecar, marker):
    """A foreign entry that passes every check before the arrays are read: the right
    fingerprint, and a checksum computed over the planted file."""
    import hashlib

    np.savez(npz, x=np.array([_Payload(marker)], dtype=object))
    meta = json.load(open(sidecar))
    meta["npz_sha256"] = hashlib.sha256(open(npz, "rb").read()).hexdigest()
    json.dump(meta, open(sidecar, "w"))


def _truncate(npz, sidecar, marker):
    data = open(npz, "rb").read()
    open(npz, "wb").write(data[:len(data) // 2])


def _bad_json(npz, sidecar, marker):
    open(sidecar, "w").write('{"format": "msss-tf embedding cache 2", "ids": [')


def _foreign_fingerprint(npz, sidecar, marker):
    meta = json.load(open(sidecar))
    meta["fingerprint"] = "0123456789abcdef"
    json.dump(meta, open(sidecar, "w"))


def _wrong_shape(npz, sidecar, marker):
    meta = json.load(open(sidecar))
    meta["arrays"]["x"]["shape"][1] += 1
    json.dump(meta, open(sidecar, "w"))


def _edited_labels(npz, sidecar, marker):
    meta = json.load(open(sidecar))
    meta["labels"][0] = [3]
    json.dump(meta, open(sidecar, "w"))


@pytest.mark.parametrize("damage, why", [
    (_plant_old_format, "no JSON sidecar"),
    (_plant_object_array_with_a_valid_sidecar, "without pickle"),
    (_truncate, "checksum mismatch"),
    (_bad_json, "unreadable JSON"),
    (_foreign_fingerprint, "fingerprint"),
    (_wrong_shape, "the sidecar says"),
    (_edited_labels, "ids and labels"),
])
def test_a_corrupt_or_foreign_cache_entry_is_recomputed_never_trusted(damage, why, tmp_path):
    from msss_tf.evaluation.embeddings import CacheWarning

    embedder = SpectrumEmbedder()
    fresh = embed_split(embedder, scene_task(), "test", str(tmp_path), progress=False)
    npz, sidecar = _cache_files(tmp_path, "tones", "test")
    marker = tmp_path / "pickle_ran"
    damage(npz, sidecar, marker)
    calls = embedder.calls
    with pytest.warns(CacheWarning, match=why) as caught:
        again = embed_split(embedder, scene_task(), "test", str(tmp_path), progress=False)
    assert "test.npz" in str(caught[0].message) or "test.json" in str(caught[0].message)
    assert "recomputing" in str(caught[0].message)
    assert not marker.exists(), "a pickle in the cache was executed"
    assert embedder.calls > calls  # recomputed, not read
    _assert_same_split(fresh, again)
    calls = embedder.calls  # and rewritten: the next run reads it
    embed_split(embedder, scene_task(), "test", str(tmp_path), progress=False)
    assert embedder.calls == calls
