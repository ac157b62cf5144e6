"""Audio of any length in bounded memory: chunked encoding in the Keras/SavedModel graph,
files decoded block by block (`SpooledAudio`), `embed_file`, the streamed .npz, and peak
RSS of long clips measured in subprocesses."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import soundfile as sf

from msss_tf.config import MSSSConfig
from msss_tf.data.audio import AudioError, SpooledAudio, load_audio
from msss_tf.embedding import Embedder, embed_file, save_npz_streamed

CONFIG = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25)


@pytest.fixture(scope="module")
def embedder():
    return Embedder.random_init(CONFIG, seed=1, calibration_audio=audio(1.0, n=4, seed=5)[:, :15600])


def audio(seconds, n=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * 16000))) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 330 * t * (1 + 0.2 * np.sin(t)))
    return (tone + 0.05 * rng.normal(size=(n, len(t)))).astype(np.float32)


# ------------------------------------------------------------------ SpooledAudio
@pytest.mark.parametrize("rate,channels,subtype,gain", [
    (16000, 1, "PCM_16", 0.5),
    (44100, 2, "FLOAT", 3.0),  # a float file over full scale: scaled like load_audio
    (22050, 1, "PCM_24", 0.9),
    (8000, 1, "PCM_16", 0.7),
])
def test_spooled_audio_reads_what_load_audio_returns(tmp_path, rate, channels, subtype, gain):
    rng = np.random.default_rng(rate)
    data = (gain * 0.3 * rng.standard_normal((rate * 5 + 17, channels))).astype(np.float32)
    path = str(tmp_path / "a.wav")
    sf.write(path, data, rate, subtype=subtype)
    expected = load_audio(path)
    with SpooledAudio(path, block_seconds=0.7) as spooled:  # many blocks
        assert spooled.num_samples == len(expected)
        got = spooled.read(-100, spooled.num_samples + 50)
        np.testing.assert_allclose(got[100:100 + len(expected)], expected, atol=1e-6)
        assert not got[:100].any() and not got[-50:].any()  # zeros outside the clip
        np.testing.assert_allclose(spooled.read(1234, 5678), expected[1234:5678], atol=1e-6)


def test_spooled_audio_refuses_what_load_audio_refuses(tmp_path):
    cases = {
        "silent": np.zeros(16000, np.float32),
        "non_finite": np.where(np.arange(16000) == 9000, np.nan, 0.1).astype(np.float32),
        "too_short": np.full(100, 0.1, np.float32),
    }
    for reason, data in cases.items():
        path = str(tmp_path / f"{reason}.wav")
        sf.write(path, data, 16000, subtype="FLOAT")
        with pytest.raises(AudioError) as expected:
            load_audio(path)
        with pytest.raises(AudioError) as got:
            SpooledAudio(path, block_seconds=0.25)
        assert got.value.reason == expected.value.reason == reason
        assert path in str(got.value)
    with pytest.raises(AudioError, match="not_found"):
        SpooledAudio(str(tmp_path / "missing.wav"))


# ------------------------------------------------------------- chunked encoding
def test_chunked_encoding_gives_the_same_embeddings(embedder):
    """Windows encoded a few at a time (bounded memory) = all at once: 3 windows a call
    over a batch of 2 clips is 1 scene window or 1 tile of 8 timestamp windows a call."""
    clips = audio(4.3, n=2)
    small = Embedder(embedder.frontend, embedder.encoder, CONFIG, max_windows=3)
    whole = embedder  # 64 windows a call: each clip's 5 scene windows at once
    scale = np.abs(whole.scene_embeddings(clips)).max()
    np.testing.assert_allclose(small.scene_embeddings(clips), whole.scene_embeddings(clips),
                               atol=1e-5 * scale)
    got, got_ts = small.timestamp_embeddings(clips)
    want, want_ts = whole.timestamp_embeddings(clips)
    assert got.shape == want.shape == (2, len(clips[0]) // 640 + 1, embedder.scene_embedding_size)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(got_ts, want_ts)
    with pytest.raises(ValueError, match="max_windows"):
        Embedder(embedder.frontend, embedder.encoder, CONFIG, max_windows=0)


@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2)])
def test_embed_file_matches_the_whole_clip_in_memory(embedder, tmp_path, rate, channels):
    clip = audio(7.3, n=1)[0]
    path = str(tmp_path / "clip.wav")
    data = np.repeat(clip[:, None], channels, axis=1)
    if rate != 16000:
        import scipy.signal

        data = scipy.signal.resample_poly(data, 441, 160, axis=0).astype(np.float32)
    sf.write(path, data, rate, subtype="FLOAT")
    waveform = load_audio(path)[None]
    blocks = []
    scene, count = embed_file(embedder, path, blocks.append, max_windows=5, block_seconds=1.3)
    timestamps = np.concatenate(blocks)
    want, _ = embedder.timestamp_embeddings(waveform)
    assert count == len(timestamps) == want.shape[1] == waveform.shape[1] // 640 + 1
    assert len(blocks) > 3  # really written block by block
    np.testing.assert_allclose(timestamps, want[0], atol=1e-5 * np.abs(want).max())
    expected = embedder.scene_embeddings(waveform)[0]
    np.testing.assert_allclose(scene, expected, atol=1e-5 * np.abs(expected).max())


def test_npz_written_block_by_block_reads_back(tmp_path):
    path = str(tmp_path / "x.npz")
    big = np.arange(5 * 7 * 3, dtype=np.float32).reshape(5, 7, 3)
    blocks = (big.reshape(-1)[i:i + 11] for i in range(0, big.size, 11))
    save_npz_streamed(path, {"ids": np.array(["a", "b"]), "n": np.arange(3)},
                      {"big": (big.shape, np.float32, blocks)})
    with np.load(path, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["big"], big)
        assert list(data["ids"]) == ["a", "b"] and list(data["n"]) == [0, 1, 2]
    with pytest.raises(ValueError, match="elements written"):
        save_npz_streamed(path, {}, {"big": ((2, 3), np.float32, iter([np.zeros(5)]))})


# ---------------------------------------------------------- peak RSS, measured
_HEAR_SCRIPT = """
import sys
import numpy as np
import msss_tf.hear as hear
from msss_tf.bench import write_long_wav
from msss_tf.data.audio import load_audio
model = hear.load_model(sys.argv[1])
clip = load_audio(write_long_wav(sys.argv[2], float(sys.argv[3])))[None]
emb, ts = hear.get_timestamp_embeddings(clip, model)
scene = hear.get_scene_embeddings(clip, model)
assert emb.shape[1] == clip.shape[1] // 640 + 1 and np.isfinite(scene.numpy()).all()
with open("/proc/self/status") as f:
    print("MAX_RSS_KIB", [int(l.split()[1]) for l in f if l.startswith("VmHWM:")][0])
"""


def _hear_peak_mib(run_dir, wav, seconds):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", _HEAR_SCRIPT, run_dir, wav, str(seconds)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.split("MAX_RSS_KIB")[-1].split()[0]) / 1024


@pytest.mark.slow
def test_a_long_clip_stays_within_a_fixed_memory_bound(tmp_path):
    """4 minutes vs 15 s through `msss-tf embed` and the HEAR API, each in its own process:
    before windows were encoded in chunks, 4 minutes took ~1.6 GB more than 15 s on this
    encoder (the embed CLI: 947 -> 2541 MiB); the bound here is 200 MiB."""
    from msss_tf.bench import peak_rss_of_command, write_long_wav
    from msss_tf.model.msss_model import MSSSModel

    keras.utils.set_random_seed(0)
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    CONFIG.save(run_dir)
    MSSSModel(CONFIG).save(os.path.join(run_dir, "model.keras"))
    peaks = {}
    for seconds in (15, 240):
        wav = write_long_wav(str(tmp_path / f"{seconds}.wav"), seconds)
        peaks[seconds] = peak_rss_of_command(
            ["embed", f"--model={run_dir}", f"--out={tmp_path / 'e.npz'}", wav])
        with np.load(tmp_path / "e.npz") as data:
            assert data["timestamp_embeddings"].shape[1] == seconds * 25 + 1
    assert peaks[240] - peaks[15] < 200, peaks
    short = _hear_peak_mib(run_dir, str(tmp_path / "h15.wav"), 15)
    long = _hear_peak_mib(run_dir, str(tmp_path / "h240.wav"), 240)
    assert long - short < 200, (short, long)
