"""The model: waveform -> log-mel -> encoder -> heads -> the three losses, and the MSSS
task model that trains them (method.md, Eq. 1-7). Written in `keras.ops`, so every
module here imports no TensorFlow and the model trains on TensorFlow or JAX.

Modules, in the order the data flows:

* `frontend`: `LogMelFrontEnd` (waveform -> log-mel), `PitchShift`.
* `encoder`: `build_encoder` (EfficientNet over one-channel log-mel, frequency pooling
  -> frames), `encoder_at_layer`.
* `heads`: `ClipHead`, `FrameHead`, `PitchHead`.
* `similarity`: `BilinearSimilarity`, `CosineSimilarity`.
* `losses`: `ClipContrastiveLoss`, `FrameContrastiveLoss`, `PitchShiftLoss`.
* `views`: `draw_views`, a step's random draws and log-mel views.
* `replicas`: `replica_context`, `global_draw` (the step under tf.distribute).
* `msss_model`: `MSSSModel` (the combined loss, `train_step` / `test_step`),
  `build_optimizer`.

The public names below are imported on first use (PEP 562).
"""

from msss_tf.lazy import lazy_exports

_PUBLIC = {
    "LogMelFrontEnd": "frontend",
    "PitchShift": "frontend",
    "build_encoder": "encoder",
    "encoder_at_layer": "encoder",
    "FrequencyPooling": "encoder",
    "ClipHead": "heads",
    "FrameHead": "heads",
    "PitchHead": "heads",
    "BilinearSimilarity": "similarity",
    "CosineSimilarity": "similarity",
    "ClipContrastiveLoss": "losses",
    "FrameContrastiveLoss": "losses",
    "PitchShiftLoss": "losses",
    "draw_views": "views",
    "MSSSModel": "msss_model",
    "build_optimizer": "msss_model",
    "compute_msss_losses": "msss_model",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
