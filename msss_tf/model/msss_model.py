"""`MSSSModel`: the three sampling strategies trained together with `model.fit`.

From a batch of clips, given as two random segments each (`anchor`, `positive`,
waveforms [batch, segment_samples]), one step:

1. draws the views (`msss_tf.model.views.draw_views`): a pitch ratio rho ~ U[pitch_ratio_min,
   pitch_ratio_max] per anchor, N(0, positive_noise_std^2) noise on the positive's
   waveform, and the log-mel [B, T, n_mels] of the anchor, of its pitch-shifted copy
   (from one STFT) and of the positive;
2. runs the encoder once per view (three calls, each view with its own batch-norm
   statistics; `view_batching="concat"` makes it one call on the 3B concatenation);
3. computes L = L_clip + lambda_frame L_frame + lambda_pitch L_pitch (method.md, Eq. 7)
   over the losses switched on.

Views and heads that no enabled loss needs are not computed.

Speed and scale options (none changes the default step's numbers):

* `mixed_precision="mixed_float16" | "mixed_bfloat16"`: the encoder runs in that policy;
  its outputs are cast to float32, so the heads, similarities and losses stay float32.
  With float16, compile with a `keras.optimizers.LossScaleOptimizer` (`pretrain` does);
  `train_step` scales the loss through `optimizer.scale_loss`.
* Under a `tf.distribute` strategy with R > 1 replicas (B / R clips each) the step
  computes what one device computes on the global batch B: the random draws are made
  for the global batch and sliced by replica (`msss_tf.model.views`); the clip loss scores each
  local anchor against the positives of all replicas (`cross_replica_clip_loss`); the
  loss is divided by R before the gradient (the optimiser sums the replicas' gradients);
  the reported metrics are averaged over replicas. `set_batch_norm_synchronized(True)`
  makes batch normalisation use global-batch statistics too (docs/performance.md).

Backends: TensorFlow (the default) and JAX run the same `compute_msss_losses` (in
`keras.ops`); `train_step` is a `GradientTape` step on TensorFlow and a stateless step on
JAX (`jax.value_and_grad` of `stateless_msss_losses`, the optimiser's `stateless_apply`).
JAX's generator draws other numbers than TensorFlow's for the same seed; given the same
draws (`pitch_ratio`, `positive_noise` in the batch) both backends compute the same
losses and gradients. tf.distribute is TensorFlow's alone.
"""

from __future__ import annotations

import keras
from keras import ops

from msss_tf.config import MSSSConfig
from msss_tf.model.replicas import replica_context
from msss_tf.model.encoder import build_encoder
from msss_tf.model.frontend import LogMelFrontEnd
from msss_tf.model.heads import ClipHead, FrameHead, PitchHead
from msss_tf.model.losses import ClipContrastiveLoss, FrameContrastiveLoss, PitchShiftLoss
from msss_tf.model.similarity import make_similarity
from msss_tf.model.views import Views, draw_views, float_waveform


def build_optimizer(config: MSSSConfig, mixed_precision=None) -> keras.optimizers.Optimizer:
    """The optimiser named by the config, with its learning rate and clipping; wrapped in
    a `LossScaleOptimizer` (dynamic loss scaling) when `mixed_precision="mixed_float16"`."""
    kwargs = {"learning_rate": learning_rate(config)}
    if config.clipnorm > 0:
        kwargs["clipnorm"] = config.clipnorm
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(**kwargs)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=config.weight_decay, **kwargs)
    else:
        optimizer = keras.optimizers.SGD(momentum=0.9, **kwargs)
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_encoder_with_policy(config: MSSSConfig, mixed_precision=None) -> keras.Model:
    """`build_encoder(config)`, its layers in the `mixed_precision` dtype policy if given
    (the global policy is restored afterwards)."""
    if not mixed_precision:
        return build_encoder(config)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(mixed_precision)
    try:
        return build_encoder(config)
    finally:
        keras.config.set_dtype_policy(previous)


def learning_rate(config: MSSSConfig):
    """`config.learning_rate`, or with `warmup_steps` a schedule that rises linearly from
    learning_rate / warmup_steps at step 0 to learning_rate at step warmup_steps and stays
    there (Keras's `CosineDecay` warm-up with no decay: alpha = 1). It lives in the
    optimiser's config, so a resumed run continues the schedule at its step."""
    if not config.warmup_steps:
        return config.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate / config.warmup_steps, decay_steps=1, alpha=1.0,
        warmup_target=config.learning_rate, warmup_steps=config.warmup_steps)


@keras.saving.register_keras_serializable(package="msss_tf")
class MSSSModel(keras.Model):
    """Self-supervised pre-training with clip, frame and pitch-shift strategies.

    Args:
        config: an `MSSSConfig` (or its dict); defaults to the paper's settings.

    Call arguments (inference):
        waveform: float32 [batch, samples] at `config.sample_rate`.

    Returns:
        the encoder's frame features [batch, frames // 32, C] (C = 1280 for B0),
        frames = 1 + (samples - stft_window) // stft_hop.

    Compile with the config's optimiser: `model.compile(build_optimizer(config))`.
    `fit` / `evaluate` take dicts {"anchor": [B, S], "positive": [B, S]} of waveforms
    (see `msss_tf.data.pretrain_dataset`) and report `loss` and one metric per loss.
    """

    VIEW_BATCHING = ("separate", "concat")
    MIXED_PRECISION = (None, "mixed_float16", "mixed_bfloat16")

    def __init__(self, config=None, view_batching="separate", mixed_precision=None, **kwargs):
        super().__init__(**kwargs)
        if config is None:
            config = MSSSConfig()
        elif isinstance(config, dict):
            config = MSSSConfig.from_dict(config)
        if view_batching not in self.VIEW_BATCHING:
            raise ValueError(f"view_batching={view_batching!r}: must be one of {self.VIEW_BATCHING}")
        if mixed_precision in ("", "float32", "none"):
            mixed_precision = None
        if mixed_precision not in self.MIXED_PRECISION:
            raise ValueError(f"mixed_precision={mixed_precision!r}: must be one of "
                             f"{self.MIXED_PRECISION}")
        self.msss_config = config
        self.view_batching = view_batching
        self.mixed_precision = mixed_precision
        losses = config.losses

        self.frontend = LogMelFrontEnd.from_msss_config(config, name="frontend")
        # Only the encoder runs in the mixed policy; everything after it is float32.
        self.encoder = build_encoder_with_policy(config, mixed_precision)
        channels = self.encoder.output_shape[-1]
        frame_shape = (None, None, channels)
        dim = config.embedding_dim

        def similarity(name):
            return make_similarity(config.similarity, config.temperature, name=name)

        self.clip_head = self.frame_head = self.pitch_head = None
        self.clip_loss = self.frame_loss = self.pitch_loss = None
        clip_similarity = None
        if "clip" in losses:
            self.clip_head = ClipHead(dim, name="clip_head")
            self.clip_head.build(frame_shape)
            clip_similarity = similarity("clip_similarity")
            clip_similarity.build((None, dim), (None, dim))
            self.clip_loss = ClipContrastiveLoss(clip_similarity, name="clip_loss")
        if "frame" in losses:
            self.frame_head = FrameHead(dim, name="frame_head")
            self.frame_head.build(frame_shape)
            if config.share_similarity and clip_similarity is not None:
                frame_similarity = clip_similarity  # one W for both losses
            else:
                frame_similarity = similarity("frame_similarity")
                frame_similarity.build((None, None, dim), (None, None, dim))
            self.frame_loss = FrameContrastiveLoss(
                tau=config.frame_tau, positives=config.frame_positives,
                negatives=config.frame_negatives, similarity=frame_similarity, name="frame_loss")
        if "pitch" in losses:
            self.pitch_head = PitchHead(dim, name="pitch_head")
            self.pitch_head.build(frame_shape)
            self.pitch_loss = PitchShiftLoss(config.pitch_target, name="pitch_loss")
        for layer in (self.clip_loss, self.frame_loss, self.pitch_loss):
            if layer is not None:
                layer.built = True  # their only weights are the similarity's, built above

        # The front end has no weights; marking it built lets Keras's symbolic build (which
        # fit runs under a tf.distribute strategy) find every layer built.
        for layer in self.frontend._flatten_layers(include_self=True, recursive=True):
            layer.built = True
        self.seed_generator = keras.random.SeedGenerator(config.seed, name="view_seed")
        self.trackers = {"loss": keras.metrics.Mean(name="loss")}
        for name in losses:
            self.trackers[f"{name}_loss"] = keras.metrics.Mean(name=f"{name}_loss")
        if "clip" in losses:
            self.trackers["clip_accuracy"] = keras.metrics.Mean(name="clip_accuracy")
        self.built = True

    # ------------------------------------------------------------------ inference
    def call(self, waveform, training=False):
        return self._encode(self.frontend(float_waveform(waveform)), training)

    def _encode(self, log_mel, training):
        frames = self.encoder(log_mel, training=training)
        if keras.backend.standardize_dtype(frames.dtype) == "float32":
            return frames
        return ops.cast(frames, "float32")

    def _encode_views(self, views: Views, training):
        """Encoder frames (anchor, positive, shifted), each [B, T // 32, C] or None.

        The encoder calls run in a fixed order, which fixes each view's drop-connect
        draws: "separate" encodes shifted, anchor, positive (one call each); "concat"
        encodes anchor, positive, shifted as one concatenation and splits it."""
        if self.view_batching == "separate":
            shifted, anchor, positive = [None if m is None else self._encode(m, training)
                                         for m in (views.shifted, views.anchor, views.positive)]
            return anchor, positive, shifted
        mels = [views.anchor, views.positive, views.shifted]
        present = [m for m in mels if m is not None]
        if len(present) == 1:
            return tuple(None if m is None else self._encode(m, training) for m in mels)
        ends, end = [], 0
        for m in present[:-1]:  # the views have the same, static batch size
            end += _batch_size(m)
            ends.append(end)
        joined = self._encode(ops.concatenate(present, axis=0), training)
        parts = iter(ops.split(joined, ends, axis=0))
        return tuple(None if m is None else next(parts) for m in mels)

    def set_batch_norm_synchronized(self, synchronized: bool = True) -> int:
        """Switches the encoder's batch normalisation to global-batch statistics under a
        multi-replica tf.distribute strategy (Keras's `synchronized=True`, an all-reduce
        per layer and view). Weights are unchanged. Returns the number of layers."""
        count = 0
        for layer in self.encoder._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = bool(synchronized)
                count += 1
        return count

    # ------------------------------------------------------------------- training
    def compute_msss_losses(self, batch, training=False):
        """All enabled losses for one batch of segment pairs; returns a dict of scalars.

        Keys: "loss" (the weighted total), "<name>_loss" for each enabled loss, and
        "clip_accuracy" when the clip loss is on.

        `batch` holds "anchor" and "positive" waveforms [B, S]; it may also carry the
        step's random draws, used instead of drawing them: "pitch_ratio" [B] and
        "positive_noise" [B, S] (added to the positive as is), e.g. to give two
        backends, or an XLA-compiled and a plain step, the same draws.
        """
        config = self.msss_config
        replica = replica_context()
        need_positive = self.clip_loss is not None or (
            self.frame_loss is not None and config.frame_positives == "self")
        views = draw_views(batch, config, self.frontend, self.seed_generator,
                           need_positive, replica)
        anchor, positive, shifted = self._encode_views(views, training)

        out = {}
        if self.clip_loss is not None:
            out["clip_loss"], out["clip_accuracy"] = self._clip_term(anchor, positive, replica)
        if self.frame_loss is not None:
            out["frame_loss"] = self._frame_term(anchor, positive, shifted)
        if self.pitch_loss is not None:
            out["pitch_loss"] = self.pitch_loss(
                self.pitch_head(anchor), self.pitch_head(shifted), views.pitch_ratio)

        # L = L_clip + lambda_frame L_frame + lambda_pitch L_pitch, enabled terms only.
        total = 0.0
        if "clip_loss" in out:
            total += out["clip_loss"]
        if "frame_loss" in out:
            total += config.lambda_frame * out["frame_loss"]
        if "pitch_loss" in out:
            total += config.lambda_pitch * out["pitch_loss"]
        out["loss"] = total
        return out

    def _clip_term(self, anchor, positive, replica):
        """(L_clip, accuracy) of encoder frames [b, T', C]: over this batch on one device,
        over the global batch's positives under a multi-replica step."""
        anchor, positive = self.clip_head(anchor), self.clip_head(positive)  # [b, D]
        if replica is None:
            return self.clip_loss(anchor, positive, return_accuracy=True)
        return cross_replica_clip_loss(self.clip_loss, replica, anchor, positive)

    def _frame_term(self, anchor, positive, shifted):
        """L_frame of encoder frames [B, T', C]: the anchor's frames against the shifted
        view's ("pitch_shifted" positives), or each view against itself ("self")."""
        frames = self.frame_head(anchor)
        if self.msss_config.frame_positives == "self":
            views = [self.frame_head(v) for v in (shifted, positive) if v is not None]
            return self.frame_loss(frames, extra_views=views)
        return self.frame_loss(frames, self.frame_head(shifted))

    def _update_trackers(self, values):
        replica = replica_context()  # None off TensorFlow
        if replica is not None:  # every replica reports the global batch's means
            import tensorflow as tf

            names = list(self.trackers)
            means = replica.all_reduce(tf.distribute.ReduceOp.MEAN, [values[n] for n in names])
            values = dict(zip(names, means))
        for name, tracker in self.trackers.items():
            tracker.update_state(values[name])
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        if keras.backend.backend() != "tensorflow":
            return results
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode()):
            # Keras 3.15 reduces multi-worker step outputs with strategy.reduce("MEAN",
            # axis=0), which needs an axis: give each (already global) mean one.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def train_step(self, *args):
        """One optimiser step: `train_step(data)` on TensorFlow, `train_step(state, data)`
        (stateless, returns (logs, state)) on JAX, as each backend's trainer calls it."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._tensorflow_train_step(*args)
        if backend == "jax":
            return self._jax_train_step(*args)
        raise NotImplementedError(f"MSSSModel trains on the tensorflow and jax backends, "
                                  f"not on KERAS_BACKEND={backend!r}")

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_test_step(*args)
        return self._update_trackers(self.compute_msss_losses(args[0], training=False))

    def _tensorflow_train_step(self, data):
        import tensorflow as tf

        replica = replica_context()
        with tf.GradientTape() as tape:
            values = self.compute_msss_losses(data, training=True)
            loss = values["loss"]
            if self.losses:  # regularisers, if a user adds any
                loss += tf.add_n(self.losses)
            if replica is not None:  # the optimiser sums the replicas' gradients
                loss = loss / replica.num_replicas_in_sync
            loss = self.optimizer.scale_loss(loss)  # loss scaling for mixed_float16
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_trackers(values)

    # JAX: Keras's JAX trainer passes the variables' values as `state` and jit-compiles
    # the step; the variables themselves are read only through a StatelessScope.
    def stateless_msss_losses(self, trainable_values, non_trainable_values, data,
                              training=True, optimizer_values=None):
        """`compute_msss_losses` as a pure function of the variables' values (JAX).

        Returns (scaled total loss, (values dict, new non-trainable values)): the batch-norm
        statistics and the view generator's seed are non-trainable, so a step's updates of
        them come back instead of being assigned. The loss is scaled by the optimiser
        (mixed_float16 loss scaling) when `optimizer_values` is given.
        """
        mapping = list(zip(self.trainable_variables, trainable_values))
        mapping += list(zip(self.non_trainable_variables, non_trainable_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            values = self.compute_msss_losses(data, training=training)
            loss = values["loss"]
            if self.losses:  # regularisers, if a user adds any
                loss = loss + ops.sum(ops.stack(self.losses))
        new_non_trainable = []
        for variable, value in zip(self.non_trainable_variables, non_trainable_values):
            current = scope.get_current_value(variable)
            new_non_trainable.append(value if current is None else current)
        if optimizer_values is not None:
            with keras.StatelessScope(
                    state_mapping=list(zip(self.optimizer.variables, optimizer_values))):
                loss = self.optimizer.scale_loss(loss)
        return loss, (values, new_non_trainable)

    def _stateless_trackers(self, metrics_values, values):
        mapping = list(zip(self.metrics_variables, metrics_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self._update_trackers(values)
        new_metrics = []
        for variable, value in zip(self.metrics_variables, metrics_values):
            current = scope.get_current_value(variable)
            new_metrics.append(value if current is None else current)
        return logs, new_metrics

    def _jax_train_step(self, state, data):
        import jax  # only reached on the JAX backend, which Keras cannot load without jax

        trainable, non_trainable, optimizer_values, metrics_values = state
        gradient_fn = jax.value_and_grad(self.stateless_msss_losses, has_aux=True)
        (_, (values, non_trainable)), gradients = gradient_fn(
            trainable, non_trainable, data, training=True, optimizer_values=optimizer_values)
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, gradients, trainable)
        logs, metrics_values = self._stateless_trackers(metrics_values, values)
        return logs, (trainable, non_trainable, optimizer_values, metrics_values)

    def _jax_test_step(self, state, data):
        trainable, non_trainable, metrics_values = state
        _, (values, non_trainable) = self.stateless_msss_losses(
            trainable, non_trainable, data, training=False)
        logs, metrics_values = self._stateless_trackers(metrics_values, values)
        return logs, (trainable, non_trainable, metrics_values)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Under a tf.distribute strategy Keras builds the model symbolically from a batch
        first, reducing the batch with `strategy.reduce`, which fails for a dict batch
        under MultiWorkerMirroredStrategy. Every layer here is built in `__init__`, so only
        the optimiser's slots remain: build them in the strategy's scope, as Keras does."""
        if getattr(self, "_distribute_strategy", None) is None:
            if keras.backend.backend() != "tensorflow":  # every layer is built in __init__
                if self.optimizer is not None and not self.optimizer.built:
                    self.optimizer.build(self.trainable_variables)
                return self._post_build()
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        with self.distribute_strategy.scope():
            if self.optimizer is not None and not self.optimizer.built:
                self.optimizer.build(self.trainable_variables)
            self._post_build()

    @property
    def metrics(self):
        return list(self.trackers.values())

    # -------------------------------------------------------------- serialisation
    def get_config(self):
        config = {"name": self.name, "msss_config": self.msss_config.to_dict()}
        if self.view_batching != "separate":
            config["view_batching"] = self.view_batching
        if self.mixed_precision:
            config["mixed_precision"] = self.mixed_precision
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config=MSSSConfig.from_dict(config.pop("msss_config")), **config)


def _batch_size(tensor):
    size = tensor.shape[0]
    return size if size is not None else ops.shape(tensor)[0]


def cross_replica_clip_loss(clip_loss, replica, anchor, positive):
    """(L_clip, accuracy) of this replica's anchors [b, D] against the positives [b, D] of
    all R replicas (all_gather, replica order): the logits are [b, R * b] and anchor i of
    replica r has label r * b + i, so the negatives are the whole global batch, as on one
    device. `clip_loss` is the model's `ClipContrastiveLoss` (its `logits`)."""
    import tensorflow as tf

    everyone = replica.all_gather(positive, axis=0)  # [R * b, D], replica order
    logits = clip_loss.logits(anchor, everyone)  # [b, R * b]
    local = tf.shape(anchor)[0]
    labels = tf.cast(replica.replica_id_in_sync_group, tf.int32) * local + tf.range(local)
    loss = tf.reduce_mean(
        keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels),
                   loss.dtype)
    return loss, tf.reduce_mean(hits)
