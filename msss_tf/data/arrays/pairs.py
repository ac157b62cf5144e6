"""`SegmentPairs`: pre-training (anchor, positive) segment pairs cut from `CorpusArrays`
in host threads, with the contract in the `msss_tf.data.arrays` docstring; and
`pairs_per_second`, the host's rate of producing them. keras is imported only when
`SegmentPairs` is first used."""

from __future__ import annotations

import concurrent.futures
import functools
import os
import threading
import time
from typing import Dict, Optional

import numpy as np

from msss_tf.data.arrays.layout import INT16_SCALE, CorpusArrays

# Keys that keep the clip-order and offset random streams apart (same seed, same index).
_ORDER_KEY, _OFFSET_KEY = 0, 1


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

        The contract (clip order, offsets, padding, determinism) is in the
        `msss_tf.data.arrays` docstring: batch `step` is `batch(step)`, a pure function
        of (seed, step).
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
