"""`write_corpus_arrays`: an audio folder (or a corpus folder of `msss-tf corpus`)
decoded once into a corpus arrays folder, atomically, in bounded memory."""

from __future__ import annotations

import json
import os
import threading
from typing import Callable, Dict, List, Optional

import numpy as np

from msss_tf.data.arrays.layout import (AUDIO_NAME, FORMAT_NAME, FORMAT_VERSION, INFO_NAME,
                                        INT16, OFFSETS_NAME, to_int16)
from msss_tf.data.audio import AudioError, iter_audio_chunks
from msss_tf.data.files import SkipReport, audio_files_or_fail
from msss_tf.atomic import write_json_atomically

# The manifest `msss-tf corpus` writes beside its audio/ folder.
_CORPUS_MANIFEST = "manifest.json"


def write_corpus_arrays(
    source: str,
    out_dir: str,
    sample_rate: int = 16000,
    report: Optional[SkipReport] = None,
    *,
    max_clip_seconds: float = 10.0,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Dict:
    """Decodes every usable audio file of `source` into a corpus arrays folder `out_dir`.

    Each file is read with `load_audio`'s checks (mono, resampled to `sample_rate`); a file
    that fails is recorded in `report` and skipped, never fatal. Memory stays bounded
    whatever the corpus size: clips are appended to audio.npy one at a time, and a file
    longer than 1.5 x `max_clip_seconds` is decoded (and stored) in clips of about that
    length, as `prepare_corpus` does.

    The write is atomic: the arrays go to temporary names in `out_dir` and are renamed once
    complete, arrays.json last, so a run that fails or is killed never leaves a folder that
    `CorpusArrays.load` accepts (an earlier complete folder there stays intact until the
    new one is renamed over it).

    Args:
      source: a folder tree of audio files (`AUDIO_EXTENSIONS`, sorted order), or a corpus
        folder written by `msss-tf corpus` (it holds manifest.json and audio/): its audio
        folder is read in the manifest's file order.
      out_dir: the output folder (created).
      sample_rate: sample rate of the stored audio, in Hz.
      report: a `SkipReport` to fill (a new one if None); its entries go to arrays.json.
      max_clip_seconds: a longer file becomes round(duration / max_clip_seconds) clips of
        0.67x to 1.5x this length; a file up to 1.5x as long is one clip, exactly
        `load_audio`'s samples. <= 0: whole files.
      progress: optional callback(files_done, files_total).

    Returns:
      The arrays.json dict (see the `msss_tf.data.arrays` docstring).

    Raises:
      FileNotFoundError: `source` is not a directory.
      ValueError: `source` holds no usable audio (the message names the folder and the
        skip reasons), or is a TFRecord folder written by `prepare_corpus`.
    """
    source = os.fspath(source)
    out_dir = os.fspath(out_dir)
    report = report if report is not None else SkipReport()
    root, paths = _source_files(source, report)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tag = f".tmp-{os.getpid()}-{threading.get_ident()}"
    tmp_audio = os.path.join(out_dir, f".{AUDIO_NAME}{tag}")
    tmp_offsets = os.path.join(out_dir, f".{OFFSETS_NAME}{tag}")
    try:
        lengths: List[int] = []
        files: List[str] = []
        clips_per_file: List[int] = []
        with open(tmp_audio, "wb") as f:
            # The header is rewritten with the final length at the end: numpy pads it so
            # that the length of the first axis can grow in place.
            header_bytes = _write_npy_header(f, 0)
            for done, path in enumerate(paths, 1):
                report.note_seen()
                clips = _append_file(f, path, sample_rate, max_clip_seconds, report)
                if clips:
                    lengths.extend(clips)
                    files.append(os.path.relpath(path, root))
                    clips_per_file.append(len(clips))
                if progress is not None:
                    progress(done, len(paths))
            if not lengths:
                raise ValueError(f"no usable audio in {source}: {len(paths)} files, all "
                                 f"skipped ({report.reasons_text()})\n{report.summary()}")
            num_samples = int(np.sum(lengths, dtype=np.int64))
            f.seek(0)
            if _write_npy_header(f, num_samples) != header_bytes:
                raise RuntimeError("the .npy header changed length; audio.npy is not valid")
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        with open(tmp_offsets, "wb") as f:
            np.save(f, offsets)
        info = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "sample_rate": int(sample_rate),
            "num_clips": len(lengths),
            "num_samples": num_samples,
            "seconds_total": round(num_samples / sample_rate, 3),
            "encoding": f"{AUDIO_NAME}: int16 [num_samples], little endian; clip i is "
                        f"audio[offsets[i]:offsets[i + 1]] ({OFFSETS_NAME}, int64 "
                        "[num_clips + 1]); float = int16 / 32768",
            "max_clip_seconds": float(max_clip_seconds),
            "source": os.path.abspath(source),
            "audio_root": os.path.abspath(root),
            "num_files_seen": report.seen,
            "files": files,
            "clips_per_file": clips_per_file,
            "skipped": report.to_dict()["skipped"],
            "skipped_counts": report.by_reason(),
        }
        # Swap in: the old arrays.json goes first and the new one comes last, so no moment
        # shows a complete-looking folder with mismatched arrays.
        info_path = os.path.join(out_dir, INFO_NAME)
        if os.path.exists(info_path):
            os.remove(info_path)
        os.replace(tmp_audio, os.path.join(out_dir, AUDIO_NAME))
        os.replace(tmp_offsets, os.path.join(out_dir, OFFSETS_NAME))
        write_json_atomically(info_path, info)
    except BaseException:
        for path in (tmp_audio, tmp_offsets):
            if os.path.exists(path):
                os.remove(path)
        if created:
            try:
                os.rmdir(out_dir)  # only if nothing else was put there meanwhile
            except OSError:
                pass
        raise
    return info


def _source_files(source: str, report: SkipReport):
    """(audio root, the audio files to read in order) of a folder or a corpus folder."""
    if not os.path.isdir(source):
        raise FileNotFoundError(f"audio directory not found (or not a directory): {source}")
    manifest = _read_json_object(os.path.join(source, _CORPUS_MANIFEST))
    if manifest is not None and "shards" in manifest:
        raise ValueError(
            f"{source} is a TFRecord folder written by `msss-tf prepare`; corpus arrays are "
            f"decoded from audio files: pass the audio folder it was prepared from"
            + (f" ({manifest['source']})" if isinstance(manifest.get("source"), str) else ""))
    if manifest is not None and isinstance(manifest.get("files"), list) and isinstance(
            manifest.get("audio_dir"), str):
        root = os.path.join(source, manifest["audio_dir"])
        if not os.path.isdir(root):
            raise ValueError(f"{source}: {_CORPUS_MANIFEST} lists {len(manifest['files'])} "
                             f"files in {manifest['audio_dir']}/, but there is no such folder")
        # A listed file that is gone is recorded as "not_found" when it is read.
        return root, [os.path.join(root, str(name)) for name in manifest["files"]]
    paths = audio_files_or_fail(source, report)
    return source, paths


def _read_json_object(path: str) -> Optional[dict]:
    """The JSON object in `path`, or None if there is none (or it is not readable JSON)."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            content = json.load(f)
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _append_file(f, path: str, sample_rate: int, max_clip_seconds: float,
                 report: SkipReport) -> List[int]:
    """Appends the usable clips of one file to `f` as int16; returns their lengths.

    Skips are recorded as `prepare_corpus` does: a file that cannot be opened, or none of
    whose clips is usable, as PATH with the (first) reason; a bad clip of an otherwise
    usable long file as "PATH@START s".
    """
    lengths, bad = [], []
    try:
        for start, chunk in iter_audio_chunks(path, sample_rate, max_clip_seconds):
            if isinstance(chunk, AudioError):
                bad.append((start, chunk))
                continue
            pcm = to_int16(chunk)
            f.write(pcm.data)
            lengths.append(int(pcm.size))
    except AudioError as e:
        # The file could not be opened (iter_audio_chunks raises only then; errors while
        # reading are yielded, as `bad` clips).
        report.add_error(e)
        return lengths
    if not lengths and bad:
        report.add_error(bad[0][1])
    else:
        for start, error in bad:
            report.add_error(error, path=f"{path}@{start:.1f}s")
    return lengths


def _write_npy_header(f, length: int) -> int:
    """Writes a .npy (version 1.0) header for int16 [length] at f's position; returns
    the header's size in bytes (data follows it)."""
    start = f.tell()
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(INT16), "fortran_order": False,
            "shape": (int(length),)})
    return f.tell() - start
