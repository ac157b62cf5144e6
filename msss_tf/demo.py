"""The main job on the built-in offline corpus: pre-train, then score held-out clips.

Later stages (probing the three built-in tasks, exporting) attach here as they land.
"""

from __future__ import annotations

import math
import os

from msss_tf.config import MSSSConfig
from msss_tf.data import pretrain_dataset
from msss_tf.data.audio import write_json_atomically
from msss_tf.model import MSSSModel, build_optimizer
from msss_tf.pretrain import pretrain

HELD_OUT_SEED_OFFSET = 10_007  # held-out clips come from another corpus seed


def held_out_losses(model: MSSSModel, config: MSSSConfig, steps: int = 8) -> dict:
    """Mean losses of `model` on held-out synthetic clips (the same segments for any model)."""
    held_out = config.replace(seed=config.seed + HELD_OUT_SEED_OFFSET)
    dataset = pretrain_dataset("synthetic", held_out, num_clips=steps * config.batch_size)
    return model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)


def format_table(rows, headers) -> str:
    widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line([str(h) for h in headers]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line([_fmt(c) for c in r]) for r in rows]
    return "\n".join(out)


def _fmt(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_demo(config: MSSSConfig, model_dir: str, train_steps: int = 120, synthetic_clips=256):
    print(f"[1/2] pre-training on the built-in synthetic corpus ({synthetic_clips} clips), "
          f"{train_steps} steps of batch {config.batch_size}, losses {'+'.join(config.losses)}")
    result = pretrain(
        config,
        data="synthetic",
        model_dir=model_dir,
        train_steps=train_steps,
        steps_per_epoch=max(1, math.ceil(train_steps / 4)),
        synthetic_clips=synthetic_clips,
    )
    print("[2/2] scoring held-out synthetic clips with the untrained and the trained model")
    untrained = MSSSModel(config)
    untrained.compile(optimizer=build_optimizer(config))
    before = held_out_losses(untrained, config)
    after = held_out_losses(result.model, config)
    names = [n for n in ("loss", "clip_loss", "frame_loss", "pitch_loss", "clip_accuracy")
             if n in after]
    rows = [(n, float(before[n]), float(after[n])) for n in names]
    print("\nHeld-out pre-training losses (lower is better; clip_accuracy: higher is better)")
    print(format_table(rows, ("metric", "untrained", "trained")))
    write_json_atomically(
        os.path.join(model_dir, "demo_results.json"),
        {"untrained": before, "trained": after, "train_steps": result.steps,
         "config": config.to_dict()},
    )
    return {"untrained": before, "trained": after}
