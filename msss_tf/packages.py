"""Checks that a job's packages are importable before the job starts.

Every package a documented job needs is in `install_requires`, so these checks fail only
in a broken or hand-made environment (`pip install --no-deps`, a package removed later)
or for the optional extras. Either way the user learns it in the first second, with the
pip line that fixes it, instead of minutes into the job.
"""

from __future__ import annotations

import importlib.util
from typing import Iterable, Mapping

# Import name -> the pip requirement that provides it.
PIP_NAMES: Mapping[str, str] = {
    "sed_eval": "sed_eval",
    "dcase_util": "dcase_util",
    "ai_edge_litert": "ai-edge-litert",
    "matplotlib": "matplotlib",
    "tensorflow_datasets": "tensorflow-datasets",
}


# The corpus renderers: tinysoundfont's own requirement, PyAudio, has no Linux wheel and is
# only for playback, so it is installed without its dependencies (docs/corpus.md).
CORPUS_INSTALL_HINT = (
    "pip install 'msss-tf[corpus]' && pip install --no-deps 'tinysoundfont>=0.3.6,<0.4'")


class MissingPackageError(ImportError):
    """A package a job needs is not importable; the message says what to install."""


def missing_modules(modules: Iterable[str]) -> list:
    """The names in `modules` that cannot be imported (checked without importing them)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken parent package, or a bad __spec__
            found = False
        if not found:
            missing.append(name)
    return missing


def require_modules(modules: Iterable[str], job: str, hint: str = "") -> None:
    """Raises MissingPackageError naming `job`, the missing modules and the pip command.

    Args:
        modules: import names, e.g. ("sed_eval", "dcase_util").
        job: what needs them, for the message, e.g. "msss-tf probe (synthetic_events)".
        hint: the install command, when plain `pip install NAME` is not it.
    """
    missing = missing_modules(modules)
    if missing:
        install = hint or "pip install " + " ".join(sorted({PIP_NAMES.get(m, m)
                                                            for m in missing}))
        raise MissingPackageError(
            f"{job} needs {', '.join(missing)}, which is not installed in this Python "
            f"environment; install it with: {install}"
            + ("" if hint else " (or reinstall msss-tf with `pip install -e .`, which "
               "installs every package its jobs use)"))
