"""Reading audio files: decode, mix to mono, resample and check them.

Every loader in `msss_tf.data` reads audio through `load_audio`, so one set of checks decides
what counts as usable audio. A file that fails a check raises `AudioError`, whose `reason` is
a short machine-friendly string; callers that walk a corpus catch it, record the file in a
`SkipReport` (msss_tf.data.files), and go on.
"""

from __future__ import annotations

import math
import os
from typing import List, Tuple

import numpy as np
import scipy.signal
import soundfile as sf


def _readable_extensions() -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(extensions libsndfile reads here, audio extensions it does not), lowercase.

    MP3 depends on how libsndfile was built (1.1 and newer, with mpg123): it is asked, not
    assumed. The second list holds common audio formats found in user folders that a loader
    reports as skipped ("unsupported_format") instead of passing over in silence.
    """
    formats = set(sf.available_formats())
    readable = [".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".au",
                ".caf", ".w64", ".rf64"]
    unsupported = [".m4a", ".aac", ".wma", ".amr", ".ape", ".mka", ".webm"]
    (readable if "MP3" in formats else unsupported).append(".mp3")
    return tuple(readable), tuple(unsupported)


# Lowercase; matched case-insensitively. All are read by libsndfile through soundfile.
AUDIO_EXTENSIONS, UNSUPPORTED_AUDIO_EXTENSIONS = _readable_extensions()

# A clip whose peak is below this (-100 dBFS) carries no signal worth learning from.
SILENCE_PEAK = 1e-5

# Skip reasons, in the order `load_audio` checks them.
REASONS = (
    "not_found",
    "broken_link",
    "not_a_file",
    "permission_denied",
    "unreadable",
    "empty",
    "non_finite",
    "too_short",
    "silent",
    "unsupported_format",  # an audio format libsndfile cannot read here (found by name)
)


class AudioError(ValueError):
    """A file that is not usable audio.

    Attributes:
      path: the file, as given to the loader.
      reason: a short machine-friendly reason, one of `REASONS` (e.g. "unreadable", "silent").
      detail: a human-readable explanation (may be empty).
    """

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        message = f"{self.path}: {reason}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)

    def __reduce__(self):
        # The default pickling passes only the message back to __init__.
        return (AudioError, (self.path, self.reason, self.detail))


def _check_file(path: str) -> None:
    """Refuses, before opening, what is not a regular file: a dangling or looping symlink
    ("broken_link"), a directory, FIFO or device ("not_a_file": reading a FIFO or
    /dev/zero would block or never end)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if os.path.islink(path):
            what = "symlink loop" if e.errno == 40 else "dangling symlink"  # 40: ELOOP
            return_error = AudioError(path, "broken_link", f"{what}: {e.strerror}")
            raise return_error from e
        if isinstance(e, PermissionError):
            raise AudioError(path, "permission_denied", "cannot stat the file") from e
        raise AudioError(path, "not_found", "no such file") from e
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise AudioError(path, "not_a_file", "not a regular file (directory, FIFO, device "
                         "or socket)")


def _open_error(path: str, error: Exception) -> AudioError:
    """Maps an exception raised while opening `path` to an `AudioError` with a reason."""
    if os.path.islink(path) and not os.path.exists(path):
        return AudioError(path, "broken_link", "dangling symlink or symlink loop")
    if not os.path.exists(path):
        return AudioError(path, "not_found", "no such file")
    if isinstance(error, PermissionError) or not os.access(path, os.R_OK):
        return AudioError(path, "permission_denied", "cannot read the file")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return AudioError(path, "empty", "zero-byte file")
    # libsndfile reports corrupt files, truncated headers and non-audio files alike.
    return AudioError(path, "unreadable", str(error).strip() or type(error).__name__)


# soundfile raises LibsndfileError (a RuntimeError) for most failures, but TypeError or
# ValueError for some malformed headers, and OSError subclasses for file-system errors.
_READ_ERRORS = (RuntimeError, TypeError, ValueError, OSError, EOFError, MemoryError)


def read_audio_info(path: str):
    """Reads only the header of `path`, without decoding samples.

    Args:
      path: an audio file.

    Returns:
      The `soundfile.info` object (fields `samplerate`, `channels`, `frames`, `duration`).

    Raises:
      AudioError: reason "not_found", "permission_denied", "unreadable" (not audio, or a
        corrupt header) or "empty" (the header declares zero frames).
    """
    _check_file(path)
    try:
        info = sf.info(path)
    except _READ_ERRORS as e:
        raise _open_error(path, e) from e
    if info.frames == 0:
        raise AudioError(path, "empty", "the file holds no samples")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(path, "unreadable", f"bad header: {info.samplerate} Hz, "
                         f"{info.channels} channels")
    return info


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resamples a mono waveform by the exact rational factor target_rate / source_rate.

    Args:
      waveform: float32 [n].
      source_rate: the rate `waveform` was sampled at, in Hz.
      target_rate: the wanted rate, in Hz.

    Returns:
      float32 [ceil(n * target_rate / source_rate)].
    """
    if source_rate == target_rate:
        return waveform
    g = math.gcd(int(source_rate), int(target_rate))
    # resample_poly low-pass filters (Kaiser window) before decimating: no aliasing.
    out = scipy.signal.resample_poly(waveform, target_rate // g, source_rate // g)
    return out.astype(np.float32, copy=False)


def load_audio(path: str, sample_rate: int = 16000, min_samples: int = 160) -> np.ndarray:
    """Reads an audio file as a checked mono waveform at `sample_rate`.

    Any format libsndfile reads is accepted (WAV with 8/16/24/32-bit integer or float samples,
    FLAC, OGG Vorbis/Opus, AIFF, ...). Channels are averaged to mono and the result is
    resampled with `scipy.signal.resample_poly`.

    Args:
      path: the audio file.
      sample_rate: the output sample rate in Hz.
      min_samples: the fewest samples (after resampling) a usable clip has.

    Returns:
      float32 [n] with n >= min_samples, finite, peak absolute value in [1e-5, 1].

    Raises:
      AudioError: with `reason` one of "not_found", "permission_denied", "unreadable",
        "empty", "non_finite", "too_short" or "silent".
    """
    _check_file(path)
    try:
        data, source_rate = sf.read(path, dtype="float32", always_2d=True)
    except _READ_ERRORS as e:
        raise _open_error(path, e) from e
    return _to_clip(path, data, source_rate, sample_rate, min_samples)


def _to_clip(path: str, data: np.ndarray, source_rate: int, sample_rate: int,
             min_samples: int, where: str = "") -> np.ndarray:
    """Checks decoded frames [n, channels] and makes them a mono clip at `sample_rate`
    (see `load_audio`); `where` ("12.0-22.0 s") goes into error details."""
    at = f" at {where}" if where else ""
    if data.shape[0] == 0:
        raise AudioError(path, "empty", f"the file holds no samples{at}")
    if not np.isfinite(data).all():
        raise AudioError(path, "non_finite", f"NaN or Inf samples{at}")
    peak = float(np.max(np.abs(data)))
    if peak > 1.0:
        # Float files may hold huge values (up to 3.4e38): scale before mixing channels,
        # whose sum would overflow float32.
        data = data / np.float32(peak)
    waveform = data.mean(axis=1, dtype=np.float32)
    waveform = resample(waveform, source_rate, sample_rate)
    if waveform.shape[0] < min_samples:
        raise AudioError(
            path, "too_short",
            f"{waveform.shape[0]} samples at {sample_rate} Hz, fewer than {min_samples}{at}")
    peak = float(np.max(np.abs(waveform)))
    if not np.isfinite(peak):
        raise AudioError(path, "non_finite", f"non-finite after resampling{at}")
    if peak < SILENCE_PEAK:
        raise AudioError(path, "silent", f"peak {peak:.2g} below {SILENCE_PEAK:g}{at}")
    if peak > 1.0:
        # Float files (and resampling overshoot) may exceed full scale; the prepared corpus
        # stores int16, which would clip, so scale the whole clip down instead.
        waveform = waveform / np.float32(peak)
    return np.ascontiguousarray(waveform, dtype=np.float32)


class SpooledAudio:
    """A file decoded block by block into a temporary float32 file: the samples
    `load_audio` returns, read back by range, never holding the whole clip in memory.

    Decoding makes two passes (the file's peak first, as `load_audio` scales float files
    whose peak exceeds full scale before mixing channels), then mixes to mono and
    resamples block by block; the blocks overlap by the resampling filter's length, so
    the samples are exactly those of `load_audio` (`scipy.signal.resample_poly` on the
    whole clip). The same checks apply and raise the same `AudioError`s.

    Args:
      path: the audio file.
      sample_rate, min_samples: as in `load_audio`.
      block_seconds: decoded per block (memory is a few blocks, whatever the length).
      tmp_dir: where the temporary file goes (default: the system's).

    Attributes:
      num_samples: samples at `sample_rate`.

    Use as a context manager, or call `close()` (it deletes the temporary file).
    """

    def __init__(self, path: str, sample_rate: int = 16000, min_samples: int = 160,
                 block_seconds: float = 30.0, tmp_dir: str = None):
        import tempfile

        info = read_audio_info(path)
        self.path, self.sample_rate = path, sample_rate
        self._file = tempfile.TemporaryFile(dir=tmp_dir)
        try:
            self._spool(path, info, sample_rate, min_samples, block_seconds)
        except BaseException:
            self._file.close()
            raise

    def _spool(self, path, info, sample_rate, min_samples, block_seconds):
        source_rate, total = info.samplerate, info.frames
        g = math.gcd(int(source_rate), int(sample_rate))
        up, down = sample_rate // g, source_rate // g
        # Input samples either side of a block that the resampling filter reaches
        # (resample_poly's filter spans 10 * max(up, down) taps at the upsampled rate),
        # rounded to whole multiples of `down` so every block starts on an output sample.
        margin = 0 if up == down else math.ceil((10 * max(up, down) / up + 2) / down) * down
        block = max(1, int(block_seconds * source_rate) // down) * down
        try:
            with sf.SoundFile(path) as f:
                raw_peak = 0.0
                for data in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                    if not np.isfinite(data).all():
                        raise AudioError(path, "non_finite", "NaN or Inf samples")
                    if data.size:
                        raw_peak = max(raw_peak, float(np.max(np.abs(data))))
                scale = np.float32(1.0 / raw_peak) if raw_peak > 1.0 else None
                total_out = math.ceil(total * up / down)
                peak, written = 0.0, 0
                for start in range(0, total, block):
                    lo, hi = max(0, start - margin), min(total, start + block + margin)
                    f.seek(lo)
                    data = f.read(hi - lo, dtype="float32", always_2d=True)
                    if scale is not None:
                        data = data * scale
                    mono = data.mean(axis=1, dtype=np.float32)
                    out = resample(mono, source_rate, sample_rate)
                    offset = lo * up // down
                    first = start * up // down
                    last = min(total_out, (start + block) * up // down)
                    out = np.ascontiguousarray(out[first - offset:last - offset], np.float32)
                    if out.size:
                        peak = max(peak, float(np.max(np.abs(out))))
                    self._file.write(out.tobytes())
                    written += out.size
        except AudioError:
            raise
        except _READ_ERRORS as e:
            raise _open_error(path, e) from e
        if written < min_samples:
            raise AudioError(path, "too_short", f"{written} samples at {sample_rate} Hz, "
                             f"fewer than {min_samples}")
        if not np.isfinite(peak):
            raise AudioError(path, "non_finite", "non-finite after resampling")
        if peak < SILENCE_PEAK:
            raise AudioError(path, "silent", f"peak {peak:.2g} below {SILENCE_PEAK:g}")
        self.num_samples = written
        self._scale = np.float32(1.0 / peak) if peak > 1.0 else None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as float32 [stop - start]; zeros outside the clip."""
        out = np.zeros(max(0, stop - start), np.float32)
        lo, hi = max(start, 0), min(stop, self.num_samples)
        if hi > lo:
            self._file.seek(4 * lo)
            out[lo - start:hi - start] = np.frombuffer(self._file.read(4 * (hi - lo)),
                                                       np.float32)
            if self._scale is not None:
                out *= self._scale
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def chunk_bounds(num_frames: int, chunk_frames: int) -> List[Tuple[int, int]]:
    """Splits `num_frames` into round(num_frames / chunk_frames) (at least 1) nearly equal
    chunks, each 0.67x to 1.5x `chunk_frames` long: no short tail. [(start, stop), ...]"""
    count = max(1, int(round(num_frames / chunk_frames))) if chunk_frames > 0 else 1
    edges = [num_frames * i // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def iter_audio_chunks(path: str, sample_rate: int = 16000, chunk_seconds: float = 10.0,
                      min_samples: int = 160):
    """Reads a file chunk by chunk (never the whole file at once) as checked mono clips.

    A file of d seconds gives round(d / chunk_seconds) (at least 1) nearly equal chunks,
    decoded one at a time (libsndfile seeks: memory is one chunk whatever the file's
    length). A file no longer than 1.5 chunks is one chunk, identical to `load_audio`.

    Args:
      path: the audio file.
      sample_rate, min_samples: as in `load_audio`.
      chunk_seconds: target chunk length; <= 0 reads the whole file as one chunk.

    Yields:
      (start_seconds, result): `result` is float32 [n] (as `load_audio` returns) or the
      `AudioError` of a chunk that failed a check (silent, non-finite, ...). The caller
      decides what a bad chunk means.

    Raises:
      AudioError: the file cannot be opened at all (not found, unreadable, empty, ...).
    """
    info = read_audio_info(path)
    source_rate = info.samplerate
    if chunk_seconds <= 0 or info.frames <= 1.5 * chunk_seconds * source_rate:
        yield 0.0, _guarded(lambda: load_audio(path, sample_rate, min_samples))
        return
    bounds = chunk_bounds(info.frames, int(round(chunk_seconds * source_rate)))
    try:
        with sf.SoundFile(path) as f:
            for start, stop in bounds:
                where = f"{start / source_rate:.1f}-{stop / source_rate:.1f} s"
                try:
                    data = f.read(stop - start, dtype="float32", always_2d=True)
                except _READ_ERRORS as e:  # a corrupt body: keep what was read so far
                    yield start / source_rate, AudioError(path, "unreadable",
                                                          f"{e} at {where}")
                    return
                if data.shape[0] == 0:  # the header promised more than the file holds
                    return
                yield start / source_rate, _guarded(
                    lambda: _to_clip(path, data, source_rate, sample_rate, min_samples, where))
    except _READ_ERRORS as e:
        raise _open_error(path, e) from e


def _guarded(read):
    try:
        return read()
    except AudioError as e:
        return e


def load_audio_excerpt(path: str, sample_rate: int = 16000, max_seconds: float = 10.0,
                       position: float = 0.0, min_samples: int = 160) -> np.ndarray:
    """At most `max_seconds` of a file, decoded without reading the rest (libsndfile
    seeks), as a checked mono clip like `load_audio`. A file no longer than that is read
    whole (exactly `load_audio`).

    Args:
      position: in [0, 1]: where the excerpt starts, as a fraction of the possible range
        [0, duration - max_seconds].
    """
    info = read_audio_info(path)
    frames = int(round(max_seconds * info.samplerate))
    if max_seconds <= 0 or info.frames <= frames:
        return load_audio(path, sample_rate, min_samples)
    start = int(min(max(position, 0.0), 1.0) * (info.frames - frames))
    where = f"{start / info.samplerate:.1f}-{(start + frames) / info.samplerate:.1f} s"
    try:
        data, source_rate = sf.read(path, start=start, stop=start + frames, dtype="float32",
                                    always_2d=True)
    except _READ_ERRORS as e:
        raise _open_error(path, e) from e
    return _to_clip(path, data, source_rate, sample_rate, min_samples, where)
