"""SavedModel exports that take raw waveforms: the encoder (for TF Serving, with its TFLite
files) and the probes.

Following YAMNet's export: the Keras pieces are wrapped in a `tf.Module`
(`EncoderServingModule`, `ProbeServingModule`) whose `tf.function`s have explicit input
signatures and return dicts of named outputs, saved with `tf.saved_model.save` under a
`serving_default` signature. The front end is inside the graph, so a client sends float32
waveforms at 16 kHz and nothing else; NaN/Inf samples, an empty batch or zero-length clips
fail in the graph with an error that says so.

Writes are all-or-nothing: `save_module` and `export_encoder` write into a staging
folder and rename it into place, so TF Serving (which watches the base folder's integer
versions, `next_version`) never sees a half-written model; a folder that cannot be
written raises `msss_tf.outputs.OutputFolderError`. The TFLite files inside an encoder
export come from `msss_tf.export.tflite`.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
import types
from typing import Dict, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from msss_tf.atomic import write_bytes_atomically
from msss_tf.config import CONFIG_FILENAME
from msss_tf.embedding.keras_embedder import Embedder
from msss_tf.export.tflite import (TFLITE_VARIANTS, VARIANT_NOTES, convert_probe_tflite,
                                   convert_window_tflite_info, encoder_tf_variables,
                                   representative_windows, tflite_parity)
from msss_tf.outputs import writing_to
from msss_tf.tflite_file import assert_no_flex

WAVEFORM_SPEC = tf.TensorSpec([None, None], tf.float32, name="waveform")
TFLITE_DIR = "tflite"  # inside the version folder: <base>/<version>/tflite/encoder_<v>.tflite
CLASSIFIER_TFLITE = "classifier_float32.tflite"  # in <probe version>/tflite/
SUMMARY_FILENAME = "export_summary.json"


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


# ============================================================================ encoder
# The encoder itself as a SavedModel for TF Serving (and its TFLite files for one window).


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
        # SavedModel freezes them (see `msss_tf.export.tflite.VariableHolder`).
        self._keras = types.SimpleNamespace(embedder=embedder)
        self.encoder_variables = encoder_tf_variables(embedder)
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
    from msss_tf.model.msss_model import MSSSModel

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
                              "quantization": VARIANT_NOTES[variant],
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
