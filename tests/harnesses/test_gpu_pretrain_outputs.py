"""experiments/gpu_pretrain_outputs.py: the checkpoint that comes back from the GPU host."""

import json
import os
import sys

import keras
import numpy as np
from helpers import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "experiments"))
from gpu_pretrain_outputs import WEIGHTS_NAME, save_weights  # noqa: E402


def tiny_trained_model():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(np.ones((4, 8), "float32"), np.ones((4, 1), "float32"), epochs=1, verbose=0)
    return model


def test_checkpoint_holds_the_model_weights_only(tmp_path):
    # Adam's two moments would triple the files (the first H200 run: 6 shards for B0, 3
    # of which did not come back); the index must list the layers' weights and no more.
    model = tiny_trained_model()
    assert model.optimizer.variables  # built: there is state that could be saved
    written = save_weights(model, str(tmp_path), max_shard_mb=0.003)
    with open(tmp_path / WEIGHTS_NAME) as f:
        saved = json.load(f)["weight_map"]
    assert saved and not [p for p in saved if p.startswith("/optimizer")], saved
    assert len(saved) == 2, saved  # one entry per Dense layer
    assert len(written) == 2, written  # one shard (3 KB at most) and the index

    fresh = keras.Sequential([keras.Input((8,)), keras.layers.Dense(64), keras.layers.Dense(1)])
    fresh.load_weights(str(tmp_path / WEIGHTS_NAME))
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
