"""Scene (clip-level) metrics of the linear-probe evaluation: one prediction per clip.

* `top1_accuracy`: Speech Commands top-1 accuracy.
* `pitch_accuracy`, `chroma_accuracy`: NSynth pitch (88 classes, MIDI 21..108).
* `average_precision`, `multilabel_mean_average_precision`: mAP of HEAR's multilabel
  scene tasks.

Inputs are NumPy arrays (or anything `np.asarray` accepts); results are Python floats.
Needs only numpy (not the "eval" extra).
"""

from __future__ import annotations

import numpy as np

# NSynth pitch: class i is MIDI note 21 + i (A0..C8). Passed explicitly to
# `chroma_accuracy` so that nothing assumes class index == MIDI number.
NSYNTH_PITCH_MIDI = np.arange(21, 109, dtype=np.int64)


def _check_labels_scores(labels, scores):
    """Validates single-label inputs; returns (labels int [n], scores float [n, C])."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [n, C], got shape {scores.shape}")
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels must be [n] with n = scores.shape[0] = {scores.shape[0]}, "
            f"got shape {labels.shape}"
        )
    if labels.shape[0] == 0:
        raise ValueError("no examples: accuracy of an empty set is undefined")
    if not np.issubdtype(labels.dtype, np.integer):
        # Accept integral floats (e.g. labels that went through a float tensor).
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ValueError("labels must be integer class indices")
        labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {scores.shape[1]}), got range "
            f"[{labels.min()}, {labels.max()}]"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    return labels.astype(np.int64), scores


def top1_accuracy(labels, scores) -> float:
    """Fraction of examples whose highest-scoring class is the target.

    Args:
        labels: int array [n], target class indices in [0, C).
        scores: float array [n, C], any monotone scores (logits or probabilities).
            Ties go to the lowest class index (`np.argmax`).

    Returns:
        Accuracy in [0, 1] as a Python float.
    """
    labels, scores = _check_labels_scores(labels, scores)
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def pitch_accuracy(labels, scores) -> float:
    """NSynth pitch accuracy: the predicted pitch class equals the target exactly.

    Same computation as `top1_accuracy`, named separately so that results read
    like the paper's tables.

    Args:
        labels: int array [n], target pitch class indices in [0, C).
        scores: float array [n, C], scores per pitch class.

    Returns:
        Accuracy in [0, 1].
    """
    return top1_accuracy(labels, scores)


def chroma_accuracy(labels, scores, midi_of_label) -> float:
    """NSynth chroma accuracy: prediction and target share a pitch class (MIDI mod 12).

    An octave error (MIDI 60 vs 72) counts as correct; a semitone error does not.

    Args:
        labels: int array [n], target class indices in [0, C).
        scores: float array [n, C], scores per class.
        midi_of_label: int array [C], the MIDI note number of each class index
            (NSynth pitch: `NSYNTH_PITCH_MIDI`, i.e. class i -> MIDI 21 + i). The
            modulo is taken on MIDI numbers, not on class indices, because the two
            differ by an offset that is not a multiple of 12.

    Returns:
        Accuracy in [0, 1].
    """
    labels, scores = _check_labels_scores(labels, scores)
    midi = np.asarray(midi_of_label)
    if midi.ndim != 1 or midi.shape[0] != scores.shape[1]:
        raise ValueError(
            f"midi_of_label must be [C] with C = {scores.shape[1]}, got shape {midi.shape}"
        )
    midi = midi.astype(np.int64)
    predicted = midi[np.argmax(scores, axis=1)]
    target = midi[labels]
    return float(np.mean(np.mod(predicted, 12) == np.mod(target, 12)))


def average_precision(labels_binary, scores) -> float:
    """Exact (non-interpolated) average precision of one class.

    AP = sum_k (R_k - R_{k-1}) P_k over the distinct score thresholds k, from the
    highest score down; tied scores form one threshold (the convention of
    sklearn's `average_precision_score`, whose values this reproduces).

    Args:
        labels_binary: array [n] of 0/1 (or bool), 1 = positive.
        scores: float array [n], higher = more likely positive.

    Returns:
        AP in [0, 1]. Raises ValueError when there is no positive.
    """
    y = np.asarray(labels_binary).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must both be [n], got {y.shape}, {s.shape}")
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average precision is undefined without a positive example")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    # Last index of each run of equal scores: the ranking is only cut between
    # distinct scores, so ties do not depend on the sort order.
    cut = np.r_[np.flatnonzero(np.diff(s)), s.shape[0] - 1]
    precision = tp[cut] / (tp[cut] + fp[cut])
    recall = tp[cut] / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_mean_average_precision(labels_multi_hot, scores) -> float:
    """Mean over classes of the average precision (HEAR multilabel scene tasks).

    Classes with no positive example are skipped: their AP is undefined.

    Args:
        labels_multi_hot: array [n, C] of 0/1, 1 where the class is present.
        scores: float array [n, C], per-class scores (e.g. sigmoid outputs).

    Returns:
        mAP in [0, 1]. Raises ValueError when no class has a positive.
    """
    y = np.asarray(labels_multi_hot)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise ValueError(
            f"labels_multi_hot and scores must both be [n, C], got {y.shape}, {s.shape}"
        )
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels_multi_hot must hold only 0 and 1")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    present = np.flatnonzero(y.sum(axis=0) > 0)
    if present.size == 0:
        raise ValueError("no class has a positive example: mAP is undefined")
    return float(np.mean([average_precision(y[:, c], s[:, c]) for c in present]))
