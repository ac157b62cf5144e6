"""The evaluation stage: frozen embeddings -> linear or MLP probes -> the paper's metrics.

* `embeddings`: `embed_split` (a task split's embeddings, cached on disk).
* `probe`: `ProbeSettings`, `probe_task`, `run_probes` (+ each scene probe's SavedModel
  and classifier `.tflite` when asked), result tables.
* `metrics/`: top-1, pitch/chroma, mAP; event onset F (sed_eval).
* `tflite_classifier`: a probe's classifier `.tflite` run as MediaPipe's AudioClassifier
  runs it, and its agreement with the probe SavedModel.

The public names below are imported on first use (PEP 562).
"""

from msss_tf.lazy import lazy_exports

_PUBLIC = {
    "embed_split": "embeddings",
    "ProbeSettings": "probe",
    "probe_task": "probe",
    "run_probes": "probe",
    "TFLiteClassifier": "tflite_classifier",
    "classifier_agreement": "tflite_classifier",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
