"""Embeddings of a task's splits for probing, cached on disk.

The encoder never trains here. For each task and split, embeddings are computed once and
cached under a key of the encoder's weights, its configuration, the embedding settings
and the task, so re-running a probe (another probe type, another seed) reuses them. The
cache holds no pickles: a corrupt, stale or foreign entry is recomputed with a
`CacheWarning`, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from typing import Optional

import keras
import numpy as np

from msss_tf.atomic import atomic_path, file_sha256, write_json_atomically
from msss_tf.embedding import Embedder
from msss_tf.outputs import writing_to


# -------------------------------------------------------------------- embeddings
def encoder_fingerprint(embedder: Embedder) -> str:
    """A short hash of the encoder's weights, config and embedding settings."""
    digest = hashlib.sha1()
    for weight in embedder.encoder.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    digest.update(embedder.config.to_json().encode())
    digest.update(f"hop={embedder.hop_ms}".encode())
    return digest.hexdigest()[:16]


def _same_length_batches(examples, batch_size):
    """Groups consecutive examples of equal length (embedding pads nothing)."""
    batch = []
    for example in examples:
        if batch and (len(batch) == batch_size or len(example.waveform) != len(batch[0].waveform)):
            yield batch
            batch = []
        batch.append(example)
    if batch:
        yield batch


def embed_split(embedder: Embedder, task, split: str, cache_dir: Optional[str] = None,
                batch_size: int = 16, progress: bool = True) -> dict:
    """Embeddings and labels of one split, from the cache when present and intact.

    Returns a dict: "ids" [n]; scene tasks: "x" [n, D], "labels" (list of class-index
    lists); event tasks: "x" [n, T, D] as a list per clip (T varies), "timestamps_ms"
    (the same), "labels" (event lists). Labels and ids come back as JSON would give them
    (lists, not tuples), cached or not.

    The cache (see `read_embedding_cache`) holds no pickles: a corrupt, stale or foreign
    entry is recomputed with a warning, never trusted.
    """
    paths = expect = None
    if cache_dir and hasattr(embedder, "encoder"):  # no weights to fingerprint: no cache
        fingerprint = encoder_fingerprint(embedder)
        source = str(getattr(task, "source", ""))
        key = f"{fingerprint}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
        folder = os.path.join(cache_dir, task.name, key)
        paths = (os.path.join(folder, f"{split}.npz"), os.path.join(folder, f"{split}.json"))
        expect = {"format": CACHE_FORMAT, "task": task.name, "kind": task.kind,
                  "split": split, "source": source, "fingerprint": fingerprint}
        cached = read_embedding_cache(*paths, expect)
        if cached is not None:
            return cached
    ids, xs, labels, stamps = [], [], [], []
    count = task.num_examples(split)
    bar = keras.utils.Progbar(count, unit_name="clip") if progress else None
    for batch in _same_length_batches(task.examples(split), batch_size):
        audio = np.stack([e.waveform for e in batch]).astype(np.float32)
        if task.kind == "scene":
            xs.extend(embedder.scene_embeddings(audio, batch_size=batch_size))
        else:
            emb, ts = embedder.timestamp_embeddings(audio, batch_size=batch_size)
            xs.extend(emb)
            stamps.extend(ts)
        ids.extend(e.id for e in batch)
        labels.extend(e.label for e in batch)
        if bar is not None:
            bar.add(len(batch))
    if not ids:
        raise ValueError(f"task {task.name}: split {split!r} has no examples")
    if task.kind == "scene":
        arrays = {"x": np.stack(xs).astype(np.float32)}
    else:
        lengths = [len(x) for x in xs]
        arrays = {"x": np.concatenate(xs).astype(np.float32),
                  "timestamps_ms": np.concatenate(stamps).astype(np.float32),
                  "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)}
    try:  # the cached and the fresh data are the same Python objects: JSON's
        ids, labels = json.loads(json.dumps([ids, labels], default=_json_scalar))
    except (TypeError, ValueError) as e:
        if paths:
            warnings.warn(f"embedding cache: not caching {task.name}/{split}: its ids or "
                          f"labels are not JSON data ({e})", CacheWarning, stacklevel=2)
        paths = None
    data = _split_data(task.kind, ids, labels, arrays)
    if paths:
        write_embedding_cache(*paths, dict(expect, ids=ids, labels=labels), arrays)
    return data


# ------------------------------------------------------------------ embedding cache
# One entry per (encoder fingerprint, task source) folder and split: SPLIT.npz holds only
# numeric arrays (read with allow_pickle=False) and SPLIT.json the rest: ids, labels
# (class lists or event lists), each array's shape and dtype, the encoder fingerprint,
# the task and its source, and SHA-256 checksums of the .npz file and of the ids and
# labels. Event tasks' per-clip arrays [T_i, D] are stored concatenated [sum T_i, D]
# with "offsets" [n + 1] (clip i: rows offsets[i]:offsets[i + 1]).

CACHE_FORMAT = "msss-tf embedding cache 2"  # 1: a pickled dict in an object array
_CACHE_ARRAYS = {"scene": {"x": "float32"},
                 "event": {"x": "float32", "timestamps_ms": "float32", "offsets": "int64"}}


class CacheWarning(UserWarning):
    """An embedding cache entry was not used (corrupt, stale, foreign): recomputed."""


def _json_scalar(value):
    """json.dumps' fallback for NumPy scalars and arrays in labels."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _content_sha256(ids, labels) -> str:
    text = json.dumps([ids, labels], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _split_data(kind: str, ids, labels, arrays) -> dict:
    data = {"ids": ids, "labels": labels}
    if kind == "scene":
        data["x"] = arrays["x"]
    else:
        cuts = arrays["offsets"][1:-1]
        data["x"] = np.split(arrays["x"], cuts)
        data["timestamps_ms"] = np.split(arrays["timestamps_ms"], cuts)
    return data


def write_embedding_cache(npz_path: str, json_path: str, meta: dict, arrays: dict) -> None:
    """Writes one cache entry: the arrays (.npz, no object arrays), then the JSON sidecar
    with their shapes, dtypes and checksum. Each file goes under a temporary name and is
    renamed; a reader that sees a new .npz with an old sidecar finds the checksum wrong
    and recomputes."""
    folder = os.path.dirname(npz_path)
    with writing_to(folder, "the embedding cache (under --out_dir)"):
        os.makedirs(folder, exist_ok=True)
        with atomic_path(npz_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            meta = dict(meta, arrays={name: {"shape": list(a.shape), "dtype": a.dtype.name}
                                      for name, a in arrays.items()},
                        npz_sha256=file_sha256(tmp),
                        content_sha256=_content_sha256(meta["ids"], meta["labels"]),
                        written=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json_atomically(json_path, meta)


def read_embedding_cache(npz_path: str, json_path: str, expect: dict) -> Optional[dict]:
    """The cached split (as `embed_split` returns it), or None: absent, or not to be
    trusted, with a `CacheWarning` naming the file and why. Checked: the sidecar is JSON
    of this format for this task, split, source and encoder fingerprint; the .npz's
    checksum; arrays read without pickle (an object array is refused, not unpickled);
    each array's shape and dtype as recorded; offsets and counts consistent."""
    if not os.path.exists(npz_path) and not os.path.exists(json_path):
        return None
    try:
        return _read_embedding_cache(npz_path, json_path, expect)
    except _Untrusted as e:
        warnings.warn(f"embedding cache {e.path}: {e.why}; not trusted, recomputing",
                      CacheWarning, stacklevel=3)
        return None


class _Untrusted(Exception):
    def __init__(self, path, why):
        super().__init__(f"{path}: {why}")
        self.path, self.why = path, why


def _read_embedding_cache(npz_path, json_path, expect):
    if not os.path.exists(json_path):
        raise _Untrusted(npz_path, "no JSON sidecar (an old-format cache, pickled, or a "
                                   "foreign file)")
    if not os.path.exists(npz_path):
        raise _Untrusted(json_path, "its .npz is missing")
    try:
        with open(json_path) as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _Untrusted(json_path, f"unreadable JSON ({e})") from e
    if not isinstance(meta, dict):
        raise _Untrusted(json_path, "not a JSON object")
    for key, value in expect.items():
        if meta.get(key) != value:
            raise _Untrusted(json_path, f"{key} is {meta.get(key)!r}, expected {value!r}")
    ids, labels, specs = meta.get("ids"), meta.get("labels"), meta.get("arrays")
    if not (isinstance(ids, list) and isinstance(labels, list) and len(ids) == len(labels)
            and ids and isinstance(specs, dict)):
        raise _Untrusted(json_path, "ids, labels or arrays missing or inconsistent")
    if meta.get("content_sha256") != _content_sha256(ids, labels):
        raise _Untrusted(json_path, "the checksum of its ids and labels does not match")
    wanted = _CACHE_ARRAYS[expect["kind"]]
    if set(specs) != set(wanted) or any(
            not isinstance(specs[name], dict) or specs[name].get("dtype") != dtype
            for name, dtype in wanted.items()):
        raise _Untrusted(json_path, f"arrays {specs} are not {wanted}")
    try:
        checksum = file_sha256(npz_path)
    except OSError as e:
        raise _Untrusted(npz_path, f"unreadable ({e})") from e
    if checksum != meta.get("npz_sha256"):
        raise _Untrusted(npz_path, "checksum mismatch: truncated, modified or replaced")
    arrays = {}
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            if sorted(archive.files) != sorted(wanted):
                raise _Untrusted(npz_path, f"holds {sorted(archive.files)}, expected "
                                           f"{sorted(wanted)}")
            for name in wanted:
                arrays[name] = archive[name]  # an object array raises: never unpickled
    except _Untrusted:
        raise
    except Exception as e:  # bad zip, bad header, pickled object array, short read
        raise _Untrusted(npz_path, f"cannot read its arrays without pickle "
                                   f"({type(e).__name__}: {e})") from e
    for name, array in arrays.items():
        spec = specs[name]
        if array.dtype.name != spec["dtype"] or list(array.shape) != spec.get("shape"):
            raise _Untrusted(npz_path, f"{name} is {array.dtype.name} {list(array.shape)}, "
                                       f"the sidecar says {spec['dtype']} {spec.get('shape')}")
    n, x = len(ids), arrays["x"]
    if x.ndim != 2:
        raise _Untrusted(npz_path, f"x must be [rows, D], got shape {list(x.shape)}")
    if expect["kind"] == "scene":
        if len(x) != n:
            raise _Untrusted(npz_path, f"{len(x)} embeddings for {n} ids")
    else:
        offsets = arrays["offsets"]
        if (offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != len(x)
                or np.any(np.diff(offsets) <= 0)
                or arrays["timestamps_ms"].shape != (len(x),)):
            raise _Untrusted(npz_path, "offsets, timestamps and embeddings disagree")
    return _split_data(expect["kind"], ids, labels, arrays)
