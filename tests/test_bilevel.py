"""dwml.bilevel against independent computations, in float64 on tiny RoBERTa peers (eager attention,
dropout 0 unless a test says otherwise).

The reference for eq. 3 is the definition itself: theta'(w) = theta - gamma grad_theta L1(theta, w) is
built with ``create_graph=True`` from each model's full forward and eq. 2 / the ensemble loss written out
by hand here (no dwml.losses), then L2(theta'(w), w) is back-propagated to w. Central differences in w
of the same unrolled function check it once more without autograd through the step.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from dwml.bilevel import hypergradient, mirror_descent_step
from dwml.optim import cosine_schedule

V, B, L = 40, 2, 8
SHAPES = [(2, 16, 2), (1, 8, 2), (2, 12, 2)]  # (layers, hidden, heads): three peers of different shapes


def make_peers(shapes=SHAPES, dtype=torch.float64, attn="eager", dropout=0.0, seed=0):
    from transformers import RobertaConfig, RobertaForMaskedLM

    out = []
    for i, (layers, hidden, heads) in enumerate(shapes):
        torch.manual_seed(seed + i)
        cfg = RobertaConfig(vocab_size=V, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                            intermediate_size=32, max_position_embeddings=20, hidden_dropout_prob=dropout,
                            attention_probs_dropout_prob=dropout, pad_token_id=1, attn_implementation=attn)
        m = RobertaForMaskedLM(cfg)
        with torch.no_grad():  # larger than the default 0.02 init, so that peers disagree and curvature shows
            for p in m.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.3)
        out.append(m.to(dtype))  # drawn in float32 then cast: the same peers whatever the dtype
    return out


def make_batch(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, L), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    labels = torch.where(torch.rand(B, L, generator=g) < 0.35, ids, torch.full_like(ids, -100))
    labels[:, 0] = labels[:, -1] = -100
    labels[0, 2], labels[1, 4] = ids[0, 2], ids[1, 4]
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # a padded tail: attention must ignore it
    labels[1, -2:] = -100
    return {"input_ids": torch.where(labels != -100, torch.full_like(ids, 4), ids), "attention_mask": mask, "labels": labels}


# ----------------------------------------------------------------------------------------------------
# the reference: eq. 2-3 written out


def full_logits(model, params, batch):
    out = functional_call(model, params, (), {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    return out.logits[batch["labels"] != -100]


def ref_l1(zs, y, w, a, T, detach):
    total = 0.0
    for i, zi in enumerate(zs):
        total = total + (1 - a) * w[i] * -torch.log_softmax(zi, -1)[torch.arange(len(y)), y].mean()
        for j, zj in enumerate(zs):
            if j != i:
                lp = torch.log_softmax((zj.detach() if detach else zj) / T, -1)
                total = total + a * w[j] * T * T * (lp.exp() * (lp - torch.log_softmax(zi / T, -1))).sum(-1).mean()
    return total


def ref_l2(zs, y, w, kind):
    if kind == "mixture":
        q = sum(w[i] * torch.softmax(z, -1) for i, z in enumerate(zs))
        return -torch.log(q[torch.arange(len(y)), y]).mean()
    return torch.nn.functional.cross_entropy(sum(w[i] * z for i, z in enumerate(zs)), y)


def unrolled_l2(models, tb, db, w, a, gamma, T=1.0, detach=True, kind="mixture", create_graph=True):
    """L2(theta'(w), w) with theta' = theta - gamma grad_theta L1(theta, w), differentiable in w."""
    params = [{n: p.detach().clone().requires_grad_(True) for n, p in m.named_parameters()} for m in models]
    ty, dy = tb["labels"][tb["labels"] != -100], db["labels"][db["labels"] != -100]
    l1 = ref_l1([full_logits(m, P, tb) for m, P in zip(models, params)], ty, w, a, T, detach)
    flat = [t for P in params for t in P.values()]
    grads = iter(torch.autograd.grad(l1, flat, create_graph=create_graph))
    stepped = [{n: t - gamma * next(grads) for n, t in P.items()} for P in params]
    return ref_l2([full_logits(m, P, db) for m, P in zip(models, stepped)], dy, w, kind)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def setup():
    models = [m.eval() for m in make_peers()]
    return models, make_batch(1), make_batch(2), torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------
# eq. 3


@pytest.mark.parametrize("detach, kind, T", [(True, "mixture", 1.0), (False, "logits", 2.0)])
def test_hypergradient_equals_autograd_through_the_unrolled_step(setup, detach, kind, T):
    models, tb, db, w = setup
    a, gamma = 0.5, 0.7
    w_leaf = w.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(unrolled_l2(models, tb, db, w_leaf, a, gamma, T, detach, kind), w_leaf)
    got = hypergradient(models, tb, db, w, alpha=a, gamma=gamma, temperature=T, detach_targets=detach,
                        ensemble=kind, mode="jvp")
    assert rel_err(got, want) < 1e-6
    # The test has teeth: the second-order term of eq. 3 is a sizeable part of g here (dropping it, as the
    # published code effectively did by differentiating a detached copy, would be caught many times over).
    direct = hypergradient(models, tb, db, w, alpha=a, gamma=0.0, temperature=T, detach_targets=detach, ensemble=kind)
    assert rel_err(direct, want) > 1e-2


def test_hypergradient_equals_finite_differences_in_w(setup):
    models, tb, db, w = setup
    a, gamma, eps = 0.3, 0.5, 1e-5
    fd = []
    for k in range(len(w)):
        e = torch.zeros_like(w)
        e[k] = eps
        plus = unrolled_l2(models, tb, db, w + e, a, gamma, create_graph=False)
        minus = unrolled_l2(models, tb, db, w - e, a, gamma, create_graph=False)
        fd.append(float(plus - minus) / (2 * eps))
    fd = torch.tensor(fd, dtype=torch.float64)
    got = hypergradient(models, tb, db, w, alpha=a, gamma=gamma, mode="jvp")
    assert rel_err(got, fd) < 1e-4


def test_hypergradient_at_gamma_zero_is_the_closed_form_direct_term(setup):
    """gamma = 0: theta' = theta, and dL2/dw_k of the mixture is -mean_t p_k[y_t] / sum_i w_i p_i[y_t]."""
    models, tb, db, w = setup
    y = db["labels"][db["labels"] != -100]
    with torch.no_grad():
        pk = torch.stack([torch.softmax(full_logits(m, dict(m.named_parameters()), db), -1)[torch.arange(len(y)), y]
                          for m in models])
    want = -(pk / (w[:, None] * pk).sum(0)).mean(1)
    got = hypergradient(models, tb, db, w, alpha=0.5, gamma=0.0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_off_simplex_weights_need_validate_false(setup):
    models, tb, db, w = setup
    w_off = torch.tensor([0.7, 0.2, 0.4], dtype=torch.float64)
    with pytest.raises(ValueError, match="weights"):
        hypergradient(models, tb, db, w_off, alpha=0.5, gamma=0.1)
    w_leaf = w_off.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(unrolled_l2(models, tb, db, w_leaf, 0.5, 0.1), w_leaf)
    got = hypergradient(models, tb, db, w_off, alpha=0.5, gamma=0.1, validate=False)
    assert rel_err(got, want) < 1e-6


@pytest.mark.parametrize("detach", [True, False])
def test_finite_difference_mode_agrees_with_jvp(setup, detach):
    models, tb, db, w = setup
    kw = dict(alpha=0.5, gamma=0.7, detach_targets=detach)
    exact = hypergradient(models, tb, db, w, mode="jvp", **kw)
    assert rel_err(hypergradient(models, tb, db, w, mode="fd", **kw), exact) < 1e-3
    # and it converges: a step 10x smaller is closer (O(h^2) truncation dominates in float64 here)
    e1 = rel_err(hypergradient(models, tb, db, w, mode="fd", fd_eps=1e-2, **kw), exact)
    e2 = rel_err(hypergradient(models, tb, db, w, mode="fd", fd_eps=1e-3, **kw), exact)
    assert e2 < e1 / 10


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_float32_modes_against_float64(attn):
    """The training loop runs in float32 and may build peers with either attention implementation."""
    ref_models = [m.eval() for m in make_peers()]
    models = [m.eval() for m in make_peers(dtype=torch.float32, attn=attn)]
    tb, db = make_batch(3), make_batch(4)
    w64 = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)
    kw = dict(alpha=0.5, gamma=0.7)
    want = hypergradient(ref_models, tb, db, w64, **kw)
    for mode in ("jvp", "fd"):
        got = hypergradient(models, tb, db, w64.float(), mode=mode, **kw)
        assert got.dtype == torch.float32
        assert rel_err(got.double(), want) < (1e-4 if mode == "jvp" else 1e-2), mode


def test_dropout_mode_gradients_and_parameters_are_left_alone():
    models = make_peers(dropout=0.3)  # train mode, with dropout
    tb, db = make_batch(5), make_batch(6)
    w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    models[1].eval()
    before = [{n: p.detach().clone() for n, p in m.named_parameters()} for m in models]
    marker = torch.ones_like(next(models[0].parameters()))
    next(models[0].parameters()).grad = marker.clone()
    with torch.no_grad():  # the loop may call it from anywhere
        g1 = hypergradient(models, tb, db, w, alpha=0.5, gamma=0.3)
    g2 = hypergradient(models, tb, db, w, alpha=0.5, gamma=0.3, mode="fd")
    assert [m.training for m in models] == [True, False, True]
    for m, snap in zip(models, before):
        for n, p in m.named_parameters():
            assert torch.equal(p, snap[n]), n
    assert torch.equal(next(models[0].parameters()).grad, marker)
    assert all(p.grad is None for m in models[1:] for p in m.parameters())
    # computed with dropout off: deterministic, equal to the eval-mode reference
    torch.testing.assert_close(hypergradient(models, tb, db, w, alpha=0.5, gamma=0.3), g1, rtol=0, atol=0)
    for m in models:
        m.eval()
    w_leaf = w.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(unrolled_l2(models, tb, db, w_leaf, 0.5, 0.3), w_leaf)
    assert rel_err(g1, want) < 1e-6 and rel_err(g2, want) < 1e-3


@pytest.mark.parametrize("detach", [True, False])
def test_reused_inner_gradient_gives_the_same_hypergradient(setup, detach):
    """reuse_grad=True: theta' from the .grad a caller's backward of L1 left (here the hand-written eq. 2
    of this file, not dwml.losses); it must equal the unrolled reference, and a missing .grad counts as 0."""
    models, tb, db, w = setup
    a, gamma = 0.5, 0.7
    ty = tb["labels"][tb["labels"] != -100]
    params = [dict(m.named_parameters()) for m in models]
    for m in models:
        m.zero_grad(set_to_none=True)
    ref_l1([full_logits(m, P, tb) for m, P in zip(models, params)], ty, w, a, 1.0, detach).backward()
    try:
        w_leaf = w.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(unrolled_l2(models, tb, db, w_leaf, a, gamma, 1.0, detach), w_leaf)
        got = hypergradient(models, tb, db, w, alpha=a, gamma=gamma, detach_targets=detach, reuse_grad=True)
        assert rel_err(got, want) < 1e-6
        for m in models:
            m.zero_grad(set_to_none=True)
        at_theta = hypergradient(models, tb, db, w, alpha=a, gamma=gamma, detach_targets=detach, reuse_grad=True)
        # no .grad: theta' = theta whatever gamma, so g is affine in gamma: g(2 gamma) - g(gamma) = g(gamma) - g(0)
        direct = hypergradient(models, tb, db, w, alpha=a, gamma=0.0, detach_targets=detach)
        twice = hypergradient(models, tb, db, w, alpha=a, gamma=2 * gamma, detach_targets=detach, reuse_grad=True)
        torch.testing.assert_close(twice - at_theta, at_theta - direct, rtol=1e-8, atol=1e-12)
        assert rel_err(at_theta, want) > 1e-3  # so .grad is read: without it the result differs
    finally:
        for m in models:
            m.zero_grad(set_to_none=True)


def test_hypergradient_bad_input_names_the_parameter(setup):
    models, tb, db, w = setup
    with pytest.raises(ValueError, match="alpha"):
        hypergradient(models, tb, db, w, alpha=1.5, gamma=0.1)
    with pytest.raises(ValueError, match="gamma"):
        hypergradient(models, tb, db, w, alpha=0.5, gamma=-1.0)
    with pytest.raises(ValueError, match="hypergrad_mode"):
        hypergradient(models, tb, db, w, alpha=0.5, gamma=0.1, mode="hessian")
    with pytest.raises(ValueError, match="ensemble"):
        hypergradient(models, tb, db, w, alpha=0.5, gamma=0.1, ensemble="vote")
    with pytest.raises(ValueError, match="3 peers"):
        hypergradient(models, tb, db, w[:2] / w[:2].sum(), alpha=0.5, gamma=0.1)
    with pytest.raises(ValueError, match="weights"):
        hypergradient(models, tb, db, torch.tensor([0.5, -0.1, 0.6], dtype=torch.float64), alpha=0.5, gamma=0.1)
    with pytest.raises(ValueError, match="fd_eps"):
        hypergradient(models, tb, db, w, alpha=0.5, gamma=0.1, mode="fd", fd_eps=0.0)


# ----------------------------------------------------------------------------------------------------
# eq. 4


def test_mirror_descent_stays_on_the_simplex_and_ignores_a_shift_of_g():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        w = torch.softmax(3 * torch.randn(5, generator=g, dtype=torch.float64), 0)
        grad = 10 * torch.randn(5, generator=g, dtype=torch.float64)
        new = mirror_descent_step(w, grad, 0.25)
        assert (new > 0).all() and float(new.sum()) == pytest.approx(1.0, abs=1e-12)
        torch.testing.assert_close(mirror_descent_step(w, grad + 123.4, 0.25), new, rtol=1e-12, atol=1e-15)


def test_mirror_descent_moves_weight_to_the_lower_gradient():
    w = torch.full((4,), 0.25, dtype=torch.float64)
    grad = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64)
    new = mirror_descent_step(w, grad, 0.5)
    assert int(new.argmax()) == 1 and int(new.argmin()) == 0
    assert torch.equal(torch.argsort(new), torch.argsort(-grad))  # order reverses the order of g
    torch.testing.assert_close(mirror_descent_step(w, grad, 0.0), w)


def test_mirror_descent_closed_form_for_two_peers():
    """p = 2: logit(w_1') = logit(w_1) - eta (g_1 - g_2)."""
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    grad = torch.tensor([1.5, -0.5], dtype=torch.float64)
    eta = 0.4
    logit = math.log(0.3 / 0.7) - eta * 2.0
    want = 1.0 / (1.0 + math.exp(-logit))
    new = mirror_descent_step(w, grad, eta)
    assert float(new[0]) == pytest.approx(want, rel=1e-13)
    assert float(new[1]) == pytest.approx(1.0 - want, rel=1e-13)


def test_mirror_descent_is_stable_for_huge_steps_and_refuses_bad_input():
    w = torch.tensor([0.5, 0.5])
    new = mirror_descent_step(w, torch.tensor([1e4, -1e4]), 10.0)
    assert torch.isfinite(new).all() and float(new[1]) == 1.0
    with pytest.raises(ValueError, match="weights"):
        mirror_descent_step(torch.tensor([0.6, 0.6]), torch.zeros(2), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        mirror_descent_step(w, torch.tensor([float("nan"), 0.0]), 0.1)
    with pytest.raises(ValueError, match="step_size"):
        mirror_descent_step(w, torch.zeros(2), -0.1)
    with pytest.raises(ValueError, match="shape"):
        mirror_descent_step(w, torch.zeros(3), 0.1)


# ----------------------------------------------------------------------------------------------------
# the schedule shared by the learning rate and eta


def test_cosine_schedule_shape():
    peak, low, warm, decay = 0.25, 0.0025, 5, 105
    vals = [cosine_schedule(s, peak, low, warm, decay) for s in range(120)]
    assert vals[:warm] == pytest.approx([peak * (s + 1) / (warm + 1) for s in range(warm)])
    assert vals[warm] == pytest.approx(peak)
    assert vals[(warm + decay) // 2] == pytest.approx((peak + low) / 2)  # half-way down the cosine
    assert vals[warm + 25] == pytest.approx(low + (peak - low) * (1 + math.cos(math.pi / 4)) / 2)
    assert all(a >= b for a, b in zip(vals[warm:], vals[warm + 1:]))
    assert vals[decay:] == pytest.approx([low] * (120 - decay))
    assert cosine_schedule(0, 1.0, 0.1, 0, 10) == 1.0
    with pytest.raises(ValueError, match="minimum"):
        cosine_schedule(0, 0.1, 0.2, 5, 10)
    with pytest.raises(ValueError, match="warmup_iters"):
        cosine_schedule(0, 0.1, 0.0, -1, 10)
