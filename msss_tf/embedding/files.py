"""Embedding audio files of any length in bounded memory, and writing large `.npz` files.

`embed_file(embedder, path, write_timestamps)`: a file is decoded block by block into a
temporary file (`msss_tf.data.audio.SpooledAudio`) and its windows (`WindowPlan`) read
back and encoded a few at a time, with any window-based embedder; the same embeddings as
the whole clip in memory. `save_npz_streamed`: an `.npz` whose large arrays are written
block by block.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from msss_tf.embedding.windows import window_plan_of


def embed_file(embedder, path: str, write_timestamps, max_windows: int = 64,
               block_seconds: float = 30.0, tmp_dir: Optional[str] = None):
    """Scene and timestamp embeddings of one audio file of any length, in memory that does
    not grow with its length: the file is decoded into a temporary file
    (`msss_tf.data.audio.SpooledAudio`), and its windows are read back and encoded
    `max_windows` at a time. The same windows as `Embedder.scene_embeddings` /
    `timestamp_embeddings` on the whole clip, so the same embeddings (up to float
    summation order).

    Args:
        embedder: `Embedder`, `SavedModelEncoder` or `TFLiteEmbedder` (anything with
            `encode_windows(windows [c, segment_samples]) -> [c, J, D]` and a window plan).
        path: the audio file, read as `msss_tf.data.audio.load_audio` would read it.
        write_timestamps: called with consecutive blocks float32 [t, D] of the timestamp
            embeddings (at timestamps 0, hop_ms, 2 hop_ms, ...), in order.
        max_windows: windows per encoder call.
        block_seconds: audio decoded per block.
        tmp_dir: where the temporary file goes.

    Returns:
        (scene embedding float32 [D], the number T of timestamp embeddings written).

    Raises:
        AudioError: the file is not usable audio (as `load_audio`).
    """
    from msss_tf.data.audio import SpooledAudio

    plan = window_plan_of(embedder)
    hop, width = plan.config.stft_hop, plan.window_samples
    size = int(embedder.scene_embedding_size)

    def frames_at(audio, starts):  # sample starts int [c] -> frames [c, J, D]
        span = audio.read(int(starts[0]), int(starts[-1]) + width)
        windows = np.stack([span[s - starts[0]:s - starts[0] + width] for s in starts])
        return np.asarray(embedder.encode_windows(windows), np.float32)

    with SpooledAudio(path, plan.config.sample_rate, block_seconds=block_seconds,
                      tmp_dir=tmp_dir) as audio:
        num_samples = audio.num_samples
        padded = num_samples + int(plan.scene_pad(num_samples))
        starts = plan.scene_starts(plan.num_frames(padded)).numpy().astype(np.int64) * hop
        total = np.zeros(size, np.float64)
        for i in range(0, len(starts), max_windows):
            total += frames_at(audio, starts[i:i + max_windows]).sum(axis=(0, 1))
        scene = (total / (len(starts) * plan.frames_per_window)).astype(np.float32)

        starts, num_timestamps, num_tiles, _ = plan.timestamp_plan(num_samples)
        starts = starts.numpy().astype(np.int64) * hop - plan.start_pad
        num_timestamps, num_tiles = int(num_timestamps), int(num_tiles)
        tiles_per_call = max(1, max_windows // plan.shifts)
        written = 0
        for first in range(0, num_tiles, tiles_per_call):
            tiles = min(tiles_per_call, num_tiles - first)
            frames = frames_at(audio, starts[first * plan.shifts:(first + tiles) * plan.shifts])
            block, _ = plan.arrange_timestamp_frames(
                frames[None], tiles, tiles * plan.frames_per_window * plan.shifts)
            block = block.numpy()[0][:num_timestamps - written]
            write_timestamps(block)
            written += len(block)
    return scene, written


def save_npz_streamed(path: str, arrays: dict, streamed: dict) -> None:
    """Writes an `.npz` as `np.savez` does (stored, not compressed), where the arrays of
    `streamed` are written block by block and never held whole in memory.

    Args:
        path: the file to write.
        arrays: name -> NumPy array, written as they are.
        streamed: name -> (shape, dtype, blocks): `blocks` yields NumPy arrays whose
            elements, in order, fill an array of that shape (C order).
    """
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
        for name, (shape, dtype, blocks) in streamed.items():
            dtype = np.dtype(dtype)
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(
                    f, {"descr": np.lib.format.dtype_to_descr(dtype),
                        "fortran_order": False, "shape": tuple(int(d) for d in shape)})
                count = 0
                for block in blocks:
                    block = np.ascontiguousarray(block, dtype)
                    f.write(block.tobytes())
                    count += block.size
                if count != int(np.prod(shape)):
                    raise ValueError(f"{path}: {name}: {count} elements written, "
                                     f"{int(np.prod(shape))} expected for shape {shape}")
