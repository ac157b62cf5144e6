"""`MSSSModel`: the three sampling strategies trained together with `model.fit`.

From a batch of clips, given as two random segments each (`anchor`, `positive`,
waveforms [batch, segment_samples]), one step:

1. draws a pitch ratio rho ~ U[pitch_ratio_min, pitch_ratio_max] per anchor and adds
   N(0, positive_noise_std^2) to the positive's waveform;
2. runs the front end: log-mel of the anchor and of its pitch-shifted copy from one STFT,
   and of the positive;
3. runs the encoder once per view (three calls: each view keeps its own batch-norm
   statistics, and on CPU three calls are faster than one call on the concatenation);
4. computes L = L_clip + lambda_f L_frame + lambda_p L_pitch with the losses switched on.

Views and heads that no enabled loss needs are not computed.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from msss_tf.config import MSSSConfig
from msss_tf.encoder import build_encoder
from msss_tf.frontend import LogMelFrontEnd
from msss_tf.heads import ClipHead, FrameHead, PitchHead
from msss_tf.losses import ClipContrastiveLoss, FrameContrastiveLoss, PitchShiftLoss
from msss_tf.similarity import make_similarity


def build_optimizer(config: MSSSConfig) -> keras.optimizers.Optimizer:
    """The optimiser named by the config, with its learning rate and clipping."""
    kwargs = {"learning_rate": config.learning_rate}
    if config.clipnorm > 0:
        kwargs["clipnorm"] = config.clipnorm
    if config.optimizer == "adam":
        return keras.optimizers.Adam(**kwargs)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(weight_decay=config.weight_decay, **kwargs)
    return keras.optimizers.SGD(momentum=0.9, **kwargs)


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

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        if config is None:
            config = MSSSConfig()
        elif isinstance(config, dict):
            config = MSSSConfig.from_dict(config)
        self.msss_config = config
        losses = config.losses

        self.frontend = LogMelFrontEnd.from_msss_config(config, name="frontend")
        self.encoder = build_encoder(config)
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
                tau=config.frame_tau,
                positives=config.frame_positives,
                similarity=frame_similarity,
                name="frame_loss",
            )
        if "pitch" in losses:
            self.pitch_head = PitchHead(dim, name="pitch_head")
            self.pitch_head.build(frame_shape)
            self.pitch_loss = PitchShiftLoss(config.pitch_target, name="pitch_loss")
        for layer in (self.clip_loss, self.frame_loss, self.pitch_loss):
            if layer is not None:
                layer.built = True  # their only weights are the similarity's, built above

        self.seed_generator = keras.random.SeedGenerator(config.seed, name="view_seed")
        self.trackers = {"loss": keras.metrics.Mean(name="loss")}
        for name in losses:
            self.trackers[f"{name}_loss"] = keras.metrics.Mean(name=f"{name}_loss")
        if "clip" in losses:
            self.trackers["clip_accuracy"] = keras.metrics.Mean(name="clip_accuracy")
        self.built = True

    # ------------------------------------------------------------------ inference
    def call(self, waveform, training=False):
        return self.encoder(self.frontend(waveform), training=training)

    # ------------------------------------------------------------------- training
    def compute_msss_losses(self, batch, training=False):
        """All enabled losses for one batch of segment pairs; returns a dict of scalars.

        Keys: "loss" (the weighted total), "<name>_loss" for each enabled loss, and
        "clip_accuracy" when the clip loss is on.
        """
        config = self.msss_config
        anchor_wave = tf.convert_to_tensor(batch["anchor"], tf.float32)
        batch_size = tf.shape(anchor_wave)[0]
        self_mode = config.frame_positives == "self"
        need_positive = self.clip_loss is not None or (self.frame_loss is not None and self_mode)

        ratio = None
        if config.needs_shifted_view:
            ratio = keras.random.uniform(
                (batch_size,),
                minval=config.pitch_ratio_min,
                maxval=config.pitch_ratio_max,
                seed=self.seed_generator,
            )
            anchor_mel, shifted_mel = self.frontend.anchor_and_shifted(anchor_wave, ratio)
            shifted = self.encoder(shifted_mel, training=training)
        else:
            anchor_mel = self.frontend(anchor_wave)
            shifted = None
        anchor = self.encoder(anchor_mel, training=training)

        positive = None
        if need_positive:
            positive_wave = tf.convert_to_tensor(batch["positive"], tf.float32)
            if config.positive_noise_std > 0:
                positive_wave += keras.random.normal(
                    tf.shape(positive_wave),
                    stddev=config.positive_noise_std,
                    seed=self.seed_generator,
                )
            positive = self.encoder(self.frontend(positive_wave), training=training)

        out = {}
        total = 0.0
        if self.clip_loss is not None:
            clip, accuracy = self.clip_loss(
                self.clip_head(anchor), self.clip_head(positive), return_accuracy=True
            )
            out["clip_loss"], out["clip_accuracy"] = clip, accuracy
            total += clip
        if self.frame_loss is not None:
            frames = self.frame_head(anchor)
            if self_mode:
                views = [self.frame_head(v) for v in (shifted, positive) if v is not None]
                frame = self.frame_loss(frames, extra_views=views)
            else:
                frame = self.frame_loss(frames, self.frame_head(shifted))
            out["frame_loss"] = frame
            total += config.lambda_frame * frame
        if self.pitch_loss is not None:
            pitch = self.pitch_loss(self.pitch_head(anchor), self.pitch_head(shifted), ratio)
            out["pitch_loss"] = pitch
            total += config.lambda_pitch * pitch
        out["loss"] = total
        return out

    def _update_trackers(self, values):
        for name, tracker in self.trackers.items():
            tracker.update_state(values[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            values = self.compute_msss_losses(data, training=True)
            loss = values["loss"]
            if self.losses:  # regularisers, if a user adds any
                loss += tf.add_n(self.losses)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_trackers(values)

    def test_step(self, data):
        return self._update_trackers(self.compute_msss_losses(data, training=False))

    @property
    def metrics(self):
        return list(self.trackers.values())

    # -------------------------------------------------------------- serialisation
    def get_config(self):
        return {"name": self.name, "msss_config": self.msss_config.to_dict()}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config=MSSSConfig.from_dict(config.pop("msss_config")), **config)
