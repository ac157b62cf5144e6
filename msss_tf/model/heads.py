"""Shallow projection heads on the encoder's frame features (method.md, "Heads").

All three are used only by the pre-training losses; downstream code embeds with the
encoder alone.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="msss_tf")
class ProjectionHead(layers.Layer):
    """Dense(units) -> LayerNorm -> tanh, applied to the last axis.

    Input [..., C] -> output [..., units].
    """

    def __init__(self, units=512, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dense = layers.Dense(self.units, name="dense")
        self.norm = layers.LayerNormalization(name="layer_norm")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.norm.build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, x):
        return keras.ops.tanh(self.norm(self.dense(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="msss_tf")
class ClipHead(ProjectionHead):
    """g_c: mean over time of the frames, then the projection. [b, t', C] -> [b, units]."""

    def build(self, input_shape):
        super().build((input_shape[0], input_shape[-1]))

    def call(self, frames):
        return super().call(keras.ops.mean(frames, axis=1))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)


@keras.saving.register_keras_serializable(package="msss_tf")
class FrameHead(ProjectionHead):
    """g_f: the projection per frame. [b, t', C] -> [b, t', units]."""


@keras.saving.register_keras_serializable(package="msss_tf")
class PitchHead(ProjectionHead):
    """g_p: per frame, projection then Dense(1): [b, t', C] -> r [b, t'].

    As in the authors' code, the scalar comes after a LayerNorm + tanh of its own. The
    output has no bias: the loss only sees differences r(shifted) - r(anchor), where a
    bias cancels and would never receive a gradient.
    """

    def __init__(self, units=512, **kwargs):
        super().__init__(units=units, **kwargs)
        self.out = layers.Dense(1, use_bias=False, name="pitch_out")

    def build(self, input_shape):
        super().build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, frames):
        return keras.ops.squeeze(self.out(super().call(frames)), axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1])
