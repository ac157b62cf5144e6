"""msss-tf: self-supervised audio representations with multiple sampling strategies.

Keras 3 / TensorFlow implementation of the ICASSP 2022 method: an EfficientNet-B0
encoder over log-mel patches trained with COLA's clip-level contrastive loss, a
frame-level contrastive loss and a pitch-shift regression loss.
"""

from msss_tf.config import MSSSConfig
from msss_tf.encoder import FrequencyPooling, build_encoder
from msss_tf.frontend import LogMelFrontEnd, PitchShift
from msss_tf.heads import ClipHead, FrameHead, PitchHead
from msss_tf.losses import ClipContrastiveLoss, FrameContrastiveLoss, PitchShiftLoss
from msss_tf.model import MSSSModel, build_optimizer
from msss_tf.similarity import BilinearSimilarity, CosineSimilarity

__version__ = "0.1.0"

__all__ = [
    "BilinearSimilarity",
    "ClipContrastiveLoss",
    "ClipHead",
    "CosineSimilarity",
    "FrameContrastiveLoss",
    "FrameHead",
    "FrequencyPooling",
    "LogMelFrontEnd",
    "MSSSConfig",
    "MSSSModel",
    "PitchHead",
    "PitchShift",
    "PitchShiftLoss",
    "build_encoder",
    "build_optimizer",
]
