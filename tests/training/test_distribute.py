"""tf.distribute: the mirrored step equals the one-device step on the same global batch;
two workers on loopback ports train and the chief alone writes the run directory.

Each case runs in a fresh Python process: logical CPU devices must be configured before
TensorFlow initialises its devices, and TF_CONFIG is per process.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
from helpers import REPO_ROOT

REPO = REPO_ROOT

TWO_CPUS = """
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import json, sys
import numpy as np
import keras
"""


def _run(script, timeout=1800, env=None):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):])


def test_cross_replica_clip_loss_and_gradients_equal_the_global_batch():
    """Two replicas, each with half the batch, all_gather the positives: the clip loss
    (mean over replicas) and the gradients (summed over replicas, loss / R per replica)
    are those of one device on the whole batch, so negatives span the global batch and
    gradients flow back through the gather. Random draws: global, sliced per replica."""
    result = _run(TWO_CPUS + """
from msss_tf.config import MSSSConfig
from msss_tf.model.replicas import global_draw, replica_context
from msss_tf.model.msss_model import MSSSModel, cross_replica_clip_loss

config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25, batch_size=8)
keras.utils.set_random_seed(0)
model = MSSSModel(config)
rng = np.random.default_rng(0)
anchor = tf.constant(rng.normal(size=(8, 512)).astype("float32"))
positive = tf.constant(rng.normal(size=(8, 512)).astype("float32"))
weights = model.clip_loss.similarity.trainable_variables

with tf.GradientTape() as tape:
    tape.watch([anchor, positive])
    loss, accuracy = model.clip_loss(anchor, positive, return_accuracy=True)
one = [loss] + tape.gradient(loss, [anchor, positive] + weights)

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

@tf.function
def replica_step(a, p):
    ctx = replica_context()
    with tf.GradientTape() as tape:
        tape.watch([a, p])
        loss, acc = cross_replica_clip_loss(model.clip_loss, ctx, a, p)
        scaled = loss / ctx.num_replicas_in_sync
    grads = tape.gradient(scaled, [a, p] + weights)
    draws = global_draw(ctx, lambda n: tf.range(n), tf.shape(a)[0])
    return ctx.all_reduce("mean", loss), grads, draws

def split(x):
    return strategy.experimental_distribute_values_from_function(
        lambda c: x[4 * c.replica_id_in_sync_group: 4 * (c.replica_id_in_sync_group + 1)])

loss2, grads2, draws = strategy.run(replica_step, (split(anchor), split(positive)))
local = lambda v: [t.numpy() for t in strategy.experimental_local_results(v)]
two_loss = local(loss2)[0]
ga = np.concatenate(local(grads2[0]))
gp = np.concatenate(local(grads2[1]))
gw = sum(local(grads2[2]))
out = {
    "loss": [float(one[0]), float(two_loss)],
    "grad_anchor": float(np.max(np.abs(ga - one[1].numpy()))),
    "grad_positive": float(np.max(np.abs(gp - one[2].numpy()))),
    "grad_w": float(np.max(np.abs(gw - one[3].numpy()))),
    "grad_scale": float(np.max(np.abs(one[2].numpy()))),
    "draws": [x.tolist() for x in local(draws)],
}
print("RESULT " + json.dumps(out))
""")
    one, two = result["loss"]
    assert two == pytest.approx(one, rel=1e-5)
    assert result["grad_scale"] > 0
    for name in ("grad_anchor", "grad_positive", "grad_w"):
        assert result[name] < 1e-5 * max(1.0, result["grad_scale"]) + 1e-6, (name, result)
    # Each replica keeps its own slice of one global draw.
    assert result["draws"] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.slow  # two graph tracings of the full step (3-6 minutes on 2 shared cores)
def test_mirrored_fit_equals_one_device_for_the_same_global_batch():
    """model.fit under MirroredStrategy over two logical CPUs, synchronized batch norm,
    global batch 4: the same losses and the same weights after the step as one device.
    Drop-connect is off: Keras draws its masks per replica from the same seed state. SGD:
    Adam's first step is lr * sign(g), which flips for near-zero gradients at 1e-7 noise."""
    result = _run(TWO_CPUS + """
sys.path.insert(0, "tests/model")
from test_msss_model import random_batch
from msss_tf.config import MSSSConfig
from msss_tf.model.msss_model import MSSSModel, build_optimizer

config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25, batch_size=4,
                    learning_rate=0.1, optimizer="sgd", drop_connect_rate=0.0)
batch = random_batch(config, 4)

def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = MSSSModel(config)
        if strategy.num_replicas_in_sync > 1:
            assert model.set_batch_norm_synchronized(True) > 0
        model.compile(optimizer=build_optimizer(config))
    data = tf.data.Dataset.from_tensors(batch).repeat()
    before = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    history = model.fit(data, steps_per_epoch=1, epochs=1, verbose=0).history
    after = np.concatenate([v.numpy().ravel() for v in model.trainable_variables])
    return {k: float(v[-1]) for k, v in history.items()}, after - before

one, u1 = run(tf.distribute.get_strategy())
two, u2 = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
relative = float(np.linalg.norm(u2 - u1) / np.linalg.norm(u1))
print("RESULT " + json.dumps({"one": one, "two": two, "update": relative,
                              "moved": float(np.linalg.norm(u1))}))
""")
    for name, value in result["one"].items():
        assert result["two"][name] == pytest.approx(value, rel=1e-3, abs=1e-5), name
    # The update (lr * gradient) agrees to float reassociation: synchronized batch norm
    # computes E[x^2] - E[x]^2 from all-reduced sums, gradients are summed over replicas.
    assert result["moved"] > 0
    assert result["update"] < 1e-3, result


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # two processes trace the step (4-8 minutes on 2 shared cores)
def test_two_workers_on_loopback_train_and_the_chief_writes_one_checkpoint(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    model_dir = tmp_path / "run"
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "msss_tf.cli", "pretrain", "--strategy=multi_worker",
             "--data=synthetic", f"--model_dir={model_dir}", "--train_steps=2",
             "--steps_per_epoch=2", "--batch_size=4", "--synthetic_clips=8",
             "--width_coefficient=0.25", "--depth_coefficient=0.25"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=1500) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    assert sorted(os.listdir(model_dir / "checkpoints")) == ["epoch-0001.keras"]
    assert (model_dir / "model.keras").exists()
    summary = json.loads((model_dir / "summary.json").read_text())
    assert summary["train_steps"] == 2
