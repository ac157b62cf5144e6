"""`python -m msss_tf.cli`: the `msss-tf` command."""

from msss_tf.cli import entry_point

entry_point()
