"""The inference stage: embeddings of audio from a trained (or exported) encoder.

Every runtime meets one contract, `AudioEmbedder` (`contract`): `sample_rate`,
`scene_embedding_size`, `timestamp_embedding_size`, `scene_embeddings(audio)` -> [n, D]
and `timestamp_embeddings(audio)` -> ([n, T, D], timestamps_ms [n, T]), audio checked by
one rule (`as_audio_batch`, `audio`).

Modules:

* `contract`: `AudioEmbedder` (a runtime-checkable Protocol).
* `audio`: `as_audio_batch`, `check_window`, `empty_timestamps` (NumPy only).
* `windows`: `WindowPlan`, where the 0.96 s windows go (scene and 40 ms timestamps).
* `keras_model`: `load_msss_model`, `calibrate_batch_norm`.
* `keras_embedder`: `Embedder`, the Keras front end + encoder.
* `saved_model`: `SavedModelEncoder`, `load_encoder` (an exported SavedModel).
* `tflite`: `TFLiteEmbedder` (an exported window .tflite, LiteRT).
* `logmel`: `LogMelStatsEmbedder`, the log-mel front end alone (a reference row).
* `paths`: `resolve_model`, `load_embedder`: one resolver for every model path.
* `files`: `embed_file` (a file of any length in bounded memory), `save_npz_streamed`.
* `shipped`: `shipped_checkpoint`, the pre-trained encoder shipped in `msss_tf/checkpoints/`.

The run-directory layout the resolver reads is `msss_tf.rundir`. The public names below
are imported on first use (PEP 562), so `import msss_tf.embedding` loads no TensorFlow.
The HEAR 2021 API on top of this package is `msss_tf.hear`.
"""

from msss_tf.lazy import lazy_exports

_PUBLIC = {
    "AudioEmbedder": "contract",
    "as_audio_batch": "audio",
    "check_window": "audio",
    "empty_timestamps": "audio",
    "WindowPlan": "windows",
    "window_plan_of": "windows",
    "load_msss_model": "keras_model",
    "calibrate_batch_norm": "keras_model",
    "Embedder": "keras_embedder",
    "SavedModelEncoder": "saved_model",
    "load_encoder": "saved_model",
    "ENCODER_SIGNATURES": "saved_model",
    "TFLiteEmbedder": "tflite",
    "LogMelStatsEmbedder": "logmel",
    "MODEL_KINDS": "paths",
    "resolve_model": "paths",
    "load_embedder": "paths",
    "embed_file": "files",
    "save_npz_streamed": "files",
    "ShippedCheckpoint": "shipped",
    "shipped_checkpoint": "shipped",
    "shipped_checkpoint_names": "shipped",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
