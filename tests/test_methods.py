"""dwml.methods: each method's loss against an explicit computation from the models' full outputs.

The references below never call dwml.losses: they take full-sequence logits from the model's own
forward, pick the masked positions, and write CE and KL out with log_softmax, so the masked-position
shortcut, the wiring of each method and its gradients are checked independently.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dwml import methods
from dwml.config import ConfigError, TrainConfig
from conftest import tiny_roberta

V, B, L = 97, 3, 12


def peers(n=2, seed=0, layers=(2, 3), hidden=(16, 24)):
    torch.manual_seed(seed)
    return [tiny_roberta(V, layers[i % len(layers)], hidden[i % len(hidden)], ffn=32, positions=L + 4, dtype=torch.float64,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, attn_implementation="eager")
            for i in range(n)]


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, L), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2
    labels = torch.where(torch.rand(B, L, generator=g) < 0.3, ids, torch.full_like(ids, -100))
    labels[:, 0] = labels[:, -1] = -100
    labels[0, 3] = ids[0, 3]  # at least one target
    masked = torch.where(labels != -100, torch.full_like(ids, 4), ids)
    return {"input_ids": masked, "attention_mask": torch.ones_like(ids), "labels": labels}


def full_logits(model, b, **kw):
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], **kw)
    keep = b["labels"] != -100
    return out, out.logits[keep], b["labels"][keep], keep


def ce_ref(z, y):
    return -torch.log_softmax(z, -1).gather(1, y[:, None]).mean()


def kl_ref(target, z, T=1.0):
    """KL(p_target || p_z) at temperature T, times T^2 (Hinton et al.: keeps gradients' scale in T)."""
    lt, lz = torch.log_softmax(target / T, -1), torch.log_softmax(z / T, -1)
    return (lt.exp() * (lt - lz)).sum(-1).mean() * T * T


def grads(loss, model):
    return torch.autograd.grad(loss, list(model.parameters()), allow_unused=True, retain_graph=True)


def cfg(**kw):
    return TrainConfig(**{"loss_alpha": 0.3, "temperature": 1.0, **kw})


def test_predicted_logits_equal_the_full_forward_at_masked_positions():
    from dwml.model import predicted_logits, prediction_targets

    m, b = peers(1)[0].eval(), batch()
    logits, hidden = predicted_logits(m, b, output_hidden_states=True)
    out, ref, y, keep = full_logits(m, b, output_hidden_states=True)
    torch.testing.assert_close(logits, ref)
    assert torch.equal(prediction_targets(b), y)
    assert len(hidden) == m.config.num_hidden_layers + 1
    torch.testing.assert_close(hidden[1], out.hidden_states[1][keep])


def test_mlm_is_independent_cross_entropies():
    ms, b = peers(2), batch()
    method = methods.make_method(cfg(method="mlm"), ms)
    loss, parts = method.loss(b)
    refs = [ce_ref(full_logits(m, b)[1], full_logits(m, b)[2]) for m in ms]
    torch.testing.assert_close(parts["ce"], torch.stack(refs).detach())
    torch.testing.assert_close(loss, sum(refs))
    for m, r in zip(ms, refs):  # peer i's gradient is its own CE's
        for g, h in zip(grads(loss, m), grads(r, m)):
            torch.testing.assert_close(g, h)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_teacher_kd_loss_and_frozen_teacher(T):
    ms, b = peers(2), batch()
    teacher = peers(1, seed=7, layers=(3,), hidden=(32,))[0]
    before = [p.clone() for p in teacher.parameters()]
    method = methods.make_method(cfg(method="kd", temperature=T), ms, teacher=teacher)
    loss, parts = method.loss(b)
    _, zt, _, _ = full_logits(teacher.eval(), b)
    want = 0.0
    for i, m in enumerate(ms):
        _, z, y, _ = full_logits(m, b)
        want = want + 0.7 * ce_ref(z, y) + 0.3 * kl_ref(zt.detach(), z, T)
        torch.testing.assert_close(parts["kl"][i], kl_ref(zt, z, T).detach())
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert all(torch.equal(a, p) for a, p in zip(before, teacher.parameters()))


def test_self_distillation_exits_and_gradients():
    """Shallow exits learn from labels and the deepest exit's distribution; the deepest (the model's own
    head) only from labels: its head's gradient equals the gradient of its CE alone."""
    ms, b = peers(2, layers=(3, 1)), batch()
    method = methods.make_method(cfg(method="sd", temperature=2.0), ms)
    assert method.exits == [[1, 2], []]
    loss, parts = method.loss(b)
    want, deep_ces = 0.0, []
    for m, heads in zip(ms, method.heads):
        out, z, y, keep = full_logits(m, b, output_hidden_states=True)
        deep_ces.append(ce_ref(z, y))
        want = want + deep_ces[-1]
        emb = m.get_input_embeddings().weight
        for k, head in zip(method.exits[len(deep_ces) - 1], heads):
            h = out.hidden_states[k][keep]
            zk = F.layer_norm(F.gelu(h @ head.dense.weight.T + head.dense.bias), (h.shape[-1],),
                              head.layer_norm.weight, head.layer_norm.bias, head.layer_norm.eps) @ emb.T + head.bias
            want = want + 0.7 * ce_ref(zk, y) + 0.3 * kl_ref(z.detach(), zk, 2.0)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(parts["ce"], torch.stack(deep_ces).detach())
    assert parts["kl"][1] == 0 and parts["kl"][0] > 0
    head_params = list(ms[0].lm_head.dense.parameters())
    g_all = torch.autograd.grad(loss, head_params, retain_graph=True)
    g_ce = torch.autograd.grad(deep_ces[0], head_params)
    for a, c in zip(g_all, g_ce):
        torch.testing.assert_close(a, c)
    assert all(any(p is q for q in method.heads[0].parameters()) for p in method.peer_modules(0)[1].parameters())


def test_self_distillation_with_live_targets_teaches_the_deepest_exit_too():
    """detach_targets=False: the same loss, and the KL terms' gradient reaches the deepest exit's head."""
    ms, b = peers(1, layers=(3,)), batch()
    method = methods.make_method(cfg(method="sd", temperature=2.0, detach_targets=False), ms)
    loss, parts = method.loss(b)
    m, heads = ms[0], method.heads[0]
    out, z, y, keep = full_logits(m, b, output_hidden_states=True)
    want, kl = ce_ref(z, y), 0.0
    emb = m.get_input_embeddings().weight
    for k, head in zip(method.exits[0], heads):
        h = out.hidden_states[k][keep]
        zk = F.layer_norm(F.gelu(h @ head.dense.weight.T + head.dense.bias), (h.shape[-1],),
                          head.layer_norm.weight, head.layer_norm.bias, head.layer_norm.eps) @ emb.T + head.bias
        kl = kl + kl_ref(z, zk, 2.0)
        want = want + 0.7 * ce_ref(zk, y) + 0.3 * kl_ref(z, zk, 2.0)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(parts["kl"][0], kl.detach())
    head_params = list(m.lm_head.dense.parameters())
    for a, c in zip(torch.autograd.grad(loss, head_params), torch.autograd.grad(want, head_params)):
        torch.testing.assert_close(a, c)


def dml_ref(ms, b, w, alpha, T=1.0):
    """Eq. 2 written out: (1 - a) sum_i w_i CE_i + a sum_i sum_{j != i} w_j KL(p_j || p_i)."""
    zs = [full_logits(m, b)[1] for m in ms]
    y = full_logits(ms[0], b)[2]
    total = 0.0
    for i, z in enumerate(zs):
        total = total + (1 - alpha) * w[i] * ce_ref(z, y)
        for j, zj in enumerate(zs):
            if j != i:
                total = total + alpha * w[j] * kl_ref(zj.detach(), z, T)
    return total


def test_dml_equal_weights_gradient_matches_eq2():
    ms, b = peers(3), batch()
    method = methods.make_method(cfg(method="dml"), ms)
    torch.testing.assert_close(method.weights, torch.full((3,), 1 / 3, dtype=method.weights.dtype))
    loss, parts = method.loss(b)
    ref = dml_ref(ms, b, [1 / 3] * 3, 0.3)
    for m in ms:  # with the targets detached, peer i's gradient is that of its own terms of eq. 2
        for g, h in zip(grads(loss, m), grads(ref, m)):
            torch.testing.assert_close(g, h)
    assert method.outer_step(b, b, 0.1, 0.1) is None


def test_kd_dwml_adds_the_teacher_term():
    ms, b = peers(2), batch()
    teacher = peers(1, seed=9)[0]
    method = methods.make_method(cfg(method="kd_dwml"), ms, teacher=teacher)
    loss, parts = method.loss(b)
    zt = full_logits(teacher.eval(), b)[1].detach()
    extra = sum(0.3 * 0.5 * kl_ref(zt, full_logits(m, b)[1]) for m in ms)
    ref = dml_ref(ms, b, [0.5, 0.5], 0.3) + extra
    for m in ms:
        for g, h in zip(grads(loss, m), grads(ref, m)):
            torch.testing.assert_close(g, h)
    assert "kl_teacher" in parts


def test_dwml_outer_step_is_mirror_descent_and_favours_the_better_peer():
    """After some training of peer 0 alone on the batch, its dev predictions beat peer 1's, and one
    outer step must move weight toward it; the new w is eq. 4 applied to the returned hypergradient."""
    ms, b = peers(2), batch()
    opt = torch.optim.Adam(ms[0].parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        ce_ref(*full_logits(ms[0], b)[1:3]).backward()
        opt.step()
    method = methods.make_method(cfg(method="dwml"), ms)
    w0 = method.weights.clone()
    g = method.outer_step(b, b, lr=1e-3, eta=0.5)
    want = w0 * torch.exp(-0.5 * g)
    torch.testing.assert_close(method.weights, want / want.sum())
    assert method.weights[0] > 0.5 > method.weights[1]
    assert all(m.training for m in ms)  # dropout mode restored


def test_eval_losses_token_weighted_and_mixture_ensemble():
    ms = [m.eval() for m in peers(2)]
    bs = [batch(1), batch(2)]
    method = methods.make_method(cfg(method="dwml", ensemble="mixture"), ms)
    method.weights = torch.tensor([0.3, 0.7], dtype=method.weights.dtype)
    out = method.eval_losses(bs)
    nll = [[], []]
    ens = []
    for b in bs:
        zs = [full_logits(m, b)[1] for m in ms]
        y = full_logits(ms[0], b)[2]
        for i, z in enumerate(zs):
            nll[i].append(-torch.log_softmax(z, -1).gather(1, y[:, None]).squeeze(1))
        mix = 0.3 * torch.softmax(zs[0], -1) + 0.7 * torch.softmax(zs[1], -1)
        ens.append(-torch.log(mix.gather(1, y[:, None]).squeeze(1)))
    assert out["dev_ce"] == pytest.approx([torch.cat(n).mean().item() for n in nll], rel=1e-6)
    assert out["dev_ensemble"] == pytest.approx(torch.cat(ens).mean().item(), rel=1e-6)


def test_bad_inputs():
    ms = peers(2)
    with pytest.raises(ValueError, match="weights"):
        methods.make_method(cfg(method="dml"), ms, weights=[0.6, 0.6])
    with pytest.raises(ValueError, match="weights"):
        methods.make_method(cfg(method="dml"), ms, weights=[1.2, -0.2])
    with pytest.raises(ValueError, match="one per peer"):
        methods.make_method(cfg(method="dml"), ms, weights=[1.0])
    with pytest.raises(ConfigError, match="train.loss_alpha"):
        methods.make_method(cfg(method="dwml", loss_alpha=-0.1), ms)
    with pytest.raises(ConfigError, match="train.loss_alpha"):
        methods.make_method(cfg(method="dwml", loss_alpha=float("nan")), ms)
    with pytest.raises(ConfigError, match="teacher_dir"):
        methods.make_method(cfg(method="kd"), ms)
    with pytest.raises(ConfigError, match="exits"):
        methods.make_method(cfg(method="sd"), ms, exits=[[2], [1]])
    with pytest.raises(ConfigError, match="train.method"):
        methods.make_method(cfg(method="nope"), ms)
