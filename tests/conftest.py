"""Shared pytest setup: make `msss_tf` importable and keep TensorFlow quiet; the
`gradients` fixture (a backend-neutral gradient helper, TensorFlow or JAX)."""

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# On JAX every op (and every random initializer) is compiled by XLA on its first call with
# a new shape, and the tests call many ops on many shapes once each: compile time, mostly
# LLVM's, is most of a JAX test run. Without LLVM's optimisations a CPU compile is ~5x
# faster (a jax.random.truncated_normal: ~1.5 s -> ~0.25 s on 2 shared cores). XLA's graph
# optimisations (fusion, simplification) still run, results can differ only in the last
# bits, far inside the tests' tolerances, and the tensors here are too small for slower
# machine code to matter. Set only for KERAS_BACKEND=jax and only if XLA_FLAGS does not
# set the level already (XLA_FLAGS=--xla_backend_optimization_level=3 runs XLA's default).
if os.environ.get("KERAS_BACKEND") == "jax" and (
        "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def value_and_gradients(fn, variables=(), inputs=()):
    """A scalar `fn(*inputs)` and its gradients, on the TensorFlow or the JAX backend.

    Returns (value, variable_gradients, input_gradients) as NumPy (a gradient that does
    not reach a variable or input is None on TensorFlow, zeros on JAX). TensorFlow: a
    GradientTape watching the inputs. JAX: `jax.value_and_grad` of `fn` as a function of
    the variables' values (read through a `keras.StatelessScope`) and of the inputs.
    """
    import keras
    import numpy as np

    def to_np(x):
        return None if x is None else np.asarray(keras.ops.convert_to_numpy(x))

    variables = list(variables)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        xs = [tf.convert_to_tensor(x) for x in inputs]
        with tf.GradientTape() as tape:
            tape.watch(xs)
            value = fn(*xs)
        grads = tape.gradient(value, variables + xs)
    elif keras.backend.backend() == "jax":
        import jax
        import jax.numpy as jnp

        def pure(values, xs):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*xs)

        value, (grad_values, grad_xs) = jax.value_and_grad(pure, argnums=(0, 1))(
            [v.value for v in variables], [jnp.asarray(x) for x in inputs])
        grads = list(grad_values) + list(grad_xs)
    else:
        raise NotImplementedError(f"no gradient helper for {keras.backend.backend()}")
    grads = [to_np(g) for g in grads]
    return to_np(value), grads[:len(variables)], grads[len(variables):]


@pytest.fixture
def gradients():
    """`value_and_gradients` (above), for the backend-neutral gradient checks."""
    return value_and_gradients
