"""The encoder: EfficientNet on one-channel log-mel, pooled over frequency into frames.

The body is EfficientNet (Tan & Le, 2019) block for block as in
`keras.applications.EfficientNetB0` (the test transfers that model's weights into this
one and gets the same outputs), with two differences that matter for audio:

* no `Rescaling(1/255)` and `Normalization` stem: log-mel is not an 8-bit image, and the
  1/255 scaling makes an untrained model emit values near 1e-7;
* one input channel, and any number of frames (the time axis is dynamic).

`width_coefficient` / `depth_coefficient` give the other members of the family; (1, 1)
is B0 (about 4.0 M parameters), smaller values give cheaper variants for CPU studies.

Input [batch, frames, n_mels] -> EfficientNet feature map [batch, frames // 32,
n_mels // 32, 1280] -> pooled over frequency -> [batch, frames // 32, 1280].
For a 0.96 s segment (96 frames, 64 bands): [batch, 3, 1280], one frame per 320 ms.
Each of the five stride-2 stages pads (k//2 - 1, k//2) as the reference does for a
dynamic size, so it halves with floor: a tail shorter than 32 frames adds no frame.
"""

from __future__ import annotations

import copy
import math

import keras
from keras import layers

from msss_tf.config import EMBEDDING_LAYERS, MSSSConfig

# (kernel, repeats, filters_in, filters_out, expand_ratio, strides, se_ratio) per stage.
B0_STAGES = (
    (3, 1, 32, 16, 1, 1, 0.25),
    (3, 2, 16, 24, 6, 2, 0.25),
    (5, 2, 24, 40, 6, 2, 0.25),
    (3, 3, 40, 80, 6, 2, 0.25),
    (5, 3, 80, 112, 6, 1, 0.25),
    (5, 4, 112, 192, 6, 2, 0.25),
    (3, 1, 192, 320, 6, 1, 0.25),
)
TIME_STRIDE = 32  # five stride-2 stages

# As in the reference implementation.
CONV_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}


@keras.saving.register_keras_serializable(package="msss_tf")
class FrequencyPooling(layers.Layer):
    """[batch, time, freq, channels] -> [batch, time, channels] by mean or max over freq."""

    def __init__(self, mode="mean", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("mean", "max"):
            raise ValueError(f"FrequencyPooling: mode must be 'mean' or 'max', got {mode!r}")
        self.mode = mode

    def call(self, x):
        if self.mode == "mean":
            return keras.ops.mean(x, axis=2)
        return keras.ops.max(x, axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[3])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="msss_tf")
class WindowMeanSubtraction(layers.Layer):
    """[batch, frames, n_mels] -> the same minus each row's mean over frames and bands.

    Applied to one 0.96 s log-mel window (every path feeds the encoder single windows), it
    removes the window's overall level: log(g * mel) = log g + log mel, so a gain change
    does not reach the network (up to the log offset's floor).
    """

    def call(self, log_mel):
        return log_mel - keras.ops.mean(log_mel, axis=(1, 2), keepdims=True)

    def compute_output_shape(self, input_shape):
        return input_shape


def round_filters(filters, width_coefficient, divisor=8):
    """Scales a channel count by the width coefficient, rounded to a multiple of 8."""
    filters *= width_coefficient
    new_filters = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * filters:  # never round down by more than 10 %
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats, depth_coefficient):
    return int(math.ceil(depth_coefficient * repeats))


def _same_pad(kernel_size):
    # TF "SAME" padding for stride 2 on even sizes, made explicit as in the reference.
    return ((kernel_size // 2 - 1, kernel_size // 2), (kernel_size // 2 - 1, kernel_size // 2))


def _mbconv_block(
    inputs, name, filters_in, filters_out, kernel_size, strides, expand_ratio, se_ratio, drop_rate,
    bn_momentum,
):
    """Inverted residual block with squeeze-and-excitation (MBConv)."""
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = layers.Conv2D(
            filters, 1, padding="same", use_bias=False,
            kernel_initializer=CONV_INITIALIZER, name=f"{name}expand_conv",
        )(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}expand_bn")(x)
        x = layers.Activation("swish", name=f"{name}expand_activation")(x)
    if strides == 2:
        x = layers.ZeroPadding2D(_same_pad(kernel_size), name=f"{name}dwconv_pad")(x)
        conv_pad = "valid"
    else:
        conv_pad = "same"
    x = layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding=conv_pad, use_bias=False,
        depthwise_initializer=CONV_INITIALIZER, name=f"{name}dwconv",
    )(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}bn")(x)
    x = layers.Activation("swish", name=f"{name}activation")(x)

    filters_se = max(1, int(filters_in * se_ratio))
    se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}se_squeeze")(x)
    se = layers.Conv2D(
        filters_se, 1, padding="same", activation="swish",
        kernel_initializer=CONV_INITIALIZER, name=f"{name}se_reduce",
    )(se)
    se = layers.Conv2D(
        filters, 1, padding="same", activation="sigmoid",
        kernel_initializer=CONV_INITIALIZER, name=f"{name}se_expand",
    )(se)
    x = layers.multiply([x, se], name=f"{name}se_excite")

    x = layers.Conv2D(
        filters_out, 1, padding="same", use_bias=False,
        kernel_initializer=CONV_INITIALIZER, name=f"{name}project_conv",
    )(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}project_bn")(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:  # stochastic depth: drop the whole residual branch per example
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
        x = layers.add([x, inputs], name=f"{name}add")
    return x


def build_efficientnet_body(
    n_mels=64, width_coefficient=1.0, depth_coefficient=1.0, drop_connect_rate=0.2,
    bn_momentum=0.99, name="efficientnet",
):
    """EfficientNet feature extractor: [batch, frames, n_mels, 1] -> [b, t', f', 1280*w]."""
    inputs = keras.Input(shape=(None, n_mels, 1), name="log_mel_image")
    x = layers.ZeroPadding2D(_same_pad(3), name="stem_conv_pad")(inputs)
    x = layers.Conv2D(
        round_filters(32, width_coefficient), 3, strides=2, padding="valid", use_bias=False,
        kernel_initializer=CONV_INITIALIZER, name="stem_conv",
    )(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = layers.Activation("swish", name="stem_activation")(x)

    total_blocks = float(sum(round_repeats(s[1], depth_coefficient) for s in B0_STAGES))
    block_index = 0
    for stage, (kernel, repeats, f_in, f_out, expand, strides, se_ratio) in enumerate(
        copy.deepcopy(B0_STAGES)
    ):
        f_in = round_filters(f_in, width_coefficient)
        f_out = round_filters(f_out, width_coefficient)
        for j in range(round_repeats(repeats, depth_coefficient)):
            x = _mbconv_block(
                x,
                name=f"block{stage + 1}{chr(j + 97)}_",
                filters_in=f_in if j == 0 else f_out,
                filters_out=f_out,
                kernel_size=kernel,
                strides=strides if j == 0 else 1,
                expand_ratio=expand,
                se_ratio=se_ratio,
                drop_rate=drop_connect_rate * block_index / total_blocks,
                bn_momentum=bn_momentum,
            )
            block_index += 1

    x = layers.Conv2D(
        round_filters(1280, width_coefficient), 1, padding="same", use_bias=False,
        kernel_initializer=CONV_INITIALIZER, name="top_conv",
    )(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name="top_bn")(x)
    x = layers.Activation("swish", name="top_activation")(x)
    return keras.Model(inputs, x, name=name)


def build_encoder(config: MSSSConfig, name="encoder") -> keras.Model:
    """The MSSS encoder: log-mel [batch, frames, n_mels] -> frame features [batch, t', C].

    C is 1280 for B0. t' = frames // 32; 96 frames (0.96 s) give 3 frames.
    """
    log_mel = keras.Input(shape=(None, config.n_mels), name="log_mel")
    x = log_mel
    if config.input_normalization == "window_mean":
        x = WindowMeanSubtraction(name="window_mean_subtraction")(x)
    image = layers.Reshape((-1, config.n_mels, 1), name="add_channel")(x)
    body = build_efficientnet_body(
        n_mels=config.n_mels,
        width_coefficient=config.width_coefficient,
        depth_coefficient=config.depth_coefficient,
        drop_connect_rate=config.drop_connect_rate,
        bn_momentum=config.batch_norm_momentum,
    )
    frames = FrequencyPooling(config.frequency_pooling, name="frequency_pooling")(body(image))
    return keras.Model(log_mel, frames, name=name)


def encoder_frames(num_log_mel_frames: int) -> int:
    """Encoder output frames for a log-mel input of `num_log_mel_frames` frames."""
    return num_log_mel_frames // TIME_STRIDE


def stage_output_layer(body: keras.Model, layer: str) -> str:
    """The name of the layer of the EfficientNet `body` that `layer` means: for a stage
    ("stage1" .. "stage7", `EMBEDDING_LAYERS`) its last block's residual sum (or its
    projection when the block has none); "top": "top_activation"; the name of a block's
    or the top's layer (e.g. "block4b_add") is taken as it is."""
    names = [l.name for l in body.layers]
    if layer == "top":
        return "top_activation"
    if layer in EMBEDDING_LAYERS and layer != "output":
        prefix = f"block{layer[len('stage'):]}"
        return [n for n in names if n.startswith(prefix)
                and n.endswith(("_add", "_project_bn"))][-1]
    if layer in names and layer.startswith(("block", "top_")):
        return layer
    raise ValueError(f"embedding layer {layer!r}: choose one of {', '.join(EMBEDDING_LAYERS)} "
                     f"(or the name of a block's layer of the EfficientNet body)")


def _stage_of(layer_name: str) -> int:
    """1-7 for a block's layer ("block4b_add" -> 4), 7 for the top."""
    return int(layer_name[len("block")]) if layer_name.startswith("block") else len(B0_STAGES)


def encoder_at_layer(encoder: keras.Model, layer: str) -> keras.Model:
    """The MSSS encoder read at `layer` (`msss_tf.config.EMBEDDING_LAYERS`): "output"
    returns `encoder` itself; a stage ("stage1" .. "stage7") or "top" a model that reads
    that layer instead.

    log-mel [batch, frames, n_mels] -> [batch, frames // 32, F_l * C_l]: the layer's
    feature map with frequency flattened (not pooled: the bands keep their place) and time
    averaged to the encoder's own frames (one per 320 ms), so windows and frames line up
    exactly as with the whole encoder. Shares the encoder's weights.
    """
    if layer == "output":
        return encoder
    body = encoder.get_layer("efficientnet")
    name = stage_output_layer(body, layer)
    cut = keras.Model(body.input, body.get_layer(name).output, name=f"efficientnet_to_{layer}")
    n_mels = encoder.input_shape[-1]
    stages = _stage_of(name)
    stride = 2 * math.prod(stage[5] for stage in B0_STAGES[:stages])  # the stem halves too
    bands, channels = cut.output.shape[2], cut.output.shape[3]
    log_mel = keras.Input(shape=(None, n_mels), name="log_mel")
    x = log_mel
    names = [l.name for l in encoder.layers]
    if "window_mean_subtraction" in names:
        x = encoder.get_layer("window_mean_subtraction")(x)
    x = cut(encoder.get_layer("add_channel")(x))
    x = layers.Reshape((-1, bands * channels), name="flatten_frequency")(x)
    x = layers.AveragePooling1D(TIME_STRIDE // stride, name="pool_to_encoder_frames")(x)
    return keras.Model(log_mel, x, name=f"encoder_at_{layer}")
