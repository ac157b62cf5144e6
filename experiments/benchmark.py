"""`python -m experiments.benchmark [flags]`: the same as `msss-tf bench [flags]`.

Measures the train step against its three-pass encoder floor, the input pipeline's
headroom, embedding throughput and peak memory; prints the table and writes --out JSON.
See the msss_tf.bench package docstring for what each figure means.
"""

import sys

from msss_tf.cli import main

if __name__ == "__main__":
    sys.exit(main(["msss-tf", "bench", *sys.argv[1:]]))
