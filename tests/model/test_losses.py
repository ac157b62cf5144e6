"""Tests of msss_tf/model/losses.py against method.md (Clip-level, Frame-level, Pitch shift).

The NumPy references below are written from the formulas, with explicit loops over
examples, frames and candidates, not from the implementation's masking tricks:

* clip:  S_ij = s(a_i, p_j);  L = mean_i -log softmax(S_i)[i].
* frame ("pitch_shifted", Eq. 3-5): for sample i, frame t the candidates are u~_t and
  u_t' (t' != t); the positives P_t are u~_t and u_t' with 0 < |t - t'| <= tau;
  L_i,t = -(1/|P_t|) sum_{p in P_t} log(exp s(u_t, p) / sum_c exp s(u_t, c)); mean over i, t.
* frame ("self", authors' code): each view is scored against all of its own frames,
  the positives are the frame itself (and its neighbours within tau); the per-view
  losses are averaged.
* pitch: L = mean_{i,t} (r~_it - r_it - phi(rho_i))^2, phi = rho - 1 or 12 log2 rho.

Backend-neutral: CI runs this file with KERAS_BACKEND=jax too.
"""

import math

import keras
import numpy as np
import pytest

from msss_tf.model.losses import (
    ClipContrastiveLoss,
    FrameContrastiveLoss,
    PitchShiftLoss,
    pitch_shift_target,
)
from msss_tf.model.similarity import BilinearSimilarity, CosineSimilarity

LOG = math.log
E = math.e


# ------------------------------------------------------------- NumPy references
def np_sim_bilinear(w):
    w = np.asarray(w, np.float64)
    return lambda x, y: float(np.asarray(x, np.float64) @ w @ np.asarray(y, np.float64))


def np_sim_cosine(temperature):
    def s(x, y):
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)) / temperature)

    return s


def np_logsumexp(values):
    values = np.asarray(values, np.float64)
    top = values.max()
    return float(top + np.log(np.sum(np.exp(values - top))))


def np_clip_loss(anchor, positive, s):
    batch = len(anchor)
    total = 0.0
    for i in range(batch):
        logits = [s(anchor[i], positive[j]) for j in range(batch)]
        total += np_logsumexp(logits) - logits[i]
    return total / batch


def np_extended_ce(candidate_logits, positive_logits):
    lse = np_logsumexp(candidate_logits)
    return -float(np.mean([p - lse for p in positive_logits]))


def np_frame_loss_pitch_shifted(frames, shifted, s, tau):
    batch, num_frames, _ = frames.shape
    losses = []
    for i in range(batch):
        u, u_tilde = frames[i], shifted[i]
        for t in range(num_frames):
            candidates = [s(u[t], u_tilde[t])] + [
                s(u[t], u[t2]) for t2 in range(num_frames) if t2 != t
            ]
            positives = [s(u[t], u_tilde[t])] + [
                s(u[t], u[t2]) for t2 in range(num_frames) if 0 < abs(t - t2) <= tau
            ]
            losses.append(np_extended_ce(candidates, positives))
    return float(np.mean(losses))


def np_frame_loss_self_one_view(view, s, tau):
    batch, num_frames, _ = view.shape
    losses = []
    for i in range(batch):
        v = view[i]
        for t in range(num_frames):
            candidates = [s(v[t], v[t2]) for t2 in range(num_frames)]
            positives = [s(v[t], v[t2]) for t2 in range(num_frames) if abs(t - t2) <= tau]
            losses.append(np_extended_ce(candidates, positives))
    return float(np.mean(losses))


def np_frame_loss_self(views, s, tau):
    return float(np.mean([np_frame_loss_self_one_view(v, s, tau) for v in views]))


def np_pitch_loss(anchor_pitch, shifted_pitch, ratio, target):
    total, count = 0.0, 0
    for i in range(anchor_pitch.shape[0]):
        phi = ratio[i] - 1.0 if target == "ratio" else 12.0 * math.log2(ratio[i])
        for t in range(anchor_pitch.shape[1]):
            total += (float(shifted_pitch[i, t]) - float(anchor_pitch[i, t]) - phi) ** 2
            count += 1
    return total / count


# -------------------------------------------------------------------- helpers
def bilinear_with(w):
    w = np.asarray(w, np.float32)
    layer = BilinearSimilarity()
    layer.build((None, w.shape[0]), (None, w.shape[0]))
    layer.kernel.assign(w)
    return layer


def f32(x):
    return np.asarray(x, np.float32)


def to_np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


@pytest.fixture
def rng():
    return np.random.default_rng(2022)


def random_w(rng, dim):
    # Non-symmetric, so a^T W b and a^T W^T b (or b^T W a) differ.
    return np.eye(dim) + 0.3 * rng.normal(size=(dim, dim))


# ======================================================================== clip
def test_clip_loss_hand_case_identity_w():
    # W = I, a0 = [1, 0], a1 = [0, 1], p0 = [1, 0], p1 = [1, 1]:
    # S = [[a0.p0, a0.p1], [a1.p0, a1.p1]] = [[1, 1], [0, 1]].
    # Row 0 (label 0): CE = log(1 + exp(s01 - s00)) = log(1 + e^0) = log 2.
    # Row 1 (label 1): CE = log(1 + exp(s10 - s11)) = log(1 + e^-1).
    expected = (LOG(2.0) + LOG(1.0 + math.exp(-1.0))) / 2.0  # = 0.5032...
    loss = ClipContrastiveLoss(similarity=bilinear_with(np.eye(2)))
    out = loss(f32([[1, 0], [0, 1]]), f32([[1, 0], [1, 1]]))
    assert float(out) == pytest.approx(expected, abs=1e-6)


def test_clip_loss_hand_case_non_identity_w():
    # W = [[2, 0], [1, 1]], a0 = [1, 0], a1 = [0, 1]: a0^T W = [2, 0], a1^T W = [1, 1].
    # p0 = [1, 0], p1 = [0, 1]: S = [[2, 0], [1, 1]].
    # Row 0: log(1 + exp(0 - 2)) = log(1 + e^-2); row 1: log(1 + exp(1 - 1)) = log 2.
    expected = (LOG(1.0 + math.exp(-2.0)) + LOG(2.0)) / 2.0
    loss = ClipContrastiveLoss(similarity=bilinear_with([[2, 0], [1, 1]]))
    out = loss(f32([[1, 0], [0, 1]]), f32([[1, 0], [0, 1]]))
    assert float(out) == pytest.approx(expected, abs=1e-6)
    # With W^T instead, S = [[2, 1], [0, 1]]: a different value, so orientation matters.
    wrong = (LOG(1.0 + math.exp(-1.0)) + LOG(1.0 + math.exp(-1.0))) / 2.0
    assert abs(float(out) - wrong) > 1e-3


def test_clip_accuracy_hand_cases():
    loss = ClipContrastiveLoss(similarity=bilinear_with(np.eye(2)))
    anchors = f32([[1, 0], [0, 1]])
    # p0 = [2, 0], p1 = [0, 1]: S = [[2, 0], [0, 1]]: both rows pick their own -> 1.0.
    # CE = (log(1 + e^-2) + log(1 + e^-1)) / 2.
    value, accuracy = loss(anchors, f32([[2, 0], [0, 1]]), return_accuracy=True)
    assert float(accuracy) == pytest.approx(1.0)
    assert float(value) == pytest.approx(
        (LOG(1 + math.exp(-2)) + LOG(1 + math.exp(-1))) / 2, abs=1e-6
    )
    # p0 = [1, 0], p1 = [2, 1]: S = [[1, 2], [0, 1]]: row 0 picks p1 (miss), row 1 hits
    # -> 0.5. CE = (log(1 + e^(2-1)) + log(1 + e^(0-1))) / 2.
    value, accuracy = loss(anchors, f32([[1, 0], [2, 1]]), return_accuracy=True)
    assert float(accuracy) == pytest.approx(0.5)
    assert float(value) == pytest.approx((LOG(1 + E) + LOG(1 + math.exp(-1))) / 2, abs=1e-6)
    # Without the flag only the scalar loss comes back.
    assert np.ndim(loss(anchors, f32([[1, 0], [2, 1]]))) == 0


@pytest.mark.parametrize("batch,dim", [(2, 3), (5, 8), (16, 4)])
def test_clip_loss_matches_numpy_bilinear(rng, batch, dim):
    w = random_w(rng, dim)
    anchor = f32(rng.normal(size=(batch, dim)))
    positive = f32(anchor + 0.5 * rng.normal(size=(batch, dim)))
    loss = ClipContrastiveLoss(similarity=bilinear_with(w))
    expected = np_clip_loss(anchor, positive, np_sim_bilinear(w))
    assert float(loss(anchor, positive)) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    # Swapping anchors and positives is a different problem (rows vs columns).
    swapped = np_clip_loss(positive, anchor, np_sim_bilinear(w))
    if abs(swapped - expected) > 1e-3:
        assert float(loss(anchor, positive)) != pytest.approx(swapped, abs=1e-4)


def test_clip_loss_default_similarity_is_bilinear_and_w_can_be_set(rng):
    dim = 6
    loss = ClipContrastiveLoss()  # builds its own BilinearSimilarity
    anchor = f32(rng.normal(size=(4, dim)))
    positive = f32(rng.normal(size=(4, dim)))
    loss(anchor, positive)  # builds W
    assert isinstance(loss.similarity, BilinearSimilarity)
    w = random_w(rng, dim)
    loss.similarity.kernel.assign(f32(w))
    expected = np_clip_loss(anchor, positive, np_sim_bilinear(w))
    assert float(loss(anchor, positive)) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert [v is loss.similarity.kernel for v in loss.trainable_weights] == [True]


@pytest.mark.parametrize("temperature", [0.2, 0.5])
def test_clip_loss_matches_numpy_cosine(rng, temperature):
    anchor = f32(rng.normal(size=(6, 5)))
    positive = f32(rng.normal(size=(6, 5)))
    expected = np_clip_loss(anchor, positive, np_sim_cosine(temperature))
    by_kind = ClipContrastiveLoss(similarity_kind="cosine", temperature=temperature)
    by_layer = ClipContrastiveLoss(similarity=CosineSimilarity(temperature))
    assert isinstance(by_kind.similarity, CosineSimilarity)
    assert float(by_kind(anchor, positive)) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert float(by_layer(anchor, positive)) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_clip_loss_gradient_wrt_w_matches_formula(rng, gradients):
    # dL/dS = (softmax(S) - I) / B;  dL/dW = sum_ij dL/dS_ij a_i p_j^T.
    batch, dim = 4, 3
    w = random_w(rng, dim)
    anchor = rng.normal(size=(batch, dim))
    positive = rng.normal(size=(batch, dim))
    loss = ClipContrastiveLoss(similarity=bilinear_with(w))
    _, (grad,), _ = gradients(lambda: loss(f32(anchor), f32(positive)),
                              [loss.similarity.kernel])
    logits = anchor @ w @ positive.T
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    d_logits = (soft - np.eye(batch)) / batch
    expected = anchor.T @ d_logits @ positive
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def test_clip_loss_config_round_trip(rng):
    loss = ClipContrastiveLoss(similarity_kind="cosine", temperature=0.5, name="clip")
    clone = ClipContrastiveLoss.from_config(loss.get_config())
    assert isinstance(clone.similarity, CosineSimilarity)
    assert clone.similarity.temperature == pytest.approx(0.5)
    assert clone.name == "clip"
    a = f32(rng.normal(size=(3, 4)))
    p = f32(rng.normal(size=(3, 4)))
    assert float(clone(a, p)) == pytest.approx(float(loss(a, p)), rel=1e-6)
    bilinear = ClipContrastiveLoss.from_config(ClipContrastiveLoss().get_config())
    assert isinstance(bilinear.similarity, BilinearSimilarity)


def test_clip_loss_invalid_similarity_kind_raises():
    with pytest.raises(ValueError, match="similarity"):
        ClipContrastiveLoss(similarity_kind="dot")


# ======================================================================= frame
# A 3-frame example (B = 1, D = 2, W = I) used by the hand-worked cases below:
#   u0 = [1, 0], u1 = [0, 1], u2 = [1, 1]       (anchor frames)
#   u~0 = [2, 0], u~1 = [0, 0], u~2 = [1, 0]     (pitch-shifted anchor frames)
# Gram u.u = [[1, 0, 1], [0, 1, 1], [1, 1, 2]];  s(u_t, u~_t) = [2, 0, 1].
U = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
U_TILDE = [[2.0, 0.0], [0.0, 0.0], [1.0, 0.0]]


def frame_loss(tau, positives="pitch_shifted", w=np.eye(2)):
    return FrameContrastiveLoss(tau=tau, positives=positives, similarity=bilinear_with(w))


def test_frame_pitch_shifted_tau0_hand_case():
    # One positive per row; candidates [s(u_t, u~_t), s(u_t, u_t') for t' != t]:
    #   t=0: [2 | 0, 1]  -> log(e^2 + 1 + e) - 2
    #   t=1: [0 | 0, 1]  -> log(1 + 1 + e) - 0 = log(2 + e)
    #   t=2: [1 | 1, 1]  -> log(3e) - 1 = log 3
    rows = [LOG(E**2 + 1 + E) - 2, LOG(2 + E), LOG(3.0)]
    expected = sum(rows) / 3  # = 0.7861...
    out = frame_loss(0)(f32([U]), f32([U_TILDE]))
    assert float(out) == pytest.approx(expected, abs=1e-6)


def test_frame_pitch_shifted_tau0_averages_over_batch():
    # Sample 2 has all-zero frames: every logit is 0 and each row has T = 3 candidates
    # (u~_t and the 2 other frames; the frame itself is not a candidate) -> log 3 per row.
    rows = [LOG(E**2 + 1 + E) - 2, LOG(2 + E), LOG(3.0)]
    expected = (sum(rows) / 3 + LOG(3.0)) / 2
    zeros = np.zeros((3, 2))
    out = frame_loss(0)(f32([U, zeros]), f32([U_TILDE, zeros]))
    assert float(out) == pytest.approx(expected, abs=1e-6)


def test_frame_pitch_shifted_tau1_hand_case_several_positives():
    # tau = 1: positives are u~_t and u_t' with |t - t'| = 1; log-probs averaged.
    #   t=0: logits [2 | 0, 1], LSE = log(e^2 + 1 + e); positives u~0 (2), u1 (0):
    #        L = LSE - (2 + 0) / 2                               (2 positives)
    #   t=1: logits [0 | 0, 1], LSE = log(2 + e); positives u~1 (0), u0 (0), u2 (1):
    #        L = LSE - (0 + 0 + 1) / 3                           (3 positives)
    #   t=2: logits [1 | 1, 1], LSE = log(3e) = 1 + log 3; positives u~2 (1), u1 (1):
    #        L = 1 + log 3 - 1 = log 3                           (2 positives)
    rows = [LOG(E**2 + 1 + E) - 1.0, LOG(2 + E) - 1.0 / 3.0, LOG(3.0)]
    expected = sum(rows) / 3
    out = frame_loss(1)(f32([U]), f32([U_TILDE]))
    assert float(out) == pytest.approx(expected, abs=1e-6)
    # tau = 2 on T = 3: every other frame is a positive too.
    #   t=0: positives 2, 0, 1 -> LSE - 1;  t=1: as tau=1;  t=2: positives 1, 1, 1 -> log 3.
    rows2 = [LOG(E**2 + 1 + E) - 1.0, LOG(2 + E) - 1.0 / 3.0, LOG(3.0)]
    assert float(frame_loss(2)(f32([U]), f32([U_TILDE]))) == pytest.approx(
        sum(rows2) / 3, abs=1e-6
    )


def test_frame_single_frame_has_only_the_shifted_candidate():
    # T = 1: the only candidate is u~_0, which is the positive: log-prob 0, loss 0.
    out = frame_loss(0)(f32([[[1.0, 2.0]]]), f32([[[-3.0, 0.5]]]))
    assert float(out) == pytest.approx(0.0, abs=1e-6)


def test_frame_self_tau0_hand_case():
    # Identity target, candidates are all 3 frames (the frame itself included):
    #   t=0: [1, 0, 1] target 0 -> log(e + 1 + e) - 1 = log(1 + 2e) - 1
    #   t=1: [0, 1, 1] target 1 -> log(1 + 2e) - 1
    #   t=2: [1, 1, 2] target 2 -> log(2e + e^2) - 2
    rows = [LOG(1 + 2 * E) - 1, LOG(1 + 2 * E) - 1, LOG(2 * E + E**2) - 2]
    out = frame_loss(0, "self")(f32([U]))
    assert float(out) == pytest.approx(sum(rows) / 3, abs=1e-6)


def test_frame_self_tau1_hand_case():
    # Positives: the frame and its neighbours |t - t'| = 1.
    #   t=0: [1, 0, 1], positives {0, 1}: log(1 + 2e) - (1 + 0) / 2
    #   t=1: [0, 1, 1], positives {0, 1, 2}: log(1 + 2e) - (0 + 1 + 1) / 3
    #   t=2: [1, 1, 2], positives {1, 2}: log(2e + e^2) - (1 + 2) / 2
    rows = [LOG(1 + 2 * E) - 0.5, LOG(1 + 2 * E) - 2.0 / 3.0, LOG(2 * E + E**2) - 1.5]
    out = frame_loss(1, "self")(f32([U]))
    assert float(out) == pytest.approx(sum(rows) / 3, abs=1e-6)


def test_frame_self_views_are_averaged():
    # View u (tau 0): as in test_frame_self_tau0_hand_case.
    l_u = (2 * (LOG(1 + 2 * E) - 1) + LOG(2 * E + E**2) - 2) / 3
    # View u~: Gram [[4, 0, 2], [0, 0, 0], [2, 0, 1]]:
    #   t=0: log(e^4 + 1 + e^2) - 4;  t=1: log 3 - 0;  t=2: log(e^2 + 1 + e) - 1
    l_tilde = (LOG(E**4 + 1 + E**2) - 4 + LOG(3.0) + LOG(E**2 + 1 + E) - 1) / 3
    # Extra view of zeros: every row log 3.
    l_zero = LOG(3.0)
    loss = frame_loss(0, "self")
    u, u_tilde, zero = f32([U]), f32([U_TILDE]), np.zeros((1, 3, 2), np.float32)
    assert float(loss(u_tilde)) == pytest.approx(l_tilde, abs=1e-6)
    assert float(loss(u, u_tilde)) == pytest.approx((l_u + l_tilde) / 2, abs=1e-6)
    assert float(loss(u, extra_views=[zero])) == pytest.approx((l_u + l_zero) / 2, abs=1e-6)
    assert float(loss(u, u_tilde, extra_views=[zero])) == pytest.approx(
        (l_u + l_tilde + l_zero) / 3, abs=1e-6
    )


@pytest.mark.parametrize("tau", [0, 1, 2, 5])
@pytest.mark.parametrize("batch,num_frames,dim", [(3, 5, 8), (2, 3, 4), (1, 7, 6)])
def test_frame_pitch_shifted_matches_numpy_bilinear(rng, tau, batch, num_frames, dim):
    w = random_w(rng, dim)
    frames = f32(rng.normal(size=(batch, num_frames, dim)))
    shifted = f32(frames + 0.7 * rng.normal(size=frames.shape))
    expected = np_frame_loss_pitch_shifted(frames, shifted, np_sim_bilinear(w), tau)
    out = FrameContrastiveLoss(tau=tau, similarity=bilinear_with(w))(frames, shifted)
    assert float(out) == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("tau", [0, 1, 3])
def test_frame_pitch_shifted_matches_numpy_cosine(rng, tau):
    frames = f32(rng.normal(size=(3, 6, 5)))
    shifted = f32(rng.normal(size=(3, 6, 5)))
    expected = np_frame_loss_pitch_shifted(frames, shifted, np_sim_cosine(0.2), tau)
    loss = FrameContrastiveLoss(tau=tau, similarity_kind="cosine", temperature=0.2)
    assert isinstance(loss.similarity, CosineSimilarity)
    assert float(loss(frames, shifted)) == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("tau", [0, 1, 2])
def test_frame_self_matches_numpy(rng, tau):
    w = random_w(rng, 6)
    views = [f32(rng.normal(size=(2, 5, 6))) for _ in range(3)]
    loss = FrameContrastiveLoss(tau=tau, positives="self", similarity=bilinear_with(w))
    s = np_sim_bilinear(w)
    assert float(loss(views[0])) == pytest.approx(
        np_frame_loss_self(views[:1], s, tau), rel=1e-5, abs=1e-5
    )
    assert float(loss(views[0], views[1], extra_views=[views[2]])) == pytest.approx(
        np_frame_loss_self(views, s, tau), rel=1e-5, abs=1e-5
    )
    cosine = FrameContrastiveLoss(tau=tau, positives="self", similarity_kind="cosine")
    assert float(cosine(views[0], views[1])) == pytest.approx(
        np_frame_loss_self(views[:2], np_sim_cosine(0.2), tau), rel=1e-5, abs=1e-5
    )


def test_frame_loss_gradient_matches_finite_differences(rng, gradients):
    # The masked logits must not leak gradient and the positives must be weighted right:
    # d loss / d frames from Keras vs central differences of the NumPy reference.
    w = random_w(rng, 3)
    frames = rng.normal(size=(1, 4, 3))
    shifted = rng.normal(size=(1, 4, 3))
    loss = FrameContrastiveLoss(tau=1, similarity=bilinear_with(w))
    _, _, (grad,) = gradients(lambda x: loss(x, f32(shifted)), inputs=[f32(frames)])
    s = np_sim_bilinear(w)
    eps = 1e-5
    numeric = np.zeros_like(frames)
    for idx in np.ndindex(frames.shape):
        plus, minus = frames.copy(), frames.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (
            np_frame_loss_pitch_shifted(plus, shifted, s, 1)
            - np_frame_loss_pitch_shifted(minus, shifted, s, 1)
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


def test_frame_loss_needs_shifted_frames_in_pitch_shifted_mode():
    with pytest.raises(ValueError, match="shifted_frames"):
        FrameContrastiveLoss()(f32(np.ones((1, 3, 2))))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"positives": "neighbours"}, "positives"),
        ({"tau": -1}, "tau"),
        ({"similarity_kind": "dot"}, "similarity"),
    ],
)
def test_frame_loss_invalid_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrameContrastiveLoss(**kwargs)


def test_frame_loss_config_round_trip(rng):
    loss = FrameContrastiveLoss(
        tau=2, positives="self", similarity_kind="cosine", temperature=0.3, name="frame"
    )
    config = loss.get_config()
    clone = FrameContrastiveLoss.from_config(config)
    assert (clone.tau, clone.positives, clone.name) == (2, "self", "frame")
    assert isinstance(clone.similarity, CosineSimilarity)
    assert clone.similarity.temperature == pytest.approx(0.3)
    x = f32(rng.normal(size=(2, 4, 3)))
    assert float(clone(x)) == pytest.approx(float(loss(x)), rel=1e-6)
    default = FrameContrastiveLoss.from_config(FrameContrastiveLoss().get_config())
    assert (default.tau, default.positives) == (0, "pitch_shifted")
    assert isinstance(default.similarity, BilinearSimilarity)


# ============================================================== shared similarity
def test_shared_similarity_layer_uses_one_w(rng, gradients):
    dim = 4
    w = random_w(rng, dim)
    shared = bilinear_with(w)
    clip = ClipContrastiveLoss(similarity=shared)
    frame = FrameContrastiveLoss(similarity=shared)
    assert clip.similarity is shared and frame.similarity is shared
    assert clip.trainable_weights[0] is frame.trainable_weights[0] is shared.kernel

    anchor = f32(rng.normal(size=(3, dim)))
    positive = f32(rng.normal(size=(3, dim)))
    frames = f32(rng.normal(size=(3, 4, dim)))
    shifted = f32(rng.normal(size=(3, 4, dim)))
    # Changing W through either loss changes both.
    w2 = random_w(rng, dim)
    clip.similarity.kernel.assign(f32(w2))
    s2 = np_sim_bilinear(w2)
    assert float(clip(anchor, positive)) == pytest.approx(
        np_clip_loss(anchor, positive, s2), rel=1e-5, abs=1e-5
    )
    assert float(frame(frames, shifted)) == pytest.approx(
        np_frame_loss_pitch_shifted(frames, shifted, s2, 0), rel=1e-5, abs=1e-5
    )
    # The gradient of the sum is the sum of the gradients, all on the one variable.
    kernel = [shared.kernel]
    _, (g_total,), _ = gradients(lambda: clip(anchor, positive) + frame(frames, shifted), kernel)
    _, (g_clip,), _ = gradients(lambda: clip(anchor, positive), kernel)
    _, (g_frame,), _ = gradients(lambda: frame(frames, shifted), kernel)
    g_sum = g_clip + g_frame
    np.testing.assert_allclose(g_total, g_sum, rtol=1e-5, atol=1e-6)
    assert np.abs(g_frame).max() > 0


def test_unshared_losses_have_separate_w(rng):
    clip, frame = ClipContrastiveLoss(), FrameContrastiveLoss()
    clip(f32(rng.normal(size=(2, 4))), f32(rng.normal(size=(2, 4))))
    frame(f32(rng.normal(size=(2, 3, 4))), f32(rng.normal(size=(2, 3, 4))))
    assert clip.similarity is not frame.similarity
    assert clip.similarity.kernel is not frame.similarity.kernel


# ======================================================================= pitch
def test_pitch_shift_target_values():
    # ratio: rho - 1.  semitones: 12 log2 rho (2 -> 12, 0.5 -> -12, 2^(3/12) -> 3).
    rho = np.array([1.0, 1.2, 0.8, 2.0, 0.5, 2 ** (3 / 12)], np.float32)
    np.testing.assert_allclose(
        to_np(pitch_shift_target(rho, "ratio")), rho - 1.0, atol=1e-6
    )
    np.testing.assert_allclose(
        to_np(pitch_shift_target(keras.ops.convert_to_tensor(rho), "semitones")),
        [0.0, 12 * math.log2(1.2), 12 * math.log2(0.8), 12.0, -12.0, 3.0],
        atol=1e-4,
    )
    with pytest.raises(ValueError, match="pitch target"):
        pitch_shift_target(rho, "cents")


def test_pitch_loss_hand_cases():
    anchor = f32([[0.0]])
    shifted = f32([[0.2]])
    ratio = f32([1.2])
    # 'ratio': phi = 1.2 - 1 = 0.2 = d -> loss 0.
    assert float(PitchShiftLoss("ratio")(anchor, shifted, ratio)) == pytest.approx(0.0, abs=1e-10)
    # 'semitones': phi = 12 log2 1.2 = 3.1564; loss = (0.2 - 3.1564)^2 = 8.740.
    expected = (0.2 - 12 * math.log2(1.2)) ** 2
    assert float(PitchShiftLoss("semitones")(anchor, shifted, ratio)) == pytest.approx(
        expected, rel=1e-5
    )
    # d = 0.5 - 0.1 = 0.4 for ratio 1.2: loss = (0.4 - 0.2)^2 = 0.04.
    assert float(PitchShiftLoss()(f32([[0.1]]), f32([[0.5]]), ratio)) == pytest.approx(
        0.04, rel=1e-5
    )


def test_pitch_loss_target_is_per_example_and_broadcast_over_frames():
    # B = T = 2 so that a target broadcast along the wrong axis would be caught.
    # Example 0: rho 0.8, d = [-0.2, -0.2] -> 0.  Example 1: rho 1.2, d = [0.2, 0.2] -> 0.
    anchor = f32([[1.0, -1.0], [0.5, 2.0]])
    shifted = anchor + f32([[-0.2, -0.2], [0.2, 0.2]])
    loss = PitchShiftLoss("ratio")
    assert float(loss(anchor, shifted, f32([0.8, 1.2]))) == pytest.approx(0.0, abs=1e-10)
    # Ratios swapped: every term is off by 0.4 -> mean of 0.4^2 = 0.16.
    assert float(loss(anchor, shifted, f32([1.2, 0.8]))) == pytest.approx(0.16, rel=1e-5)
    # d = [[0, 0.4], [0.2, 0.2]] with targets [0.2, 0.2]: terms 0.04, 0.04, 0, 0 -> 0.02.
    shifted2 = anchor + f32([[0.0, 0.4], [0.2, 0.2]])
    assert float(loss(anchor, shifted2, f32([1.2, 1.2]))) == pytest.approx(0.02, rel=1e-5)


@pytest.mark.parametrize("target", ["ratio", "semitones"])
def test_pitch_loss_matches_numpy(rng, target):
    anchor = f32(rng.normal(size=(5, 3)))
    shifted = f32(rng.normal(size=(5, 3)))
    ratio = f32(rng.uniform(0.8, 1.2, size=5))
    expected = np_pitch_loss(anchor, shifted, ratio, target)
    assert float(PitchShiftLoss(target)(anchor, shifted, ratio)) == pytest.approx(
        expected, rel=1e-5
    )


def test_pitch_loss_gradient_and_sign(gradients):
    # L = mean (r~ - r - phi)^2: dL/dr~ = 2 (r~ - r - phi) / (B T), dL/dr is its negative.
    anchor = f32([[0.0, 0.0]])
    shifted = f32([[0.5, 0.1]])
    _, _, (g_anchor, g_shifted) = gradients(
        lambda anchor, shifted: PitchShiftLoss()(anchor, shifted, f32([1.1])),
        inputs=[anchor, shifted])
    np.testing.assert_allclose(g_shifted, [[2 * 0.4 / 2, 2 * 0.0 / 2]], atol=1e-6)
    np.testing.assert_allclose(g_anchor, -g_shifted, atol=1e-6)


def test_pitch_loss_invalid_target_and_config_round_trip():
    with pytest.raises(ValueError, match="pitch target"):
        PitchShiftLoss(target="cents")
    loss = PitchShiftLoss(target="semitones", name="pitch")
    clone = PitchShiftLoss.from_config(loss.get_config())
    assert (clone.target, clone.name) == ("semitones", "pitch")


# ------------------------------------------------ frame loss with the batch's negatives
def np_frame_loss_batch_negatives(frames, shifted, sim, tau):
    """Reference: every anchor frame against every shifted frame of the batch."""
    batch, num_frames, dim = frames.shape
    a = frames.reshape(batch * num_frames, dim)
    s = shifted.reshape(batch * num_frames, dim)
    logits = np.array([[sim(x, y) for y in s] for x in a])
    losses = []
    for i in range(batch * num_frames):
        log_prob = logits[i] - np.log(np.sum(np.exp(logits[i])))
        positives = [j for j in range(batch * num_frames)
                     if j // num_frames == i // num_frames
                     and abs(j % num_frames - i % num_frames) <= tau]
        losses.append(-np.mean(log_prob[positives]))
    return float(np.mean(losses))


@pytest.mark.parametrize("tau", [0, 1])
@pytest.mark.parametrize("batch,num_frames,dim", [(3, 4, 6), (1, 3, 5), (5, 1, 4)])
def test_frame_batch_negatives_matches_numpy(rng, tau, batch, num_frames, dim):
    w = random_w(rng, dim)
    frames = f32(rng.normal(size=(batch, num_frames, dim)))
    shifted = f32(frames + 0.7 * rng.normal(size=frames.shape))
    expected = np_frame_loss_batch_negatives(frames, shifted, np_sim_bilinear(w), tau)
    loss = FrameContrastiveLoss(tau=tau, negatives="batch", similarity=bilinear_with(w))
    assert float(loss(frames, shifted)) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_frame_position_alone_solves_the_paper_form_but_not_batch_negatives():
    """Frames that carry only their position (the same for every clip): the paper's
    within-segment form scores them as solved; with the batch's shifted frames as
    negatives the loss stays at chance among the B clips, ln B."""
    batch, num_frames = 8, 3
    position = 10.0 * np.eye(num_frames, dtype=np.float32)  # frame t -> 10 e_t
    frames = np.repeat(position[None], batch, axis=0)
    cosine = dict(similarity_kind="cosine", temperature=0.05)
    paper = FrameContrastiveLoss(**cosine)(frames, frames)
    fixed = FrameContrastiveLoss(negatives="batch", **cosine)(frames, frames)
    assert float(paper) < 1e-6
    assert float(fixed) == pytest.approx(math.log(batch), rel=1e-4)


def test_frame_negatives_option_is_checked_and_serialised():
    with pytest.raises(ValueError, match="negatives"):
        FrameContrastiveLoss(negatives="everything")
    with pytest.raises(ValueError, match="pitch_shifted"):
        FrameContrastiveLoss(negatives="batch", positives="self")
    loss = FrameContrastiveLoss(tau=1, negatives="batch")
    assert FrameContrastiveLoss.from_config(loss.get_config()).negatives == "batch"
