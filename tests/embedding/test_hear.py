"""The HEAR 2021 API (`msss_tf.hear`), checked with the rules of the HEAR validator:
clip lengths 1.07, 1.98, 2.74 and 4.0 s, batch sizes 1 and 3, float32, shapes, embedding
sizes equal to the model's attributes, timestamps regular (jitter < 1 ms), hop <= 50 ms,
never past the end of the audio and the same for every clip; the model is a tf.Module.
Run directory, .keras file and exported SavedModel must all work and agree."""

import os

import numpy as np
import pytest
import tensorflow as tf

from msss_tf import hear
from msss_tf.export import export_encoder
from small_models import make_run_dir

SAMPLE_RATE = 16000
VALIDATOR_SECONDS = (1.07, 1.98, 2.74, 4.0)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    run_dir = make_run_dir(tmp_path_factory.mktemp("run"), seed=2)
    base = str(tmp_path_factory.mktemp("exports") / "encoder")
    export_encoder(run_dir, base, tflite=())
    return {"run_dir": run_dir, "keras": os.path.join(run_dir, "model.keras"),
            "saved_model_base": base, "saved_model": os.path.join(base, "1")}


@pytest.fixture(scope="module")
def models(paths):
    return {name: hear.load_model(path) for name, path in paths.items()}


def audio(seconds, n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    tones = np.sin(2 * np.pi * rng.uniform(100, 2000, size=(n, 1)) * t)
    return (0.3 * tones + 0.05 * rng.normal(size=tones.shape)).astype(np.float32)


def test_load_model_detects_each_kind(models, paths):
    assert {name: m.kind for name, m in models.items()} == {
        "run_dir": "keras", "keras": "keras", "saved_model_base": "saved_model",
        "saved_model": "saved_model"}
    assert models["saved_model_base"].path == paths["saved_model"]  # the newest version
    for model in models.values():
        assert isinstance(model, tf.Module)
        assert model.sample_rate == SAMPLE_RATE
        assert model.scene_embedding_size == model.timestamp_embedding_size == 320


def test_bad_paths_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="needs model_file_path"):
        hear.load_model("")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        hear.load_model(str(tmp_path / "nowhere"))
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ValueError, match=f"{foreign}: neither a run directory"):
        hear.load_model(str(foreign))
    with pytest.raises(ValueError, match="cat.jpg"):
        hear.load_model(str(foreign / "cat.jpg"))


@pytest.mark.parametrize("kind", ["keras", "saved_model"])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("seconds", VALIDATOR_SECONDS)
def test_validator_rules(models, kind, n, seconds):
    model = models[kind]
    x = audio(seconds, n, seed=n)
    scene = hear.get_scene_embeddings(tf.constant(x), model)
    assert isinstance(scene, tf.Tensor) and scene.dtype == tf.float32
    assert scene.shape == (n, model.scene_embedding_size)
    embeddings, timestamps = hear.get_timestamp_embeddings(x, model)  # NumPy in
    assert isinstance(embeddings, tf.Tensor) and isinstance(timestamps, tf.Tensor)
    assert embeddings.dtype == tf.float32 and timestamps.dtype == tf.float32
    num = embeddings.shape[1]
    assert embeddings.shape == (n, num, model.timestamp_embedding_size)
    assert timestamps.shape == (n, num) and num > 1
    ts = timestamps.numpy()
    hops = np.diff(ts, axis=1)
    assert np.abs(hops - hops.mean()).max() < 1.0  # jitter < 1 ms
    assert hops.mean() <= 50.0
    assert ts.min() >= 0 and ts.max() <= 1000 * x.shape[1] / SAMPLE_RATE
    assert np.all(ts == ts[0])  # the same timestamps for every clip
    assert np.all(np.isfinite(embeddings.numpy())) and np.all(np.isfinite(scene.numpy()))


def test_run_dir_keras_file_and_saved_model_agree(models):
    x = audio(2.74, 3, seed=5)
    scene = {k: hear.get_scene_embeddings(x, m).numpy() for k, m in models.items()}
    stamps = {k: hear.get_timestamp_embeddings(x, m) for k, m in models.items()}
    scale = np.abs(stamps["run_dir"][0].numpy()).max()
    assert scale > 0.01
    for kind in ("keras", "saved_model", "saved_model_base"):
        np.testing.assert_allclose(scene[kind], scene["run_dir"], atol=1e-5 * scale)
        np.testing.assert_allclose(stamps[kind][0].numpy(), stamps["run_dir"][0].numpy(),
                                   atol=1e-5 * scale)
        np.testing.assert_array_equal(stamps[kind][1].numpy(), stamps["run_dir"][1].numpy())
    # Different clips give embeddings further apart than the tolerance above.
    assert np.abs(scene["run_dir"][0] - scene["run_dir"][1]).max() > 10 * 1e-5 * scale


@pytest.mark.parametrize("kind", ["keras", "saved_model"])
def test_chunks_do_not_change_results_and_any_batch_works(models, kind):
    model = models[kind]
    x = audio(1.07, 7, seed=9)
    whole_scene = hear.get_scene_embeddings(x, model).numpy()
    whole_ts = hear.get_timestamp_embeddings(x, model)[0].numpy()
    old = model.scene_batch_size, model.timestamp_batch_size
    model.scene_batch_size, model.timestamp_batch_size = 3, 2
    try:
        chunked_scene = hear.get_scene_embeddings(x, model).numpy()
        chunked_ts = hear.get_timestamp_embeddings(x, model)[0].numpy()
    finally:
        model.scene_batch_size, model.timestamp_batch_size = old
    scale = np.abs(whole_ts).max()
    np.testing.assert_allclose(chunked_scene, whole_scene, atol=1e-5 * scale)
    np.testing.assert_allclose(chunked_ts, whole_ts, atol=1e-5 * scale)
    empty_scene = hear.get_scene_embeddings(np.zeros((0, 16000), np.float32), model)
    empty_ts, empty_stamps = hear.get_timestamp_embeddings(np.zeros((0, 16000), np.float32),
                                                           model)
    assert empty_scene.shape == (0, 320) and empty_ts.shape == (0, 26, 320)
    assert empty_stamps.shape == (0, 26)


def test_bad_audio_is_refused(models):
    model = models["saved_model"]
    x = audio(1.0, 2)
    x[1, 5] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        hear.get_scene_embeddings(x, model)
    with pytest.raises(ValueError, match=r"\[n, samples\]"):
        hear.get_timestamp_embeddings(np.zeros((2, 3, 100), np.float32), model)
    with pytest.raises(TypeError, match="load_model"):
        hear.get_scene_embeddings(x, model.embedder)
