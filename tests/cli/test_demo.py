"""`msss-tf demo`: its task choice, its win counts, and the realistic table end to end."""

import importlib.util
import os

import pytest

from msss_tf import demo
from msss_tf.cli.demo import default_seed
from msss_tf.data.realistic import deps
from msss_tf.embedding import shipped
from msss_tf.embedding.shipped import shipped_checkpoint

HAVE_RENDERERS = all(importlib.util.find_spec(m) for m in
                     ("espeakng_loader", "tinysoundfont", "pretty_midi"))


def test_win_counts_compare_every_pre_trained_column_with_every_reference_by_headline_metric():
    headers = ["log-mel", "untrained", "this run (MSSS pre-trained)", "shipped pre-trained"]
    table = [("keywords", "top1_acc", 0.4, 0.3, 0.2, 0.6),
             ("pitch", "pitch_acc", 0.6, 0.5, 0.1, 0.6),  # the headline metric decides:
             ("pitch", "chroma_acc", 0.6, 0.5, 0.1, 0.7),  # chroma alone is not a win
             ("events", "onset_f", 0.3, 0.3, 0.4, 0.3)]  # a tie is not a win
    assert demo.win_counts(table, headers, 3) == [
        "this run (MSSS pre-trained) beats log-mel on 1 of 3 tasks: events",
        "this run (MSSS pre-trained) beats untrained on 1 of 3 tasks: events",
        "shipped pre-trained beats log-mel on 1 of 3 tasks: keywords",
        "shipped pre-trained beats untrained on 2 of 3 tasks: keywords, pitch",
    ]


def test_without_the_renderers_the_demo_falls_back_to_the_synthetic_tasks(monkeypatch):
    def missing(module, package):
        raise deps.MissingCorpusPackageError(f"the realistic corpus needs {package!r}")

    monkeypatch.setattr(deps, "require", missing)
    tasks, why = demo.realistic_tasks()
    assert tasks is None and "espeakng-loader" in why
    with pytest.raises(ValueError, match="--tasks=realistic: .*espeakng-loader"):
        demo.run_demo(demo.demo_config(), "unused", tasks="realistic")


def test_the_default_seed_is_the_shipped_checkpoints(tmp_path, monkeypatch):
    # By default this run, the untrained references and the shipped encoder share a network.
    assert default_seed(None) == shipped_checkpoint().record["config"]["seed"]
    assert default_seed(5) == 5
    monkeypatch.setattr(shipped, "CHECKPOINT_DIR", str(tmp_path / "none"))
    assert default_seed(None) == 0  # no checkpoint: the synthetic demo's seed


@pytest.mark.skipif(not HAVE_RENDERERS, reason="needs the corpus extra (docs/corpus.md)")
def test_the_realistic_tasks_are_chosen_when_their_renderers_are_installed():
    tasks, why = demo.realistic_tasks(scale=0.25)
    assert why is None and [t.name for t in tasks] == list(demo.REALISTIC_TASKS)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_RENDERERS, reason="needs the corpus extra (docs/corpus.md)")
def test_the_realistic_demo_probes_every_encoder_and_exports(tmp_path, capsys):
    config = demo.demo_config(batch_size=4, seed=7)
    summary = demo.run_demo(config, str(tmp_path / "run"), train_steps=2, synthetic_clips=16,
                            export_dir=str(tmp_path / "exported"), probe_epochs=2,
                            task_scale=0.25)
    out = capsys.readouterr().out
    assert summary["tasks"] == list(demo.REALISTIC_TASKS)
    assert summary["shipped_checkpoint"] == "cola_realistic_x05"
    assert summary["layer"] == "stage3"
    # The references are the shipped encoder's network before training, whatever --seed.
    assert summary["reference_seed"] == shipped_checkpoint().config().seed
    headers = summary["table"]["headers"]
    assert headers[2:] == ["log-mel mean/std", "random init (BN calibrated)",
                           "random init (BN at init)", "this run (MSSS pre-trained)",
                           "shipped pre-trained"]
    rows = summary["table"]["rows"]
    assert {r[0] for r in rows} == set(demo.REALISTIC_TASKS) and len(rows) == 4
    assert all(0.0 <= v <= 1.0 for r in rows for v in r[2:])
    assert len(summary["wins"]) == 2 * 3 and summary["wins"][0] in out
    assert "Results: linear probes on frozen embeddings" in out
    for task in demo.REALISTIC_TASKS:
        assert os.path.isdir(summary["exports"]["probes"][task])
    assert os.path.isdir(summary["exports"]["encoder"])
    assert os.path.exists(tmp_path / "run" / "demo_results.json")
