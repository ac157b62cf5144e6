"""Finding a corpus's audio files and recording the ones a loader skipped.

`find_audio_files` lists the readable audio under a folder (symlinks followed, each real
directory once); `audio_files_or_fail` also records files in formats libsndfile cannot read
here in a `SkipReport` and fails when nothing is left. `SkipReport` collects (path, reason)
for every skipped file, thread-safely, and writes them as JSON.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Dict, List, Tuple

import soundfile as sf

from msss_tf.data.audio import AUDIO_EXTENSIONS, UNSUPPORTED_AUDIO_EXTENSIONS, AudioError
from msss_tf.atomic import write_json_atomically


def find_audio_files(root: str, unsupported: List[str] = None) -> List[str]:
    """Lists the audio files under `root`, recursively, in sorted order.

    Files match `AUDIO_EXTENSIONS` case-insensitively. Symlinked directories are followed,
    each real directory walked once (a link back up the tree, or two links to one folder,
    cannot loop or list files twice); symlinked files are listed. Directories that cannot
    be read are skipped.

    Args:
      root: the directory to search.
      unsupported: if given, files with an audio extension that libsndfile cannot read here
        (`UNSUPPORTED_AUDIO_EXTENSIONS`, e.g. .m4a) are appended to it, sorted, so the
        caller can report them as skipped.

    Returns:
      Sorted list of file paths, each `root` joined with the path below it.

    Raises:
      FileNotFoundError: `root` does not exist or is not a directory.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"audio directory not found (or not a directory): {root}")
    found, other, walked = [], [], set()
    # onerror=None: os.walk silently skips directories it cannot list.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            info = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (info.st_dev, info.st_ino) in walked:  # reached again through a link
            dirnames[:] = []
            continue
        walked.add((info.st_dev, info.st_ino))
        dirnames.sort()
        for name in filenames:
            lower = name.lower()
            if lower.endswith(AUDIO_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
            elif lower.endswith(UNSUPPORTED_AUDIO_EXTENSIONS):
                other.append(os.path.join(dirpath, name))
    if unsupported is not None:
        unsupported.extend(sorted(other))
    return sorted(found)


def report_unsupported(paths: List[str], report: "SkipReport") -> None:
    """Records files of an audio format libsndfile cannot read in `report`."""
    for path in paths:
        report.note_seen()
        report.add(path, "unsupported_format",
                   f"libsndfile {sf.__libsndfile_version__} does not read "
                   f"{os.path.splitext(path)[1]} files; convert them to WAV or FLAC "
                   "(e.g. ffmpeg -i IN -ar 16000 OUT.flac)")


def audio_files_or_fail(folder: str, report: "SkipReport") -> List[str]:
    """`find_audio_files(folder)`, the unreadable formats recorded in `report`; a
    ValueError naming the folder when no file is left."""
    unsupported: List[str] = []
    files = find_audio_files(folder, unsupported)
    report_unsupported(unsupported, report)
    if not files:
        raise ValueError(f"no usable audio in {folder}: no files with extensions "
                         f"{', '.join(AUDIO_EXTENSIONS)}"
                         + (f" ({len(unsupported)} file(s) in formats libsndfile cannot "
                            f"read here, e.g. {unsupported[0]})" if unsupported else ""))
    return files


class SkipReport:
    """Collects the files a loader skipped, with the reason for each.

    Thread-safe: parallel decoders in a `tf.data` pipeline share one report. A path is
    recorded once; adding it again (the next epoch hits the same corrupt file) is a no-op.

    Attributes:
      seen: how many files the loader looked at (skipped ones included).
      items: list of (path, reason), in the order they were added.
    """

    def __init__(self):
        self.seen = 0
        self.items: List[Tuple[str, str]] = []
        self.details: Dict[str, str] = {}  # path -> human-readable detail, when known
        self._paths = set()
        self._lock = threading.Lock()

    def note_seen(self, n: int = 1) -> None:
        """Counts `n` more files looked at."""
        with self._lock:
            self.seen += n

    def add(self, path: str, reason: str, detail: str = "") -> bool:
        """Records that `path` was skipped for `reason`; returns False if it already was."""
        path = str(path)
        with self._lock:
            if path in self._paths:
                return False
            self._paths.add(path)
            self.items.append((path, reason))
            if detail:
                self.details[path] = detail
            return True

    def add_error(self, error: AudioError, path: str = None) -> bool:
        """Records an `AudioError`'s path (or `path`), reason and detail."""
        return self.add(error.path if path is None else path, error.reason, error.detail)

    def __contains__(self, path: str) -> bool:
        return str(path) in self._paths

    @property
    def count(self) -> int:
        """How many files were skipped."""
        return len(self.items)

    def by_reason(self) -> Dict[str, int]:
        """Skipped-file counts per reason, most frequent first."""
        counts = collections.Counter(reason for _, reason in self.items)
        return dict(counts.most_common())

    def reasons_text(self) -> str:
        """Counts per reason in words, e.g. "2 unreadable, 1 silent"."""
        return ", ".join(f"{n} {reason}" for reason, n in self.by_reason().items())

    def summary(self, max_paths: int = 5) -> str:
        """A human-readable summary: counts per reason, then the first `max_paths` files."""
        of = f" of {self.seen}" if self.seen else ""
        line = f"skipped {self.count}{of} files"
        if self.count:
            line += ": " + self.reasons_text()
        lines = [line]
        lines += [f"  {path}: {reason}" + (f" ({self.details[path]})" if path in self.details
                                            else "") for path, reason in self.items[:max_paths]]
        if self.count > max_paths:
            lines.append(f"  ... and {self.count - max_paths} more")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The JSON form: {"skipped": [{"path", "reason"}, ...], "counts", "total_seen"}."""
        return {
            "skipped": [{"path": p, "reason": r, **({"detail": self.details[p]}
                                                    if p in self.details else {})}
                        for p, r in self.items],
            "counts": self.by_reason(),
            "total_seen": self.seen,
        }

    def write(self, path: str) -> str:
        """Writes `to_dict()` as JSON to `path` atomically (temporary file, then rename)."""
        write_json_atomically(path, self.to_dict())
        return path

    def __repr__(self) -> str:
        return f"SkipReport(seen={self.seen}, skipped={self.count}, {self.by_reason()})"
