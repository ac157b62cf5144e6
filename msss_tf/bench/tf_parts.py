"""The input and embedding parts on TensorFlow: examples/s of `pretrain_dataset` on
TFRecord shards, and seconds of audio embedded per second (Keras, SavedModel, TFLite)."""

from __future__ import annotations

import os
import statistics
import time

from msss_tf.bench.timing import timed_rounds


def _write_corpus_shards(config, directory, num_clips, clip_seconds, seed=0) -> str:
    """Synthetic clips -> WAV files -> `prepare_corpus` shards; returns the shard folder."""
    import soundfile as sf

    from msss_tf.data.synthetic import synthetic_corpus
    from msss_tf.data.tfrecord import prepare_corpus

    audio_dir = os.path.join(directory, "audio")
    shard_dir = os.path.join(directory, "shards")
    os.makedirs(audio_dir, exist_ok=True)
    corpus = synthetic_corpus(num_clips, clip_seconds=clip_seconds,
                              sample_rate=config.sample_rate, seed=seed)
    for i, clip in enumerate(corpus):
        sf.write(os.path.join(audio_dir, f"clip{i:04d}.wav"), clip, config.sample_rate,
                 subtype="PCM_16")
    prepare_corpus(audio_dir, shard_dir, sample_rate=config.sample_rate,
                   num_shards=min(4, num_clips), progress=False)
    return shard_dir


def bench_input(config, batch_size, steps, repeats, workdir, step_seconds=None,
                num_clips=64, clip_seconds=10.0) -> dict:
    """Examples/s of `pretrain_dataset` alone on prepared TFRecord shards."""
    from msss_tf.data import pretrain_dataset

    config = config.replace(batch_size=batch_size)
    started = time.perf_counter()
    shard_dir = _write_corpus_shards(config, workdir, num_clips, clip_seconds)
    shards_seconds = time.perf_counter() - started
    dataset = pretrain_dataset(shard_dir, config, batch_size, shuffle_buffer=num_clips)
    iterator = iter(dataset)
    for _ in range(3):  # warm-up: fills the shuffle buffer and the prefetch
        next(iterator)
    batches = max(10, 4 * steps)

    def take():
        for _ in range(batches):
            batch = next(iterator)
        batch["anchor"].numpy()

    timed = timed_rounds({"pipeline": take}, 1, repeats)["pipeline"]
    seconds = timed["median_s"] / batches
    out = {
        "pipeline_batch_seconds": seconds,
        "pipeline_examples_per_second": batch_size / seconds,
        "pipeline_rounds_seconds": [r / batches for r in timed["rounds_s"]],
        "shards_seconds": shards_seconds,
        "corpus_clips": num_clips,
        "corpus_clip_seconds": clip_seconds,
    }
    if step_seconds:
        out["step_examples_per_second"] = batch_size / step_seconds
        out["input_headroom"] = out["pipeline_examples_per_second"] / out["step_examples_per_second"]
    return out


def bench_embed(model, workdir, repeats, num_clips=4, clip_seconds=10.0, latency_calls=20,
                log=print) -> dict:
    """Seconds of audio embedded per second: Keras, SavedModel, TFLite float32 / int8."""
    from msss_tf.data.synthetic import synthetic_corpus
    from msss_tf.embedding import Embedder, TFLiteEmbedder, load_encoder
    from msss_tf.export import export_encoder

    config = model.msss_config
    audio = synthetic_corpus(num_clips, clip_seconds=clip_seconds,
                             sample_rate=config.sample_rate, seed=3)
    audio_seconds = audio.size / config.sample_rate
    started = time.perf_counter()
    exported = export_encoder(model, os.path.join(workdir, "export"), version=1,
                              tflite=("float32", "int8"), overwrite=True,
                              representative_audio=audio[:2])
    export_seconds = time.perf_counter() - started
    log(f"  exported SavedModel + TFLite in {export_seconds:.1f} s")
    embedders = {
        "keras": Embedder.from_model(model),
        "saved_model": load_encoder(exported["saved_model"]),
        "tflite_float32": TFLiteEmbedder(exported["tflite"]["float32"]),
        "tflite_int8": TFLiteEmbedder(exported["tflite"]["int8"]),
    }
    fns = {}
    for name, embedder in embedders.items():
        fns[f"{name}_scene"] = lambda e=embedder: e.scene_embeddings(audio)
        fns[f"{name}_timestamp"] = lambda e=embedder: e.timestamp_embeddings(audio)
    for fn in fns.values():
        fn()  # warm-up (tracing)
    timed = timed_rounds(fns, 1, repeats)
    out = {
        "audio_seconds": audio_seconds,
        "timestamp_hop_ms": embedders["keras"].hop_ms,
        "export_seconds": export_seconds,
        "audio_seconds_per_second": {
            name: audio_seconds / t["median_s"] for name, t in timed.items()},
    }
    window = audio[:1, :config.segment_samples]
    latency = {}
    for variant in ("float32", "int8"):
        single = TFLiteEmbedder(exported["tflite"][variant], num_threads=1)
        single.window(window)
        calls = []
        for _ in range(latency_calls):
            start = time.perf_counter()
            single.window(window)
            calls.append(time.perf_counter() - start)
        latency[variant] = statistics.median(calls)
    out["tflite_window_latency_seconds_1_thread"] = latency
    return out
