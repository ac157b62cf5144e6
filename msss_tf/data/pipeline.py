"""The pre-training input pipeline: clips -> pairs of random segments -> fixed-shape batches.

`pretrain_dataset` reads clips from one of three sources, shuffles them each epoch, cuts two
independent random segments from every clip (anchor and positive, as in COLA) and batches
them:

    {"anchor": float32 [B, segment_samples], "positive": float32 [B, segment_samples]}

Determinism: every random choice comes from the seed. Clip order uses `shuffle(seed=...)`;
segment offsets use stateless random ops keyed by (a seed derived from `seed`, the running
element index), so parallel map workers draw the same offsets whatever order they run in,
and the index keeps growing across epochs, so every epoch draws new segments. (Like every
seeded TF op, the shuffles also depend on `tf.random.set_seed` if a program calls it; the
offsets do not.)
"""

from __future__ import annotations

import logging
import os
import threading
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.data.audio import AUDIO_EXTENSIONS, AudioError, load_audio_excerpt, read_audio_info
from msss_tf.data.files import SkipReport, audio_files_or_fail
from msss_tf.data.synthetic import synthetic_corpus
from msss_tf.data.tfrecord import is_prepared_dir, tfrecord_dataset

logger = logging.getLogger(__name__)

SYNTHETIC = "synthetic"


def sample_segment_pair(waveform: tf.Tensor, segment_samples: int, seed: tf.Tensor):
    """Cuts two independent, uniformly placed segments out of one clip.

    A clip at least `segment_samples` long gives two windows at offsets drawn uniformly from
    [0, n - segment_samples]. A shorter clip is zero-padded: each segment holds the whole clip
    at its own uniformly random position in [0, segment_samples - n], so a short clip's anchor
    and positive differ by a shift and the zeros carry no position cue. (Both cases are one
    formula: pad |L - n| zeros on each side when n < L, then take windows.)

    Args:
      waveform: float32 [n], n >= 0.
      segment_samples: L, the samples per segment.
      seed: int32/int64 [2], a stateless-random seed; the same seed gives the same segments.

    Returns:
      (anchor, positive): float32 [L] each.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    n = tf.shape(waveform)[0]
    pad = tf.maximum(segment_samples - n, 0)
    padded = tf.pad(waveform, [[pad, pad]])
    max_offset = tf.shape(padded)[0] - segment_samples  # = |n - L|
    offsets = tf.random.stateless_uniform(
        [2], seed=seed, minval=0, maxval=max_offset + 1, dtype=tf.int32)
    anchor = padded[offsets[0]:offsets[0] + segment_samples]
    positive = padded[offsets[1]:offsets[1] + segment_samples]
    anchor.set_shape([segment_samples])
    positive.set_shape([segment_samples])
    return anchor, positive


def pretrain_dataset(
    source: str,
    config: MSSSConfig,
    batch_size: Optional[int] = None,
    *,
    seed: Optional[int] = None,
    report: Optional[SkipReport] = None,
    shuffle_buffer: int = 1024,
    deterministic: bool = True,
    num_clips: int = 256,
) -> tf.data.Dataset:
    """The infinite pre-training dataset of (anchor, positive) segment batches.

    Args:
      source: "synthetic" (the built-in corpus, `synthetic_corpus(num_clips,
        sample_rate=config.sample_rate, seed=config.seed)`, held in memory); a directory
        written by `prepare_corpus` (it holds manifest.json); or a directory tree of audio
        files, decoded on the fly every epoch (run `prepare_corpus` once for large corpora).
      config: supplies `segment_samples`, `sample_rate` and the defaults below.
      batch_size: clips per batch; default `config.batch_size`.
      seed: seeds clip order and segment offsets; default `config.seed`.
      report: a `SkipReport` that receives every unusable audio file once (folder source).
      shuffle_buffer: clips in the shuffle buffer for a prepared directory (whose shard order
        is shuffled too). In-memory and folder sources shuffle all clips fully.
      deterministic: keep element order fixed despite parallel map calls; False may be
        faster but gives run-to-run differences.
      num_clips: clips in the built-in corpus; ignored for other sources.

    Returns:
      An infinite `tf.data.Dataset` of {"anchor", "positive"}: float32
      [batch_size, config.segment_samples], static shapes, prefetched.

    Raises:
      ValueError: `source` is neither "synthetic" nor an existing directory; a folder holds no
        usable audio (said at once, from the file headers); a prepared directory's sample
        rate differs from `config.sample_rate`.
    """
    batch_size = config.batch_size if batch_size is None else batch_size
    seed = config.seed if seed is None else seed
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer={shuffle_buffer}: must be >= 1")
    shuffle_seed, crop_seed = _derive_seeds(seed, 2)

    clips = _clip_dataset(source, config, shuffle_seed, report, shuffle_buffer, deterministic,
                          num_clips)
    # Per-element stateless seeds [crop_seed, index]: the index runs on across epochs.
    seeds = tf.data.Dataset.counter().map(
        lambda i: tf.stack([tf.constant(crop_seed, tf.int64), i]))
    segment_samples = config.segment_samples

    def to_pair(waveform, element_seed):
        anchor, positive = sample_segment_pair(waveform, segment_samples, element_seed)
        return {"anchor": anchor, "positive": positive}

    pairs = tf.data.Dataset.zip(clips, seeds).map(
        to_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return pairs.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _derive_seeds(seed: int, count: int) -> Sequence[int]:
    """`count` independent non-negative int64 seeds from one integer seed."""
    state = np.random.SeedSequence(seed % 2**64).generate_state(count, np.uint64)
    return [int(s >> np.uint64(1)) for s in state]


def _clip_dataset(source, config, seed, report, shuffle_buffer, deterministic, num_clips):
    """Infinite, shuffled-per-epoch dataset of float32 [None] clips from `source`."""
    if isinstance(source, str) and source == SYNTHETIC:
        corpus = synthetic_corpus(num_clips, sample_rate=config.sample_rate, seed=config.seed)
        clips = tf.data.Dataset.from_tensor_slices(corpus)
        return clips.shuffle(num_clips, seed=seed, reshuffle_each_iteration=True).repeat()
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        source = os.fspath(source)
        if is_prepared_dir(source):
            clips = tfrecord_dataset(source, config.sample_rate, shuffle_seed=seed,
                                     deterministic=deterministic)
            return clips.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        return _audio_folder_dataset(source, config.sample_rate, seed, report, deterministic)
    raise ValueError(
        f"unknown data source {source!r}: expected {SYNTHETIC!r}, a folder of audio files "
        f"({', '.join(AUDIO_EXTENSIONS)}) or a folder written by `prepare_corpus`")


def check_audio_folder(root: str, report: Optional[SkipReport] = None) -> List[str]:
    """Lists the files under `root` whose headers soundfile reads; records the others.

    Args:
      root: a directory tree of audio files.
      report: receives every file whose header is unusable.

    Returns:
      The usable paths, sorted.

    Raises:
      FileNotFoundError: `root` is not a directory.
      ValueError: no file under `root` has a usable header.
    """
    report = report if report is not None else SkipReport()
    files = audio_files_or_fail(root, report)
    usable = []
    for path in files:
        report.note_seen()
        try:
            read_audio_info(path)
        except AudioError as e:
            report.add_error(e)
        else:
            usable.append(path)
    if not usable:
        raise ValueError(f"no usable audio in {root}: {len(files)} files, all skipped "
                         f"({report.reasons_text()})\n{report.summary()}")
    if report.count:
        logger.warning("%s: %s", root, report.summary())
    return usable


# A folder source decodes at most this much of each file per element (a random excerpt,
# read by seeking): an hour-long file costs one excerpt of memory, not the hour.
FOLDER_EXCERPT_SECONDS = 10.0


class _FolderDecoder:
    """`load_audio_excerpt` for `tf.numpy_function`: a failed file becomes an empty clip,
    once. Files longer than `FOLDER_EXCERPT_SECONDS` give an excerpt of that length at a
    position drawn from (seed, element index).

    A file that fails is recorded in the report and remembered, so later epochs skip it
    without reading it again. If every file has failed, decoding raises instead of letting
    the pipeline spin forever looking for a usable clip.
    """

    def __init__(self, paths: Sequence[str], sample_rate: int, report: SkipReport,
                 seed: int = 0):
        self._seed = seed
        self._num_paths = len(paths)
        self._sample_rate = sample_rate
        self._report = report
        self._failed = set()
        self._lock = threading.Lock()

    def __call__(self, path: bytes, index=0) -> np.ndarray:
        path = path.decode("utf-8")
        if path not in self._failed:
            try:
                position = np.random.default_rng([self._seed, int(index)]).random()
                return load_audio_excerpt(path, self._sample_rate, FOLDER_EXCERPT_SECONDS,
                                          position)
            except AudioError as e:
                if self._report.add_error(e):
                    logger.warning("skipping %s", e)
                with self._lock:
                    self._failed.add(path)
        if len(self._failed) == self._num_paths:
            raise ValueError(f"no usable audio: all {self._num_paths} files failed to decode; "
                             f"{self._report.summary()}")
        return np.zeros([0], np.float32)


def _audio_folder_dataset(root, sample_rate, seed, report, deterministic):
    """Decodes the audio files under `root` on the fly, every epoch, in parallel."""
    report = report if report is not None else SkipReport()
    paths = check_audio_folder(root, report)
    decode = _FolderDecoder(paths, sample_rate, report, seed)

    def load(path, index):
        waveform = tf.numpy_function(decode, [path, index], tf.float32, name="load_audio")
        waveform.set_shape([None])
        return waveform

    clips = tf.data.Dataset.from_tensor_slices(paths)
    clips = clips.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True).repeat()
    clips = tf.data.Dataset.zip(clips, tf.data.Dataset.counter())
    clips = clips.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return clips.filter(lambda waveform: tf.size(waveform) > 0)


def sample_segments(source: str, config: MSSSConfig, count: int = 256, *,
                    seed: Optional[int] = None, num_clips: int = 256) -> np.ndarray:
    """`count` random 0.96 s segments of a pre-training source, as training draws them.

    Used to calibrate the batch-norm statistics of a randomly initialised encoder
    (`msss_tf.embedding.calibrate_batch_norm`), so that the random-init reference runs in
    the same regime as a trained encoder.

    Returns:
        float32 [count, config.segment_samples].
    """
    dataset = pretrain_dataset(source, config, batch_size=count, seed=seed,
                               num_clips=num_clips)
    return next(iter(dataset))["anchor"].numpy()
