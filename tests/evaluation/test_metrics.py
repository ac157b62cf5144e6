"""Tests of msss_tf.evaluation.metrics: hand-worked cases that fail if a metric is wrong."""

import importlib.util

import numpy as np
import pytest

from msss_tf.evaluation import metrics

# The event metric needs the "eval" extra; the scene metrics do not.
needs_sed_eval = pytest.mark.skipif(
    importlib.util.find_spec("sed_eval") is None, reason="sed_eval (eval extra) not installed"
)


def ev(label, onset, offset=None):
    """An event dict; the offset defaults to onset + 1 s (offsets are not scored)."""
    return {"label": label, "onset": onset, "offset": onset + 1.0 if offset is None else offset}


# --------------------------------------------------------------------------------------
# Scene metrics
# --------------------------------------------------------------------------------------


def test_top1_accuracy_three_of_four():
    scores = np.array(
        [
            [0.1, 0.7, 0.2],  # argmax 1, label 1: right
            [0.5, 0.4, 0.1],  # argmax 0, label 0: right
            [0.2, 0.3, 0.5],  # argmax 2, label 1: wrong
            [0.0, 0.1, 0.9],  # argmax 2, label 2: right
        ]
    )
    assert metrics.top1_accuracy([1, 0, 1, 2], scores) == pytest.approx(0.75)


def test_top1_accuracy_rejects_bad_inputs():
    with pytest.raises(ValueError):
        metrics.top1_accuracy([0, 3], np.zeros((2, 3)))  # label out of range
    with pytest.raises(ValueError):
        metrics.top1_accuracy([0, 1, 2], np.zeros((2, 3)))  # n mismatch


def one_hot_scores(pred_classes, num_classes):
    scores = np.zeros((len(pred_classes), num_classes))
    scores[np.arange(len(pred_classes)), pred_classes] = 1.0
    return scores


def test_pitch_vs_chroma_with_nsynth_mapping():
    midi = metrics.NSYNTH_PITCH_MIDI
    assert midi.shape == (88,) and midi[0] == 21 and midi[-1] == 108
    assert midi[39] == 60 and midi[51] == 72 and midi[50] == 71
    labels = np.array([51, 51, 51])  # target MIDI 72 each time
    preds = [39, 50, 51]  # MIDI 60 (octave off), 71 (semitone off), 72 (exact)
    scores = one_hot_scores(preds, 88)
    # Only the exact one counts for pitch; octave + exact count for chroma.
    assert metrics.pitch_accuracy(labels, scores) == pytest.approx(1 / 3)
    assert metrics.chroma_accuracy(labels, scores, midi) == pytest.approx(2 / 3)


def test_chroma_uses_midi_numbers_not_class_indices():
    # Non-contiguous vocabulary: class index mod 12 and MIDI mod 12 disagree.
    midi_of_label = np.array([60, 61, 72, 73])
    labels = np.array([2, 3, 0])  # MIDI 72, 73, 60
    scores = one_hot_scores([0, 0, 1], 4)  # MIDI 60 (octave), 60 (-13), 61 (+1)
    assert metrics.pitch_accuracy(labels, scores) == 0.0
    assert metrics.chroma_accuracy(labels, scores, midi_of_label) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        metrics.chroma_accuracy(labels, scores, midi_of_label[:3])


def test_mean_average_precision_hand_case():
    labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.4, 0.2], [0.7, 0.35, 0.9], [0.6, 0.8, 0.1]])
    # Class 0: ranking + - + -, AP = (1/1 + 2/3) / 2 = 5/6.
    # Class 1: ranking (0.8 +) (0.4 +) (0.35 -) (0.1 -), AP = 1.
    # Class 2: no positive, skipped (counting it as 0 would give 11/18).
    assert metrics.average_precision(labels[:, 0], scores[:, 0]) == pytest.approx(5 / 6)
    assert metrics.multilabel_mean_average_precision(labels, scores) == pytest.approx(11 / 12)


def test_average_precision_ties_form_one_threshold():
    # Positive and negative tied at the top: one cut with precision 1/2, then the
    # second positive at rank 3: precision 2/3. AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12.
    ap = metrics.average_precision([0, 1, 1], [0.5, 0.5, 0.2])
    assert ap == pytest.approx(7 / 12)
    # The tie result does not depend on the order of the tied examples.
    assert metrics.average_precision([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(7 / 12)


def test_mean_average_precision_matches_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = (rng.random((50, 6)) < 0.3).astype(int)
    labels[:, 5] = 0  # a class without positives
    scores = np.round(rng.random((50, 6)), 1)  # many ties
    present = labels.sum(axis=0) > 0
    expected = np.mean(
        [skm.average_precision_score(labels[:, c], scores[:, c]) for c in np.flatnonzero(present)]
    )
    assert metrics.multilabel_mean_average_precision(labels, scores) == pytest.approx(expected)


# --------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------


def test_median_filter_removes_spike_keeps_run():
    spike_and_run = [1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0]
    probs = np.stack([spike_and_run, np.ones(11)], axis=1).astype(float)
    out = metrics.median_filter_probs(probs, 3)
    # Spikes at frame 0 (edge) and 3 removed; the 3-frame run kept whole.
    np.testing.assert_array_equal(out[:, 0], [0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0])
    # Classes are filtered independently (no bleed from column 1 into column 0);
    # a run touching both edges stays whole.
    np.testing.assert_array_equal(out[:, 1], np.ones(11))
    np.testing.assert_array_equal(metrics.median_filter_probs(probs, 1), probs)
    # Kernel 5 removes runs of up to 2 frames and keeps a run of 3 exactly.
    run3 = np.array([[0, 0, 0, 1, 1, 1, 0, 0, 0]], dtype=float).T
    np.testing.assert_array_equal(metrics.median_filter_probs(run3, 5), run3)
    run2 = np.array([[0, 0, 0, 1, 1, 0, 0, 0]], dtype=float).T
    np.testing.assert_array_equal(metrics.median_filter_probs(run2, 5), np.zeros_like(run2))
    # A 1-frame gap inside an event is filled with kernel 3.
    gap = np.array([[1, 1, 1, 0, 1, 1, 1]], dtype=float).T
    np.testing.assert_array_equal(metrics.median_filter_probs(gap, 3), np.ones_like(gap))
    with pytest.raises(ValueError):
        metrics.median_filter_probs(probs, 2)


def test_median_filter_frames_rounding():
    assert metrics.median_filter_frames(0, 100) == 1
    assert metrics.median_filter_frames(150, 100) == 3  # 1.5 -> 2 -> odd 3
    assert metrics.median_filter_frames(250, 50) == 5
    assert metrics.median_filter_frames(500, 100) == 5
    assert metrics.median_filter_frames(40, 100) == 1


def test_probs_to_events_exact_onsets_offsets():
    timestamps = np.arange(10) * 100.0  # frame centres 0, 100, ..., 900 ms
    probs = np.zeros((10, 2))
    probs[2:5, 0] = 0.9  # "a": frames 2..4
    probs[0:2, 1] = 0.8  # "b": frames 0..1 (touches the start)
    probs[9, 1] = 0.7  # "b": frame 9 alone
    probs[6, 0] = 0.5  # exactly the threshold: inactive (strict >)
    events = metrics.probs_to_events(probs, timestamps, ["a", "b"], 0.5, median_filter_ms=0)
    assert events == [
        {"label": "b", "onset": 0.0, "offset": pytest.approx(0.15)},  # max(0, -0.05)
        {"label": "a", "onset": pytest.approx(0.15), "offset": pytest.approx(0.45)},
        {"label": "b", "onset": pytest.approx(0.85), "offset": pytest.approx(0.95)},
    ]
    # A 300 ms median filter (3 frames) removes the lone frame 9.
    events = metrics.probs_to_events(probs, timestamps, ["a", "b"], 0.5, median_filter_ms=300)
    assert [(e["label"], round(e["onset"], 6)) for e in events] == [("b", 0.0), ("a", 0.15)]
    # Offsets clipped at the clip duration when given.
    events = metrics.probs_to_events(
        probs, timestamps, ["a", "b"], 0.5, median_filter_ms=0, duration_s=0.92
    )
    assert events[-1]["offset"] == pytest.approx(0.92)


def test_probs_to_events_rejects_irregular_timestamps():
    with pytest.raises(ValueError):
        metrics.probs_to_events(np.zeros((3, 1)), [0.0, 100.0, 250.0], ["a"])
    with pytest.raises(ValueError):
        metrics.probs_to_events(np.zeros((3, 2)), [0.0, 100.0, 200.0], ["a"])


# --------------------------------------------------------------------------------------
# Onset F-measure
# --------------------------------------------------------------------------------------


@needs_sed_eval
def test_onset_collar_hit_at_150ms_miss_at_250ms():
    reference = {"f1": [ev("dog", 1.0, 2.0), ev("cat", 3.0, 4.0)]}
    estimated = {"f1": [ev("dog", 1.15, 2.0), ev("cat", 3.25, 4.0)]}
    # dog: hit (150 ms late); cat: 250 ms late = 1 miss + 1 false alarm.
    r = metrics.event_onset_fmeasure(reference, estimated)
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(0.5)
    assert r["onset_fmeasure"] == pytest.approx(0.5)
    assert (r["n_ref"], r["n_sys"], r["n_tp"]) == (2, 2, 1)
    # Early onsets use the same collar.
    early = {"f1": [ev("dog", 0.85), ev("cat", 2.85)]}
    assert metrics.event_onset_fmeasure(reference, early)["onset_fmeasure"] == pytest.approx(1.0)


@needs_sed_eval
def test_onset_fmeasure_micro_over_files():
    reference = {"f1": [ev("dog", 1.0), ev("cat", 5.0)], "f2": [ev("dog", 2.0)]}
    estimated = {
        "f1": [ev("dog", 1.1), ev("dog", 7.0)],  # hit + false alarm; cat missed
        "f2": [ev("dog", 2.0), ev("cat", 9.0)],  # hit + false alarm
    }
    # TP = 2, N_ref = 3, N_sys = 4: P = 1/2, R = 2/3, F = 2*2 / (3+4) = 4/7.
    r = metrics.event_onset_fmeasure(reference, estimated)
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(2 / 3)
    assert r["onset_fmeasure"] == pytest.approx(4 / 7)
    # Class-wise: dog TP 2, N_ref 2, N_sys 3 -> 4/5; cat TP 0 -> 0. Macro = 0.4.
    assert r["class_wise_fmeasure_macro"] == pytest.approx(0.4)


@needs_sed_eval
def test_wrong_label_is_miss_plus_false_alarm():
    reference = {"f1": [ev("dog", 1.0), ev("cat", 5.0)]}
    estimated = {"f1": [ev("cat", 1.0), ev("cat", 5.0)]}
    r = metrics.event_onset_fmeasure(reference, estimated)
    assert (r["n_tp"], r["n_sys"], r["n_ref"]) == (1, 2, 2)
    assert r["onset_fmeasure"] == pytest.approx(0.5)


@needs_sed_eval
def test_offsets_are_ignored():
    reference = {"f1": [ev("dog", 1.0, 2.0)]}
    estimated = {"f1": [ev("dog", 1.1, 9.0)]}  # offset 7 s off, onset right
    assert metrics.event_onset_fmeasure(reference, estimated)["onset_fmeasure"] == 1.0


@needs_sed_eval
def test_file_with_references_but_no_estimates():
    reference = {"f1": [ev("dog", 1.0)], "f2": [ev("cat", 2.0)]}
    for estimated in ({"f1": [ev("dog", 1.0)]}, {"f1": [ev("dog", 1.0)], "f2": []}):
        r = metrics.event_onset_fmeasure(reference, estimated)
        # TP 1, N_ref 2, N_sys 1: P = 1, R = 1/2, F = 2/3.
        assert r["precision"] == pytest.approx(1.0)
        assert r["recall"] == pytest.approx(0.5)
        assert r["onset_fmeasure"] == pytest.approx(2 / 3)
        # cat has a reference and no estimate: F_cat = 0, not dropped as NaN.
        assert r["class_wise_fmeasure_macro"] == pytest.approx(0.5)


@needs_sed_eval
def test_estimates_in_files_without_references_are_false_alarms():
    reference = {"f1": [ev("dog", 1.0)]}
    estimated = {"f1": [ev("dog", 1.0)], "f3": [ev("dog", 1.0)]}
    r = metrics.event_onset_fmeasure(reference, estimated)
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(1.0)


@needs_sed_eval
def test_empty_estimate_scores_zero():
    reference = {"f1": [ev("dog", 1.0)], "f2": [ev("cat", 2.0)]}
    for estimated in ({}, {"f1": [], "f2": []}):
        r = metrics.event_onset_fmeasure(reference, estimated)
        assert r["onset_fmeasure"] == 0.0
        assert r["precision"] == 0.0 and r["recall"] == 0.0
        assert r["class_wise_fmeasure_macro"] == 0.0


@needs_sed_eval
def test_onset_fmeasure_label_checks():
    reference = {"f1": [ev("dog", 1.0)]}
    with pytest.raises(ValueError):
        metrics.event_onset_fmeasure(reference, {"f1": [ev("cow", 1.0)]}, label_names=["dog"])
    with pytest.raises(ValueError):
        metrics.event_onset_fmeasure({"f1": []}, {"f1": [ev("dog", 1.0)]})


# --------------------------------------------------------------------------------------
# Scoring and tuning from frame probabilities
# --------------------------------------------------------------------------------------


def _validation_case():
    """Two files at a 100 ms hop where threshold 0.5 and a 150 ms filter are right.

    True events are 6 frames at 0.65 (strong) or 0.55 (weak); decoys are a 6-frame
    blob at 0.45 (needs threshold > 0.45) and 1-frame spikes at 0.9 (need a median
    filter of at least 3 frames).
    """
    t = np.arange(60) * 100.0
    p1 = np.full((60, 1), 0.05)
    p1[5:11] = 0.65  # strong event, frames 5..10 -> onset 0.45 s
    p1[20:26] = 0.45  # blob (decoy)
    p1[35] = 0.9  # spike (decoy)
    p1[45:51] = 0.55  # weak event, frames 45..50 -> onset 4.45 s
    p2 = np.full((60, 1), 0.05)
    p2[10:16] = 0.65  # strong event -> onset 0.95 s
    p2[30] = 0.9  # spike (decoy)
    probs = {"f1": p1, "f2": p2}
    stamps = {"f1": t, "f2": t}
    reference = {
        "f1": [ev("a", 0.45, 1.05), ev("a", 4.45, 5.05)],
        "f2": [ev("a", 0.95, 1.55)],
    }
    return probs, stamps, reference


@needs_sed_eval
def test_event_detection_scores():
    probs, stamps, reference = _validation_case()
    best = metrics.event_detection_scores(probs, stamps, reference, ["a"], 0.5, 150)
    assert best["onset_fmeasure"] == pytest.approx(1.0)
    # No filter: the 2 spikes become false alarms: P = 3/5, R = 1, F = 6/8.
    r = metrics.event_detection_scores(probs, stamps, reference, ["a"], 0.5, 0)
    assert r["precision"] == pytest.approx(0.6) and r["recall"] == 1.0
    assert r["onset_fmeasure"] == pytest.approx(0.75)
    # Threshold 0.6 misses the weak event: P = 1, R = 2/3, F = 4/5.
    r = metrics.event_detection_scores(probs, stamps, reference, ["a"], 0.6, 150)
    assert r["onset_fmeasure"] == pytest.approx(0.8)
    with pytest.raises(ValueError):  # a reference file without predictions
        metrics.event_detection_scores({"f1": probs["f1"]}, {"f1": stamps["f1"]}, reference, ["a"])


@needs_sed_eval
def test_tune_event_postprocessing_picks_right_settings():
    probs, stamps, reference = _validation_case()
    best = metrics.tune_event_postprocessing(probs, stamps, reference, ["a"])
    assert best["threshold"] == 0.5
    assert best["median_filter_ms"] == 150.0  # first of the filters that remove spikes
    assert best["onset_fmeasure"] == pytest.approx(1.0)
    assert len(best["grid"]) == len(metrics.DEFAULT_THRESHOLDS) * len(
        metrics.DEFAULT_MEDIAN_FILTERS_MS
    )
    # Without a filter option, threshold 0.5 is still the best.
    no_filter = metrics.tune_event_postprocessing(
        probs, stamps, reference, ["a"], median_filters_ms=(0,)
    )
    assert no_filter["threshold"] == 0.5
    assert no_filter["onset_fmeasure"] == pytest.approx(0.75)


def test_metrics_registry():
    assert set(metrics.METRICS) == {
        "top1_acc",
        "pitch_acc",
        "chroma_acc",
        "mAP",
        "event_onset_fscore",
    }
    assert metrics.METRICS["top1_acc"]([0], [[1.0, 0.0]]) == 1.0
    assert metrics.METRICS["event_onset_fscore"] is metrics.event_onset_fmeasure
