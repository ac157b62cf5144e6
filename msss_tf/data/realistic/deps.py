"""Locating the optional renderers with an error that says what to install."""

import importlib
import importlib.util
import os

from msss_tf.packages import CORPUS_INSTALL_HINT as INSTALL_HINT


class MissingCorpusPackageError(ImportError):
    """An optional package the realistic corpus needs is not installed."""


def require(module: str, package: str):
    """Imports `module`, or raises MissingCorpusPackageError naming pip `package`.

    Args:
      module: the import name, e.g. "espeakng_loader".
      package: the PyPI name, e.g. "espeakng-loader".
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingCorpusPackageError(
            f"the realistic corpus needs the package {package!r}, which is not installed "
            f"({e}); install the corpus extra: {INSTALL_HINT}") from e


def soundfont_path() -> str:
    """Path of the General MIDI SoundFont TimGM6mb.sf2 that the pretty-midi wheel ships.

    The package is located without importing it: pretty_midi's import pulls in mido and
    importlib_resources, which the corpus does not otherwise need.
    """
    try:
        spec = importlib.util.find_spec("pretty_midi")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingCorpusPackageError(
            "the realistic corpus needs the package 'pretty-midi' (for the SoundFont "
            f"TimGM6mb.sf2 it ships), which is not installed; install the corpus extra: "
            f"{INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "TimGM6mb.sf2")
        if os.path.isfile(path):
            return path
    raise MissingCorpusPackageError(
        "pretty-midi is installed but its TimGM6mb.sf2 is missing; reinstall it: "
        "pip install --force-reinstall 'pretty-midi>=0.2.10,<0.3'")
