"""Event (timestamp-level) metrics of the linear-probe evaluation.

Frame-wise class probabilities become events, scored with sed_eval's event-based
metric (DCASE 2016 task 2):

* `median_filter_probs` -> `probs_to_events` (post-processing, per file),
* `event_onset_fmeasure` (onset-only F-measure, 200 ms collar),
* `event_detection_scores` (post-process + score in one call),
* `tune_event_postprocessing` (choose threshold and median filter on validation).

`sed_eval` and `dcase_util` (the "eval" extra of setup.py) are imported only inside
`event_onset_fmeasure`, so importing this module does not need them.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

# DCASE 2016 task 2 evaluation settings (method.md): onset only, 200 ms collar.
DEFAULT_T_COLLAR = 0.2
DEFAULT_PERCENTAGE_OF_LENGTH = 0.5

# Small grids searched on the validation split by `tune_event_postprocessing`.
DEFAULT_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
DEFAULT_MEDIAN_FILTERS_MS = (0, 150, 250, 500)

# Largest deviation from the mean hop tolerated in timestamps (HEAR's 1 ms jitter).
_TIMESTAMP_JITTER_MS = 1.0


# --------------------------------------------------------------------------------------
# Event post-processing
# --------------------------------------------------------------------------------------


def median_filter_probs(probs, kernel_frames: int) -> np.ndarray:
    """Median-filters frame-wise probabilities of each class along time.

    Removes active runs of at most (k - 1) / 2 frames and fills inactive gaps of
    that length, for a kernel of k frames. Median filtering commutes with
    thresholding (both are order statistics), so filtering the probabilities and
    then thresholding equals thresholding and then filtering the binary roll.

    Args:
        probs: float array [T, C], probabilities per frame and class.
        kernel_frames: odd int >= 1, the window length in frames; 1 = identity.

    Returns:
        float array [T, C]. Frames outside the clip count as 0 (inactive), so a
        short blip at either edge is removed just like one inside the clip.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be [T, C], got shape {probs.shape}")
    k = int(kernel_frames)
    if k != kernel_frames or k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_frames must be an odd integer >= 1, got {kernel_frames}")
    if k == 1 or probs.shape[0] == 0:
        return probs.copy()
    # size (k, 1): filter along time only, never across classes.
    return ndimage.median_filter(probs, size=(k, 1), mode="constant", cval=0.0)


def _hop_ms(timestamps_ms: np.ndarray, hop_ms: float | None) -> float:
    """Returns the hop of regularly spaced timestamps, checking the spacing."""
    if timestamps_ms.shape[0] < 2:
        if hop_ms is None:
            raise ValueError("a single timestamp: pass hop_ms explicitly")
        return float(hop_ms)
    diffs = np.diff(timestamps_ms)
    hop = float(np.mean(diffs)) if hop_ms is None else float(hop_ms)
    if hop <= 0 or np.max(np.abs(diffs - hop)) > _TIMESTAMP_JITTER_MS:
        raise ValueError(
            "timestamps_ms must increase at a regular hop (within 1 ms); got diffs "
            f"from {diffs.min():.3f} to {diffs.max():.3f} ms"
        )
    return hop


def median_filter_frames(median_filter_ms: float, hop_ms: float) -> int:
    """Converts a median-filter length in ms to an odd kernel length in frames.

    round(median_filter_ms / hop_ms), raised to the next odd number when even (a
    centred window needs an odd length); 0 ms (or < 1 frame) gives 1 = no filter.
    """
    if median_filter_ms < 0:
        raise ValueError(f"median_filter_ms must be >= 0, got {median_filter_ms}")
    k = int(round(median_filter_ms / hop_ms))
    if k <= 1:
        return 1
    return k if k % 2 == 1 else k + 1


def probs_to_events(
    probs,
    timestamps_ms,
    label_names: Sequence[str],
    threshold: float = 0.5,
    median_filter_ms: float = 250.0,
    hop_ms: float | None = None,
    duration_s: float | None = None,
) -> list[dict]:
    """Turns frame-wise probabilities of one file into a list of events.

    Steps: median filter per class (`median_filter_ms`, see `median_filter_frames`),
    threshold (a frame is active when its filtered probability is > `threshold`),
    then every maximal run of consecutive active frames of a class is one event.

    Onset/offset convention: timestamps mark frame centres, and a frame stands for
    the hop-long interval around its centre. A run of active frames with centres
    t_first..t_last (ms) becomes

        onset  = max(0, t_first - hop / 2) / 1000   [s]
        offset = (t_last + hop / 2) / 1000          [s], clipped at duration_s if given

    so an event covers exactly its frames' intervals; the onset then sits on the
    boundary between the last inactive and the first active frame, which is an
    unbiased estimate when the true onset is equally likely anywhere in a hop.
    (The HEAR kit instead uses the first and last timestamps themselves and drops
    events shorter than 60 ms; its onsets are hop/2 later than these.)

    Args:
        probs: float array [T, C], probabilities per frame (rows) and class.
        timestamps_ms: float array [T], frame centres in ms, increasing at a
            regular hop (within 1 ms).
        label_names: sequence of C class names; column c is `label_names[c]`.
        threshold: a frame is active for a class when its probability > threshold.
        median_filter_ms: median filter length in ms (0 = none).
        hop_ms: the hop in ms; inferred from `timestamps_ms` when None (needed
            only when T == 1).
        duration_s: optional clip duration in s; offsets are clipped to it.

    Returns:
        A list of {"label": str, "onset": float s, "offset": float s}, sorted by
        onset, then label.
    """
    probs = np.asarray(probs, dtype=np.float64)
    timestamps_ms = np.asarray(timestamps_ms, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be [T, C], got shape {probs.shape}")
    if timestamps_ms.shape != (probs.shape[0],):
        raise ValueError(
            f"timestamps_ms must be [T] with T = {probs.shape[0]}, got {timestamps_ms.shape}"
        )
    if len(label_names) != probs.shape[1]:
        raise ValueError(
            f"label_names has {len(label_names)} names for {probs.shape[1]} classes"
        )
    if probs.shape[0] == 0:
        return []
    hop = _hop_ms(timestamps_ms, hop_ms)
    filtered = median_filter_probs(probs, median_filter_frames(median_filter_ms, hop))
    active = filtered > threshold  # [T, C]

    events = []
    # Pad with inactive frames so every run has a rising and a falling edge.
    edges = np.diff(np.pad(active.astype(np.int8), ((1, 1), (0, 0))), axis=0)  # [T+1, C]
    for c, label in enumerate(label_names):
        starts = np.flatnonzero(edges[:, c] == 1)  # first active frame of each run
        ends = np.flatnonzero(edges[:, c] == -1) - 1  # last active frame of each run
        for first, last in zip(starts, ends):
            onset = max(0.0, (timestamps_ms[first] - hop / 2) / 1000.0)
            offset = (timestamps_ms[last] + hop / 2) / 1000.0
            if duration_s is not None:
                offset = min(offset, float(duration_s))
            events.append({"label": str(label), "onset": float(onset), "offset": float(offset)})
    events.sort(key=lambda e: (e["onset"], e["label"]))
    return events


# --------------------------------------------------------------------------------------
# Event-based onset F-measure (sed_eval)
# --------------------------------------------------------------------------------------


def _event_container(file_id: str, events: Sequence[Mapping]):
    """One file's events -> the dcase_util MetaDataContainer that sed_eval reads."""
    import dcase_util  # the "eval" extra; imported here so the scene metrics work without it

    items = []
    for e in events:
        onset, offset = float(e["onset"]), float(e["offset"])
        if not (math.isfinite(onset) and math.isfinite(offset)) or offset < onset:
            raise ValueError(f"bad event in {file_id!r}: {dict(e)}")
        items.append(
            {
                "filename": str(file_id),
                "event_label": str(e["label"]),
                "event_onset": onset,
                "event_offset": offset,
            }
        )
    return dcase_util.containers.MetaDataContainer(items)


def _safe_ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else 0.0


def event_onset_fmeasure(
    reference: Mapping[str, Sequence[Mapping]],
    estimated: Mapping[str, Sequence[Mapping]],
    t_collar: float = DEFAULT_T_COLLAR,
    percentage_of_length: float = DEFAULT_PERCENTAGE_OF_LENGTH,
    label_names: Sequence[str] | None = None,
) -> dict:
    """Event-based onset F-measure (DCASE 2016 task 2), with sed_eval.

    An estimated event is a hit when a reference event of the same label in the
    same file has |onset difference| <= `t_collar` (one-to-one optimal matching);
    offsets are ignored (`evaluate_offset=False`, so `percentage_of_length` has no
    effect and is passed only for completeness). Counts are summed over files
    before P, R and F are computed (micro average, sed_eval's "overall").

    Files: every file id in `reference` or `estimated` is evaluated. A file with
    reference events but no (or no entry of) estimated events contributes its
    reference events as misses; a file without reference events contributes its
    estimated events as false alarms.

    Where sed_eval gives NaN (no estimated events at all: precision 0/0), this
    returns 0: with references present, detecting nothing is a score of 0.

    Args:
        reference: file id -> list of {"label", "onset", "offset"} (seconds).
        estimated: file id -> list of {"label", "onset", "offset"} (seconds).
        t_collar: onset collar in seconds (0.2 for DCASE 2016 task 2).
        percentage_of_length: sed_eval's offset criterion (unused: onset only).
        label_names: the class vocabulary; default the sorted labels seen in
            `reference` and `estimated`. Labels outside it raise ValueError.

    Returns:
        A dict of Python floats:
          "onset_fmeasure": micro (overall) F-measure in [0, 1], the headline score;
          "precision", "recall": micro precision and recall;
          "class_wise_fmeasure_macro": mean over classes with at least one
              reference event of the per-class F = 2 TP / (N_ref + N_sys);
          "error_rate": sed_eval's overall error rate (S + D + I) / N_ref;
          "n_ref", "n_sys", "n_tp": event counts summed over files.
    """
    import sed_eval  # the "eval" extra

    labels_seen = {str(e["label"]) for d in (reference, estimated) for ev in d.values() for e in ev}
    if label_names is None:
        label_names = sorted(labels_seen)
    label_names = [str(n) for n in label_names]
    unknown = labels_seen - set(label_names)
    if unknown:
        raise ValueError(f"event labels not in label_names: {sorted(unknown)}")
    n_ref_total = sum(len(v) for v in reference.values())
    if n_ref_total == 0:
        raise ValueError("reference holds no events: the onset F-measure is undefined")

    metric = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=label_names,
        evaluate_onset=True,
        evaluate_offset=False,
        # sed_eval insists on Python floats here (isinstance(..., float)).
        t_collar=float(t_collar),
        percentage_of_length=float(percentage_of_length),
    )
    # sed_eval evaluates one file per call and accumulates the counts.
    for file_id in sorted(set(reference) | set(estimated), key=str):
        metric.evaluate(
            reference_event_list=_event_container(file_id, reference.get(file_id, [])),
            estimated_event_list=_event_container(file_id, estimated.get(file_id, [])),
        )

    overall = metric.overall
    n_ref, n_sys, n_tp = overall["Nref"], overall["Nsys"], overall["Ntp"]
    precision = _safe_ratio(n_tp, n_sys)
    recall = _safe_ratio(n_tp, n_ref)
    fmeasure = _safe_ratio(2 * n_tp, n_ref + n_sys)  # = 2PR / (P + R); 0 when TP = 0
    # Cross-check with sed_eval's own numbers where they are defined.
    sed_f = metric.results_overall_metrics()["f_measure"]["f_measure"]
    if math.isfinite(sed_f) and not math.isclose(sed_f, fmeasure, abs_tol=1e-9):
        raise AssertionError(f"F-measure {fmeasure} disagrees with sed_eval's {sed_f}")

    # Per-class F from counts: sed_eval gives NaN for a class with references but
    # no estimates and nanmean then drops it, inflating the macro average.
    class_f = [
        _safe_ratio(2 * cw["Ntp"], cw["Nref"] + cw["Nsys"])
        for cw in metric.class_wise.values()
        if cw["Nref"] > 0
    ]
    error_rate = metric.results_overall_metrics()["error_rate"]["error_rate"]
    return {
        "onset_fmeasure": fmeasure,
        "precision": precision,
        "recall": recall,
        "class_wise_fmeasure_macro": float(np.mean(class_f)),
        "error_rate": float(error_rate),
        "n_ref": int(n_ref),
        "n_sys": int(n_sys),
        "n_tp": int(n_tp),
    }


def _check_event_inputs(probs_by_file, timestamps_by_file, reference):
    missing = set(reference) - set(probs_by_file)
    if missing:
        raise ValueError(f"no predictions for reference files: {sorted(missing)[:5]}")
    if set(probs_by_file) != set(timestamps_by_file):
        raise ValueError("probs_by_file and timestamps_by_file must have the same files")


def event_detection_scores(
    probs_by_file: Mapping[str, np.ndarray],
    timestamps_by_file: Mapping[str, np.ndarray],
    reference: Mapping[str, Sequence[Mapping]],
    label_names: Sequence[str],
    threshold: float = 0.5,
    median_filter_ms: float = 250.0,
    t_collar: float = DEFAULT_T_COLLAR,
) -> dict:
    """Post-processes frame probabilities of every file and scores the events.

    Args:
        probs_by_file: file id -> float array [T_f, C] of frame probabilities.
        timestamps_by_file: file id -> float array [T_f] of frame centres in ms.
        reference: file id -> list of reference events (seconds). Every file in
            it must have predictions; predicted files absent from it have no
            reference events (their detections are false alarms).
        label_names: C class names, in column order of the probabilities.
        threshold, median_filter_ms: post-processing (see `probs_to_events`).
        t_collar: onset collar in seconds.

    Returns:
        The dict of `event_onset_fmeasure`, plus "threshold" and "median_filter_ms".
    """
    _check_event_inputs(probs_by_file, timestamps_by_file, reference)
    estimated = {
        f: probs_to_events(
            probs_by_file[f], timestamps_by_file[f], label_names, threshold, median_filter_ms
        )
        for f in probs_by_file
    }
    scores = event_onset_fmeasure(reference, estimated, t_collar=t_collar, label_names=label_names)
    scores.update(threshold=float(threshold), median_filter_ms=float(median_filter_ms))
    return scores


def tune_event_postprocessing(
    probs_by_file: Mapping[str, np.ndarray],
    timestamps_by_file: Mapping[str, np.ndarray],
    reference: Mapping[str, Sequence[Mapping]],
    label_names: Sequence[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    median_filters_ms: Sequence[float] = DEFAULT_MEDIAN_FILTERS_MS,
    t_collar: float = DEFAULT_T_COLLAR,
) -> dict:
    """Chooses threshold and median-filter length that maximise onset F.

    Run this on the validation split, then score the test split once with
    `event_detection_scores(..., threshold=best["threshold"],
    median_filter_ms=best["median_filter_ms"])`, so that test labels never
    choose the post-processing.

    Args:
        probs_by_file, timestamps_by_file, reference, label_names, t_collar: as in
            `event_detection_scores` (validation split).
        thresholds: candidate thresholds.
        median_filters_ms: candidate median filter lengths in ms (0 = none).

    Returns:
        {"threshold", "median_filter_ms", "onset_fmeasure" (best validation F),
         "grid": list of {"threshold", "median_filter_ms", "onset_fmeasure"} for
         every grid point}. Ties go to the earliest grid point, filters outer
         and thresholds inner, in the order given.
    """
    if not thresholds or not median_filters_ms:
        raise ValueError("thresholds and median_filters_ms must be non-empty")
    _check_event_inputs(probs_by_file, timestamps_by_file, reference)
    grid = []
    best = None
    for mf in median_filters_ms:
        for th in thresholds:
            f = event_detection_scores(
                probs_by_file, timestamps_by_file, reference, label_names,
                threshold=th, median_filter_ms=mf, t_collar=t_collar,
            )["onset_fmeasure"]
            point = {"threshold": float(th), "median_filter_ms": float(mf), "onset_fmeasure": f}
            grid.append(point)
            if best is None or f > best["onset_fmeasure"]:
                best = point
    return {**best, "grid": grid}
