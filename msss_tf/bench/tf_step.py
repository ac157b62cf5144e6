"""The train-step part on TensorFlow: the full MSSS step, its ablations and the
concatenated-views variant against the three-pass encoder floor; tf_keras's floor."""

from __future__ import annotations

import importlib.util
import time
from typing import Callable, Optional

from msss_tf.bench.timing import log_mel_views, timed_rounds, waveform_batch


def _train_function(model, batch):
    """The compiled `fit` step of `model` on a constant batch; returns a no-arg callable
    that runs one step and waits for it, and a list whose length is the number of times
    the step was traced.

    The optimiser's slots are built first, as `fit` does (its symbolic build): if the
    first call created them, `tf.function` would trace the whole step a second time (a
    function that creates variables is retraced without them)."""
    import tensorflow as tf

    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    traces = []
    train_step = model.train_step

    def counted_train_step(data):
        traces.append(1)  # Python runs only while tracing
        return train_step(data)

    model.train_step = counted_train_step
    model.make_train_function()
    train = model.train_function

    def step():
        logs = train(iterator)
        float(logs["loss"])  # waits for the step

    return step, traces


def _floor_model(config, mixed_precision, views: int, concat: bool):
    """The floor: `views` encoder passes with a trivial loss and the same optimiser."""
    import keras
    import tensorflow as tf

    from msss_tf.model.msss_model import build_encoder_with_policy

    class FloorModel(keras.Model):
        def __init__(self):
            super().__init__(name="floor")
            self.encoder = build_encoder_with_policy(config, mixed_precision)

        def call(self, x, training=False):
            return self.encoder(x, training=training)

        def train_step(self, data):
            mels = [data[f"view{i}"] for i in range(views)]
            with tf.GradientTape() as tape:
                if concat:
                    outputs = [self.encoder(tf.concat(mels, 0), training=True)]
                else:
                    outputs = [self.encoder(m, training=True) for m in mels]
                loss = tf.add_n([tf.reduce_mean(tf.cast(o, tf.float32)) for o in outputs])
                scaled = self.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            return {"loss": loss}

    return FloorModel()


def bench_step(config, batch_size, steps, repeats, jit_compile=False, mixed_precision=None,
               view_batching="separate", compare_view_batching=False, ablations=True,
               log=print, before_timing: Optional[Callable[[], None]] = None,
               models_out: Optional[dict] = None) -> dict:
    """Full step, ablations and the concatenated-views variant against the floor.

    `before_timing` runs after every warm-up, before the timed rounds (run_benchmark
    waits there for the background memory runs); `models_out` receives the models."""
    import keras
    import tensorflow as tf

    from msss_tf.model.msss_model import MSSSModel, build_optimizer

    config = config.replace(batch_size=batch_size)
    batch = waveform_batch(config, batch_size)
    variants = {
        "full": dict(losses=("clip", "frame", "pitch")),
        "clip": dict(losses=("clip",)),
        "clip_frame": dict(losses=("clip", "frame")),
        "clip_pitch": dict(losses=("clip", "pitch")),
    }
    if not ablations:
        variants = {"full": variants["full"]}
    fns, models = {}, {}
    compile_seconds, traces = {}, {}

    def add(name, model, data):
        model.compile(optimizer=build_optimizer(config, mixed_precision), jit_compile=jit_compile)
        started = time.perf_counter()
        fn, traced = _train_function(model, data)
        fn()  # warm-up: traces (and compiles, with XLA) the step
        fn()
        compile_seconds[name] = time.perf_counter() - started
        traces[name] = len(traced)
        log(f"  warmed up {name} step in {compile_seconds[name]:.1f} s "
            f"({len(traced)} trace{'s' if len(traced) != 1 else ''})")
        fns[name] = fn
        models[name] = model

    # Seed once: tf.function retraces every step function after tf.random.set_seed.
    keras.utils.set_random_seed(config.seed)
    floor = _floor_model(config, mixed_precision, views=3, concat=view_batching == "concat")
    add("floor", floor, log_mel_views(config, batch_size))
    for name, changes in variants.items():
        add(name, MSSSModel(config.replace(**changes), view_batching=view_batching,
                            mixed_precision=mixed_precision), batch)
    other = "concat" if view_batching == "separate" else "separate"
    if compare_view_batching:
        add(f"full_{other}", MSSSModel(config, view_batching=other,
                                       mixed_precision=mixed_precision), batch)

    # The front end of the three views alone (what the step computes before the encoder).
    frontend = models["full"].frontend
    ratio = tf.random.uniform((batch_size,), config.pitch_ratio_min, config.pitch_ratio_max)
    anchor, positive = tf.constant(batch["anchor"]), tf.constant(batch["positive"])

    @tf.function(jit_compile=bool(jit_compile))
    @tf.autograph.experimental.do_not_convert
    def frontend_views():
        a, s = frontend.anchor_and_shifted(anchor, ratio)
        return tf.reduce_sum(a) + tf.reduce_sum(s) + tf.reduce_sum(frontend(positive))

    fns["frontend"] = lambda: float(frontend_views())
    fns["frontend"]()

    if before_timing is not None:
        before_timing()
    started = time.perf_counter()
    timed = timed_rounds(fns, steps, repeats)
    timing_seconds = time.perf_counter() - started
    if models_out is not None:
        models_out.update(models)
    sec = {name: t["median_s"] for name, t in timed.items()}
    floor_s = sec["floor"]
    out = {
        "batch_size": batch_size,
        "steps_per_round": steps,
        "repeats": repeats,
        "jit_compile": bool(jit_compile),
        "mixed_precision": mixed_precision or "float32",
        "view_batching": view_batching,
        "step_seconds": sec,
        "step_rounds_seconds": {name: t["rounds_s"] for name, t in timed.items()},
        "warmup_seconds": compile_seconds,
        "traces": traces,
        "timed_rounds_seconds": timing_seconds,
        "floor_seconds": floor_s,
        "full_step_seconds": sec["full"],
        "step_overhead": sec["full"] / floor_s,
        "ablation_vs_floor": {name: sec[name] / floor_s for name in variants if name != "full"},
        "frontend_seconds": sec["frontend"],
        "frontend_fraction_of_step": sec["frontend"] / sec["full"],
        "examples_per_second_step": batch_size / sec["full"],
        "clips_per_second_step": batch_size / sec["full"],
    }
    if compare_view_batching:
        concat_s = sec["full_concat"] if other == "concat" else sec["full"]
        separate_s = sec["full"] if other == "concat" else sec["full_separate"]
        out["concat_vs_separate"] = concat_s / separate_s
    return out


def bench_tf_keras_floor(batch_size, steps, repeats, floor_seconds) -> dict:
    """tf_keras EfficientNet-B0 3-pass floor, if tf_keras is installed (not a dependency)."""
    if importlib.util.find_spec("tf_keras") is None or not floor_seconds:
        return {"floor_vs_tf_keras": "n/a", "tf_keras_floor_seconds": "n/a"}
    import tensorflow as tf
    import tf_keras

    net = tf_keras.applications.EfficientNetB0(include_top=False, weights=None,
                                               input_shape=(96, 64, 1), pooling="avg")
    optimizer = tf_keras.optimizers.Adam(1e-4)
    views = [tf.random.normal((batch_size, 96, 64, 1)) for _ in range(3)]

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.add_n([tf.reduce_mean(net(v, training=True)) for v in views])
        optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables),
                                      net.trainable_variables))
        return loss

    fn = lambda: float(step())  # noqa: E731
    fn()
    seconds = timed_rounds({"tf_keras": fn}, steps, repeats)["tf_keras"]["median_s"]
    return {"floor_vs_tf_keras": floor_seconds / seconds, "tf_keras_floor_seconds": seconds}
