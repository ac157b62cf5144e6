"""The three pre-training losses of method.md, as Keras layers that return a scalar.

Each loss layer owns (or shares) the similarity layer it scores with, so a shared W
is simply the same `BilinearSimilarity` instance passed to two losses.

* `ClipContrastiveLoss` (Eq. 1-2, COLA): anchors against the positives of the batch.
* `FrameContrastiveLoss` (Eq. 3-5): within each segment, a frame against its
  positives and the other frames, by the extended multiclass cross-entropy.
* `PitchShiftLoss` (Eq. 6): least squares on the predicted relative pitch shift.
"""

from __future__ import annotations

import keras
from keras import ops

from msss_tf.model.similarity import make_similarity

_NEG_INF = -1e9  # masks a logit out of a softmax without producing NaN


def _similarity_from(similarity, kind, temperature):
    if similarity is not None:
        return similarity
    return make_similarity(kind, temperature)


def _serialize_similarity(layer):
    return keras.saving.serialize_keras_object(layer)


@keras.saving.register_keras_serializable(package="msss_tf")
class ClipContrastiveLoss(keras.layers.Layer):
    """COLA's clip-level contrastive loss.

    Logits S[i, j] = s(a_i, p_j); L = mean_i CE(S_i, i): each anchor must pick its own
    positive among the positives of every clip in the batch.

    Args:
        similarity: a similarity layer (`BilinearSimilarity` / `CosineSimilarity`);
            built from `similarity_kind` and `temperature` when None.

    Call arguments:
        anchor: float [batch, D] clip embeddings z of the anchors.
        positive: float [batch, D] clip embeddings of the positives.

    Returns:
        scalar loss. With `return_accuracy=True` in the call, also the fraction of
        anchors whose top logit is their own positive.
    """

    def __init__(self, similarity=None, similarity_kind="bilinear", temperature=0.2, **kwargs):
        super().__init__(**kwargs)
        self.similarity = _similarity_from(similarity, similarity_kind, temperature)

    def logits(self, anchor, positive):
        return self.similarity(anchor, positive)

    def call(self, anchor, positive, return_accuracy=False):
        logits = self.logits(anchor, positive)  # [B, B]
        labels = ops.arange(ops.shape(logits)[0])
        loss = ops.mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
        if not return_accuracy:
            return loss
        hits = ops.cast(ops.equal(ops.argmax(logits, axis=-1), labels), loss.dtype)
        return loss, ops.mean(hits)

    def get_config(self):
        return {**super().get_config(), "similarity": _serialize_similarity(self.similarity)}

    @classmethod
    def from_config(cls, config):
        config = {**config, "similarity": keras.saving.deserialize_keras_object(config["similarity"])}
        return cls(**config)


def _extended_cross_entropy(logits, positive_mask, candidate_mask):
    """-(1/|P|) sum_{p in P} log softmax(logits over candidates)[p], per row.

    logits, positive_mask, candidate_mask: [..., C]. Positives must be candidates.
    Returns [...] (one loss per row).
    """
    dtype = logits.dtype
    logits = ops.where(candidate_mask > 0, logits, ops.cast(_NEG_INF, dtype))
    log_prob = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
    positives = ops.cast(positive_mask, dtype)
    return -ops.sum(log_prob * positives, axis=-1) / ops.maximum(
        ops.sum(positives, axis=-1), 1.0
    )


def _neighbour_mask(num_frames, tau, include_self, dtype="float32"):
    """[T, T] with 1 where 0 < |t - t'| <= tau (and on the diagonal if include_self)."""
    t = ops.arange(num_frames)
    distance = ops.abs(t[:, None] - t[None, :])
    near = ops.logical_and(distance > 0, distance <= tau)
    if include_self:
        near = ops.logical_or(near, ops.equal(distance, 0))
    return ops.cast(near, dtype)


@keras.saving.register_keras_serializable(package="msss_tf")
class FrameContrastiveLoss(keras.layers.Layer):
    """Frame-level contrastive loss: extended multiclass cross-entropy (Eq. 3-5).

    Scores are computed within each sample, then averaged over samples and frames.

    `positives="pitch_shifted"` (paper, Eq. 5): for frame t of the anchor, the
    candidates are the positive u~_t (the same frame of the pitch-shifted anchor) and
    the other anchor frames u_t' (t' != t); positives are u~_t and the neighbours
    0 < |t - t'| <= tau. With tau = 0 (paper) each row has one positive.

    `positives="self"` (authors' code): each given view is scored against its own
    frames, candidates are all T frames, positives are the frame itself and its
    neighbours within tau; the losses of the views are averaged.

    `negatives="batch"` (pitch_shifted mode; not in the paper): the candidates of anchor
    frame u_{b,t} are every pitch-shifted frame of the batch, u~_{b',t'}; positives are
    u~_{b,t'} with |t - t'| <= tau. In the paper's form ("segment") the positive is the
    only candidate from the shifted view and the only one at frame t's position, so the
    task is solved without looking at the content (docs/findings.md, 2026-11-30): with
    the batch's frames as negatives, B candidates share each position and all come from
    the shifted view, and only the content tells them apart.

    Args:
        tau: neighbour width (frames).
        positives: "pitch_shifted" or "self".
        negatives: "segment" (the paper: the anchor's other frames) or "batch" (every
            shifted frame of the batch); pitch_shifted mode only.
        similarity: a similarity layer; built from `similarity_kind` when None.

    Call arguments:
        frames: float [batch, T, D] frame embeddings u of the anchor.
        shifted_frames: float [batch, T, D], the pitch-shifted anchor's frames u~
            ("pitch_shifted" mode: required; "self" mode: optional extra view).
        extra_views: "self" mode only: a list of further [batch, T, D] views (e.g. the
            positive segment) each scored against itself.

    Returns:
        scalar loss.
    """

    def __init__(
        self,
        tau=0,
        positives="pitch_shifted",
        similarity=None,
        similarity_kind="bilinear",
        temperature=0.2,
        negatives="segment",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if negatives not in ("segment", "batch"):
            raise ValueError(f"FrameContrastiveLoss: negatives must be 'segment' or 'batch', "
                             f"got {negatives!r}")
        if negatives == "batch" and positives != "pitch_shifted":
            raise ValueError("FrameContrastiveLoss: negatives='batch' needs "
                             "positives='pitch_shifted'")
        self.negatives = negatives
        if positives not in ("pitch_shifted", "self"):
            raise ValueError(
                f"FrameContrastiveLoss: positives must be 'pitch_shifted' or 'self', "
                f"got {positives!r}"
            )
        if tau < 0:
            raise ValueError(f"FrameContrastiveLoss: tau must be >= 0, got {tau}")
        self.tau = int(tau)
        self.positives = positives
        self.similarity = _similarity_from(similarity, similarity_kind, temperature)

    def _pitch_shifted_loss(self, frames, shifted_frames):
        num_frames = ops.shape(frames)[1]
        self_scores = self.similarity(frames, frames)  # [B, T, T]
        cross_scores = self.similarity(frames, shifted_frames)  # [B, T, T]
        to_shifted = ops.diagonal(cross_scores, axis1=-2, axis2=-1)  # [B, T]: s(u_t, u~_t)
        # Column 0: u~_t; columns 1..T: the anchor's frames (the diagonal masked out).
        logits = ops.concatenate([to_shifted[..., None], self_scores], axis=-1)
        neighbours = _neighbour_mask(num_frames, self.tau, include_self=False)
        not_self = 1.0 - ops.eye(num_frames)
        ones = ops.ones((num_frames, 1))
        positive_mask = ops.concatenate([ones, neighbours], axis=-1)  # [T, 1 + T]
        candidate_mask = ops.concatenate([ones, not_self], axis=-1)
        return ops.mean(_extended_cross_entropy(logits, positive_mask, candidate_mask))

    def _batch_negatives_loss(self, frames, shifted_frames):
        batch, num_frames = ops.shape(frames)[0], ops.shape(frames)[1]
        flat = ops.reshape(frames, (1, -1, ops.shape(frames)[-1]))  # [1, B*T, D]
        flat_shifted = ops.reshape(shifted_frames, (1, -1, ops.shape(shifted_frames)[-1]))
        logits = self.similarity(flat, flat_shifted)[0]  # [B*T, B*T]
        index = ops.arange(batch * num_frames)
        clip, position = index // num_frames, index % num_frames
        same_clip = ops.equal(clip[:, None], clip[None, :])
        near = ops.abs(position[:, None] - position[None, :]) <= self.tau
        positive_mask = ops.cast(ops.logical_and(same_clip, near), logits.dtype)
        return ops.mean(_extended_cross_entropy(logits, positive_mask,
                                                ops.ones_like(positive_mask)))

    def _self_loss(self, view):
        num_frames = ops.shape(view)[1]
        logits = self.similarity(view, view)  # [B, T, T]
        positive_mask = _neighbour_mask(num_frames, self.tau, include_self=True)
        return ops.mean(
            _extended_cross_entropy(logits, positive_mask, ops.ones_like(positive_mask))
        )

    def call(self, frames, shifted_frames=None, extra_views=None):
        if self.positives == "pitch_shifted":
            if shifted_frames is None:
                raise ValueError(
                    "FrameContrastiveLoss(positives='pitch_shifted') needs shifted_frames"
                )
            if self.negatives == "batch":
                return self._batch_negatives_loss(frames, shifted_frames)
            return self._pitch_shifted_loss(frames, shifted_frames)
        views = [frames] + ([shifted_frames] if shifted_frames is not None else [])
        views += list(extra_views or [])
        return ops.mean(ops.stack([self._self_loss(v) for v in views]))

    def get_config(self):
        return {
            **super().get_config(),
            "tau": self.tau,
            "positives": self.positives,
            "negatives": self.negatives,
            "similarity": _serialize_similarity(self.similarity),
        }

    @classmethod
    def from_config(cls, config):
        config = {**config, "similarity": keras.saving.deserialize_keras_object(config["similarity"])}
        return cls(**config)


def pitch_shift_target(ratio, target="ratio"):
    """phi(rho): "ratio" -> rho - 1 (authors); "semitones" -> 12 log2 rho."""
    if target == "ratio":
        return ratio - 1.0
    if target == "semitones":
        return 12.0 * ops.log(ratio) / ops.log(2.0)
    raise ValueError(f"pitch target must be 'ratio' or 'semitones', got {target!r}")


@keras.saving.register_keras_serializable(package="msss_tf")
class PitchShiftLoss(keras.layers.Layer):
    """Least squares on the relative pitch shift (Eq. 6).

    d_t = r_t(shifted) - r_t(anchor); L = mean over batch and frames of
    (d_t - phi(rho))^2, phi as in `pitch_shift_target`.

    Call arguments:
        anchor_pitch: float [batch, T], the pitch head's output r on the anchor.
        shifted_pitch: float [batch, T], the same on the pitch-shifted anchor.
        ratio: float [batch], the pitch ratio rho each anchor was shifted by.
    """

    def __init__(self, target="ratio", **kwargs):
        super().__init__(**kwargs)
        pitch_shift_target(1.0, target)  # validates the name
        self.target = target

    def call(self, anchor_pitch, shifted_pitch, ratio):
        ratio = ops.cast(ratio, anchor_pitch.dtype)
        goal = pitch_shift_target(ratio, self.target)[:, None]  # [B, 1]: same for all t
        return ops.mean(ops.square(shifted_pitch - anchor_pitch - goal))

    def get_config(self):
        return {**super().get_config(), "target": self.target}
