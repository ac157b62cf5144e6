"""Run records that travel: paths and command lines written without a machine's layout.

Results, summaries and generated docs are committed and shared, so they must not hold a
machine's absolute paths (a home folder, a scratch disk): paths inside the current
folder are written relative to it, others as their last component.
"""

from __future__ import annotations

import os
import shlex
from typing import Sequence


def portable_path(path: str) -> str:
    """`path` relative to the current folder when inside it, else `.../<basename>`."""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    relative = os.path.relpath(text)
    if relative != os.pardir and not relative.startswith(os.pardir + os.sep):
        return relative
    return os.path.join("...", os.path.basename(os.path.normpath(text)))


def portable_command(argv: Sequence[str]) -> str:
    """A shell command line from `argv` with the program's and every path's location
    made portable (`--out=/data/out/x.json` -> `--out=.../x.json`)."""
    words = []
    for i, arg in enumerate(argv):
        if i == 0:
            arg = os.path.basename(arg)
        elif arg.startswith("-") and "=" in arg:
            flag, value = arg.split("=", 1)
            arg = f"{flag}={portable_path(value)}" if os.path.isabs(value) else arg
        elif os.path.isabs(arg):
            arg = portable_path(arg)
        words.append(shlex.quote(arg))
    return " ".join(words)
