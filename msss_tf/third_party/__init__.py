"""Code vendored from other projects, unedited, with its origin and licence in its header."""
