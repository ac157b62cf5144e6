"""What the subcommands share: the MSSSConfig flags, the train step's runtime switches,
required-flag checks, usage errors and TensorFlow's quiet start-up."""

from __future__ import annotations

import os
import sys

from absl import flags

# The flags defined here belong to the caller, msss_tf.cli (one group in --help).
flags.disclaim_key_flags()


class UsageError(Exception):
    pass


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its C++ start-up lines (oneDNN, cudart_stub, cuInit, CPU
    features) kept off the console; they are printed anyway if the import fails.

    TF 2.21 writes them to file descriptor 2 before its log level is read, so
    TF_CPP_MIN_LOG_LEVEL alone cannot hide them: the descriptor is pointed at a temporary
    file for the import and the first device query.
    """
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the later converter/runtime logs
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def define_config_flags(fv: flags.FlagValues) -> None:
    """Flags that map onto MSSSConfig fields (None: keep the config's value)."""
    flags.DEFINE_list(
        "losses", None,
        "Losses to train with, a subset of clip,frame,pitch (default all three: the "
        "paper's proposed method; 'clip' alone is COLA).", flag_values=fv)
    flags.DEFINE_enum(
        "similarity", None, ["bilinear", "cosine"],
        "Similarity of the contrastive losses: bilinear a^T W b (default) or cosine / "
        "temperature (the paper's Table 2 ablation).", flag_values=fv)
    flags.DEFINE_float("learning_rate", None, "Adam learning rate (default 1e-4, the paper's).",
                       flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "Clips per batch (default 1024, the paper's).",
                         flag_values=fv)
    flags.DEFINE_integer("seed", None, "Seed of the model initialisation, views and data order.",
                         flag_values=fv)
    flags.DEFINE_float("lambda_frame", None, "Weight of the frame loss (default 1.0).",
                       flag_values=fv)
    flags.DEFINE_float("lambda_pitch", None, "Weight of the pitch-shift loss (default 1.0).",
                       flag_values=fv)
    flags.DEFINE_integer("frame_tau", None,
                         "Neighbour width tau: frames within tau are frame-loss positives "
                         "(default 0).", flag_values=fv)
    flags.DEFINE_enum("frame_positives", None, ["pitch_shifted", "self"],
                      "Frame-loss positives: the pitch-shifted anchor's frame (paper) or the "
                      "frame itself in each view (authors' code).", flag_values=fv)
    flags.DEFINE_enum("pitch_target", None, ["ratio", "semitones"],
                      "Pitch-loss target: rho - 1 (default) or 12 log2 rho.", flag_values=fv)
    flags.DEFINE_boolean("share_similarity", None,
                         "Share one bilinear W between the clip and frame losses.",
                         flag_values=fv)
    flags.DEFINE_enum("frequency_pooling", None, ["mean", "max"],
                      "Pooling of the encoder output over frequency.", flag_values=fv)
    flags.DEFINE_float("width_coefficient", None,
                       "EfficientNet width multiplier (1.0 = B0; smaller = cheaper).",
                       flag_values=fv)
    flags.DEFINE_float("depth_coefficient", None,
                       "EfficientNet depth multiplier (1.0 = B0).", flag_values=fv)
    flags.DEFINE_string("config", None,
                        "JSON file with MSSSConfig fields to start from (e.g. a run's "
                        "msss_config.json); the flags above override it.", flag_values=fv)
    flags.DEFINE_multi_string("set", [],
                              "Any other MSSSConfig field, as name=value (JSON value); "
                              "repeatable, e.g. --set=pitch_ratio_min=0.9.", flag_values=fv)


CONFIG_FLAG_NAMES = (
    "losses", "similarity", "learning_rate", "batch_size", "seed", "lambda_frame",
    "lambda_pitch", "frame_tau", "frame_positives", "pitch_target", "share_similarity",
    "frequency_pooling", "width_coefficient", "depth_coefficient",
)


def config_from_flags(fv: flags.FlagValues, base=None):
    """Builds the MSSSConfig from the flags; returns (config, names the user set)."""
    import json

    from msss_tf.config import MSSSConfig

    config = base or MSSSConfig()
    explicit = set()
    if fv.config:
        if not os.path.exists(fv.config):
            raise ValueError(f"--config: no such file {fv.config}")
        config = MSSSConfig.load(fv.config)
    changes = {}
    for name in CONFIG_FLAG_NAMES:
        value = fv[name].value
        if value is not None:
            changes[name] = tuple(value) if name == "losses" else value
    for item in fv.set:
        if "=" not in item:
            raise ValueError(f"--set={item!r}: expected name=value")
        name, raw = item.split("=", 1)
        try:
            changes[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            changes[name.strip()] = raw  # a bare string such as --set=optimizer=sgd
    try:
        config = MSSSConfig.from_dict({**config.to_dict(), **changes})
    except TypeError as e:
        raise ValueError(f"bad configuration flag: {e}") from e
    explicit.update(changes)
    return config, explicit


def define_performance_flags(fv, strategy=True):
    """Runtime switches of the train step (not MSSSConfig fields: they change speed and
    placement, not the method)."""
    flags.DEFINE_string("jit_compile", "auto", "XLA-compile the train step: true, false, or "
                        "auto (Keras: on when a GPU is present, off on CPU, where XLA "
                        "compiles slowly and runs slower).", flag_values=fv)
    flags.DEFINE_enum("mixed_precision", "float32", ["float32", "mixed_float16",
                      "mixed_bfloat16"], "Encoder dtype policy; heads, similarities and losses "
                      "stay float32 (mixed_float16 adds dynamic loss scaling).", flag_values=fv)
    flags.DEFINE_enum("view_batching", "separate", ["separate", "concat"], "separate: three "
                      "encoder calls (per-view batch-norm statistics; faster on CPU); concat: "
                      "one call on the 3B concatenation.", flag_values=fv)
    if strategy:
        flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker"],
                          "tf.distribute strategy: default (one device), mirrored (the GPUs "
                          "of this host), multi_worker (hosts listed in TF_CONFIG). "
                          "--batch_size is the global batch, split over the replicas.",
                          flag_values=fv)
        flags.DEFINE_boolean("sync_batch_norm", True, "With several replicas, batch "
                             "normalisation uses the global batch's statistics (an all-reduce "
                             "per layer); false: per-replica statistics.", flag_values=fv)


def parse_jit_compile(value):
    """--jit_compile text -> True / False / "auto"."""
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"--jit_compile={value!r}: expected true, false or auto")


def require(fv, *names):
    missing = [f"--{n}" for n in names if not fv[n].value]
    if missing:
        raise UsageError(f"missing required flag(s): {', '.join(missing)}")
