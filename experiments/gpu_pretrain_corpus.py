"""gpu_pretrain_jax.py's corpus on the device: rendering the realistic corpus there
(`--render_minutes`), and a stand-in `soundfile` where the package cannot be imported.

Imports nothing heavy at its top level: `build_corpus`'s spawned workers re-run the
script's top level, which imports this module.
"""

from __future__ import annotations

import os
import sys
import time
import types


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def render_corpus(args, say, started: float) -> dict:
    """Renders --render_minutes of the realistic corpus into --render_dir (audio/ and
    manifest.json) and writes its corpus arrays to --render_dir/arrays; returns
    summary.json's "render". Runs before JAX is imported: build_corpus's worker processes
    are spawned (they re-run this file's top level, which imports nothing heavy), and its
    eSpeak worker is `sys.executable -I -S` with the library's path as an argument, so
    packages found through PYTHONPATH (the device's --target folder) serve both.
    `say` prints a line; `started` is the script's start (time.monotonic())."""
    began = time.monotonic()
    try:
        from msss_tf.data.arrays import write_corpus_arrays
        from msss_tf.data.realistic import build_corpus
    except (ImportError, OSError) as error:  # OSError: soundfile without libsndfile
        raise SystemExit(
            f"--render_minutes: the corpus builder cannot be imported ({type(error).__name__}: "
            f"{error}); it needs soundfile (and cffi), espeakng-loader, tinysoundfont and "
            "pretty-midi, which gpu_pretrain_prep.sh puts in .whl/") from error
    jobs = args.render_jobs or usable_cpus()
    render_dir = os.path.abspath(args.render_dir)
    arrays_dir = os.path.join(render_dir, "arrays")
    say(f"rendering {args.render_minutes:g} minutes of the realistic corpus (seed "
        f"{args.render_seed}, {jobs} processes) into {render_dir}")
    shown = set()

    def progress(done, total):
        tenth = done * 10 // max(total, 1)
        if tenth not in shown:
            shown.add(tenth)
            say(f"  rendered {done}/{total} clips, {time.monotonic() - began:.1f} s")

    try:
        manifest = build_corpus(render_dir, args.render_minutes, seed=args.render_seed,
                                jobs=jobs, progress=progress)
    except ImportError as error:  # MissingCorpusPackageError names the package
        raise SystemExit(f"--render_minutes: {error}") from error
    rendered = time.monotonic()
    info = write_corpus_arrays(render_dir, arrays_dir)
    done = time.monotonic()
    build = manifest.get("build", {})
    result = {
        "minutes_requested": args.render_minutes, "seed": args.render_seed, "jobs": jobs,
        "clips": manifest["num_clips"], "minutes": round(manifest["seconds_total"] / 60, 2),
        "clips_per_kind": manifest.get("clips_per_kind"),
        "render_seconds": round(rendered - began, 2),
        "arrays_seconds": round(done - rendered, 2), "seconds": round(done - began, 2),
        "audio_seconds_per_cpu_second": build.get("audio_seconds_per_cpu_second"),
        "array_clips": info["num_clips"], "skipped": len(info.get("skipped", [])),
        "folder": render_dir, "arrays_dir": arrays_dir,
        "renderers": manifest.get("renderers"),
    }
    say(f"rendered {result['clips']} clips, {result['minutes']:.1f} min in "
        f"{result['render_seconds']:.1f} s ({build.get('audio_seconds_per_cpu_second')} "
        f"audio s per CPU s), arrays in {result['arrays_seconds']:.1f} s "
        f"({result['array_clips']} clips, {result['skipped']} skipped); "
        f"{done - started:.1f} s since start")
    return result


def soundfile_or_placeholder() -> str:
    """"present", or "placeholder" after putting a stand-in `soundfile` module in place:
    msss_tf.data.audio imports soundfile (and asks it for its formats) at import time,
    though corpus arrays never decode audio. Any other use of the stand-in raises."""
    try:
        import soundfile  # noqa: F401
        return "present"
    except (ImportError, OSError):  # OSError: the package is there, libsndfile is not
        pass
    stub = types.ModuleType("soundfile")
    stub.available_formats = lambda: {}
    stub.__libsndfile_version__ = "absent"

    def __getattr__(name):
        raise ImportError(f"soundfile.{name}: soundfile is not installed here (a placeholder "
                          "from gpu_pretrain_jax.py stands in; corpus arrays need none)")

    stub.__getattr__ = __getattr__
    sys.modules["soundfile"] = stub
    return "placeholder"
