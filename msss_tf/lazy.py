"""Public names of a package imported on first use (PEP 562), so that importing the
package (and the `msss-tf` command, which lives in it) loads no TensorFlow or Keras
before a name that needs them is used.

    __getattr__, __dir__ = lazy_exports(__name__, {"Name": "submodule", ...}, globals())

A module is named relative to the package ("keras_model") or in full ("msss_tf.x.y").
A name not listed raises AttributeError, which is also how `from package import
submodule` falls back to importing the submodule.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Tuple


def lazy_exports(package: str, public: Dict[str, str],
                 namespace: dict) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """(`__getattr__`, `__dir__`) for `package` whose names `public` maps to modules."""

    def __getattr__(name):
        module = public.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        full = module if module.startswith("msss_tf") else f"{package}.{module}"
        value = getattr(importlib.import_module(full), name)
        namespace[name] = value  # later look-ups skip __getattr__
        return value

    def __dir__():
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
