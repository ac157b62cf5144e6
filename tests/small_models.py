"""A small untrained encoder that outputs O(0.1), and real audio, shared by the export,
HEAR, MediaPipe and non-finite tests (tests/ is on sys.path: `from small_models import ...`).

The encoder is untrained, with its batch-norm moving statistics moved halfway towards
those of real audio (one training-mode pass at momentum 0.5): an untrained EfficientNet
in inference mode outputs ~1e-5, which would make every tolerance meaningless.
"""

import os

import keras
import numpy as np

from msss_tf.config import MSSSConfig
from msss_tf.data.synthetic import synthetic_corpus
from msss_tf.model.msss_model import MSSSModel

CONFIG = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25)
D = 320  # round_filters(1280, 0.25): the embedding size of the small encoder


def perturbed_model(config=CONFIG, seed=1, momentum=0.5):
    """An untrained MSSSModel whose batch-norm statistics are halfway to real audio's."""
    keras.utils.set_random_seed(seed)
    model = MSSSModel(config)
    norms = [layer for layer in model.encoder._flatten_layers()
             if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = momentum
    clips = synthetic_corpus(16, 2.0, seed=4)
    model.encoder(model.frontend(clips[:, :config.segment_samples]), training=True)
    for layer, value in zip(norms, saved):
        layer.momentum = value
    return model


def make_run_dir(path, **kwargs):
    model = perturbed_model(**kwargs)
    os.makedirs(path, exist_ok=True)
    model.msss_config.save(str(path))
    model.save(os.path.join(path, "model.keras"))
    return str(path)


def clips(seconds, n=2, seed=7):
    """Real (synthetic-corpus) audio, with some noise clips: float32 [n, samples]."""
    audio = synthetic_corpus(n, seconds, seed=seed)
    audio[-1] = 0.1 * np.random.default_rng(seed).normal(size=audio.shape[1])
    return audio.astype(np.float32)


def cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
