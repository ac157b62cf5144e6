"""The evaluation stage: frozen embeddings -> linear or MLP probes -> the paper's metrics.

* `embeddings`: `embed_split` (a task split's embeddings, cached on disk).
* `probe`: `ProbeSettings`, `probe_task`, `run_probes` (+ each scene probe's SavedModel
  and classifier `.tflite` when asked), result tables.
* `metrics/`: top-1, pitch/chroma, mAP; event onset F (sed_eval).
* `tflite_classifier`: a probe's classifier `.tflite` run as MediaPipe's AudioClassifier
  runs it, and its agreement with the probe SavedModel.

The public names below are imported on first use (PEP 562).
"""

import importlib

_PUBLIC = {
    "embed_split": "embeddings",
    "ProbeSettings": "probe",
    "probe_task": "probe",
    "run_probes": "probe",
    "TFLiteClassifier": "tflite_classifier",
    "classifier_agreement": "tflite_classifier",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'msss_tf.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"msss_tf.evaluation.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
