"""Non-finite input to the exported encoder: each raw TFLite file gives NaN outputs for a
window holding NaN or +-Inf (its in-graph guard, built-in ops only), and unchanged outputs
for finite windows; every Python wrapper refuses such input before running anything.

One small perturbed encoder (as in test_export.py); each variant is converted once, with
no encoder block kept float (the blocks kept float: the slow test).
"""

import numpy as np
import pytest
import tensorflow as tf

from msss_tf import hear
from msss_tf.embedding import Embedder, SavedModelEncoder, TFLiteEmbedder, check_window
from msss_tf.export import (
    GUARD_SCOPE,
    TFLITE_VARIANTS,
    convert_window_tflite,
    encoder_blocks,
    tflite_parity,
)
from msss_tf.tflite_file import assert_no_flex
from small_models import clips, perturbed_model

# Each TFLite conversion takes 10-25 s on 2 cores (more under load): the slow stage.
pytestmark = pytest.mark.slow

WINDOW = 15600


def bad_windows(window):
    """{name: the finite `window` [WINDOW] with non-finite samples}."""
    out = {}
    for name, index, value in (("one NaN", 100, np.nan), ("one +Inf", 7, np.inf),
                               ("one -Inf", WINDOW - 1, -np.inf)):
        out[name] = window.copy()
        out[name][index] = value
    out["all NaN"] = np.full_like(window, np.nan)
    return out


@pytest.fixture(scope="module")
def embedder():
    return Embedder.from_model(perturbed_model())


@pytest.fixture(scope="module")
def windows():
    return clips(4.0, n=3, seed=11)[:, 8000:8000 + WINDOW]


@pytest.fixture(scope="module")
def calibration():
    """A little real audio for the int8 calibration (the default corpus is slower)."""
    return clips(2.0, n=4, seed=3)


@pytest.fixture(scope="module")
def tflite_file(embedder, calibration, tmp_path_factory):
    """tflite_file(variant, float_blocks=()) -> the path of that window file, converted
    once per module."""
    folder, paths = tmp_path_factory.mktemp("tflite"), {}

    def get(variant, float_blocks=()):
        key = (variant, tuple(float_blocks))
        if key not in paths:
            path = folder / f"encoder_{variant}_{len(float_blocks)}.tflite"
            path.write_bytes(convert_window_tflite(
                embedder, variant, representative_audio=calibration,
                float_blocks=list(float_blocks)))
            paths[key] = str(path)
        return paths[key]

    return get


def runners(path):
    """Signature runners of `path` with LiteRT's default kernels (XNNPACK delegate), its
    built-in kernels without delegates and its reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    return {kind.name: Interpreter(model_path=path, experimental_op_resolver_type=kind
                                   ).get_signature_runner()
            for kind in (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                         OpResolverType.BUILTIN_REF)}


def assert_guarded(path, embedder, windows, variant):
    """NaN out for every non-finite window, with each kind of kernels; finite and at
    parity with Keras for finite windows; the guard is float32 and writes the outputs."""
    from ai_edge_litert.interpreter import Interpreter

    assert_no_flex(path)
    for kind, runner in runners(path).items():
        assert runner.get_input_details()["waveform"]["dtype"] == np.float32
        for name, window in bad_windows(windows[0]).items():
            out = runner(waveform=window[None])
            for key in ("embedding", "frames"):
                assert out[key].dtype == np.float32
                assert np.isnan(out[key]).all(), (variant, kind, name, key, out[key][..., :4])
        for window in windows:
            out = runner(waveform=window[None])
            assert np.isfinite(out["frames"]).all() and np.isfinite(out["embedding"]).all()
    parity = tflite_parity(path, embedder, windows, num_threads=1)
    print(f"\n{variant}: parity with Keras on finite windows {parity}")
    if variant == "float32":
        assert parity["max_abs_diff"] <= 1e-4 * parity["output_scale"]
    else:
        assert parity["min_cosine"] >= 0.99
    # The guard stays float: its tensors are float32 (and the int32 reduction axes), and
    # float ADDs write both outputs (in the int8 file, after a DEQUANTIZE).
    interpreter = Interpreter(model_path=path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    guard = {t["name"]: np.dtype(t["dtype"]).name for t in tensors.values()
             if GUARD_SCOPE in t["name"]}
    assert sorted(guard.values()).count("float32") >= 2, guard
    assert set(guard.values()) <= {"float32", "int32"}, guard
    outputs = {t["index"] for t in interpreter.get_output_details()}
    writers = [op for op in interpreter._get_ops_details() if set(op["outputs"]) & outputs]
    assert len(writers) == 2 and all(op["op_name"] == "ADD" for op in writers), writers
    for op in writers:
        assert all(tensors[i]["dtype"] == np.float32 for i in op["inputs"]), op


@pytest.mark.parametrize("variant", TFLITE_VARIANTS)
def test_raw_tflite_file_gives_nan_for_nonfinite_input(variant, tflite_file, embedder,
                                                       windows):
    assert_guarded(tflite_file(variant), embedder, windows, variant)


@pytest.mark.slow  # two more conversions (blocks kept float): 30-45 s on 2 shared cores
def test_the_guard_holds_with_encoder_blocks_kept_float(tflite_file, embedder, windows):
    kept = encoder_blocks(embedder.encoder)[:2]
    for variant in ("dynamic_int8", "int8"):
        assert_guarded(tflite_file(variant, kept), embedder, windows, variant)


class _MustNotRun:
    """Stands in for a model's runner: any use fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the model ran ({name}) on non-finite input")

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model ran on non-finite input")


def test_every_wrapper_refuses_nonfinite_input_before_running(tflite_file, embedder,
                                                              windows):
    """TFLiteEmbedder (and msss_tf.hear on a .tflite), SavedModelEncoder (what
    load_encoder returns; its graph checks too, with INVALID_ARGUMENT: test_export.py)
    and check_window raise ValueError naming NaN or Inf, with the model never called."""
    float32_file = tflite_file("float32")
    runner = TFLiteEmbedder(float32_file, num_threads=1)
    runner._runner = _MustNotRun()
    model = hear.load_model(float32_file)
    assert model.kind == "tflite"
    model.embedder._runner = _MustNotRun()
    saved = SavedModelEncoder.__new__(SavedModelEncoder)  # the checks come before the module
    saved.module, saved.window_samples = _MustNotRun(), WINDOW
    saved.scene_embedding_size, saved.hop_ms, saved.sample_rate = 320, 40.0, 16000
    for name, window in bad_windows(windows[0]).items():
        clip = np.concatenate([windows[1], window])[None]  # 1.95 s, bad in its second half
        batch = np.stack([windows[1], window])
        calls = {
            "check_window": lambda: check_window(window, WINDOW),
            "TFLiteEmbedder.window": lambda: runner.window(window),
            "TFLiteEmbedder.scene_embeddings": lambda: runner.scene_embeddings(clip),
            "TFLiteEmbedder.timestamp_embeddings": lambda: runner.timestamp_embeddings(clip),
            "hear.get_scene_embeddings": lambda: hear.get_scene_embeddings(clip, model),
            "hear.get_timestamp_embeddings": lambda: hear.get_timestamp_embeddings(clip, model),
            "SavedModelEncoder.window": lambda: saved.window(batch),
            "SavedModelEncoder.scene_embeddings": lambda: saved.scene_embeddings(clip),
            "SavedModelEncoder.timestamp_embeddings": lambda: saved.timestamp_embeddings(clip),
        }
        for what, call in calls.items():
            with pytest.raises(ValueError, match="holds NaN or Inf samples"):
                call()
            print(f"{name}: {what} refused")
    # The same wrappers still run finite input (the stand-in replaced only the runner).
    fresh = TFLiteEmbedder(float32_file, num_threads=1)
    frames = fresh.window(windows[0])[1]
    want = embedder.window_frames_tf(tf.constant(windows[:1])).numpy()[0]
    np.testing.assert_allclose(frames, want, atol=1e-4 * np.abs(want).max())
