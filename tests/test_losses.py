"""dwml.losses against independent computations: golden values, numpy/scipy loops, finite differences.

The references never call dwml.losses' helpers: they walk over peers and predicted positions one at a
time in numpy (values) or write each term of eq. 2 out in torch with its own detach (gradients).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax as np_log_softmax, logsumexp
from scipy.stats import entropy

from dwml.losses import (IGNORE_INDEX, InnerLoss, check_alpha, ensemble_loss, inner_loss, masked_ce,
                         masked_kl, per_peer_losses, validate_weights)

V = 7


def peer_logits(p=3, B=2, T=5, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = [scale * torch.randn(B, T, V, generator=g, dtype=torch.float64) for _ in range(p)]
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.5] = IGNORE_INDEX
    labels[0, 1] = 3  # at least one predicted position
    return logits, labels


# ----------------------------------------------------------------------------------------------------
# golden values


def test_masked_ce_golden_value():
    """Expected value computed in numpy (scipy.special.logsumexp) for this input:
    position 0: label 1, -(z[1] - logsumexp([2, -1, 0.5])) = 3.241311296657157
    position 1: ignored (-100)
    position 2: label 0, -(z[0] - logsumexp([1, 3, -2])) = 2.1328452337275756
    mean over the 2 predicted positions = 2.6870782651923664."""
    z = torch.tensor([[[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [1.0, 3.0, -2.0]]], dtype=torch.float64)
    y = torch.tensor([[1, -100, 0]])
    assert float(masked_ce(z, y)) == pytest.approx(2.6870782651923664, rel=1e-12)


def test_masked_kl_golden_values():
    """KL(softmax(t/T) || softmax(z/T)) * T^2 at the predicted positions 0 and 2, averaged, computed in
    numpy as sum(exp(lp) * (lp - lq)) with lp, lq = x/T - logsumexp(x/T):
    T = 1 -> 1.7992796709463803,  T = 2 -> 2.0667569647647404 (that is 4 x the KL at T = 2)."""
    z = torch.tensor([[[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [1.0, 3.0, -2.0]]], dtype=torch.float64)
    t = torch.tensor([[[0.5, 0.5, -1.0], [1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]]], dtype=torch.float64)
    y = torch.tensor([[1, -100, 0]])
    assert float(masked_kl(t, z, y)) == pytest.approx(1.7992796709463803, rel=1e-12)
    assert float(masked_kl(t, z, y, temperature=2.0)) == pytest.approx(2.0667569647647404, rel=1e-12)


# ----------------------------------------------------------------------------------------------------
# CE and KL


def test_masked_ce_and_kl_match_scipy_per_position():
    (zt, z), y = peer_logits(p=2, seed=1)
    keep = (y != IGNORE_INDEX).numpy()
    zn, tn, yn = z.numpy()[keep], zt.numpy()[keep], y.numpy()[keep]
    ce = np.mean([-np_log_softmax(zn[n])[yn[n]] for n in range(len(yn))])
    assert float(masked_ce(z, y)) == pytest.approx(ce, rel=1e-12)
    for T in (1.0, 3.0):
        kl = np.mean([entropy(np.exp(np_log_softmax(tn[n] / T)), np.exp(np_log_softmax(zn[n] / T)))
                      for n in range(len(yn))]) * T * T
        assert float(masked_kl(zt, z, y, temperature=T)) == pytest.approx(kl, rel=1e-10)


def test_flat_selected_positions_give_the_same_loss():
    """methods.py passes logits [n, V] already restricted to the predicted positions."""
    (zt, z), y = peer_logits(p=2, seed=2)
    keep = y != IGNORE_INDEX
    assert torch.equal(masked_ce(z, y), masked_ce(z[keep], y[keep]))
    assert torch.equal(masked_kl(zt, z, y), masked_kl(zt[keep], z[keep], y[keep]))


def test_no_predicted_position_gives_zero_with_a_graph():
    (zt, z), y = peer_logits(p=2)
    z.requires_grad_(True)
    none = torch.full_like(y, IGNORE_INDEX)
    for loss in (masked_ce(z, none), masked_kl(zt, z, none), inner_loss([zt, z], none, torch.tensor([0.5, 0.5]), 0.5).total,
                 ensemble_loss([zt, z], none, torch.tensor([0.5, 0.5]))):
        assert float(loss) == 0.0
        (gz,) = torch.autograd.grad(loss, z, allow_unused=True)
        assert gz is None or float(gz.abs().sum()) == 0.0


def test_masked_kl_gradient_matches_finite_differences_both_detach_settings():
    """gradcheck: autograd of masked_kl against central finite differences, in float64."""
    (zt, z), y = peer_logits(p=2, B=1, T=4, seed=3)
    zt, z = zt.clone().requires_grad_(True), z.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: masked_kl(a, b, y, 1.5, detach_target=False), (zt, z))
    assert torch.autograd.gradcheck(lambda b: masked_kl(zt.detach(), b, y, 1.5), (z,))
    (g_detached,) = torch.autograd.grad(masked_kl(zt, z, y, detach_target=True), zt, allow_unused=True)
    assert g_detached is None


def test_half_precision_logits_are_upcast():
    (zt, z), y = peer_logits(p=2, seed=4)
    got = masked_kl(zt.bfloat16(), z.bfloat16(), y)
    want = masked_kl(zt.bfloat16().double(), z.bfloat16().double(), y)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(float(want), rel=1e-5)


# ----------------------------------------------------------------------------------------------------
# eq. 2


def eq2_loop(logits, labels, w, a, T):
    """L1, CE_i, received KL_i and La_k by a plain loop over peers and predicted positions (numpy)."""
    zs = [z.detach().numpy() for z in logits]
    keep = (labels != IGNORE_INDEX).numpy()
    ys = labels.numpy()[keep]
    zs = [z[keep] for z in zs]
    p, n = len(zs), len(ys)
    ce = np.zeros(p)
    K = np.zeros((p, p))
    for i in range(p):
        for t in range(n):
            ce[i] += -np_log_softmax(zs[i][t])[ys[t]] / n
            for j in range(p):
                if j != i:
                    pj, pi = np.exp(np_log_softmax(zs[j][t] / T)), np.exp(np_log_softmax(zs[i][t] / T))
                    K[j, i] += T * T * entropy(pj, pi) / n
    total = sum((1 - a) * w[i] * ce[i] + a * sum(w[j] * K[j, i] for j in range(p) if j != i) for i in range(p))
    received = np.array([sum(w[j] * K[j, i] for j in range(p) if j != i) for i in range(p)])
    la = np.array([(1 - a) * ce[k] + a * sum(K[k, i] for i in range(p) if i != k) for k in range(p)])
    return total, ce, received, la


@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_inner_loss_equals_a_loop_over_peers_and_positions(detach, T):
    logits, y = peer_logits(p=3, seed=5)
    w, a = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), 0.4
    got = inner_loss(logits, y, w, a, T, detach)
    assert isinstance(got, InnerLoss)
    total, ce, received, la = eq2_loop(logits, y, w.numpy(), a, T)
    assert float(got.total) == pytest.approx(total, rel=1e-10)
    np.testing.assert_allclose(got.ce.numpy(), ce, rtol=1e-10)
    np.testing.assert_allclose(got.kl.numpy(), received, rtol=1e-10)
    np.testing.assert_allclose(got.per_peer.numpy(), la, rtol=1e-10)
    np.testing.assert_allclose(per_peer_losses(logits, y, a, T, detach).numpy(), la, rtol=1e-10)


def eq2_torch_terms(logits, labels, w, a, T, detach):
    """Eq. 2 written term by term in torch, each target detached by hand where the convention says so."""
    keep = labels != IGNORE_INDEX
    y = labels[keep]
    total = 0.0
    for i, zi in enumerate(logits):
        total = total + (1 - a) * w[i] * -torch.log_softmax(zi[keep], -1)[torch.arange(len(y)), y].mean()
        for j, zj in enumerate(logits):
            if j == i:
                continue
            tgt = zj[keep].detach() if detach else zj[keep]
            lp, lq = torch.log_softmax(tgt / T, -1), torch.log_softmax(zi[keep] / T, -1)
            total = total + a * w[j] * T * T * (lp.exp() * (lp - lq)).sum(-1).mean()
    return total


@pytest.mark.parametrize("detach", [True, False])
def test_inner_loss_gradients_follow_the_detach_convention(detach):
    logits, y = peer_logits(p=3, seed=6)
    logits = [z.clone().requires_grad_(True) for z in logits]
    w, a, T = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), 0.6, 1.5
    got = torch.autograd.grad(inner_loss(logits, y, w, a, T, detach).total, logits)
    want = torch.autograd.grad(eq2_torch_terms(logits, y, w, a, T, detach), logits)
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h, rtol=1e-10, atol=1e-12)


def test_detached_target_gets_no_gradient_from_its_kl_term():
    """a = 1, w = (1, 0): L1 = KL(p_1 || p_2) only. Detached: dL1/dz_1 = 0. Not detached: it is not."""
    logits, y = peer_logits(p=2, seed=7)
    logits = [z.clone().requires_grad_(True) for z in logits]
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    g_det = torch.autograd.grad(inner_loss(logits, y, w, 1.0, detach_targets=True).total, logits)
    g_live = torch.autograd.grad(inner_loss(logits, y, w, 1.0, detach_targets=False).total, logits)
    assert float(g_det[0].abs().max()) == 0.0 and float(g_det[1].abs().max()) > 1e-3
    assert float(g_live[0].abs().max()) > 1e-3
    torch.testing.assert_close(g_det[1], g_live[1])  # the student's gradient is the same either way


def test_inner_loss_is_linear_in_w():
    """L1(theta, w) = sum_k w_k La_k(theta) for any w (on the simplex or not)."""
    logits, y = peer_logits(p=4, seed=8)
    la = per_peer_losses(logits, y, 0.3, 2.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        w = torch.rand(4, generator=g, dtype=torch.float64) * 3 - 1
        total = inner_loss(logits, y, w, 0.3, 2.0, validate=False).total
        assert float(total) == pytest.approx(float(w @ la), rel=1e-12)
    wn = torch.softmax(torch.randn(4, generator=g, dtype=torch.float64), 0)
    assert float(inner_loss(logits, y, wn, 0.3, 2.0).total) == pytest.approx(float(wn @ la), rel=1e-12)


def test_alpha_limits():
    """a = 0: the w-weighted CE. a = 1: the weighted KL only."""
    logits, y = peer_logits(p=3, seed=9)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    il0, il1 = inner_loss(logits, y, w, 0.0), inner_loss(logits, y, w, 1.0)
    assert float(il0.total) == pytest.approx(float(sum(w[i] * masked_ce(logits[i], y) for i in range(3))), rel=1e-12)
    want = sum(w[j] * masked_kl(logits[j], logits[i], y) for i in range(3) for j in range(3) if i != j)
    assert float(il1.total) == pytest.approx(float(want), rel=1e-12)


# ----------------------------------------------------------------------------------------------------
# the ensemble loss


def test_mixture_ensemble_equals_naive_formula():
    logits, y = peer_logits(p=3, seed=10)
    w = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64)
    keep = (y != IGNORE_INDEX).numpy()
    zs, ys = [z.numpy()[keep] for z in logits], y.numpy()[keep]
    naive = np.mean([-math.log(sum(w[i].item() * np.exp(zs[i][t] - logsumexp(zs[i][t]))[ys[t]] for i in range(3)))
                     for t in range(len(ys))])
    assert float(ensemble_loss(logits, y, w, "mixture")) == pytest.approx(naive, rel=1e-12)


def test_logits_ensemble_equals_ce_of_averaged_logits():
    logits, y = peer_logits(p=3, seed=11)
    w = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64)
    keep = (y != IGNORE_INDEX).numpy()
    zbar = sum(w[i].item() * logits[i].numpy()[keep] for i in range(3))
    ys = y.numpy()[keep]
    want = np.mean([-np_log_softmax(zbar[t])[ys[t]] for t in range(len(ys))])
    assert float(ensemble_loss(logits, y, w, "logits")) == pytest.approx(want, rel=1e-12)


def test_mixture_is_stable_and_has_finite_gradient_at_zero_weight():
    logits, y = peer_logits(p=3, seed=12, scale=300.0)  # probabilities far below float32's range
    w = torch.tensor([0.0, 0.4, 0.6], dtype=torch.float64, requires_grad=True)
    loss = ensemble_loss([z.float() for z in logits], y, w)
    (gw,) = torch.autograd.grad(loss, w)
    assert torch.isfinite(loss) and torch.isfinite(gw).all()
    # dL2/dw_k = -mean_t p_k[y_t] / q[y_t]: closed form, in float64 from log-probabilities
    keep = y != IGNORE_INDEX
    lp = torch.stack([torch.log_softmax(z[keep], -1)[torch.arange(int(keep.sum())), y[keep]] for z in logits])
    log_q = torch.logsumexp(torch.log(w.detach())[:, None] + lp, 0)
    torch.testing.assert_close(gw.double(), -torch.exp(lp - log_q).mean(1), rtol=1e-4, atol=1e-6)
    assert float(loss) == pytest.approx(float(-log_q.mean()), rel=1e-5)


def test_ensemble_gradient_in_w_matches_finite_differences():
    logits, y = peer_logits(p=3, seed=13)
    w = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64, requires_grad=True)
    for kind in ("mixture", "logits"):
        assert torch.autograd.gradcheck(lambda v: ensemble_loss(logits, y, v, kind, validate=False), (w,))


# ----------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("w, why", [([0.5, 0.6], "sums to"), ([1.2, -0.2], "negative"), ([float("nan"), 1.0], "NaN"),
                                    ([[0.5, 0.5]], "1-D")])
def test_weights_off_the_simplex_are_refused_by_name(w, why):
    with pytest.raises(ValueError, match=why) as e:
        validate_weights(torch.tensor(w), "peer_weights")
    assert "peer_weights" in str(e.value)
    logits, y = peer_logits(p=2)
    if torch.tensor(w).dim() == 1:
        with pytest.raises(ValueError, match="weights"):
            inner_loss(logits, y, torch.tensor(w), 0.5)
        with pytest.raises(ValueError, match="weights"):
            ensemble_loss(logits, y, torch.tensor(w))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval_is_refused_by_name(alpha):
    logits, y = peer_logits(p=2)
    with pytest.raises(ValueError, match="alpha"):
        inner_loss(logits, y, torch.tensor([0.5, 0.5]), alpha)
    with pytest.raises(ValueError, match="loss_alpha"):
        per_peer_losses(logits, y, alpha)
    assert check_alpha(1) == 1.0


def test_other_bad_inputs_name_the_problem():
    logits, y = peer_logits(p=2)
    with pytest.raises(ValueError, match="weights has shape"):
        inner_loss(logits, y, torch.tensor([0.2, 0.3, 0.5]), 0.5)
    with pytest.raises(ValueError, match="labels"):
        masked_ce(logits[0], y[:, :-1])
    with pytest.raises(ValueError, match="temperature"):
        masked_kl(logits[0], logits[1], y, temperature=0.0)
    with pytest.raises(ValueError, match="ensemble"):
        ensemble_loss(logits, y, torch.tensor([0.5, 0.5]), kind="geometric")
    with pytest.raises(ValueError, match="vocabulary"):
        inner_loss([logits[0], logits[1][..., :-1]], y, torch.tensor([0.5, 0.5]), 0.5)


