"""The realistic corpus builder (msss_tf.data.realistic) and the realistic built-in tasks."""

import hashlib
import json
import os
import sys

import numpy as np
import pytest
import soundfile as sf

from msss_tf.data.realistic import KINDS, MissingCorpusPackageError, plan_corpus
from msss_tf.data.realistic import sounds
from msss_tf.data.realistic.variation import apply_variation, check_clip, to_pcm16
from msss_tf.data.tasks import realistic_tasks
from msss_tf.data.tasks.base import SPLITS

_NEEDS = "the realistic corpus renderers come with the corpus extra (docs/corpus.md)"


def _need_renderers():
    for module in ("espeakng_loader", "tinysoundfont"):
        pytest.importorskip(module, reason=_NEEDS)
    import importlib.util
    if importlib.util.find_spec("pretty_midi") is None:
        pytest.skip(_NEEDS)


def _hashes(folder):
    audio = os.path.join(folder, "audio")
    return {name: hashlib.sha256(open(os.path.join(audio, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(audio))}


# ------------------------------------------------------------------- plan and checks
@pytest.mark.parametrize("minutes", [0.2, 1.0, 7.5])
def test_plan_honours_size_mix_and_clip_lengths(minutes):
    plan = plan_corpus(minutes, seed=3, mix=(0.5, 0.3, 0.2), clip_seconds=(4.0, 10.0))
    total = sum(s for _, s in plan)
    assert abs(total - minutes * 60) <= 2.0  # the last clip may stop short by < 2 s
    assert all(1.0 <= s <= 10.0 for _, s in plan)
    assert all(4.0 <= s for _, s in plan[:-1])
    if minutes >= 1:
        share = {k: sum(s for kind, s in plan if kind == k) / total for k in KINDS}
        for kind, want in zip(KINDS, (0.5, 0.3, 0.2)):
            assert abs(share[kind] - want) < 10.0 / total + 0.01
    assert plan == plan_corpus(minutes, seed=3, mix=(0.5, 0.3, 0.2), clip_seconds=(4.0, 10.0))


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError):
        plan_corpus(0, 0, (1, 1, 1), (4, 10))
    with pytest.raises(ValueError):
        plan_corpus(1, 0, (1, 1), (4, 10))
    with pytest.raises(ValueError):
        plan_corpus(1, 0, (1, 1, 1), (5, 4))


def test_check_clip_rejects_silent_and_clipped():
    check_clip(to_pcm16(0.5 * np.sin(np.arange(1600) / 5)), "ok")
    with pytest.raises(ValueError, match="silent"):
        check_clip(np.zeros(1600, np.int16), "zeros")
    with pytest.raises(ValueError, match="clipped"):
        check_clip(to_pcm16(np.ones(1600)), "full scale")


def test_variation_never_clips_and_sounds_are_finite():
    rng = np.random.default_rng(0)
    for name, event in sounds.EVENTS.items():
        x = event(rng, 1.5, 16000)
        assert x.dtype == np.float32 and np.all(np.isfinite(x)), name
        y, _ = apply_variation(rng, 40 * x, 16000, reverb_prob=1.0, noise_prob=1.0)
        assert np.max(np.abs(y)) < 1.0 and np.all(np.isfinite(y)), name
        check_clip(to_pcm16(y), name)


# ---------------------------------------------------------------------------- build
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    _need_renderers()
    from msss_tf.data.realistic import build_corpus

    root = tmp_path_factory.mktemp("corpus")
    kwargs = dict(minutes=0.4, mix=(1, 1, 1), clip_seconds=(2.0, 4.0))
    a = build_corpus(str(root / "a"), seed=0, **kwargs)
    b = build_corpus(str(root / "b"), seed=0, jobs=2, **kwargs)
    c = build_corpus(str(root / "c"), seed=1, **kwargs)
    return root, a, b, c


def test_same_seed_gives_identical_bytes_other_seed_differs(built):
    root, a, b, c = built
    assert _hashes(root / "a") == _hashes(root / "b")  # also across job counts
    ha, hc = _hashes(root / "a"), _hashes(root / "c")
    assert not set(ha.values()) & set(hc.values())


def test_clips_are_checked_and_size_is_honoured(built):
    root, manifest, _, _ = built
    total = 0.0
    for name in manifest["files"]:
        data, sr = sf.read(os.path.join(root, "a", "audio", name), dtype="int16")
        info = sf.info(os.path.join(root, "a", "audio", name))
        assert sr == 16000 and data.ndim == 1 and info.subtype == "PCM_16"
        x = data.astype(np.float64) / 32768
        assert np.max(np.abs(x)) < 1.0
        assert 10 * np.log10(np.mean(x ** 2)) > -65
        total += len(data) / sr
    assert abs(total - 0.4 * 60) < 2.0
    assert abs(manifest["seconds_total"] - total) < 0.01
    assert sorted(os.listdir(os.path.join(root, "a", "audio"))) == manifest["files"]


def test_manifest_fields_and_every_kind_present(built):
    root, manifest, _, _ = built
    on_disk = json.load(open(os.path.join(root, "a", "manifest.json")))
    assert on_disk == manifest
    for key in ("seed", "minutes_requested", "seconds_total", "num_clips", "sample_rate",
                "clips_per_kind", "seconds_per_kind", "renderers", "build", "files"):
        assert key in manifest, key
    assert manifest["seed"] == 0 and manifest["sample_rate"] == 16000
    assert all(manifest["clips_per_kind"][k] >= 1 for k in KINDS)
    assert sum(manifest["clips_per_kind"].values()) == manifest["num_clips"]
    assert manifest["renderers"]["libespeak-ng"] and manifest["renderers"]["tinysoundfont"]
    assert manifest["build"]["audio_seconds_per_cpu_second"] > 0
    # No labels in file names.
    assert all(name[:-4].isdigit() for name in manifest["files"])


def test_rebuild_replaces_an_earlier_build(built, tmp_path):
    from msss_tf.data.realistic import build_corpus

    build_corpus(str(tmp_path), minutes=0.3, seed=5, clip_seconds=(2.0, 3.0))
    manifest = build_corpus(str(tmp_path), minutes=0.1, seed=5, clip_seconds=(2.0, 3.0))
    assert sorted(os.listdir(tmp_path / "audio")) == manifest["files"]


@pytest.mark.parametrize("module,package", [("espeakng_loader", "espeakng-loader"),
                                            ("tinysoundfont", "tinysoundfont"),
                                            ("pretty_midi", "pretty-midi")])
def test_missing_package_names_what_to_install(module, package, monkeypatch, tmp_path):
    import importlib.util

    from msss_tf.data.realistic import build_corpus, corpus, music

    renderers = {"espeakng_loader": "espeakng-loader", "tinysoundfont": "tinysoundfont",
                 "pretty_midi": "pretty-midi"}
    # Where another renderer is absent too (a base install), the first absent one is named.
    absent = {renderers[m] for m in renderers
              if m != module and importlib.util.find_spec(m) is None} | {package}
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    monkeypatch.setattr(corpus, "_RENDERERS", {})
    music.soundfont_bytes.cache_clear()
    with pytest.raises(MissingCorpusPackageError) as error:
        build_corpus(str(tmp_path / "out"), minutes=0.1, seed=0)
    named = [p for p in absent if f"'{p}'" in str(error.value)]
    assert named and "msss-tf[corpus]" in str(error.value)
    if absent == {package}:
        assert named == [package]
    assert not os.path.exists(tmp_path / "out" / "manifest.json")
    music.soundfont_bytes.cache_clear()


# ---------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("scale", [1.0, 4.0, 16.0])
def test_keyword_speakers_and_pitch_instruments_are_held_out(scale):
    pytest.importorskip("espeakng_loader", reason=_NEEDS)
    speakers = {s: realistic_tasks.keyword_speakers(s, scale) for s in SPLITS}
    variants = {s: {sp.variant for sp in speakers[s]} for s in SPLITS}
    programs = {s: set(realistic_tasks.pitch_programs(s, scale)) for s in SPLITS}
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1:]:
            assert not variants[first] & variants[second]
            assert not set(speakers[first]) & set(speakers[second])
            assert not programs[first] & programs[second]
    assert len(speakers["train"]) == min(int(24 * scale + 0.5), 10 * 53)
    assert all(p in realistic_tasks.TONAL_PROGRAMS for s in SPLITS for p in programs[s])
    assert len(programs["train"]) >= 10


def test_realistic_scene_tasks_labels_and_determinism():
    _need_renderers()
    from msss_tf.data.tasks import load_task

    keywords = load_task("realistic_keywords", scale=0.1)
    examples = keywords.split_examples("test")
    assert len(examples) == len(realistic_tasks.KEYWORDS)
    assert sorted(e.label[0] for e in examples) == list(range(12))
    pitch = load_task("realistic_pitch", scale=0.1, seed=2)
    notes = pitch.split_examples("valid")
    assert len(notes) == 48 and pitch.num_classes == 48
    assert all(0 <= e.label[0] < 48 for e in notes)
    assert list(pitch.midi_of_label) == list(range(36, 84))
    for task, items in ((keywords, examples), (pitch, notes)):
        for e in items:
            assert e.waveform.shape == (task.clip_samples,) and e.waveform.dtype == np.float32
            assert np.all(np.isfinite(e.waveform)) and np.max(np.abs(e.waveform)) < 1.0
    again = load_task("realistic_pitch", scale=0.1, seed=2).split_examples("valid")
    assert all(np.array_equal(a.waveform, b.waveform) for a, b in zip(notes, again))


def test_realistic_events_labels():
    _need_renderers()
    task = realistic_tasks.realistic_task("realistic_events", scale=0.05)
    examples = task.split_examples("test")
    assert len(examples) == len(realistic_tasks.EVENT_CLASSES)
    seen = set()
    for e in examples:
        assert e.waveform.shape == (6 * 16000,) and np.max(np.abs(e.waveform)) < 1.0
        assert 2 <= len(e.label) <= 5
        onsets = [ev["onset"] for ev in e.label]
        assert onsets == sorted(onsets)
        for ev in e.label:
            assert ev["label"] in task.label_names
            assert 0.0 <= ev["onset"] < ev["offset"] <= 6.0
            seen.add(ev["label"])
    assert seen == set(realistic_tasks.EVENT_CLASSES)  # each clip starts with its own class


def test_realistic_task_options_are_checked():
    from msss_tf.data.tasks import TASK_NAMES, load_task

    assert set(realistic_tasks.REALISTIC_TASK_NAMES) <= set(TASK_NAMES)
    with pytest.raises(TypeError):
        load_task("realistic_pitch", test_fold=1)
    with pytest.raises(ValueError):
        realistic_tasks.realistic_task("realistic_pitch", scale="huge")


# ------------------------------------------------------------------- the CLI command
def test_corpus_command_writes_audio_manifest_and_shards(tmp_path, capsys):
    _need_renderers()
    from msss_tf import cli
    from msss_tf.data import is_prepared_dir, read_manifest
    from msss_tf.data.pipeline import check_audio_folder

    out = tmp_path / "corpus"
    assert cli.main(["msss-tf", "corpus", f"--out_dir={out}", "--minutes=0.2", "--seed=3"]) == 0
    printed = capsys.readouterr().out
    assert "pre-train with: msss-tf pretrain --data=" in printed
    manifest = json.load(open(out / "manifest.json"))
    assert manifest["seed"] == 3 and manifest["num_clips"] >= 1
    shards = read_manifest(str(out / "shards"))
    assert shards["num_clips"] == manifest["num_clips"]  # every clip usable, none skipped
    # The corpus folder is a folder of audio (its manifest is not a prepare manifest).
    assert is_prepared_dir(str(out / "shards")) and not is_prepared_dir(str(out))
    assert len(check_audio_folder(str(out))) == manifest["num_clips"]


def test_corpus_command_checks_its_flags(tmp_path, capsys):
    _need_renderers()  # without them the command stops on the packages first
    from msss_tf import cli

    for bad, named in (("--mix=1,1", "--mix"), ("--minutes=0", "--minutes")):
        code = cli.main(["msss-tf", "corpus", f"--out_dir={tmp_path / 'c'}", bad])
        assert code == 2 and named in capsys.readouterr().err
