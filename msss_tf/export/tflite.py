"""TFLite conversion and quantisation of the encoder (one 0.96 s window) and of a probe's
classifier: built-in ops only (never SELECT_TF_OPS), float32 waveform in.

Window files (`convert_window_tflite(_info)`): `waveform` float32 [1, segment_samples] ->
`embedding` [1, D] and `frames` [1, 3, D], in three variants (`TFLITE_VARIANTS`); the
log-mel front end (`LogMelFrontEnd.log_mel_kept_float`) and a non-finite guard (NaN
outputs for NaN/Inf input: `window_tflite_function`) are float32 in all of them:

* ``float32``: nothing quantised.
* ``dynamic_int8``: dynamic-range quantisation: int8 per-channel conv weights (those of
  >= 1024 elements), activations float (the hybrid kernels quantise each input on the
  fly), except the first encoder blocks, kept float.
* ``int8``: full integer: int8 weights and activations, static ranges calibrated on
  real audio windows (`representative_windows`), except the first encoder blocks,
  deny-listed (kept float; `int8_builder`).

How many leading blocks (`encoder_blocks`: stem, each MBConv block, top) stay float is
chosen per export: the fewest for which the frames keep a min cosine >= `MIN_COSINE` to
the Keras encoder on held-out windows (`select_float_blocks`: a bisection, up to
~log2(blocks) + 2 conversions). When even the whole encoder kept float misses the target,
the all-int8 file is returned with a warning and ``meets_target: false`` in its info.
`tflite_parity` measures a written file against the Keras encoder.

Every file carries the MSSSConfig JSON in its metadata ("msss_config", `msss_tf.tflite_file`)
and the TFLite Model Metadata MediaPipe reads (`msss_tf.tflite_metadata`). Why the first
blocks are kept float, and the measurements: docs/deployment.md and docs/findings.md.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.embedding.keras_embedder import Embedder
from msss_tf.embedding.tflite import TFLiteEmbedder
from msss_tf.embedding.windows import WindowPlan
from msss_tf.tflite_file import (TFLITE_CONFIG_METADATA, add_tflite_metadata,
                                  graph_output_names, op_output_names)
from msss_tf.tflite_metadata import add_embedder_metadata

TFLITE_VARIANTS = ("float32", "dynamic_int8", "int8")


def encoder_tf_variables(embedder: Embedder) -> list:
    """The encoder's tf.Variables (Keras 3 wraps each in a `keras.Variable`)."""
    return [getattr(v, "value", v) for v in embedder.encoder.variables]


class VariableHolder(tf.Module):
    """The trackable object handed to the TFLite converter with a concrete function: it
    tracks the encoder's raw tf.Variables (`encoder_tf_variables`). With only the Keras
    wrappers tracked, the converter keeps them as VAR_HANDLE/READ_VARIABLE ops
    (uninitialised on device) instead of freezing them into constants."""

    def __init__(self, embedder: Embedder):
        super().__init__(name="msss_variables")
        self.embedder = embedder
        self.encoder_variables = encoder_tf_variables(embedder)


# What each variant quantises, as export_summary.json states it.
VARIANT_NOTES = {
    "float32": "none: float32 weights and activations",
    "dynamic_int8": "dynamic range: int8 weights, float activations (no calibration data), "
                    "except the encoder blocks in kept_float.float_blocks",
    "int8": "full integer: int8 weights and activations of the encoder, calibrated on real "
            "audio windows, except the encoder blocks in kept_float.float_blocks; the "
            "STFT/mel/log front end and the input/output stay float32",
}


def representative_windows(config: MSSSConfig, audio=None, max_windows: int = 128,
                           seed: int = 0, hop_ms: float = 40.0) -> np.ndarray:
    """Calibration windows float32 [n, segment_samples] for int8 quantisation.

    The windows the embedders really encode (`WindowPlan`): each clip's scene windows
    and its timestamp windows, which include the zero-padded ones at the clip's edges
    (their log-mel holds log(log_offset) regions, the extreme values the encoder sees),
    sampled down to `max_windows`. `audio`: clips at 16 kHz, [n, samples] or a list of
    1-D arrays; default: 24 clips of 2 s of the built-in synthetic corpus.
    """
    plan = WindowPlan(config, hop_ms)
    hop, window = config.stft_hop, plan.window_samples
    if audio is None:
        from msss_tf.data.synthetic import synthetic_corpus

        audio = synthetic_corpus(num_clips=24, clip_seconds=2.0,
                                 sample_rate=config.sample_rate, seed=1234)
    if isinstance(audio, np.ndarray) and audio.ndim == 1:
        audio = [audio]
    out = []
    for clip in audio:
        clip = np.asarray(clip, np.float32).reshape(-1)
        if len(clip) == 0:
            continue
        padded = np.pad(clip, (0, int(plan.scene_pad(len(clip)))))
        for start in plan.scene_starts(plan.num_frames(len(padded))).numpy():
            out.append(padded[start * hop:start * hop + window])
        starts, _, _, end_pad = plan.timestamp_plan(len(clip))
        padded = np.pad(clip, (plan.start_pad, int(end_pad)))
        for start in starts.numpy():
            out.append(padded[start * hop:start * hop + window])
    if not out:
        raise ValueError("representative_audio holds no audio")
    out = np.stack(out)
    if not np.all(np.isfinite(out)):
        raise ValueError("representative_audio holds NaN or Inf samples")
    if len(out) > max_windows:
        out = out[np.sort(np.random.default_rng(seed).choice(len(out), max_windows,
                                                             replace=False))]
    return out


FRONTEND_SCOPE = "msss_frontend"  # name scope of the front end in the quantised graphs

# --------------------------------------------------------- selective quantisation
# The early blocks amplify whatever error they get, and hold few weights: keeping the
# first k float (module docstring) recovers the accuracy at little cost in size.

_BLOCK_PATTERN = re.compile(r"(?:^|/)(stem|top|block\d+[a-z])_")


def _block_of(name: str) -> Optional[str]:
    """The encoder block of a layer or graph-node name: "stem", "block1a", ..., "top",
    or None (front end, pooling, reshapes)."""
    match = _BLOCK_PATTERN.search(name)
    return match.group(1) if match else None


def _block_key(block: str):
    return (0, "") if block == "stem" else (10 ** 6, "") if block == "top" else (
        int(block[5:-1]), block[-1])


def encoder_blocks(encoder) -> list:
    """The encoder's blocks in order: ["stem", "block1a", "block2a", ..., "top"]."""
    blocks = {_block_of(layer.name) for layer in encoder._flatten_layers()}
    return sorted((b for b in blocks if b), key=_block_key)


class _KernelsKeptFloat:
    """While tracing: the convolution kernels of `blocks` are multiplied by a
    data-dependent exact 1.0 (as `LogMelFrontEnd.log_mel_kept_float` does to the mel
    matrix), so dynamic-range quantisation, which has no deny-list and only quantises
    constant weights, leaves them float. (Batch norm is then not folded into those
    kernels: one extra MUL and ADD per layer.)"""

    def __init__(self, encoder, blocks: Sequence[str], one):
        self.layers = [layer for layer in encoder._flatten_layers()
                       if isinstance(layer, _keras_conv_types()) and _block_of(layer.name) in
                       set(blocks)]
        self.one = one

    def __enter__(self):
        self.saved = []
        for layer in self.layers:
            attr = "_kernel" if "_kernel" in vars(layer) else "kernel"
            self.saved.append((layer, attr, vars(layer)[attr]))
            object.__setattr__(layer, attr, vars(layer)[attr] * self.one)
        return self

    def __exit__(self, *exc):
        for layer, attr, value in self.saved:
            object.__setattr__(layer, attr, value)
        return False


def _keras_conv_types():
    import keras

    return (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


GUARD_SCOPE = "msss_nonfinite_guard"  # name scope of the NaN/Inf guard (kept float)


def _nonfinite_guard(waveform):
    """A scalar: 0.0 when every sample of `waveform` is finite, NaN when any is NaN or
    +-Inf: the sum over the window of x - x (each term 0 or NaN, so no finite input can
    overflow it). Built-in ops only (SUB, SUM): TFLite has no Assert or CheckNumerics."""
    return tf.reduce_sum(waveform - waveform)


def window_tflite_function(embedder: Embedder, quantized: bool = False,
                           float_kernels: Sequence[str] = ()):
    """The tf.function converted to TFLite: `waveform` float32 [1, segment_samples] ->
    {"embedding": [1, D], "frames": [1, 3, D]}.

    Non-finite input gives NaN outputs: `_nonfinite_guard(waveform)` (0.0 or NaN) is
    added to both float outputs, after the encoder (and after the dequantisation of the
    quantised variants, which would turn NaN into finite numbers); finite input is
    unchanged (x + 0.0 = x). Its ops are under `GUARD_SCOPE`, which full-int8
    quantisation deny-lists. `quantized`: the front end in its form that stays float
    (`LogMelFrontEnd.log_mel_kept_float`), under `FRONTEND_SCOPE`; `float_kernels`:
    encoder blocks whose convolution kernels dynamic-range quantisation must leave float
    (`_KernelsKeptFloat`)."""
    samples = embedder.config.segment_samples

    @tf.function(input_signature=[tf.TensorSpec([1, samples], tf.float32, name="waveform")])
    def window(waveform):
        if quantized:
            with tf.name_scope(FRONTEND_SCOPE):
                log_mel = embedder.frontend.log_mel_kept_float(waveform)
                one = tf.minimum(1.0, 1.0 + tf.abs(waveform[0, 0]))
            with _KernelsKeptFloat(embedder.encoder, float_kernels, one):
                frames = embedder.encoder(log_mel, training=False)
        else:
            frames = embedder.window_frames_tf(waveform)
        embedding = tf.reduce_mean(frames, axis=1)
        with tf.name_scope(GUARD_SCOPE):
            guard = _nonfinite_guard(waveform)
            return {"embedding": embedding + guard, "frames": frames + guard}

    return window


MIN_COSINE = 0.995  # selection target on held-out windows (the tests ask >= 0.99)


def convert_window_tflite(embedder: Embedder, variant: str = "float32",
                          representative_audio=None, float_blocks="auto",
                          min_cosine: float = MIN_COSINE) -> bytes:
    """The fixed-window encoder as a TFLite flatbuffer with built-in ops only (never
    SELECT_TF_OPS): input `waveform` float32 [1, segment_samples] -> `embedding` [1, D]
    and `frames` [1, 3, D]. See `convert_window_tflite_info` (this returns its bytes)."""
    return convert_window_tflite_info(embedder, variant, representative_audio,
                                      float_blocks, min_cosine)[0]


def convert_window_tflite_info(embedder: Embedder, variant: str = "float32",
                               representative_audio=None, float_blocks="auto",
                               min_cosine: float = MIN_COSINE):
    """The window TFLite flatbuffer and how it was quantised: (bytes, info).

    Variants:
      "float32": no quantisation.
      "dynamic_int8": Optimize.DEFAULT without calibration data: the encoder's conv
        weights (those of >= 1024 elements) are int8 per channel and the hybrid kernels
        quantise their float input activations on the fly; except in the blocks kept
        float (below).
      "int8": full integer quantisation of the encoder's weights and activations,
        calibrated on `representative_windows` (real audio), ops
        [TFLITE_BUILTINS_INT8, TFLITE_BUILTINS]; except the blocks kept float, which are
        deny-listed (what `tf.lite.experimental.QuantizationDebugger`'s selective
        quantisation does). Input and output are float32.
    In both, the front end (framing, Hann window, RFFT, |.|, mel, log) stays float32:
    RFFT/abs/log have no int8 kernels, and int8 audio or spectra would wreck the log-mel.

    Stages kept float (`float_blocks`): a list of `encoder_blocks` names that must be the
    first k of them, or "auto": the fewest first blocks for which the variant's frames
    keep a min cosine >= `min_cosine` to the Keras encoder on held-out windows of the
    representative audio (all quantised first; then a bisection over k, since the error
    shrinks as more leading blocks stay float). An encoder that quantises well gets [].

    info: {"float_blocks": [...], "quantised_blocks": [...], "selection": [{"float_blocks":
    k, "min_cosine": c}, ...], "min_cosine": the chosen one's} (empty for float32).
    The MSSSConfig JSON goes into the file's metadata ("msss_config"), and the TFLite
    Model Metadata that MediaPipe's AudioEmbedder reads into "TFLITE_METADATA".
    """
    if variant not in TFLITE_VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; choose from {TFLITE_VARIANTS}")
    blocks = encoder_blocks(embedder.encoder)
    info = {}
    if variant == "float32":
        content = _window_converter(embedder, False).convert()
    else:
        if variant == "int8":
            build = int8_builder(embedder, representative_windows(embedder.config,
                                                                   representative_audio))
        else:
            def build(k):
                converter = _window_converter(embedder, True, float_kernels=blocks[:k])
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                return converter.convert()
        if float_blocks == "auto":
            windows = representative_windows(embedder.config, representative_audio,
                                              max_windows=16, seed=2)
            reference = embedder.window_frames_tf(tf.constant(windows)).numpy()
            content, k, selection = select_float_blocks(
                build, lambda c: tflite_min_cosine(c, windows, reference), len(blocks),
                min_cosine, try_all_float=variant == "int8")
            info["selection"] = selection
            info["min_cosine"] = next(s["min_cosine"] for s in reversed(selection)
                                      if s["float_blocks"] == k)
            info["meets_target"] = info["min_cosine"] >= min_cosine
            if not info["meets_target"]:
                warnings.warn(
                    f"TFLite {variant}: min cosine to float {info['min_cosine']:.3f} on "
                    f"held-out windows is below {min_cosine} even with the whole encoder "
                    f"kept float ({selection}); this encoder's activations do not fit "
                    f"static int8 ranges. Use dynamic_int8 or float32.", stacklevel=2)
        else:
            float_blocks = list(float_blocks or ())
            k = len(float_blocks)
            if float_blocks != blocks[:k]:
                raise ValueError(f"float_blocks={float_blocks}: must be the first blocks of "
                                 f"{blocks}")
            content = build(k)
        info["float_blocks"] = blocks[:k]
        info["quantised_blocks"] = blocks[k:]
    meta = dict(embedder.config.to_dict(), _hop_ms=embedder.hop_ms, _variant=variant,
                _float_blocks=info.get("float_blocks", blocks))
    content = add_tflite_metadata(content, TFLITE_CONFIG_METADATA, json.dumps(meta).encode())
    # The TFLite Model Metadata that MediaPipe's AudioEmbedder needs (msss_tf.tflite_metadata).
    return add_embedder_metadata(content, embedder.config, variant), info


def _window_converter(embedder: Embedder, quantized: bool, float_kernels=()):
    window = window_tflite_function(embedder, quantized=quantized, float_kernels=float_kernels)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [window.get_concrete_function()], VariableHolder(embedder))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert_probe_tflite(embedder: Embedder, probe, label_names: Sequence[str],
                         name: str = "probe") -> bytes:
    """A probe's classifier for MediaPipe Tasks' AudioClassifier, float32: `waveform`
    float32 [1, segment_samples] -> `probabilities` [1, C], the probe applied to the
    window's embedding (the mean of its frames), one prediction per 0.975 s window as
    YAMNet's classifier gives; with TFLite Model Metadata (input audio at the config's
    rate, output scores) and the label names packed in as labels.txt. A scene probe was
    trained on whole-clip embeddings (the mean over windows): average the windows'
    scores for a clip-level answer."""
    from msss_tf.tflite_metadata import add_classifier_metadata

    samples = embedder.config.segment_samples
    multilabel = getattr(probe.layers[-1].activation, "__name__", "") == "sigmoid"

    @tf.function(input_signature=[tf.TensorSpec([1, samples], tf.float32, name="waveform")])
    def classify(waveform):
        embedding = tf.reduce_mean(embedder.window_frames_tf(waveform), axis=1)
        return {"probabilities": probe(embedding, training=False)}

    holder = VariableHolder(embedder)
    holder.probe_variables = [getattr(v, "value", v) for v in probe.variables]
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [classify.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = add_tflite_metadata(
        converter.convert(), TFLITE_CONFIG_METADATA,
        json.dumps(dict(embedder.config.to_dict(), _probe=name,
                        _labels=list(label_names))).encode())
    return add_classifier_metadata(content, embedder.config, label_names, name, multilabel)


def select_float_blocks(build, evaluate, num_blocks: int, min_cosine: float,
                         try_all_float: bool = True):
    """How many leading encoder blocks to keep float: the search behind
    `convert_window_tflite_info(float_blocks="auto")`, apart from any conversion.
    `build(k)` makes the model with the first k blocks float, `evaluate(content)` scores
    it (a min cosine to float).

    Returns (content, k, selection): the smallest k whose build(k) evaluates >= min_cosine:
    k = 0 first; then k = num_blocks (the whole encoder float; with `try_all_float`
    False it is assumed to pass, as it does when only weights are quantised); if that
    passes, a bisection between them. If even k = num_blocks fails, quantisation of the
    encoder's blocks is not what loses the accuracy (e.g. static int8 ranges on the
    pooled outputs): k = 0 is returned (the smallest file) and the caller warns."""
    selection, results = [], {}

    def attempt(k):
        content = build(k)
        cos = float(evaluate(content))
        selection.append({"float_blocks": k, "min_cosine": round(cos, 5)})
        results[k] = content
        return cos >= min_cosine

    if attempt(0):
        return results[0], 0, selection
    if try_all_float and not attempt(num_blocks):
        return results[0], 0, selection
    lo, hi = 0, num_blocks  # lo fails, hi passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attempt(mid):
            hi = mid
        else:
            lo = mid
    if hi not in results:
        attempt(hi)
    return results[hi], hi, selection


def tflite_min_cosine(content: bytes, windows: np.ndarray, reference: np.ndarray) -> float:
    """The min cosine of a window model's (flatbuffer `content`) frames to `reference`
    [n, J, D] on `windows` [n, samples], run with the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=content).get_signature_runner()
    got = np.stack([runner(waveform=w[None])["frames"][0] for w in windows])
    return float(frame_cosines(got, reference).min())


def frame_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each frame vector (last axis) of `a` to `b`, flattened."""
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return np.sum(a * b, -1) / np.maximum(
        np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def int8_builder(embedder: Embedder, windows: np.ndarray):
    """The full-int8 window model, calibrated once on `windows` [n, segment_samples]
    (`representative_windows`), for any number of leading blocks kept float.

    Returns build(k) -> bytes: the full-int8 model with the front end, the
    non-finite guard (its ops and the two output ADDs: int8 cannot hold NaN) and the
    first k encoder blocks deny-listed (kept float32).

    This is what `tf.lite.experimental.QuantizationDebugger`'s selective quantisation
    does (calibrate only, then `mlir_quantize` with deny-listed nodes), without its
    debug model."""
    from tensorflow.lite.python import convert as tflite_convert

    def representative_dataset():
        for row in windows:
            yield [row[None, :]]

    converter = _window_converter(embedder, True)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = tf.float32
    converter.inference_output_type = tf.float32
    converter.experimental_new_quantizer = True
    converter._experimental_calibrate_only = True  # pylint: disable=protected-access
    calibrated = converter.convert()
    names = op_output_names(calibrated)
    frontend_nodes = [name for name in names if FRONTEND_SCOPE in name]
    if not frontend_nodes:
        raise RuntimeError("int8 export: found no front-end ops to keep in float32")
    guard_nodes = [name for name in names if GUARD_SCOPE in name]
    if not guard_nodes:
        raise RuntimeError("int8 export: found no non-finite guard ops to keep in float32")
    # The guard's ADDs write the graph's outputs, whose tensors the signature names.
    guard_nodes += graph_output_names(calibrated)
    blocks = encoder_blocks(embedder.encoder)

    def build(k):
        kept = set(blocks[:k])
        nodes = frontend_nodes + guard_nodes
        if kept:
            nodes += [name for name in names if name not in frontend_nodes and (
                any(_block_of(part) in kept for part in name.split(";"))
                or "add_channel" in name)]
        return tflite_convert.mlir_quantize(calibrated, fully_quantize=False,
                                            denylisted_nodes=nodes)

    return build


def tflite_parity(path: str, embedder: Embedder, windows: np.ndarray,
                  num_threads: Optional[int] = None) -> dict:
    """How far a window .tflite is from the Keras encoder on `windows` [n, samples]:
    the largest absolute difference of the frames, the float output's scale (max |x|)
    and the cosine similarity of each frame vector (min, mean)."""
    runner = TFLiteEmbedder(path, config=embedder.config, num_threads=num_threads)
    ref = embedder.window_frames_tf(tf.constant(windows, tf.float32)).numpy()
    got = np.stack([runner.window(w)[1] for w in windows])
    cos = frame_cosines(got, ref)
    return {"windows": int(len(windows)),
            "max_abs_diff": float(np.abs(got - ref).max()),
            "output_scale": float(np.abs(ref).max()),
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean())}
