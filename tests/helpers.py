"""Helpers shared by test modules (tests/ is on sys.path under pytest's default import mode:
the test modules in tests/<package>/ import these as `from helpers import ...`)."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pretrain_eagerly(monkeypatch):
    """Makes `msss_tf.training.pretrain` compile its model with run_eagerly=True: a few eager steps
    cost seconds where tracing the train step costs a minute. The callbacks, checkpoints,
    counters and the non-finite guard are the same code in both modes; only this test's
    model instances change, so saving and loading are unchanged."""
    import msss_tf.training.pretrain as pretrain_module

    real = pretrain_module.MSSSModel

    def eager_model(*args, **kwargs):
        model = real(*args, **kwargs)
        compile_ = model.compile

        def compile_eagerly(*args, **kwargs):
            compile_(*args, **kwargs)
            model.run_eagerly = True

        model.compile = compile_eagerly
        return model

    monkeypatch.setattr(pretrain_module, "MSSSModel", eager_model)
