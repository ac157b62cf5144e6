"""Corpus arrays: a corpus decoded once into int16 NumPy arrays, and the pre-training
(anchor, positive) segment pairs cut from them in host threads, without TensorFlow.

This is the input path for training with Keras on the JAX backend where TensorFlow is
not installed. The module imports numpy and `msss_tf.data.audio` (numpy, scipy,
soundfile); `SegmentPairs` alone needs keras, imported when that name is first used.

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

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from msss_tf.data.audio import AudioError, iter_audio_chunks
from msss_tf.data.files import SkipReport, audio_files_or_fail
from msss_tf.jsonio import write_json_atomically

__all__ = ["CorpusArrays", "SegmentPairs", "pairs_per_second", "to_int16",
           "write_corpus_arrays"]

FORMAT_NAME = "msss_tf corpus arrays"
FORMAT_VERSION = 1
AUDIO_NAME = "audio.npy"
OFFSETS_NAME = "offsets.npy"
INFO_NAME = "arrays.json"
# Encoding multiplies by this, decoding divides by it (as tfrecord.py): int16 sources
# round-trip exactly. 1 / 32768 is a power of two, so decoding is exact in float32.
INT16_SCALE = 32768.0
_INT16 = np.dtype("<i2")
# The manifest `msss-tf corpus` writes beside its audio/ folder.
_CORPUS_MANIFEST = "manifest.json"
# Keys that keep the clip-order and offset random streams apart (same seed, same index).
_ORDER_KEY, _OFFSET_KEY = 0, 1


# ----------------------------------------------------------------------------- writing
def write_corpus_arrays(
    source: str,
    out_dir: str,
    sample_rate: int = 16000,
    report: Optional[SkipReport] = None,
    *,
    max_clip_seconds: float = 10.0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Dict:
    """Decodes every usable audio file of `source` into a corpus arrays folder `out_dir`.

    Each file is read with `load_audio`'s checks (mono, resampled to `sample_rate`); a file
    that fails is recorded in `report` and skipped, never fatal. Memory stays bounded
    whatever the corpus size: clips are appended to audio.npy one at a time, and a file
    longer than 1.5 x `max_clip_seconds` is decoded (and stored) in clips of about that
    length, as `prepare_corpus` does.

    The write is atomic: the arrays go to temporary names in `out_dir` and are renamed once
    complete, arrays.json last, so a run that fails or is killed never leaves a folder that
    `CorpusArrays.load` accepts (an earlier complete folder there stays intact until the
    new one is renamed over it).

    Args:
      source: a folder tree of audio files (`AUDIO_EXTENSIONS`, sorted order), or a corpus
        folder written by `msss-tf corpus` (it holds manifest.json and audio/): its audio
        folder is read in the manifest's file order.
      out_dir: the output folder (created).
      sample_rate: sample rate of the stored audio, in Hz.
      report: a `SkipReport` to fill (a new one if None); its entries go to arrays.json.
      max_clip_seconds: a longer file becomes round(duration / max_clip_seconds) clips of
        0.67x to 1.5x this length; a file up to 1.5x as long is one clip, exactly
        `load_audio`'s samples. <= 0: whole files.
      progress: optional callback(files_done, files_total).

    Returns:
      The arrays.json dict (see the module docstring).

    Raises:
      FileNotFoundError: `source` is not a directory.
      ValueError: `source` holds no usable audio (the message names the folder and the
        skip reasons), or is a TFRecord folder written by `prepare_corpus`.
    """
    source = os.fspath(source)
    out_dir = os.fspath(out_dir)
    report = report if report is not None else SkipReport()
    root, paths = _source_files(source, report)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tag = f".tmp-{os.getpid()}-{threading.get_ident()}"
    tmp_audio = os.path.join(out_dir, f".{AUDIO_NAME}{tag}")
    tmp_offsets = os.path.join(out_dir, f".{OFFSETS_NAME}{tag}")
    try:
        lengths: List[int] = []
        files: List[str] = []
        clips_per_file: List[int] = []
        with open(tmp_audio, "wb") as f:
            # The header is rewritten with the final length at the end: numpy pads it so
            # that the length of the first axis can grow in place.
            header_bytes = _write_npy_header(f, 0)
            for done, path in enumerate(paths, 1):
                report.note_seen()
                clips = _append_file(f, path, sample_rate, max_clip_seconds, report)
                if clips:
                    lengths.extend(clips)
                    files.append(os.path.relpath(path, root))
                    clips_per_file.append(len(clips))
                if progress is not None:
                    progress(done, len(paths))
            if not lengths:
                raise ValueError(f"no usable audio in {source}: {len(paths)} files, all "
                                 f"skipped ({report.reasons_text()})\n{report.summary()}")
            num_samples = int(np.sum(lengths, dtype=np.int64))
            f.seek(0)
            if _write_npy_header(f, num_samples) != header_bytes:
                raise RuntimeError("the .npy header changed length; audio.npy is not valid")
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        with open(tmp_offsets, "wb") as f:
            np.save(f, offsets)
        info = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "sample_rate": int(sample_rate),
            "num_clips": len(lengths),
            "num_samples": num_samples,
            "seconds_total": round(num_samples / sample_rate, 3),
            "encoding": f"{AUDIO_NAME}: int16 [num_samples], little endian; clip i is "
                        f"audio[offsets[i]:offsets[i + 1]] ({OFFSETS_NAME}, int64 "
                        "[num_clips + 1]); float = int16 / 32768",
            "max_clip_seconds": float(max_clip_seconds),
            "source": os.path.abspath(source),
            "audio_root": os.path.abspath(root),
            "num_files_seen": report.seen,
            "files": files,
            "clips_per_file": clips_per_file,
            "skipped": report.to_dict()["skipped"],
            "skipped_counts": report.by_reason(),
        }
        # Swap in: the old arrays.json goes first and the new one comes last, so no moment
        # shows a complete-looking folder with mismatched arrays.
        info_path = os.path.join(out_dir, INFO_NAME)
        if os.path.exists(info_path):
            os.remove(info_path)
        os.replace(tmp_audio, os.path.join(out_dir, AUDIO_NAME))
        os.replace(tmp_offsets, os.path.join(out_dir, OFFSETS_NAME))
        write_json_atomically(info_path, info)
    except BaseException:
        for path in (tmp_audio, tmp_offsets):
            if os.path.exists(path):
                os.remove(path)
        if created:
            try:
                os.rmdir(out_dir)  # only if nothing else was put there meanwhile
            except OSError:
                pass
        raise
    return info


def _source_files(source: str, report: SkipReport):
    """(audio root, the audio files to read in order) of a folder or a corpus folder."""
    if not os.path.isdir(source):
        raise FileNotFoundError(f"audio directory not found (or not a directory): {source}")
    manifest = _read_json_object(os.path.join(source, _CORPUS_MANIFEST))
    if manifest is not None and "shards" in manifest:
        raise ValueError(
            f"{source} is a TFRecord folder written by `msss-tf prepare`; corpus arrays are "
            f"decoded from audio files: pass the audio folder it was prepared from"
            + (f" ({manifest['source']})" if isinstance(manifest.get("source"), str) else ""))
    if manifest is not None and isinstance(manifest.get("files"), list) and isinstance(
            manifest.get("audio_dir"), str):
        root = os.path.join(source, manifest["audio_dir"])
        if not os.path.isdir(root):
            raise ValueError(f"{source}: {_CORPUS_MANIFEST} lists {len(manifest['files'])} "
                             f"files in {manifest['audio_dir']}/, but there is no such folder")
        # A listed file that is gone is recorded as "not_found" when it is read.
        return root, [os.path.join(root, str(name)) for name in manifest["files"]]
    paths = audio_files_or_fail(source, report)
    return source, paths


def _read_json_object(path: str) -> Optional[dict]:
    """The JSON object in `path`, or None if there is none (or it is not readable JSON)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _append_file(f, path: str, sample_rate: int, max_clip_seconds: float,
                 report: SkipReport) -> List[int]:
    """Appends the usable clips of one file to `f` as int16; returns their lengths.

    Skips are recorded as `prepare_corpus` does: a file that cannot be opened, or none of
    whose clips is usable, as PATH with the (first) reason; a bad clip of an otherwise
    usable long file as "PATH@START s".
    """
    lengths, bad = [], []
    try:
        for start, chunk in iter_audio_chunks(path, sample_rate, max_clip_seconds):
            if isinstance(chunk, AudioError):
                bad.append((start, chunk))
                continue
            pcm = to_int16(chunk)
            f.write(pcm.data)
            lengths.append(int(pcm.size))
    except AudioError as e:
        # The file could not be opened (iter_audio_chunks raises only then; errors while
        # reading are yielded, as `bad` clips).
        report.add_error(e)
        return lengths
    if not lengths and bad:
        report.add_error(bad[0][1])
    else:
        for start, error in bad:
            report.add_error(error, path=f"{path}@{start:.1f}s")
    return lengths


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """float [n] in [-1, 1] -> little-endian int16 [n]: clip(round(x * 32768)), as the
    TFRecord shards store it (+1.0 becomes 32767)."""
    scaled = np.round(np.asarray(waveform, np.float32) * np.float32(INT16_SCALE))
    return np.clip(scaled, -32768, 32767).astype(_INT16)


def _write_npy_header(f, length: int) -> int:
    """Writes a .npy (version 1.0) header for int16 [length] at f's position; returns
    the header's size in bytes (data follows it)."""
    start = f.tell()
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(_INT16), "fortran_order": False,
            "shape": (int(length),)})
    return f.tell() - start


# ----------------------------------------------------------------------------- reading
@dataclasses.dataclass(eq=False)
class CorpusArrays:
    """A corpus arrays folder, loaded (`CorpusArrays.load`).

    Attributes:
      audio: int16 [num_samples], every clip concatenated (an `np.memmap` when loaded with
        mmap=True: pages are read on demand and shared between processes).
      offsets: int64 [num_clips + 1]; clip i is audio[offsets[i]:offsets[i + 1]].
      sample_rate: in Hz.
      folder: where it was loaded from (None if built in memory).
      info: the arrays.json dict ({} if built in memory).
    """

    audio: np.ndarray
    offsets: np.ndarray
    sample_rate: int
    folder: Optional[str] = None
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        where = self.folder or "corpus arrays"
        _check_arrays(self.audio, self.offsets, os.path.join(where, AUDIO_NAME),
                      os.path.join(where, OFFSETS_NAME))
        if isinstance(self.sample_rate, bool) or not isinstance(
                self.sample_rate, (int, np.integer)) or self.sample_rate <= 0:
            raise ValueError(f"{os.path.join(where, INFO_NAME)}: sample_rate="
                             f"{self.sample_rate!r}, expected a positive integer")
        self.sample_rate = int(self.sample_rate)

    @classmethod
    def load(cls, folder: str, mmap: bool = True) -> "CorpusArrays":
        """Opens a folder written by `write_corpus_arrays`.

        Args:
          folder: the folder (holding audio.npy, offsets.npy, arrays.json).
          mmap: map audio.npy read-only instead of reading it into memory.

        Raises:
          ValueError: `folder` is not a complete corpus arrays folder (the message names
            the missing or bad file), or its offsets do not match its audio.
        """
        folder = os.fspath(folder)
        info_path = os.path.join(folder, INFO_NAME)
        if not os.path.isfile(info_path):
            what = "not a folder" if not os.path.isdir(folder) else f"no {INFO_NAME}"
            raise ValueError(f"{folder} is not a corpus arrays folder ({what}); write one "
                             f"with `msss-tf arrays --source=AUDIO_DIR --out_dir={folder}`")
        try:
            with open(info_path) as f:
                info = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{info_path}: unreadable ({e}); write the arrays again") from e
        if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
            raise ValueError(f"{info_path}: not a corpus arrays description (format "
                             f"{info.get('format') if isinstance(info, dict) else None!r}, "
                             f"expected {FORMAT_NAME!r})")
        version = info.get("format_version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(f"{info_path}: format_version {version!r}; this msss_tf reads "
                             f"versions 1 to {FORMAT_VERSION}")
        audio = _load_npy(os.path.join(folder, AUDIO_NAME), mmap)
        offsets = _load_npy(os.path.join(folder, OFFSETS_NAME), False)
        arrays = cls(audio, offsets, info.get("sample_rate"), folder, info)
        if info.get("num_clips") != arrays.num_clips:
            raise ValueError(f"{os.path.join(folder, OFFSETS_NAME)}: {arrays.num_clips} "
                             f"clips, but {INFO_NAME} says {info.get('num_clips')!r}")
        return arrays

    @property
    def num_clips(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def num_samples(self) -> int:
        return int(self.audio.size)

    @property
    def seconds(self) -> float:
        """Total audio, in seconds."""
        return self.num_samples / self.sample_rate

    @property
    def lengths(self) -> np.ndarray:
        """int64 [num_clips]: samples per clip."""
        return np.diff(self.offsets)

    def clip(self, i: int) -> np.ndarray:
        """Clip `i` as an int16 [n] view of `audio` (no copy)."""
        if not -self.num_clips <= i < self.num_clips:
            raise IndexError(f"clip {i} out of range: {self.num_clips} clips")
        i = i % self.num_clips
        return self.audio[self.offsets[i]:self.offsets[i + 1]]

    def __reduce__(self):
        # A memory-mapped corpus is pickled (for worker processes) as its folder, not its
        # samples: the copy maps the same file.
        if self.folder is not None and isinstance(self.audio, np.memmap):
            return (CorpusArrays.load, (self.folder, True))
        return (CorpusArrays, (np.asarray(self.audio), self.offsets, self.sample_rate,
                               self.folder, self.info))


def _load_npy(path: str, mmap: bool) -> np.ndarray:
    if not os.path.isfile(path):
        raise ValueError(f"{path}: missing; write the arrays again")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({e}); write the arrays "
                         "again") from e


def _check_arrays(audio: np.ndarray, offsets: np.ndarray, audio_name: str,
                  offsets_name: str) -> None:
    """Raises ValueError, naming the file, unless audio is int16 [n] and offsets an
    integer [k + 1] running strictly up from 0 to n."""
    if not isinstance(audio, np.ndarray) or audio.ndim != 1 or audio.dtype != np.int16:
        raise ValueError(f"{audio_name}: expected int16 [num_samples], found "
                         f"{getattr(audio, 'dtype', type(audio).__name__)} "
                         f"{getattr(audio, 'shape', '')}")
    if (not isinstance(offsets, np.ndarray) or offsets.ndim != 1
            or not np.issubdtype(offsets.dtype, np.integer) or offsets.size < 2):
        raise ValueError(f"{offsets_name}: expected int64 [num_clips + 1] with at least one "
                         f"clip, found {getattr(offsets, 'dtype', type(offsets).__name__)} "
                         f"{getattr(offsets, 'shape', '')}")
    if offsets[0] != 0 or offsets[-1] != audio.size:
        raise ValueError(f"{offsets_name}: offsets run from {offsets[0]} to {offsets[-1]}, "
                         f"expected 0 to {audio.size} (the samples in {audio_name})")
    if not np.all(offsets[1:] > offsets[:-1]):
        bad = int(np.argmin(offsets[1:] > offsets[:-1]))
        raise ValueError(f"{offsets_name}: offsets must increase strictly; clip {bad} runs "
                         f"from {offsets[bad]} to {offsets[bad + 1]}")


# ----------------------------------------------------------------------- segment pairs
def _check_positive_int(name: str, value, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r}: must be an integer >= 1")


@functools.lru_cache(maxsize=None)
def _segment_pairs_class():
    """Defines `SegmentPairs` (a keras.utils.PyDataset) when it is first asked for, so
    that writing and loading corpus arrays needs no keras (nor its backend)."""
    import keras

    class SegmentPairs(keras.utils.PyDataset):
        """Pre-training batches of (anchor, positive) segment pairs from `CorpusArrays`,
        cut in host threads: {"anchor": [B, S], "positive": [B, S]}.

        The contract (clip order, offsets, padding, determinism) is in the module
        docstring: batch `step` is `batch(step)`, a pure function of (seed, step).
        `dataset[i]`, what Keras asks for, is `batch(epoch * len(dataset) + i)`:
        `epoch` counts the epochs Keras has ended (`on_epoch_end`), so every epoch of a
        plain `fit(dataset, epochs=E)` draws new clip orders and segments.

        With `fit` (Keras 3.15):
          * leave fit's steps_per_epoch unset: this dataset's length is the epoch;
          * pass shuffle=False: the clips are shuffled already, and fit's default
            shuffles the batch indices of each epoch with Python's unseeded `random`;
          * pass `dataset.epoch_callback()` to make fit's epoch e batches
            e * len(dataset) ... (e + 1) * len(dataset) - 1, also on a resume with
            initial_epoch (fit's set-up calls on_epoch_end once before epoch 0);
          * with workers > 1, build the model before fit: when fit has to build it, it
            peeks at a batch, and the batches the workers prefetched meanwhile are
            served first in the next epoch, shifting every later epoch by a few batches.

        Args:
          arrays: a `CorpusArrays` (or the folder to load it from, memory-mapped).
          batch_size: B, clips per batch.
          segment_samples: S, samples per segment (15600 = 0.975 s at 16 kHz).
          steps_per_epoch: batches per epoch, `len(dataset)`; default num_clips // B, at
            least 1 (about one pass over the corpus).
          seed: the seed of clip order and offsets (an integer; taken modulo 2**64).
          dtype: "float32": int16 / 32768, in [-1, 1); "int16": the stored samples (half
            the host-to-device bytes; divide by 32768 on the device).
          workers, use_multiprocessing: how `fit` computes batches in parallel (threads
            by default: the copies run in numpy, which releases the GIL for them).
          max_queue_size: batches computed ahead; each holds 2 * B * S * itemsize bytes
            (128 MB at B = 1024, S = 15600, float32).

        Raises:
          ValueError: bad arguments, or an empty corpus.
        """

        def __init__(self, arrays, batch_size: int, segment_samples: int,
                     steps_per_epoch: Optional[int] = None, seed: int = 0,
                     dtype: str = "float32", workers: int = 4,
                     use_multiprocessing: bool = False, max_queue_size: int = 4):
            super().__init__(workers=workers, use_multiprocessing=use_multiprocessing,
                             max_queue_size=max_queue_size)
            if isinstance(arrays, (str, os.PathLike)):
                arrays = CorpusArrays.load(arrays)
            if not isinstance(arrays, CorpusArrays):
                raise ValueError(f"arrays: expected CorpusArrays or a folder, got "
                                 f"{type(arrays).__name__}")
            _check_positive_int("batch_size", batch_size)
            _check_positive_int("segment_samples", segment_samples)
            _check_positive_int("steps_per_epoch", steps_per_epoch, allow_none=True)
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                raise ValueError(f"seed={seed!r}: must be an integer")
            if str(dtype) not in ("float32", "int16"):
                raise ValueError(f"dtype={dtype!r}: expected 'float32' or 'int16'")
            if arrays.num_clips < 1:
                raise ValueError(f"{arrays.folder or 'corpus arrays'}: no clips")
            self.arrays = arrays
            self.batch_size = int(batch_size)
            self.segment_samples = int(segment_samples)
            self.steps_per_epoch = (max(1, arrays.num_clips // self.batch_size)
                                    if steps_per_epoch is None else int(steps_per_epoch))
            self.seed = int(seed) % 2**64
            self.dtype = np.dtype(str(dtype))
            self.epoch = 0
            self._init_cache()

        def _init_cache(self):
            self._orders: Dict[int, np.ndarray] = {}
            self._lock = threading.Lock()

        def __getstate__(self):  # for worker processes: no lock, no cached orders
            state = dict(self.__dict__)
            del state["_orders"], state["_lock"]
            return state

        def __setstate__(self, state):
            self.__dict__.update(state)
            self._init_cache()

        def __len__(self) -> int:
            return self.steps_per_epoch

        def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
            if not 0 <= index < self.steps_per_epoch:
                raise IndexError(f"batch {index} out of range: {self.steps_per_epoch} "
                                 "per epoch")
            return self.batch(self.epoch * self.steps_per_epoch + index)

        def on_epoch_end(self):
            # Keras calls this after its workers have stopped: no batch is in flight.
            self.epoch += 1

        def epoch_callback(self):
            """A keras Callback that sets `epoch` to the epoch fit begins, so fit's epoch
            e is batches e * len(self) ... (e + 1) * len(self) - 1 whatever came before
            (a symbolic build's peek, an earlier fit, a resume at initial_epoch)."""
            dataset = self

            class SetEpoch(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    dataset.epoch = int(epoch)

            return SetEpoch()

        def order(self, corpus_pass: int) -> np.ndarray:
            """int64 [num_clips]: the clips in the order pass `corpus_pass` visits them."""
            with self._lock:
                order = self._orders.get(corpus_pass)
            if order is None:
                rng = np.random.default_rng([self.seed, _ORDER_KEY, int(corpus_pass)])
                order = rng.permutation(self.arrays.num_clips)
                with self._lock:
                    self._orders[corpus_pass] = order
                    while len(self._orders) > 4:  # a batch spans at most a few passes
                        self._orders.pop(min(self._orders))
            return order

        def clips(self, step: int) -> np.ndarray:
            """int64 [B]: the clips of batch `step`, stream elements step*B .. +B-1."""
            n, b = self.arrays.num_clips, self.batch_size
            positions = np.arange(step * b, (step + 1) * b, dtype=np.int64)
            passes, within = np.divmod(positions, n)
            clips = np.empty(b, np.int64)
            for p in range(int(passes[0]), int(passes[-1]) + 1):
                chosen = passes == p
                clips[chosen] = self.order(p)[within[chosen]]
            return clips

        def batch(self, step: int) -> Dict[str, np.ndarray]:
            """Batch `step` (>= 0) of the stream: {"anchor", "positive"}, `dtype`
            [B, S] each; a pure function of (seed, step)."""
            if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
                raise ValueError(f"step={step!r}: must be an integer >= 0")
            step = int(step)
            size, width = self.batch_size, self.segment_samples
            clips = self.clips(step)
            starts = self.arrays.offsets[clips]
            lengths = self.arrays.offsets[clips + 1] - starts
            # Window offsets into the clip padded with |n - S| zeros on each side.
            rng = np.random.default_rng([self.seed, _OFFSET_KEY, step])
            windows = rng.integers(0, np.abs(lengths - width)[:, None] + 1, size=(size, 2))
            audio = self.arrays.audio
            scale = np.float32(1.0 / INT16_SCALE)
            as_float = self.dtype == np.float32
            anchor = np.empty((size, width), self.dtype)
            positive = np.empty((size, width), self.dtype)
            for i, (start, n, (a, p)) in enumerate(zip(starts.tolist(), lengths.tolist(),
                                                      windows.tolist())):
                for row, offset in ((anchor[i], a), (positive[i], p)):
                    if n >= width:
                        source, at = audio[start + offset:start + offset + width], 0
                    else:  # the whole clip, at its position in the window
                        source, at = audio[start:start + n], width - n - offset
                        row[:at] = 0
                        row[at + n:] = 0
                    if as_float:
                        np.multiply(source, scale, out=row[at:at + source.size])
                    else:
                        row[at:at + source.size] = source
            return {"anchor": anchor, "positive": positive}

    SegmentPairs.__qualname__ = "SegmentPairs"  # pickled by name (worker processes)
    return SegmentPairs


def __getattr__(name):  # PEP 562: SegmentPairs (and keras) on first use
    if name == "SegmentPairs":
        cls = _segment_pairs_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pairs_per_second(dataset, batches: int = 8, threads: int = 4) -> Dict:
    """How many segment pairs per second the host produces for `dataset`, in this
    process: one thread, then `threads` threads computing batches in parallel (as `fit`'s
    workers do). Compare with the step's consumption (B / step seconds) for the input
    headroom.

    Args:
      dataset: a `SegmentPairs`.
      batches: batches timed in each setting (after one untimed warm-up batch); the
        threaded setting times `batches * threads` batches.
      threads: parallel threads of the second setting.

    Returns:
      {"batch_size", "segment_samples", "dtype", "batches", "threads",
       "single_thread_pairs_per_second", "threads_pairs_per_second", "speedup",
       "threads_megabytes_per_second" (output bytes)}.
    """
    _check_positive_int("batches", batches)
    _check_positive_int("threads", threads)
    dataset.batch(0)  # caches the first pass's order; maps the first pages
    next_step = 1

    def timed(count, workers):
        nonlocal next_step
        steps = range(next_step, next_step + count)
        next_step += count
        started = time.perf_counter()
        if workers == 1:
            for step in steps:
                dataset.batch(step)
        else:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(dataset.batch, steps):
                    pass
        return count * dataset.batch_size / (time.perf_counter() - started)

    single = timed(batches, 1)
    parallel = timed(batches * threads, threads)
    pair_bytes = 2 * dataset.segment_samples * dataset.dtype.itemsize
    return {
        "batch_size": dataset.batch_size,
        "segment_samples": dataset.segment_samples,
        "dtype": dataset.dtype.name,
        "batches": batches,
        "threads": threads,
        "single_thread_pairs_per_second": round(single, 1),
        "threads_pairs_per_second": round(parallel, 1),
        "speedup": round(parallel / single, 2),
        "threads_megabytes_per_second": round(parallel * pair_bytes / 1e6, 1),
    }
