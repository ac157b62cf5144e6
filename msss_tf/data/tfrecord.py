"""The `prepare` step: a folder of audio -> checked, resampled TFRecord shards + manifest.

Decoding and resampling compressed or high-rate audio every epoch costs more CPU than the
model on small machines; `prepare_corpus` does it once. A prepared directory holds

    shard-00000-of-0000N.tfrecord   tf.train.Example records: audio (int16 PCM, little
                                    endian, bytes), num_samples (int64), path (bytes)
    manifest.json                   sample rate, clip count, duration, shard list, skips
    skipped.json                    every skipped file with its reason (a `SkipReport`)

`manifest.json` is written last, so a directory that has one is complete.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from msss_tf.data.audio import AudioError, iter_audio_chunks
from msss_tf.data.files import SkipReport, audio_files_or_fail
from msss_tf.atomic import write_json_atomically

MANIFEST_NAME = "manifest.json"
SKIPPED_NAME = "skipped.json"
# ~1 h of 16 kHz int16 audio: large enough for efficient sequential reads, small enough
# that a corpus spreads over several shards to interleave.
TARGET_SHARD_BYTES = 128 * 2**20
_SHARD_PATTERN = re.compile(r"^shard-\d{5}-of-\d{5}\.tfrecord$")
# Decoded int16 is divided by this; encoding multiplies by it, so int16 sources round-trip.
_INT16_SCALE = 32768.0


def _shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.tfrecord"


def _encode_example(waveform: np.ndarray, relative_path: str) -> bytes:
    """Serialises one clip: float32 [n] in [-1, 1] -> int16 PCM bytes + length + path."""
    pcm = np.clip(np.round(waveform * _INT16_SCALE), -32768, 32767).astype("<i2")
    feature = {
        "audio": tf.train.Feature(bytes_list=tf.train.BytesList(value=[pcm.tobytes()])),
        "num_samples": tf.train.Feature(int64_list=tf.train.Int64List(value=[pcm.size])),
        "path": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[relative_path.encode("utf-8")])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class _ShardWriter:
    """Writes examples into temporary shard files; `finish` renames them to their final names.

    With `num_shards` given, clip i goes to shard i % num_shards. Without it, one shard is
    filled to `TARGET_SHARD_BYTES` before the next opens.
    """

    def __init__(self, out_dir: str, num_shards: Optional[int]):
        self._out_dir = out_dir
        self._fixed = num_shards
        self._tmp_paths: List[str] = []
        self._writers: List[tf.io.TFRecordWriter] = []
        self._bytes = 0  # in the newest shard (size-based mode)
        self._count = 0
        for _ in range(num_shards or 1):
            self._open()

    def _open(self) -> None:
        path = os.path.join(self._out_dir, f".shard-{len(self._tmp_paths):05d}.tfrecord.tmp")
        self._tmp_paths.append(path)
        self._writers.append(tf.io.TFRecordWriter(path))
        self._bytes = 0

    def write(self, record: bytes) -> None:
        if self._fixed:
            writer = self._writers[self._count % self._fixed]
        else:
            if self._bytes and self._bytes + len(record) > TARGET_SHARD_BYTES:
                self._writers[-1].close()
                self._open()
            writer = self._writers[-1]
        writer.write(record)
        self._bytes += len(record)
        self._count += 1

    def close(self) -> None:
        for writer in self._writers:
            writer.close()

    def finish(self) -> List[str]:
        """Closes every shard and renames it to `shard-IIIII-of-NNNNN.tfrecord`."""
        self.close()
        names = [_shard_name(i, len(self._tmp_paths)) for i in range(len(self._tmp_paths))]
        for tmp, name in zip(self._tmp_paths, names):
            os.replace(tmp, os.path.join(self._out_dir, name))
        self._tmp_paths = []
        return names

    def discard(self) -> None:
        """Closes and deletes the temporary shards (after an error)."""
        self.close()
        for path in self._tmp_paths:
            if os.path.exists(path):
                os.remove(path)


def prepare_corpus(
    audio_dir: str,
    out_dir: str,
    sample_rate: int = 16000,
    num_shards: Optional[int] = None,
    report: Optional[SkipReport] = None,
    progress: bool = True,
    max_clip_seconds: float = 10.0,
) -> Dict:
    """Converts every usable audio file under `audio_dir` into TFRecord shards in `out_dir`.

    Each file is read with `load_audio` (mono, resampled to `sample_rate`, checked); a file
    that fails is recorded in `report` and skipped, never fatal.

    Args:
      audio_dir: folder searched recursively for `AUDIO_EXTENSIONS` files.
      out_dir: output folder (created). Shards of an earlier run there are replaced.
      sample_rate: sample rate of the stored audio, in Hz.
      num_shards: number of shards (clips dealt round-robin). None: size-based, about
        `TARGET_SHARD_BYTES` (128 MiB, ~70 min at 16 kHz) per shard, at least one.
      report: a `SkipReport` to fill (a new one if None); also written to `skipped.json`.
      progress: show a progress bar (keras.utils.Progbar) over the files.
      max_clip_seconds: a longer file is stored as round(duration / max_clip_seconds)
        nearly equal clips (0.67x to 1.5x this long; the paper trains on 10 s AudioSet
        clips), decoded one at a time: memory stays bounded for hour-long files, and
        the pipeline's shuffle buffer holds clips of bounded size. <= 0: whole files.
        A clip of a long file that fails a check (silent, NaN, ...) is skipped alone and
        recorded as "PATH@START s"; a file none of whose clips is usable is recorded as
        PATH with the first clip's reason.

    Returns:
      The manifest dict, also written to `out_dir/manifest.json`: sample_rate, num_clips,
      total_seconds, num_shards, shards (file names in out_dir), skipped (counts per reason),
      num_files_seen, encoding, source.

    Raises:
      FileNotFoundError: `audio_dir` is not a directory.
      ValueError: `num_shards` < 1, or no file under `audio_dir` is usable audio.
    """
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"num_shards={num_shards}: must be >= 1 (or None for size-based)")
    report = report if report is not None else SkipReport()
    files = audio_files_or_fail(audio_dir, report)
    os.makedirs(out_dir, exist_ok=True)
    # Until the new manifest is written, the directory must not look prepared.
    manifest_path = os.path.join(out_dir, MANIFEST_NAME)
    if os.path.exists(manifest_path):
        os.remove(manifest_path)

    bar = None
    if progress:
        # Off a terminal every update is a new line: print one every 10 s, not 20 per second.
        interval = 0.05 if sys.stdout.isatty() else 10.0
        bar = keras.utils.Progbar(len(files), interval=interval, unit_name="file")
    writer = _ShardWriter(out_dir, num_shards)
    num_clips, total_samples = 0, 0
    try:
        for i, path in enumerate(files):
            report.note_seen()
            try:
                good, bad = 0, []
                for start, chunk in iter_audio_chunks(path, sample_rate, max_clip_seconds):
                    if isinstance(chunk, AudioError):
                        bad.append((start, chunk))
                        continue
                    writer.write(_encode_example(chunk, os.path.relpath(path, audio_dir)))
                    good += 1
                    num_clips += 1
                    total_samples += chunk.size
            except AudioError as e:
                report.add_error(e)
            else:
                if not good and bad:
                    report.add_error(bad[0][1])
                elif len(bad) and good:
                    for start, error in bad:
                        report.add_error(error, path=f"{path}@{start:.1f}s")
            if bar is not None:
                bar.update(i + 1)
        if num_clips == 0:
            raise ValueError(f"no usable audio in {audio_dir}: {len(files)} files, all "
                             f"skipped ({report.reasons_text()})\n{report.summary()}")
        shards = writer.finish()
    except BaseException:
        writer.discard()
        raise

    _remove_stale_shards(out_dir, keep=shards)
    report.write(os.path.join(out_dir, SKIPPED_NAME))
    manifest = {
        "sample_rate": int(sample_rate),
        "num_clips": num_clips,
        "total_seconds": total_samples / sample_rate,
        "num_shards": len(shards),
        "shards": shards,
        "skipped": report.by_reason(),
        "num_files_seen": len(files),
        "max_clip_seconds": float(max_clip_seconds),
        "encoding": "int16 little-endian PCM, float = int16 / 32768",
        "source": os.path.abspath(audio_dir),
    }
    write_json_atomically(manifest_path, manifest)
    return manifest


def _remove_stale_shards(out_dir: str, keep: List[str]) -> None:
    """Deletes shard files of an earlier run (a different shard count) from `out_dir`."""
    keep = set(keep)
    for name in os.listdir(out_dir):
        if _SHARD_PATTERN.match(name) and name not in keep:
            os.remove(os.path.join(out_dir, name))


def is_prepared_dir(path: str) -> bool:
    """True if `path` is a directory written by `prepare_corpus` (it holds manifest.json).

    A manifest of another kind (the realistic corpus builder writes one beside its audio/
    folder) does not count: such a folder is read as a folder of audio. An unreadable
    manifest does count, so that `read_manifest` reports what is wrong with it.
    """
    manifest = os.path.join(path, MANIFEST_NAME)
    if not os.path.isfile(manifest):
        return False
    try:
        with open(manifest) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return True
    return not isinstance(content, dict) or "shards" in content


def read_manifest(prepared_dir: str) -> Dict:
    """Reads and checks `prepared_dir/manifest.json`.

    Raises:
      FileNotFoundError: no manifest, or a shard it lists is missing.
      ValueError: the manifest is not valid JSON or lacks a field.
    """
    path = os.path.join(prepared_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{prepared_dir} is not a prepared corpus: no {MANIFEST_NAME} "
            "(run `msss-tf prepare` on the audio folder first)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: corrupt manifest ({e}); re-run prepare") from e
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: corrupt manifest (not a JSON object); re-run prepare")
    rate = manifest.get("sample_rate")
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise ValueError(f"{path}: corrupt manifest (sample_rate={rate!r}); re-run prepare")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards or not all(
            isinstance(s, str) for s in shards):
        raise ValueError(f"{path}: corrupt manifest (shards={shards!r}); re-run prepare")
    missing = [s for s in shards if not os.path.isfile(os.path.join(prepared_dir, s))]
    if missing:
        raise FileNotFoundError(f"{prepared_dir}: {len(missing)} shard(s) listed in "
                                f"{MANIFEST_NAME} are missing, e.g. {missing[0]}; re-run prepare")
    return manifest


def parse_example(record: tf.Tensor) -> tf.Tensor:
    """Decodes one serialised example into a float32 [num_samples] waveform in [-1, 1)."""
    features = tf.io.parse_single_example(record, {"audio": tf.io.FixedLenFeature([], tf.string)})
    pcm = tf.io.decode_raw(features["audio"], tf.int16, little_endian=True)
    return tf.cast(pcm, tf.float32) / _INT16_SCALE


def tfrecord_dataset(
    prepared_dir: str,
    sample_rate: Optional[int] = None,
    *,
    shuffle_seed: Optional[int] = None,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Reads a directory written by `prepare_corpus` as one pass of float32 waveforms.

    Shards are read in parallel (interleaved), records decoded in parallel.

    Args:
      prepared_dir: the `out_dir` of `prepare_corpus`.
      sample_rate: if given, the rate the caller expects; a corpus prepared at another rate
        raises ValueError instead of silently feeding mis-pitched audio.
      shuffle_seed: if not None, shard order is shuffled with this seed, anew on each pass.
      deterministic: keep element order fixed despite parallel reads.

    Returns:
      A finite `tf.data.Dataset` of float32 [None] waveforms, one per clip.

    Raises:
      FileNotFoundError, ValueError: see `read_manifest`; ValueError on a rate mismatch.
    """
    manifest = read_manifest(prepared_dir)
    if sample_rate is not None and manifest["sample_rate"] != sample_rate:
        raise ValueError(
            f"{prepared_dir} was prepared at {manifest['sample_rate']} Hz but {sample_rate} Hz "
            f"is expected; prepare it again with sample_rate={sample_rate}")
    paths = [os.path.join(prepared_dir, name) for name in manifest["shards"]]
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_seed is not None:
        files = files.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    records = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(paths), 16),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return records.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=deterministic)
