"""`msss-tf corpus`, `prepare` and `arrays`: audio in, training data out."""

from __future__ import annotations

import os

from absl import flags

from msss_tf.cli.common import UsageError, require

# The flags defined here belong to the caller, msss_tf.cli (one group in --help).
flags.disclaim_key_flags()


def define_prepare(fv):
    flags.DEFINE_string("audio_dir", None, "Folder tree of audio files (WAV, FLAC, OGG/Opus, "
                        "AIFF, MP3: what libsndfile reads; any sample rate and channel "
                        "count; symlinked folders are followed).", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where the TFRecord shards and manifest.json go.",
                        flag_values=fv)
    flags.DEFINE_integer("num_shards", None, "Number of shards (default: by size, ~150 MB each).",
                         flag_values=fv)
    _define_decoding(fv)


def _define_decoding(fv):
    """The decoding flags shared by `prepare` and `arrays`."""
    flags.DEFINE_integer("sample_rate", 16000, "Sample rate the audio is resampled to.",
                         flag_values=fv)
    flags.DEFINE_float("max_clip_seconds", 10.0, "Longer files are stored as clips of about "
                       "this length (0.67x to 1.5x), decoded one at a time, so an hour-long "
                       "file never sits in memory whole; 0: whole files.", flag_values=fv)


def define_corpus(fv):
    flags.DEFINE_string("out_dir", None, "Where the corpus goes: audio/ (16 kHz mono WAV), "
                        "manifest.json, and shards/ (TFRecord, for --data) unless "
                        "--noprepare.", flag_values=fv)
    flags.DEFINE_float("minutes", 60.0, "Total audio, in minutes (a third each of speech, "
                       "music and everyday sounds by default).", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Corpus seed: the same seed gives byte-identical files.",
                         flag_values=fv)
    flags.DEFINE_list("mix", ["0.34", "0.33", "0.33"], "Fractions of the audio that are "
                      "speech, music and everyday sounds.", flag_values=fv)
    flags.DEFINE_integer("jobs", 1, "Worker processes (the files do not depend on it).",
                         flag_values=fv)
    flags.DEFINE_boolean("prepare", True, "Also decode the clips once into TFRecord shards "
                         "under OUT_DIR/shards, the folder to pass as pretrain --data.",
                         flag_values=fv)
    flags.DEFINE_boolean("arrays", False, "Also write the clips as int16 NumPy arrays under "
                         "OUT_DIR/arrays (msss_tf.data.arrays: the input path that needs no "
                         "TensorFlow, for Keras on JAX).", flag_values=fv)


def define_arrays(fv):
    flags.DEFINE_string("source", None, "Folder tree of audio files (what libsndfile reads; "
                        "any sample rate and channel count), or a corpus folder written by "
                        "`msss-tf corpus` (its audio/, in manifest order).", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where audio.npy (int16, all clips concatenated), "
                        "offsets.npy and arrays.json go.", flag_values=fv)
    _define_decoding(fv)


def run_corpus(fv):
    """Renders the realistic corpus (msss_tf.data.realistic) and, by default, its shards;
    with --arrays, its corpus arrays too."""
    from msss_tf.data.realistic import build_corpus

    try:
        mix = [float(v) for v in fv.mix]
    except ValueError as e:
        raise UsageError(f"--mix: {e}") from e
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        raise UsageError(f"--mix={','.join(fv.mix)}: three non-negative fractions "
                         "(speech, music, sounds) with a positive sum")
    if fv.minutes <= 0:
        raise UsageError(f"--minutes={fv.minutes}: must be positive")
    last = [0.0]

    def progress(done, total):
        import time

        if done == total or time.time() - last[0] > 5:
            last[0] = time.time()
            print(f"  rendered {done}/{total} clips", flush=True)

    print(f"rendering {fv.minutes:g} minutes of speech, music and everyday sounds "
          f"(seed {fv.seed}) into {fv.out_dir}")
    manifest = build_corpus(fv.out_dir, fv.minutes, fv.seed, mix=mix, jobs=fv.jobs,
                            progress=progress)
    build = manifest["build"]
    print(f"corpus: {manifest['num_clips']} clips, {manifest['seconds_total'] / 60:.1f} min, "
          f"{build['audio_seconds_per_wall_second']:.0f}x real time: "
          f"{os.path.join(fv.out_dir, 'manifest.json')}")
    if fv.prepare:
        from msss_tf.data import prepare_corpus

        shards = os.path.join(fv.out_dir, "shards")
        prepared = prepare_corpus(os.path.join(fv.out_dir, manifest["audio_dir"]), shards)
        print(f"shards: {prepared['num_clips']} clips in {prepared['num_shards']} shard(s); "
              f"pre-train with: msss-tf pretrain --data={shards} --model_dir=...")
    if fv.arrays:
        from msss_tf.data.arrays import write_corpus_arrays

        arrays_dir = os.path.join(fv.out_dir, "arrays")
        _print_arrays_summary(write_corpus_arrays(fv.out_dir, arrays_dir), arrays_dir)
    return 0


def run_arrays(fv):
    """Writes an audio folder (or a corpus folder) as corpus arrays."""
    import time

    from msss_tf.data.arrays import write_corpus_arrays

    require(fv, "source", "out_dir")
    last = [time.time()]

    def progress(done, total):
        if time.time() - last[0] > 10:
            last[0] = time.time()
            print(f"  read {done}/{total} files", flush=True)

    info = write_corpus_arrays(fv.source, fv.out_dir, sample_rate=fv.sample_rate,
                               max_clip_seconds=fv.max_clip_seconds, progress=progress)
    _print_arrays_summary(info, fv.out_dir)
    return 0


def _print_arrays_summary(info, out_dir):
    from msss_tf.data.arrays import AUDIO_NAME, INFO_NAME, OFFSETS_NAME

    megabytes = sum(os.path.getsize(os.path.join(out_dir, name))
                    for name in (AUDIO_NAME, OFFSETS_NAME)) / 1e6
    print(f"arrays: {info['num_clips']} clips, {info['seconds_total'] / 60:.1f} min, "
          f"{megabytes:.1f} MB in {out_dir}")
    skipped = len(info["skipped"])
    if skipped:
        counts = ", ".join(f"{n} {reason}" for reason, n in info["skipped_counts"].items())
        print(f"skipped {skipped} file(s) ({counts}): see {os.path.join(out_dir, INFO_NAME)}")


def run_prepare(fv):
    from msss_tf.data import prepare_corpus

    require(fv, "audio_dir", "out_dir")
    manifest = prepare_corpus(
        fv.audio_dir, fv.out_dir, sample_rate=fv.sample_rate, num_shards=fv.num_shards,
        max_clip_seconds=fv.max_clip_seconds,
    )
    print(
        f"prepared {manifest['num_clips']} clips ({manifest['total_seconds'] / 3600:.2f} h) "
        f"in {manifest['num_shards']} shard(s) under {fv.out_dir}"
    )
    skipped = sum(manifest.get("skipped", {}).values())
    if skipped:
        print(f"skipped {skipped} file(s): see {os.path.join(fv.out_dir, 'skipped.json')}")
    return 0
