"""Downstream metrics of the linear-probe evaluation (method.md, "Downstream").

Scene (clip-level) tasks score one prediction per clip:

* `top1_accuracy`: Speech Commands top-1 accuracy.
* `pitch_accuracy`, `chroma_accuracy`: NSynth pitch (88 classes, MIDI 21..108).
* `multilabel_mean_average_precision`: mAP of HEAR's multilabel scene tasks.

Event (timestamp-level) tasks turn frame-wise class probabilities into events and
score them with sed_eval's event-based metric (DCASE 2016 task 2):

* `median_filter_probs` -> `probs_to_events` (post-processing, per file),
* `event_onset_fmeasure` (onset-only F-measure, 200 ms collar),
* `event_detection_scores` (post-process + score in one call),
* `tune_event_postprocessing` (choose threshold and median filter on validation).

All functions take NumPy arrays (or anything `np.asarray` accepts, eager tensors
included) and return Python floats / dicts, so results serialise to JSON directly.
`sed_eval` and `dcase_util` (the "eval" extra of setup.py) are imported only by the
event metric, so the scene metrics work without them.

The scene metrics live in `msss_tf.evaluation.metrics.scene`, the event metrics in
`msss_tf.evaluation.metrics.events`; this package re-exports both and holds the `METRICS` registry.
"""

from __future__ import annotations

from typing import Callable

from msss_tf.evaluation.metrics.events import (DEFAULT_MEDIAN_FILTERS_MS, DEFAULT_PERCENTAGE_OF_LENGTH,
                                    DEFAULT_T_COLLAR, DEFAULT_THRESHOLDS,
                                    event_detection_scores, event_onset_fmeasure,
                                    median_filter_frames, median_filter_probs, probs_to_events,
                                    tune_event_postprocessing)
from msss_tf.evaluation.metrics.scene import (NSYNTH_PITCH_MIDI, average_precision, chroma_accuracy,
                                   multilabel_mean_average_precision, pitch_accuracy,
                                   top1_accuracy)

__all__ = [
    "DEFAULT_MEDIAN_FILTERS_MS", "DEFAULT_PERCENTAGE_OF_LENGTH", "DEFAULT_T_COLLAR",
    "DEFAULT_THRESHOLDS", "METRICS", "NSYNTH_PITCH_MIDI", "average_precision",
    "chroma_accuracy", "event_detection_scores", "event_onset_fmeasure",
    "median_filter_frames", "median_filter_probs", "multilabel_mean_average_precision",
    "pitch_accuracy", "probs_to_events", "top1_accuracy", "tune_event_postprocessing",
]

# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

METRICS: dict[str, Callable] = {
    # Speech Commands: top-1 accuracy. f(labels [n], scores [n, C]) -> float.
    "top1_acc": top1_accuracy,
    # NSynth pitch: exact pitch class. f(labels [n], scores [n, C]) -> float.
    "pitch_acc": pitch_accuracy,
    # NSynth pitch: pitch class modulo 12 in MIDI numbers.
    # f(labels [n], scores [n, C], midi_of_label [C]) -> float.
    "chroma_acc": chroma_accuracy,
    # HEAR multilabel scene tasks: mean over classes of average precision.
    # f(labels_multi_hot [n, C], scores [n, C]) -> float.
    "mAP": multilabel_mean_average_precision,
    # DCASE 2016 task 2: event-based onset F-measure, 200 ms collar.
    # f(reference, estimated) -> dict; the score is result["onset_fmeasure"].
    "event_onset_fscore": event_onset_fmeasure,
}
"""Metric name -> function. Signatures differ by task; see the comments above."""
