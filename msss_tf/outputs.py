"""Output folders that cannot be written: one error for every job that writes one.

`OutputFolderError` is raised (naming the folder and the flag that chose it) when an
export, the probe results, the embedding cache or `msss-tf embed`'s file cannot be
written: permission denied, a read-only file system, a full disk. `writing_to` turns such
an error raised inside a block into one; `ensure_writable_folder` checks a folder before
any long work. TensorFlow is not imported here: its `PermissionDeniedError` is recognised
only when TensorFlow is already loaded (as it is whenever it raised one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile


class OutputFolderError(OSError, ValueError):
    """An output folder (export, probe results, embedding cache) cannot be written:
    read-only, permission denied, read-only file system, disk full. The message names the
    folder and the flag. Both an OSError and a ValueError: the CLI reports ValueErrors as
    `msss-tf CMD: error: ...` (exit 2) instead of a traceback."""


# Errors of writing that the user fixes by choosing or repairing the folder.
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                 getattr(errno, "EDQUOT", errno.ENOSPC)}


def _is_tf_permission_denied(error: BaseException) -> bool:
    tf = sys.modules.get("tensorflow")
    errors = getattr(tf, "errors", None)
    return errors is not None and isinstance(error, errors.PermissionDeniedError)


@contextlib.contextmanager
def writing_to(folder: str, what: str):
    """Turns a PermissionError (or a read-only file system, a full disk; or TensorFlow's
    PermissionDeniedError) raised inside the block into an `OutputFolderError` that names
    `folder` and says what was being written (`what`, e.g. "the encoder export
    (--export_dir)")."""
    try:
        yield
    except OutputFolderError:
        raise
    except OSError as e:
        if not (isinstance(e, PermissionError) or e.errno in _WRITE_ERRNOS):
            raise
        why = e.strerror or str(e) or type(e).__name__
        if e.filename and os.path.abspath(os.fspath(e.filename)) != os.path.abspath(folder):
            why += f": {e.filename}"
        raise _folder_error(folder, what, why, e.errno) from e
    except Exception as e:  # pylint: disable=broad-except
        if not _is_tf_permission_denied(e):
            raise
        raise _folder_error(folder, what, e.message, errno.EACCES) from e


def _folder_error(folder, what, why, code) -> OutputFolderError:
    error = OutputFolderError(
        f"cannot write {what} to the folder {folder} ({why}): make it writable, free some "
        f"space, or choose another folder")
    error.errno = code
    return error


def ensure_writable_folder(folder: str, what: str) -> str:
    """Creates `folder` if needed and checks that a file can be written in it, before
    any long work; `OutputFolderError` (naming it) otherwise. Returns `folder`."""
    with writing_to(folder, what):
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=folder)
        os.close(handle)
        os.remove(probe)
    return folder
