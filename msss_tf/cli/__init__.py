"""The `msss-tf` command: one subcommand per job, absl flags for each.

    msss-tf corpus   --out_dir=DIR [--minutes=60]       render the realistic offline corpus
    msss-tf prepare  --audio_dir=DIR --out_dir=DIR      audio folder -> TFRecord shards
    msss-tf arrays   --source=DIR --out_dir=DIR         audio folder -> int16 NumPy arrays
    msss-tf pretrain --data=synthetic|DIR --model_dir=DIR [...]
    msss-tf probe    --model_dir=DIR --task=NAME|PATH --out_dir=DIR [...]
    msss-tf demo     [--model_dir=DIR]                  the main job on built-in data
    msss-tf export   --model_dir=DIR --export_dir=saved_models/NAME [--version=N] [...]
    msss-tf embed    --model=PATH --out=FILE.npz FILE...  embeddings of audio files
    msss-tf bench    [--batch_size=16] [--steps=3] [--out=FILE.json]   speed vs floors

`msss-tf SUBCOMMAND --help` lists that subcommand's flags.
"""

from __future__ import annotations

import os
import sys
import textwrap

from absl import flags

# One module per job holds its flags and its run_* function (data: corpus, prepare, arrays);
# common holds what they share. None imports TensorFlow at import time (each job imports
# what it needs when it runs), so --help and flag errors take a fraction of a second.
from msss_tf.cli.bench import define_bench, run_bench
from msss_tf.cli.common import (UsageError, config_from_flags, import_tensorflow_quietly,
                                parse_jit_compile, require)
from msss_tf.cli.data import (define_arrays, define_corpus, define_prepare, run_arrays,
                              run_corpus, run_prepare)
from msss_tf.cli.demo import define_demo, run_demo
from msss_tf.cli.embed import define_embed, run_embed
from msss_tf.cli.export import define_export, run_export, tflite_parity_lines
from msss_tf.cli.pretrain import define_pretrain, run_pretrain
from msss_tf.cli.probe import define_probe, run_probe
from msss_tf.packages import MissingPackageError, require_modules

__all__ = ["COMMANDS", "UsageError", "check_packages", "config_from_flags", "entry_point",
           "flags", "main", "parse_jit_compile", "tflite_parity_lines"]

USAGE = __doc__


COMMANDS = {
    "corpus": (define_corpus, run_corpus, "Render the realistic offline pre-training corpus "
               "(speech, music, everyday sounds)."),
    "prepare": (define_prepare, run_prepare, "Decode an audio folder once into TFRecord shards."),
    "arrays": (define_arrays, run_arrays, "Decode an audio folder once into int16 NumPy "
               "arrays (no TensorFlow needed)."),
    "pretrain": (define_pretrain, run_pretrain, "Pre-train the MSSS model with model.fit."),
    "probe": (define_probe, run_probe, "Linear/MLP probes on a frozen encoder; scores, exports."),
    "demo": (define_demo, run_demo, "The main job on the built-in offline corpus, in minutes."),
    "export": (define_export, run_export, "Export the encoder: TF Serving SavedModel + TFLite."),
    "embed": (define_embed, run_embed, "Embed audio files with any model into an .npz."),
    "bench": (define_bench, run_bench, "Benchmark: step vs its floor, input headroom, "
              "embedding throughput, memory."),
}


# Flags each job cannot start without, checked before TensorFlow is imported.
REQUIRED_FLAGS = {
    "corpus": ("out_dir",),
    "prepare": ("audio_dir", "out_dir"),
    "arrays": ("source", "out_dir"),
    "pretrain": ("model_dir",),
    "probe": ("model_dir", "task", "out_dir"),
    "export": ("model_dir", "export_dir"),
    "embed": ("model", "out"),
}


def _needs_tensorflow(command, fv) -> bool:
    """Whether `command` with these flags imports TensorFlow (then imported quietly up
    front). Corpus arrays are written without it, on machines that may not have it."""
    if command == "arrays":
        return False
    if command == "corpus":
        return fv.prepare
    return True


# The packages each job imports beyond the core (all in install_requires: these checks
# catch a broken environment in the first second, not minutes into the job).
_EVENT_TASK_HINTS = ("event", "dcase")


def check_packages(command, fv) -> None:
    """Raises MissingPackageError before `command` starts if a package it needs is absent."""
    needs = []
    if command == "corpus":
        from msss_tf.packages import CORPUS_INSTALL_HINT

        require_modules(["espeakng_loader", "tinysoundfont", "pretty_midi"], "msss-tf corpus",
                        hint=CORPUS_INSTALL_HINT)
    elif command == "demo":
        if fv.tasks == "realistic":  # auto falls back to the synthetic tasks without them
            from msss_tf.packages import CORPUS_INSTALL_HINT

            require_modules(["espeakng_loader", "tinysoundfont", "pretty_midi"],
                            "msss-tf demo --tasks=realistic", hint=CORPUS_INSTALL_HINT)
        needs += ["sed_eval", "dcase_util"]  # the events probe
        if fv.export_dir:
            needs.append("ai_edge_litert")  # the float32 TFLite export
    elif command == "probe":
        tasks = list(fv.task or ())
        # Built-in event tasks by name; HEAR folders are checked once their metadata is read.
        if any(h in t.lower() for t in tasks for h in _EVENT_TASK_HINTS):
            needs += ["sed_eval", "dcase_util"]
    elif command == "export":
        if [v for v in fv.tflite if v]:
            needs.append("ai_edge_litert")
    elif command == "bench":
        if "embed" in fv.parts:
            needs.append("ai_edge_litert")
    if needs:
        require_modules(needs, f"msss-tf {command}")


def _usage():
    lines = [USAGE.strip(), "", "Subcommands:"]
    lines += [f"  {name:<10}{doc}" for name, (_, _, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if len(argv) >= 2 else 2
    command = argv[1]
    if command not in COMMANDS:
        print(f"msss-tf: unknown subcommand {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    define, run, doc = COMMANDS[command]
    fv = flags.FlagValues()
    define(fv)
    flags.DEFINE_boolean("help", False, "Show this help.", flag_values=fv, short_name="h")
    flags.DEFINE_boolean("verbose", False, "Show TensorFlow's start-up and C++ log lines "
                         "(also shown when TF_CPP_MIN_LOG_LEVEL is set to 0 or 1).",
                         flag_values=fv)
    try:
        positional = fv(argv[1:])[1:]  # the first item plays the program name
    except flags.Error as e:
        print(f"msss-tf {command}: {e}\nTry 'msss-tf {command} --help'.", file=sys.stderr)
        return 2
    if fv.help:
        print(f"msss-tf {command}: {doc}\n")
        print(textwrap.indent(fv.get_help(include_special_flags=False), ""))
        return 0
    try:
        require(fv, *REQUIRED_FLAGS.get(command, ()))
        check_packages(command, fv)
    except (UsageError, MissingPackageError) as e:
        print(f"msss-tf {command}: error: {e}", file=sys.stderr)
        return 2
    if _needs_tensorflow(command, fv) and not (
            fv.verbose or os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1")):
        import_tensorflow_quietly()
    try:
        return run(fv, positional) if command == "embed" else run(fv)
    except (UsageError, ValueError, FileNotFoundError, MissingPackageError,
            PermissionError) as e:
        print(f"msss-tf {command}: error: {e}", file=sys.stderr)
        return 2


def entry_point():  # console_scripts target
    sys.exit(main())

