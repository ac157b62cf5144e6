"""msss-tf: self-supervised audio representations with multiple sampling strategies.

Keras 3 / TensorFlow implementation of the ICASSP 2022 method: an EfficientNet-B0
encoder over log-mel patches trained with COLA's clip-level contrastive loss, a
frame-level contrastive loss and a pitch-shift regression loss.

The public names below are imported on first use (PEP 562), so that `import msss_tf`
(and the `msss-tf` command, which lives in this package) does not load TensorFlow
before it is needed: flags are checked in a fraction of a second.
"""

from msss_tf.lazy import lazy_exports

__version__ = "0.1.0"

_PUBLIC = {
    "BilinearSimilarity": "msss_tf.model.similarity",
    "ClipContrastiveLoss": "msss_tf.model.losses",
    "ClipHead": "msss_tf.model.heads",
    "CosineSimilarity": "msss_tf.model.similarity",
    "FrameContrastiveLoss": "msss_tf.model.losses",
    "FrameHead": "msss_tf.model.heads",
    "FrequencyPooling": "msss_tf.model.encoder",
    "LogMelFrontEnd": "msss_tf.model.frontend",
    "MSSSConfig": "msss_tf.config",
    "MSSSModel": "msss_tf.model.msss_model",
    "PitchHead": "msss_tf.model.heads",
    "PitchShift": "msss_tf.model.frontend",
    "PitchShiftLoss": "msss_tf.model.losses",
    "build_encoder": "msss_tf.model.encoder",
    "build_optimizer": "msss_tf.model.msss_model",
}

__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, globals())
