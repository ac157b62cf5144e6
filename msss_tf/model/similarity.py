"""Similarity functions of the contrastive losses (method.md Eq. 1, 3, 8).

Both layers take two sets of vectors and return every pairwise score:
`a` [..., N, D] and `b` [..., M, D] -> [..., N, M], with any shared leading axes
(none for the clip loss, the batch for the frame loss).
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="msss_tf")
class BilinearSimilarity(keras.layers.Layer):
    """s(a, b) = a^T W b with a trainable W [D, D] (COLA's bilinear similarity).

    W starts as (I + small noise) / sqrt(D): the untrained score is then the scaled dot
    product a.b / sqrt(D) of attention, so the first logits are O(1)-O(10) and ordered
    by similarity, instead of O(D) (identity) or random (a random W). `a` [..., N, D], `b` [..., M, D] -> [..., N, M].
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, a_shape, b_shape=None):
        dim = a_shape[-1]
        if dim is None:
            raise ValueError("BilinearSimilarity: the last axis of `a` must be known")
        self.kernel = self.add_weight(
            name="kernel",
            shape=(dim, dim),
            initializer=IdentityPlusNoise(),
            trainable=True,
        )

    def call(self, a, b):
        projected = ops.matmul(a, self.kernel)  # [..., N, D]
        return ops.matmul(projected, ops.swapaxes(b, -1, -2))

    def compute_output_shape(self, a_shape, b_shape):
        return tuple(a_shape[:-1]) + (b_shape[-2],)


@keras.saving.register_keras_serializable(package="msss_tf")
class CosineSimilarity(keras.layers.Layer):
    """s(a, b) = cos(a, b) / temperature (the Table 2 ablation; temperature 0.2).

    `a` [..., N, D], `b` [..., M, D] -> [..., N, M]. No weights.
    """

    def __init__(self, temperature=0.2, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"CosineSimilarity: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def build(self, a_shape, b_shape=None):
        pass  # no weights

    def call(self, a, b):
        a = a / ops.maximum(ops.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / ops.maximum(ops.norm(b, axis=-1, keepdims=True), 1e-12)
        return ops.matmul(a, ops.swapaxes(b, -1, -2)) / self.temperature

    def compute_output_shape(self, a_shape, b_shape):
        return tuple(a_shape[:-1]) + (b_shape[-2],)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="msss_tf")
class IdentityPlusNoise(keras.initializers.Initializer):
    """(eye(D) + N(0, stddev^2)) / sqrt(D) for a square [D, D] kernel."""

    def __init__(self, stddev=0.01, seed=None):
        self.stddev = stddev
        self.seed = seed

    def __call__(self, shape, dtype=None):
        noise = keras.initializers.RandomNormal(stddev=self.stddev, seed=self.seed)(shape, dtype)
        return (ops.eye(shape[0], shape[1], dtype=dtype) + noise) / math.sqrt(shape[0])

    def get_config(self):
        return {"stddev": self.stddev, "seed": self.seed}


def make_similarity(kind="bilinear", temperature=0.2, name=None):
    """The similarity layer named by `MSSSConfig.similarity`."""
    if kind == "bilinear":
        return BilinearSimilarity(name=name)
    if kind == "cosine":
        return CosineSimilarity(temperature=temperature, name=name)
    raise ValueError(f"similarity must be 'bilinear' or 'cosine', got {kind!r}")
