"""Corpus arrays: a corpus decoded once into int16 NumPy arrays, and the pre-training
(anchor, positive) segment pairs cut from them in host threads, without TensorFlow.

This is the input path for training with Keras on the JAX backend where TensorFlow is
not installed. The package imports numpy and `msss_tf.data.audio` (numpy, scipy,
soundfile); `SegmentPairs` alone needs keras, imported when that name is first used.

Modules: `layout` (the folder's format, `CorpusArrays`: reading it), `writing`
(`write_corpus_arrays`), `pairs` (`SegmentPairs`, `pairs_per_second`). This package
re-exports their public names.

A corpus arrays folder (`write_corpus_arrays`, `msss-tf arrays`) holds

    audio.npy     int16 [num_samples]: every clip, mono at `sample_rate`, concatenated
    offsets.npy   int64 [num_clips + 1]: clip i is audio[offsets[i]:offsets[i + 1]];
                  offsets[0] = 0, offsets[-1] = num_samples, strictly increasing
    arrays.json   format and format_version, sample_rate, num_clips, num_samples,
                  seconds_total, max_clip_seconds, source, files (relative to the audio
                  root, in clip order) with clips_per_file, and every skipped file with
                  its reason

Samples are encoded as in the TFRecord shards (tfrecord.py): int16 =
clip(round(x * 32768), -32768, 32767) of `load_audio`'s float32 waveform x, and
float = int16 / 32768. A 16-bit source therefore round-trips exactly, and the floats
equal those the TensorFlow pipeline reads from shards of the same folder. arrays.json is
written last: a folder that has one is complete.

`SegmentPairs` yields {"anchor", "positive"} batches with the contract of
`pipeline.sample_segment_pair` and a deterministic clip order:

  * Clip order is one continuous stream of passes over the corpus: pass p visits every
    clip once, in the order `np.random.default_rng([seed, 0, p]).permutation(num_clips)`.
    Batch `step` takes stream elements step*B .. (step+1)*B - 1, across pass boundaries.
  * Each element cuts two independent windows of S samples from its clip padded with
    |n - S| zeros on each side, at offsets uniform in [0, |n - S|], drawn for the whole
    batch by `np.random.default_rng([seed, 1, step])`. A clip of n >= S samples gives two
    uniformly placed slices of itself; a shorter one gives the whole clip, zero-padded,
    at its own uniform position in each window.
  * A batch is a pure function of (corpus, seed, step, S, dtype): workers computing
    batches in any order, threads or processes, give the same batches.
"""

from msss_tf.data.arrays.layout import (AUDIO_NAME, FORMAT_NAME, FORMAT_VERSION, INFO_NAME,
                                        INT16_SCALE, OFFSETS_NAME, CorpusArrays, to_int16)
from msss_tf.data.arrays.pairs import pairs_per_second
from msss_tf.data.arrays.writing import write_corpus_arrays

__all__ = ["CorpusArrays", "SegmentPairs", "pairs_per_second", "to_int16",
           "write_corpus_arrays", "AUDIO_NAME", "FORMAT_NAME", "FORMAT_VERSION", "INFO_NAME",
           "INT16_SCALE", "OFFSETS_NAME"]


def __getattr__(name):  # PEP 562: SegmentPairs (and keras) on first use
    if name == "SegmentPairs":
        from msss_tf.data.arrays import pairs

        globals()[name] = pairs.SegmentPairs
        return pairs.SegmentPairs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
