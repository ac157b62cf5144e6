"""Atomic file writes: a reader (or a job killed mid-write and restarted) sees the old
file or the complete new one, never a part. Every single-file writer of the package
goes through here; the temporary name is `<path>.tmp-<pid><suffix>` beside the target,
so a run folder's leftovers have one recognisable shape (`pretrain` removes them).

Writes that commit several files or a folder at once (TFRecord shards, the corpus
arrays, SavedModel folders, Keras checkpoints and backups) keep their own protocols.
`file_sha256` is the checksum that verifies such files later.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

TMP_INFIX = ".tmp-"


def temporary_path(path: str, suffix: str = "") -> str:
    """The temporary name a write of `path` uses: `<path>.tmp-<pid><suffix>`."""
    return f"{path}{TMP_INFIX}{os.getpid()}{suffix}"


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path` to write to; renames it onto `path` when the
    block ends, or removes it if the block raises. `suffix` keeps an extension that a
    writer insists on (e.g. ".wav" for soundfile)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_bytes_atomically(path: str, data: bytes) -> str:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def write_text_atomically(path: str, text: str) -> str:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return path


def write_json_atomically(path: str, obj: dict, **dump_kwargs) -> str:
    """`obj` as indented JSON (plus a final newline); `dump_kwargs` go to `json.dump`."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, **dump_kwargs)
        f.write("\n")
    return path


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
