"""`msss-tf embed`: embeddings of audio files, with any model, into one .npz."""

from __future__ import annotations

import os

from absl import flags

from msss_tf.atomic import atomic_path
from msss_tf.cli.common import UsageError, require

# The flags defined here belong to the caller, msss_tf.cli (one group in --help).
flags.disclaim_key_flags()


def define_embed(fv):
    flags.DEFINE_string("model", None, "An exported SavedModel folder (or its base folder), a "
                        ".tflite file, a run directory or a .keras file.", flag_values=fv)
    flags.DEFINE_string("out", None, "The .npz to write: ids, scene_embeddings [n, D], "
                        "timestamp_embeddings [n, T_max, D] zero-padded, timestamps_ms "
                        "[n, T_max] padded with -1, num_timestamps [n], skipped.", flag_values=fv)


def run_embed(fv, files=()):
    """Embeds audio files (FILES, or folders of them) into one .npz; skips bad files.

    Memory does not grow with a file's length: each file is decoded block by block and
    its windows encoded a few at a time (`msss_tf.embedding.embed_file`); the timestamp
    embeddings go to a temporary file beside the output and are copied into the .npz
    block by block."""
    import tempfile

    import keras
    import numpy as np

    from msss_tf.data.audio import AudioError
    from msss_tf.data.files import find_audio_files
    from msss_tf.embedding import embed_file, load_embedder, save_npz_streamed
    from msss_tf.outputs import writing_to

    require(fv, "model", "out")
    paths, unsupported = [], []
    for item in files:
        paths.extend(find_audio_files(item, unsupported) if os.path.isdir(item) else [item])
    skipped = [f"{path}: unsupported_format (libsndfile cannot read this format here)"
               for path in unsupported]
    for line in skipped:
        print(f"skipped {line}")
    if not paths:
        raise UsageError("no audio files given: msss-tf embed --model=M --out=F.npz FILE...")
    out = fv.out if fv.out.endswith(".npz") else fv.out + ".npz"
    out_dir = os.path.dirname(os.path.abspath(out))
    embedder = load_embedder(fv.model)
    ids, scenes, lengths = [], [], []
    bar = keras.utils.Progbar(len(paths), unit_name="file") if len(paths) > 10 else None
    with writing_to(out_dir, "the embeddings (--out)"):
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir) as spill:
            size = int(embedder.scene_embedding_size)
            row_bytes = 4 * size
            for i, path in enumerate(paths):
                start = spill.tell()
                try:
                    scene, count = embed_file(
                        embedder, path, lambda block: spill.write(
                            np.ascontiguousarray(block, np.float32).tobytes()),
                        tmp_dir=out_dir)
                except (AudioError, ValueError) as e:
                    spill.seek(start)
                    spill.truncate()
                    print(f"skipped {path}: {e}")
                    skipped.append(f"{path}: {e}")
                else:
                    ids.append(path)
                    scenes.append(scene)
                    lengths.append(count)
                if bar is not None:
                    bar.update(i + 1)
            if not ids:
                raise UsageError(f"none of the {len(paths)} file(s) could be embedded")
            longest = max(lengths)
            hop_ms = float(embedder.hop_ms)

            def padded_rows():  # [n, T_max, D], each file's rows then zeros
                spill.seek(0)
                for count in lengths:
                    for first in range(0, count, 4096):
                        rows = min(4096, count - first)
                        yield np.frombuffer(spill.read(rows * row_bytes), np.float32)
                    yield np.zeros((longest - count) * size, np.float32)

            stamps = np.full((len(ids), longest), -1.0, np.float32)
            for i, count in enumerate(lengths):
                stamps[i, :count] = np.arange(count, dtype=np.float32) * np.float32(hop_ms)
            with atomic_path(out) as tmp:
                save_npz_streamed(
                    tmp,
                    dict(ids=np.array(ids), scene_embeddings=np.stack(scenes),
                         timestamps_ms=stamps, num_timestamps=np.array(lengths, np.int64),
                         skipped=np.array(skipped, dtype=str), model=np.array(fv.model)),
                    dict(timestamp_embeddings=((len(ids), longest, size), np.float32,
                                               padded_rows())))
    print(f"embedded {len(ids)} file(s), skipped {len(skipped)}: {out}")
    return 0
