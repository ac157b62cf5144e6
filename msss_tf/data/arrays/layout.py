"""The corpus arrays folder: its file names and format, the int16 encoding of samples,
and `CorpusArrays`, which loads a folder and checks it (the format is described in the
`msss_tf.data.arrays` docstring). Needs numpy only."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np

FORMAT_NAME = "msss_tf corpus arrays"
FORMAT_VERSION = 1
AUDIO_NAME = "audio.npy"
OFFSETS_NAME = "offsets.npy"
INFO_NAME = "arrays.json"
# Encoding multiplies by this, decoding divides by it (as tfrecord.py): int16 sources
# round-trip exactly. 1 / 32768 is a power of two, so decoding is exact in float32.
INT16_SCALE = 32768.0
INT16 = np.dtype("<i2")


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """float [n] in [-1, 1] -> little-endian int16 [n]: clip(round(x * 32768)), as the
    TFRecord shards store it (+1.0 becomes 32767)."""
    scaled = np.round(np.asarray(waveform, np.float32) * np.float32(INT16_SCALE))
    return np.clip(scaled, -32768, 32767).astype(INT16)


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
