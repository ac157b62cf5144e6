"""Builds the realistic pre-training corpus (msss_tf.data.realistic) and prints a summary.

    python experiments/build_corpus.py --out_dir=/data/realistic_60min --minutes=60 --seed=0
"""

import json
import sys

from absl import app, flags

flags.DEFINE_string("out_dir", None, "Output folder (clips under audio/, manifest.json).")
flags.DEFINE_float("minutes", 10.0, "Total audio length in minutes.")
flags.DEFINE_integer("seed", 0, "Corpus seed: the same seed gives byte-identical files.")
flags.DEFINE_integer("jobs", 1, "Worker processes.")
flags.DEFINE_list("mix", ["0.34", "0.33", "0.33"], "Fractions of speech, music, sounds.")
flags.DEFINE_float("min_clip_seconds", 4.0, "Shortest clip in seconds.")
flags.DEFINE_float("max_clip_seconds", 10.0, "Longest clip in seconds.")
flags.mark_flag_as_required("out_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from msss_tf.data.realistic import build_corpus

    def progress(done, total):
        if done % 20 == 0 or done == total:
            print(f"\r{done}/{total} clips", end="", file=sys.stderr, flush=True)

    manifest = build_corpus(
        FLAGS.out_dir, FLAGS.minutes, FLAGS.seed, mix=[float(m) for m in FLAGS.mix],
        clip_seconds=(FLAGS.min_clip_seconds, FLAGS.max_clip_seconds), jobs=FLAGS.jobs,
        progress=progress)
    print(file=sys.stderr)
    summary = {k: v for k, v in manifest.items() if k != "files"}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
