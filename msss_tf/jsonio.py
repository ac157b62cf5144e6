"""JSON files written atomically: a reader sees either the old file or the complete new one."""

from __future__ import annotations

import json
import os


def write_json_atomically(path: str, obj: dict) -> None:
    """Writes `obj` as JSON so a reader sees either the old file or the complete new one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
