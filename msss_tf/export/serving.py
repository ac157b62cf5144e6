"""Exports: probes (and, later, the encoder) as SavedModels that take raw waveforms.

Following YAMNet's export: the Keras pieces are wrapped in a `tf.Module` whose
`tf.function`s have explicit input signatures and return dicts of named outputs, saved
with `tf.saved_model.save` under a `serving_default` signature. The front end is inside
the graph, so a client sends float32 waveforms at 16 kHz and nothing else.

TFLite (one 0.96 s window, float32 waveform in, built-in ops only, no Flex), three
variants; the log-mel front end and a non-finite guard (NaN outputs for NaN/Inf input:
`window_tflite_function`) are float32 in all of them:

* ``float32``: nothing quantised.
* ``dynamic_int8``: dynamic-range quantisation: int8 per-channel conv weights (those of
  >= 1024 elements), activations float (the hybrid kernels quantise each input on the
  fly), except the first encoder blocks, kept float.
* ``int8``: full integer: int8 weights and activations, static ranges calibrated on
  real audio windows, except the first encoder blocks, deny-listed (kept float).

How many leading blocks (stem, each MBConv block, top) stay float is chosen per export
(`convert_window_tflite_info`): the fewest for which the frames keep a min cosine
>= 0.995 to float on held-out windows (a bisection: up to ~log2(blocks) + 2 conversions).
Why: a trained encoder amplifies small rounding errors block by block, so keeping its
first blocks float recovers dynamic_int8. Static int8 also needs one range per tensor to
hold every window, padded and silent ones included; on trained encoders it falls short
of the target, and the export then keeps the all-int8 file, warns and records
``meets_target: false`` in export_summary.json (ship dynamic_int8).
Measurements: docs/deployment.md and docs/findings.md.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import re
import shutil
import time
import types
import warnings
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from msss_tf.atomic import write_bytes_atomically
from msss_tf.config import CONFIG_FILENAME, MSSSConfig
from msss_tf.embedding.keras_embedder import Embedder
from msss_tf.embedding.tflite import TFLiteEmbedder
from msss_tf.embedding.windows import WindowPlan
from msss_tf.tflite_file import (TFLITE_CONFIG_METADATA, add_tflite_metadata, assert_no_flex,
                                  graph_output_names, op_output_names)
from msss_tf.tflite_metadata import add_embedder_metadata

WAVEFORM_SPEC = tf.TensorSpec([None, None], tf.float32, name="waveform")


class OutputFolderError(OSError, ValueError):
    """An output folder (export, probe results, embedding cache) cannot be written:
    read-only, permission denied, read-only file system, disk full. The message names the
    folder and the flag. Both an OSError and a ValueError: the CLI reports ValueErrors as
    `msss-tf CMD: error: ...` (exit 2) instead of a traceback."""


# Errors of writing that the user fixes by choosing or repairing the folder.
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                 getattr(errno, "EDQUOT", errno.ENOSPC)}


@contextlib.contextmanager
def writing_to(folder: str, what: str):
    """Turns a PermissionError (or a read-only file system, a full disk; or TensorFlow's
    PermissionDeniedError) raised inside the block into an `OutputFolderError` that names
    `folder` and says what was being written (`what`, e.g. "the encoder export
    (--export_dir)")."""
    try:
        yield
    except OutputFolderError:
        raise
    except OSError as e:
        if not (isinstance(e, PermissionError) or e.errno in _WRITE_ERRNOS):
            raise
        why = e.strerror or str(e) or type(e).__name__
        if e.filename and os.path.abspath(os.fspath(e.filename)) != os.path.abspath(folder):
            why += f": {e.filename}"
        raise _folder_error(folder, what, why, e.errno) from e
    except tf.errors.PermissionDeniedError as e:
        raise _folder_error(folder, what, e.message, errno.EACCES) from e


def _folder_error(folder, what, why, code) -> OutputFolderError:
    error = OutputFolderError(
        f"cannot write {what} to the folder {folder} ({why}): make it writable, free some "
        f"space, or choose another folder")
    error.errno = code
    return error


def ensure_writable_folder(folder: str, what: str) -> str:
    """Creates `folder` if needed and checks that a file can be written in it, before
    any long work; `OutputFolderError` (naming it) otherwise. Returns `folder`."""
    import tempfile

    with writing_to(folder, what):
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(handle)
        os.remove(probe)
    return folder


def _check_waveform(waveform, nonempty: bool = False):
    """Clear errors for a wrong dtype or rank (when traced), and for NaN/Inf audio (when
    run) instead of NaN outputs; with `nonempty`, also for an empty batch or zero-length
    clips. Returns the checked waveform."""
    waveform = tf.convert_to_tensor(waveform)
    if waveform.dtype != tf.float32:
        raise TypeError(f"waveform must be float32 [batch, samples] at 16 kHz, got "
                        f"{waveform.dtype.name}")
    if waveform.shape.rank is not None and waveform.shape.rank != 2:
        raise ValueError(f"waveform must be float32 [batch, samples], got shape "
                         f"{waveform.shape} (rank {waveform.shape.rank})")
    if nonempty:
        waveform = _check_nonempty(waveform)
    return tf.debugging.assert_all_finite(waveform, "waveform holds NaN or Inf samples")


class ProbeServingModule(tf.Module):
    """Front end + frozen encoder + trained probe, waveform in, probabilities out.

    Scene tasks: `serving_default(waveform [b, samples])` ->
        {"probabilities": [b, C], "label_names": [C]}.
    Event tasks: -> {"probabilities": [b, T, C], "timestamps_ms": [b, T], "label_names": [C]},
        one row per timestamp of the embedder's regular grid.
    """

    def __init__(self, embedder: Embedder, probe, label_names: Sequence[str], kind: str):
        super().__init__(name="msss_probe")
        self.embedder = embedder
        self.probe = probe
        self.kind = kind
        self.label_names = tf.constant(list(label_names), tf.string)
        self.sample_rate = tf.constant(embedder.sample_rate, tf.int32)

    @tf.function(input_signature=[WAVEFORM_SPEC])
    def serving_default(self, waveform):
        waveform = _check_waveform(waveform)
        if self.kind == "scene":
            embeddings = self.embedder.scene_embeddings_tf(waveform)
            return {"probabilities": self.probe(embeddings, training=False),
                    "label_names": self.label_names}
        embeddings, timestamps = self.embedder.timestamp_embeddings_tf(waveform)
        shape = tf.shape(embeddings)
        flat = tf.reshape(embeddings, [-1, self.embedder.timestamp_embedding_size])
        probs = self.probe(flat, training=False)
        probs = tf.reshape(probs, [shape[0], shape[1], -1])
        return {"probabilities": probs, "timestamps_ms": timestamps,
                "label_names": self.label_names}


def next_version(base_dir: str) -> int:
    """The next free integer version under a TF Serving base directory."""
    if not os.path.isdir(base_dir):
        return 1
    versions = [int(d) for d in os.listdir(base_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def save_module(module: tf.Module, export_dir: str, overwrite: bool = False) -> str:
    """Saves with `serving_default`; writes to a temporary folder, then renames it, so
    an interrupted export never leaves a half-written model at `export_dir`."""
    if os.path.exists(export_dir):
        if not overwrite:
            raise FileExistsError(f"{export_dir} exists; pass overwrite to replace it")
        shutil.rmtree(export_dir)
    tmp = export_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    parent = os.path.dirname(os.path.abspath(export_dir))
    with writing_to(parent, "a SavedModel (--export_dir)"):
        os.makedirs(parent, exist_ok=True)
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.serving_default})
        os.replace(tmp, export_dir)
    return export_dir


def export_probe(embedder: Embedder, probe, label_names, kind: str, export_dir: str,
                 overwrite: bool = False) -> str:
    """Exports a probe joined with the frozen front end and encoder as a SavedModel."""
    module = ProbeServingModule(embedder, probe, label_names, kind)
    save_module(module, export_dir, overwrite=overwrite)
    with writing_to(export_dir, "the probe's labels.txt (--export_dir)"):
        with open(os.path.join(export_dir, "assets", "labels.txt"), "w") as f:
            f.write("\n".join(label_names) + "\n")
    return export_dir


CLASSIFIER_TFLITE = "classifier_float32.tflite"  # in <probe version>/tflite/


def export_probe_classifier(embedder: Embedder, probe, label_names, name: str,
                            export_dir: str) -> str:
    """Writes the probe's classifier for MediaPipe's AudioClassifier
    (`convert_probe_tflite`) to `<export_dir>/tflite/classifier_float32.tflite`, beside
    the probe's SavedModel; returns its path."""
    content = convert_probe_tflite(embedder, probe, label_names, name)
    folder = os.path.join(export_dir, TFLITE_DIR)
    path = os.path.join(folder, CLASSIFIER_TFLITE)
    with writing_to(folder, "the probe's classifier .tflite (--export_dir)"):
        write_bytes_atomically(path, content)
    return path


# =============================================================================== encoder
# The encoder itself as a SavedModel for TF Serving, and as TFLite for one window.

TFLITE_VARIANTS = ("float32", "dynamic_int8", "int8")
TFLITE_DIR = "tflite"  # inside the version folder: <base>/<version>/tflite/encoder_<v>.tflite
SUMMARY_FILENAME = "export_summary.json"


def _raw_variables(embedder: Embedder) -> list:
    """The encoder's tf.Variables (Keras 3 wraps each in a `keras.Variable`)."""
    return [getattr(v, "value", v) for v in embedder.encoder.variables]


class _VariableHolder(tf.Module):
    """Tracks the raw tf.Variables: with only the Keras wrappers tracked, the TFLite
    converter keeps them as VAR_HANDLE/READ_VARIABLE ops (uninitialised on device)
    instead of freezing them into constants."""

    def __init__(self, embedder: Embedder):
        super().__init__(name="msss_variables")
        self.embedder = embedder
        self.encoder_variables = _raw_variables(embedder)


def _check_nonempty(waveform):
    """Run-time errors for a wrong rank, an empty batch or zero-length clips, before any
    work. (A signature called with a rank-1 tensor, e.g. by TF Serving, is not rejected
    before the graph runs: EnsureShape names the problem instead of a slice deep inside.)"""
    waveform = tf.ensure_shape(waveform, [None, None], name="waveform_must_be_batch_x_samples")
    shape = tf.shape(waveform)
    checks = [
        tf.debugging.assert_positive(
            shape[0], message="waveform: empty batch (0 clips); send [batch >= 1, samples]"),
        tf.debugging.assert_positive(
            shape[1], message="waveform: zero-length clips (0 samples); send audio"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(waveform)


class EncoderServingModule(tf.Module):
    """The frozen front end + encoder, waveform in, embeddings out (TF Serving, Python).

    Signatures (inputs float32 at `sample_rate`, 16 kHz):

    * `serving_default(waveform [batch, samples])`, any length (a clip shorter than one
      0.96 s window is zero-padded) -> `scene_embedding` [batch, D],
      `timestamp_embeddings` [batch, T, D], `timestamps_ms` [batch, T] (40 ms hop), as
      `Embedder.scene_embeddings_tf` / `timestamp_embeddings_tf`.
    * `window(waveform [batch, segment_samples])`, exactly one 0.96 s window per row
      (15600 samples), for streaming -> `frames` [batch, 3, D] (the window's encoder
      frames, 320 ms apart) and `embedding` [batch, D] (their mean).

    Both check their input in the graph: NaN/Inf samples, an empty batch and zero-length
    clips fail with an InvalidArgumentError that says so. A wrong dtype or rank never
    reaches the graph: the signature rejects it.

    Python callers of the loaded SavedModel also get `scene_embeddings(waveform)` and
    `timestamp_embeddings(waveform)` (each computes only its half of `serving_default`),
    and the variables `sample_rate`, `embedding_size`, `hop_ms`, `window_samples`.
    """

    def __init__(self, embedder: Embedder, config_asset: Optional[str] = None):
        super().__init__(name="msss_encoder")
        # The Keras objects stay untracked (a plain holder) and their raw tf.Variables are
        # tracked instead: each weight is saved once, and a TFLite converter reading this
        # SavedModel freezes them (see _VariableHolder).
        self._keras = types.SimpleNamespace(embedder=embedder)
        self.encoder_variables = _raw_variables(embedder)
        config = embedder.config
        samples = config.segment_samples
        self.sample_rate = tf.Variable(config.sample_rate, trainable=False, name="sample_rate")
        self.embedding_size = tf.Variable(embedder.scene_embedding_size, trainable=False,
                                          name="embedding_size")
        self.hop_ms = tf.Variable(embedder.hop_ms, dtype=tf.float32, trainable=False,
                                  name="hop_ms")
        self.window_samples = tf.Variable(samples, trainable=False, name="window_samples")
        if config_asset is not None:  # copied into assets/ by tf.saved_model.save
            self.config_asset = tf.saved_model.Asset(config_asset)
        window_spec = tf.TensorSpec([None, samples], tf.float32, name="waveform")
        self.scene_embeddings = tf.function(self._scene, input_signature=[WAVEFORM_SPEC])
        self.timestamp_embeddings = tf.function(self._timestamps,
                                                input_signature=[WAVEFORM_SPEC])
        self.serving_default = tf.function(self._serve, input_signature=[WAVEFORM_SPEC])
        self.window = tf.function(self._window, input_signature=[window_spec])

    @property
    def embedder(self) -> Embedder:
        return self._keras.embedder

    def _checked(self, waveform):
        return _check_waveform(waveform, nonempty=True)

    def _scene(self, waveform):
        return self.embedder.scene_embeddings_tf(self._checked(waveform))

    def _timestamps(self, waveform):
        return self.embedder.timestamp_embeddings_tf(self._checked(waveform))

    def _serve(self, waveform):
        embeddings, timestamps = self.timestamp_embeddings(waveform)
        return {"scene_embedding": self.scene_embeddings(waveform),
                "timestamp_embeddings": embeddings, "timestamps_ms": timestamps}

    def _window(self, waveform):
        waveform = self._checked(waveform)
        # The signature declares [batch, segment_samples], but a caller of the saved
        # signature (TF Serving, `signatures["window"]`) is not held to it: without this
        # check 16000 samples fail deep inside the encoder, in a reshape.
        config = self.embedder.config
        samples = config.segment_samples
        seconds = config.segment_frames * config.stft_hop / config.sample_rate  # 0.96
        check = tf.debugging.assert_equal(
            tf.shape(waveform)[1], samples,
            message=f"window: each row must hold exactly {samples} samples (one "
                    f"{seconds:g} s window at {config.sample_rate} Hz); for audio of "
                    f"another length use the serving_default signature. Samples per row:")
        with tf.control_dependencies([check]):
            waveform = tf.identity(waveform)
        frames = self.embedder.window_frames_tf(waveform)
        return {"embedding": tf.reduce_mean(frames, axis=1), "frames": frames}

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default, "window": self.window}


def _as_embedder(model_or_path, hop_ms: float = 40.0):
    """(Embedder, the run's msss_config.json path or None, a name for the source)."""
    if isinstance(model_or_path, Embedder):
        return model_or_path, None, type(model_or_path).__name__
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        config_file = None
        for candidate in (os.path.join(path, CONFIG_FILENAME),
                          os.path.join(os.path.dirname(path), CONFIG_FILENAME)):
            if os.path.isfile(candidate):
                config_file = candidate
                break
        return Embedder.from_path(path, hop_ms=hop_ms), config_file, path
    from msss_tf.model import MSSSModel

    if isinstance(model_or_path, MSSSModel):
        return Embedder.from_model(model_or_path, hop_ms=hop_ms), None, "MSSSModel"
    raise TypeError(f"export_encoder: expected an Embedder, an MSSSModel or a path, "
                    f"got {type(model_or_path).__name__}")


def _file_sizes(root: str) -> Dict[str, int]:
    sizes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            sizes[os.path.relpath(path, root)] = os.path.getsize(path)
    return dict(sorted(sizes.items()))


def export_encoder(model_or_path, export_base: str, version: Optional[int] = None,
                   tflite: Iterable[str] = TFLITE_VARIANTS, overwrite: bool = False,
                   representative_audio=None, hop_ms: float = 40.0) -> dict:
    """Exports the frozen front end + encoder for TF Serving and TFLite.

    Layout (TF Serving watches `export_base`; it ignores the non-numeric staging folder):

        export_base/<version>/saved_model.pb, variables/   signatures serving_default, window
        export_base/<version>/assets/msss_config.json       the run's config (no labels)
        export_base/<version>/tflite/encoder_<variant>.tflite   one 0.96 s window, [1, 15600]
        export_base/<version>/export_summary.json           files, sizes, signatures, settings

    Everything is written into `export_base/.<version>.partial` and renamed into place at
    the end, so TF Serving never sees a half-written version.

    Args:
        model_or_path: an `Embedder`, an `MSSSModel`, a run directory or a `.keras` file.
        export_base: the TF Serving base folder (e.g. saved_models/msss_encoder).
        version: integer version; default `next_version(export_base)`.
        tflite: TFLite variants among "float32", "dynamic_int8", "int8"; () for none.
        overwrite: replace an existing `<version>`; otherwise FileExistsError.
        representative_audio: int8 calibration audio, float32 [n, samples] at 16 kHz
            (or a list of 1-D clips), cut into 0.96 s windows; default: windows of
            the built-in synthetic corpus.
        hop_ms: the timestamp hop of `serving_default`.

    Returns:
        a dict: export_dir, version, saved_model (the folder), tflite {variant: path},
        sizes {relative path: bytes}, summary (the path of export_summary.json).
    """
    tflite = tuple(tflite or ())
    unknown = [v for v in tflite if v not in TFLITE_VARIANTS]
    if unknown:
        raise ValueError(f"unknown TFLite variant(s) {unknown}; choose from {TFLITE_VARIANTS}")
    if version is None:
        version = next_version(export_base)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(f"version={version!r}: must be a positive integer (TF Serving)")
    version = int(version)
    export_dir = os.path.join(export_base, str(version))
    if os.path.exists(export_dir) and not overwrite:
        raise FileExistsError(
            f"{export_dir} exists: version {version} is already exported; pass "
            f"overwrite=True (--overwrite) to replace it, or choose another version")
    if tflite:  # the conversion checks each file with the LiteRT interpreter
        from msss_tf.packages import require_modules

        require_modules(("ai_edge_litert",), f"the TFLite export ({', '.join(tflite)})")
    started = time.time()
    embedder, run_config, source = _as_embedder(model_or_path, hop_ms=hop_ms)

    staging = os.path.join(export_base, f".{version}.partial")
    config_dir = staging + ".config"
    with writing_to(export_base, "the encoder export (--export_dir)"):
        # A read-only folder fails here, before any conversion.
        os.makedirs(export_base, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(config_dir, ignore_errors=True)
        os.makedirs(config_dir)
    # Every write below (SavedModel, TFLite files, summary, the final rename) names the
    # folder when it is refused.
    with writing_to(export_base, "the encoder export (--export_dir)"):
        try:
            # The asset's basename is kept: assets/msss_config.json.
            config_file = os.path.join(config_dir, CONFIG_FILENAME)
            if run_config is not None:
                shutil.copyfile(run_config, config_file)
            else:
                embedder.config.save(config_dir)
            module = EncoderServingModule(embedder, config_asset=config_file)
            tf.saved_model.save(module, staging, signatures=module.signatures())
            saved_seconds = time.time() - started

            tflite_paths, tflite_seconds, parity, quantisation = {}, {}, {}, {}
            if tflite:
                os.makedirs(os.path.join(staging, TFLITE_DIR))
                check_windows = representative_windows(embedder.config, representative_audio,
                                                       max_windows=16, seed=1)
            for variant in tflite:
                t0 = time.time()
                content, quantisation[variant] = convert_window_tflite_info(
                    embedder, variant, representative_audio=representative_audio)
                path = os.path.join(staging, TFLITE_DIR, f"encoder_{variant}.tflite")
                with open(path, "wb") as f:
                    f.write(content)
                assert_no_flex(path)
                tflite_paths[variant] = os.path.join(export_dir, TFLITE_DIR,
                                                     f"encoder_{variant}.tflite")
                tflite_seconds[variant] = round(time.time() - t0, 1)
                parity[variant] = tflite_parity(path, embedder, check_windows)

            summary = {
                "format": "msss-tf encoder export 1",
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "source": source,
                "version": version,
                "sample_rate": embedder.sample_rate,
                "embedding_size": embedder.scene_embedding_size,
                "hop_ms": embedder.hop_ms,
                "window_samples": embedder.config.segment_samples,
                "signatures": {
                    "serving_default": {
                        "inputs": {"waveform": "float32 [batch, samples]"},
                        "outputs": {"scene_embedding": "float32 [batch, D]",
                                    "timestamp_embeddings": "float32 [batch, T, D]",
                                    "timestamps_ms": "float32 [batch, T]"}},
                    "window": {
                        "inputs": {"waveform":
                                   f"float32 [batch, {embedder.config.segment_samples}]"},
                        "outputs": {"embedding": "float32 [batch, D]",
                                    "frames": "float32 [batch, 3, D]"}},
                },
                "tflite": {
                    variant: {"file": os.path.join(TFLITE_DIR, f"encoder_{variant}.tflite"),
                              "input": f"waveform float32 [1, {embedder.config.segment_samples}]",
                              "outputs": ["embedding [1, D]", "frames [1, 3, D]"],
                              "quantization": _VARIANT_NOTES[variant],
                              **({"kept_float": quantisation[variant]} if quantisation[variant]
                                 else {}),
                              "parity_vs_keras": parity[variant],
                              "seconds": tflite_seconds[variant]}
                    for variant in tflite
                },
                "seconds": {"saved_model": round(saved_seconds, 1),
                            "total": round(time.time() - started, 1)},
            }
            sizes = _file_sizes(staging)
            summary["sizes"] = sizes
            summary["saved_model_bytes"] = sum(
                size for name, size in sizes.items() if not name.startswith(TFLITE_DIR + os.sep))
            with open(os.path.join(staging, SUMMARY_FILENAME), "w") as f:
                json.dump(summary, f, indent=2)
                f.write("\n")
            sizes[SUMMARY_FILENAME] = os.path.getsize(os.path.join(staging, SUMMARY_FILENAME))

            if os.path.exists(export_dir):  # overwrite: move the old one aside, then swap
                old = os.path.join(export_base, f".{version}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(export_dir, old)
                os.replace(staging, export_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, export_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(config_dir, ignore_errors=True)
    return {
        "export_dir": export_dir,
        "version": version,
        "saved_model": export_dir,
        "tflite": tflite_paths,
        "sizes": dict(sorted(sizes.items())),
        "summary": os.path.join(export_dir, SUMMARY_FILENAME),
    }


# ========================================================================= TFLite
_VARIANT_NOTES = {
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


def _log_mel_kept_float(frontend, waveform):
    """`frontend(waveform)`, written so that no quantiser touches it.

    Quantising anything between the waveform and the log destroys the log-mel: int8
    magnitudes (per tensor or, in the hybrid kernels of dynamic-range quantisation, per
    row) round quiet bins to 0, whose log is log(log_offset) = -13.8 instead of ~ -3.
    Dynamic-range quantisation has no deny-list and quantises every matmul with a
    constant weight of >= 1024 elements; the mel matrix (257 x 64) is one. Multiplying it
    by a data-dependent exact 1.0, min(1, 1 + |x0|), makes it a non-constant operand the
    quantiser leaves alone (and costs 16 k multiplications per window). The full-int8
    variant deny-lists every op under `FRONTEND_SCOPE` instead.
    """
    spectrum = frontend.spectrogram(waveform)
    one = tf.minimum(1.0, 1.0 + tf.abs(waveform[0, 0]))
    mel = tf.tensordot(spectrum, tf.constant(frontend.mel_matrix) * one, axes=1)
    if frontend.log_compress:
        mel = tf.math.log(mel + frontend.log_offset)
    return mel


# --------------------------------------------------------- selective quantisation
# Why the first encoder blocks may stay float, and the measurements: the module
# docstring. The early blocks amplify whatever error they get, and hold few weights.

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
    data-dependent exact 1.0 (see `_log_mel_kept_float`), so dynamic-range quantisation,
    which has no deny-list and only quantises constant weights, leaves them float. (Batch
    norm is then not folded into those kernels: one extra MUL and ADD per layer.)"""

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
    quantisation deny-lists. `quantized`: the front end written to stay float
    (`_log_mel_kept_float`); `float_kernels`: encoder blocks whose convolution kernels
    dynamic-range quantisation must leave float (`_KernelsKeptFloat`)."""
    samples = embedder.config.segment_samples

    @tf.function(input_signature=[tf.TensorSpec([1, samples], tf.float32, name="waveform")])
    def window(waveform):
        if quantized:
            with tf.name_scope(FRONTEND_SCOPE):
                log_mel = _log_mel_kept_float(embedder.frontend, waveform)
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
            build = _int8_builder(embedder, representative_windows(embedder.config,
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
            content, k, selection = _select_float_blocks(
                build, lambda c: _min_cosine(c, windows, reference), len(blocks), min_cosine,
                try_all_float=variant == "int8")
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
        [window.get_concrete_function()], _VariableHolder(embedder))
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

    holder = _VariableHolder(embedder)
    holder.probe_variables = [getattr(v, "value", v) for v in probe.variables]
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [classify.get_concrete_function()], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = add_tflite_metadata(
        converter.convert(), TFLITE_CONFIG_METADATA,
        json.dumps(dict(embedder.config.to_dict(), _probe=name,
                        _labels=list(label_names))).encode())
    return add_classifier_metadata(content, embedder.config, label_names, name, multilabel)


def _select_float_blocks(build, evaluate, num_blocks: int, min_cosine: float,
                         try_all_float: bool = True):
    """(content, k, selection): the smallest k whose build(k) evaluates >= min_cosine:
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


def _min_cosine(content: bytes, windows: np.ndarray, reference: np.ndarray) -> float:
    """The min cosine of a window model's frames to `reference` [n, J, D] on `windows`."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=content).get_signature_runner()
    got = np.stack([runner(waveform=w[None])["frames"][0] for w in windows])
    return float(_frame_cosines(got, reference).min())


def _frame_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each frame vector (last axis) of `a` to `b`, flattened."""
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return np.sum(a * b, -1) / np.maximum(
        np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def _int8_builder(embedder: Embedder, windows: np.ndarray):
    """Calibrates once; returns build(k): the full-int8 model with the front end, the
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
    cos = _frame_cosines(got, ref)
    return {"windows": int(len(windows)),
            "max_abs_diff": float(np.abs(got - ref).max()),
            "output_scale": float(np.abs(ref).max()),
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean())}
