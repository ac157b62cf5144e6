"""`msss-tf demo`: pre-train -> probe -> export on the built-in corpus, in minutes."""

from __future__ import annotations

from absl import flags

# The flags defined here belong to the caller, msss_tf.cli (one group in --help).
flags.disclaim_key_flags()


def define_demo(fv):
    flags.DEFINE_string("model_dir", "runs/demo", "Run directory of the demo.", flag_values=fv)
    flags.DEFINE_integer("train_steps", 200, "Pre-training steps.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Clips per batch.", flag_values=fv)
    flags.DEFINE_float("width_coefficient", 0.5, "Encoder width (1.0 = EfficientNet-B0; the "
                       "demo's 0.5 keeps it to minutes on a CPU).", flag_values=fv)
    flags.DEFINE_float("depth_coefficient", 0.5, "Encoder depth (1.0 = EfficientNet-B0).",
                       flag_values=fv)
    flags.DEFINE_integer("seed", None, "Seed of this run (default: the shipped checkpoint's, "
                         "so that this run, the untrained references and the checkpoint "
                         "start from one network; 0 without it).", flag_values=fv)
    flags.DEFINE_string("export_dir", "saved_models", "Base folder of the exported models.",
                        flag_values=fv)
    flags.DEFINE_integer("probe_epochs", 100, "Most epochs of each probe.", flag_values=fv)
    flags.DEFINE_enum("tasks", "auto", ["auto", "realistic", "synthetic"],
                      "Probe tasks: the realistic ones (with the shipped pre-trained "
                      "checkpoint beside this run; needs the corpus extra), the synthetic "
                      "ones, or auto (realistic when their renderers are installed).",
                      flag_values=fv)


def default_seed(seed):
    """`seed`, or when None the shipped checkpoint's (0 when none is readable)."""
    from msss_tf.embedding.shipped import ShippedCheckpointError, shipped_checkpoint

    if seed is not None:
        return seed
    try:
        return int(shipped_checkpoint().record["config"].get("seed", 0))
    except ShippedCheckpointError:
        return 0


def run_demo(fv):
    """Pre-train -> probe -> export on built-in data, with a results table."""
    import time

    from msss_tf.demo import demo_config, run_demo as demo

    started = time.time()
    config = demo_config(batch_size=fv.batch_size, width_coefficient=fv.width_coefficient,
                         depth_coefficient=fv.depth_coefficient, seed=default_seed(fv.seed))
    demo(config, model_dir=fv.model_dir, train_steps=fv.train_steps, export_dir=fv.export_dir,
         probe_epochs=fv.probe_epochs, tasks=fv.tasks)
    print(f"demo finished in {time.time() - started:.0f} s; run directory: {fv.model_dir}")
    return 0
