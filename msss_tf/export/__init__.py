"""The export stage: the encoder and the probes as SavedModels that take raw waveforms
(`serving`), and as TFLite files for one window, float or quantised (`tflite`).

The names below are the public interface (`msss_tf.export.export_encoder`, ...); the
output-folder errors every job shares are in `msss_tf.outputs`.
"""

from msss_tf.export.serving import (
    CLASSIFIER_TFLITE,
    SUMMARY_FILENAME,
    TFLITE_DIR,
    WAVEFORM_SPEC,
    EncoderServingModule,
    ProbeServingModule,
    export_encoder,
    export_probe,
    export_probe_classifier,
    next_version,
    save_module,
)
from msss_tf.export.tflite import (
    FRONTEND_SCOPE,
    GUARD_SCOPE,
    MIN_COSINE,
    TFLITE_VARIANTS,
    convert_probe_tflite,
    convert_window_tflite,
    convert_window_tflite_info,
    encoder_blocks,
    frame_cosines,
    int8_builder,
    representative_windows,
    select_float_blocks,
    tflite_min_cosine,
    tflite_parity,
    window_tflite_function,
)

__all__ = [
    "CLASSIFIER_TFLITE", "SUMMARY_FILENAME", "TFLITE_DIR", "WAVEFORM_SPEC",
    "EncoderServingModule", "ProbeServingModule", "export_encoder", "export_probe",
    "export_probe_classifier", "next_version", "save_module",
    "FRONTEND_SCOPE", "GUARD_SCOPE", "MIN_COSINE", "TFLITE_VARIANTS", "convert_probe_tflite",
    "convert_window_tflite", "convert_window_tflite_info", "encoder_blocks",
    "frame_cosines", "int8_builder", "representative_windows", "select_float_blocks",
    "tflite_min_cosine", "tflite_parity", "window_tflite_function",
]
