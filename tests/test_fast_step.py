"""The fast training step is the plain one: packed utterances, the fused loss, merged micro-batches and
the sync-free micro-batch loop, each checked against the computation it replaces.

Tiny models on the 30k-word synthetic corpus; seconds each on a CPU.
"""
from __future__ import annotations

import pytest
import torch

from dwml import train
from dwml.config import Config
from dwml.batches import merge_batches, pack_lines
from dwml.losses import fused_ce_kl, masked_ce, masked_kl
from dwml.model import predicted_logits, prediction_targets
from conftest import SyncCounter, flat_params, tiny_roberta, tiny_train_config

BLOCK = 32


@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory):
    from dwml.config import DataConfig
    from dwml.data import prepare_corpus

    return prepare_corpus(DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=BLOCK,
                                     cache_dir=str(tmp_path_factory.mktemp("cache"))), progress=False)


def peers(vocab: int, n: int = 2, seed: int = 0, attn: str = "sdpa", dtype=torch.float64):
    torch.manual_seed(seed)
    shapes = [(2, 32, 2), (1, 24, 3), (1, 16, 1)]
    return [tiny_roberta(vocab, l, h, a, positions=BLOCK + 4, dtype=dtype, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, attn_implementation=attn) for l, h, a in shapes[:n]]


def lines_batch(corpus, seed=0, batch_size=24):
    from dwml.config import DataConfig

    cfg = DataConfig(corpus="unused", vocab_size=600, block_size=BLOCK, packing="lines", mlm_probability=0.3)
    return corpus.batcher("train", cfg, batch_size, seed=seed).next_batch()


def config(**train) -> Config:
    return tiny_train_config(BLOCK, **train)


params = flat_params


# ----------------------------------------------------------------------------------------------------
# packing


def test_packed_rows_hold_the_same_tokens_whole_and_mostly_real(corpus):
    b = lines_batch(corpus)
    p = pack_lines(b, BLOCK)
    lengths = b["attention_mask"].sum(1)
    assert p["n_real"] == b["n_real"] == int(lengths.sum())
    assert p["n_pred"] == b["n_pred"] and sorted(p["targets"].tolist()) == sorted(b["targets"].tolist())
    assert p["input_ids"].shape[1] == BLOCK and p["input_ids"].shape[0] < b["input_ids"].shape[0]
    for r in range(p["input_ids"].shape[0]):  # every segment is one whole utterance of the lines batch
        for s in p["segment_ids"][r].unique().tolist():
            if s == 0:
                continue
            cols = (p["segment_ids"][r] == s).nonzero().flatten()
            src = int(p["source_rows"][r, cols[0]])
            assert (p["source_rows"][r, cols] == src).all() and len(cols) == int(lengths[src])
            assert torch.equal(p["input_ids"][r, cols], b["input_ids"][src, :len(cols)])
            assert torch.equal(p["labels"][r, cols], b["labels"][src, :len(cols)])
            assert torch.equal(p["positions"][r, cols], torch.arange(len(cols)))
            assert cols.tolist() == list(range(int(cols[0]), int(cols[0]) + len(cols)))  # contiguous
    assert p["n_real"] / p["input_ids"].numel() > 0.85


def _by_source(batch, logits):
    """Logits re-ordered by (row of the lines batch, column): the lines batch's own order."""
    if "source_rows" in batch:
        flat_src = batch["source_rows"].reshape(-1)[batch["pred_index"]]
        flat_pos = batch["positions"].reshape(-1)[batch["pred_index"]]
    else:
        W = batch["input_ids"].shape[1]
        flat_src, flat_pos = batch["pred_index"] // W, batch["pred_index"] % W
    order = torch.argsort(flat_src * 10_000 + flat_pos)
    return logits[order]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_lines_logits(corpus, dtype, tol, attn):
    from dwml.model import use_fast_attention

    b = lines_batch(corpus)
    p = pack_lines(b, BLOCK)
    for m in peers(len(corpus.tokenizer), 3, attn=attn, dtype=dtype):
        use_fast_attention([m])
        m.eval()
        zl = _by_source(b, predicted_logits(m, b)[0])
        zp = _by_source(p, predicted_logits(m, p)[0])
        assert (zl - zp).abs().max().item() < tol
        # and the lines path itself is the stock forward pass at the predicted positions
        full = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        keep = b["labels"] != -100
        assert (predicted_logits(m, b)[0] - full[keep]).abs().max().item() < tol


def test_packed_loss_and_gradients_equal_lines(corpus):
    from dwml.config import TrainConfig
    from dwml.methods import make_method

    b = lines_batch(corpus)
    p = pack_lines(b, BLOCK)
    out = []
    for batch in (b, p):
        models = peers(len(corpus.tokenizer), 3)
        method = make_method(TrainConfig(method="dwml", loss_alpha=0.4), models)
        method.weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
        loss, parts = method.loss(batch)
        loss.backward()
        out.append((loss.detach(), parts, [q.grad.clone() for m in models for q in m.parameters() if q.grad is not None]))
    (l1, p1, g1), (l2, p2, g2) = out
    assert abs(float(l1 - l2)) < 1e-12
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], rtol=0, atol=1e-12)
    assert len(g1) == len(g2)
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-10)


def test_a_packed_run_is_its_lines_twin(corpus, tmp_path):
    """The whole loop, 3 steps with an outer step, float64: 'packed' ends where 'lines' ends."""
    ends = []
    for packing in ("lines", "packed"):
        models = peers(len(corpus.tokenizer), 2)
        res = train.train(config(packing=packing), corpus, models, tmp_path / packing, progress=False)
        ends.append((params(models), res.weights, res.history))
    (a, wa, ha), (b, wb, hb) = ends
    assert wa != [0.5, 0.5]
    assert max(abs(x - y) for x, y in zip(wa, wb)) < 1e-10
    for x, y in zip(a, b):
        assert (x - y).abs().max().item() < 1e-10
    train_a, train_b = ha[ha["kind"] == "train"], hb[hb["kind"] == "train"]
    assert (train_b["real_fraction"] > train_a["real_fraction"]).all()


# ----------------------------------------------------------------------------------------------------
# the fused loss


def _logits(p=3, n=7, V=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(2 * torch.randn(n, V, generator=g, dtype=torch.float64)).requires_grad_(True) for _ in range(p)], \
        torch.randint(0, V, (n,), generator=g)


@pytest.mark.parametrize("T_", [1.0, 2.0])
@pytest.mark.parametrize("detach", [True, False])
def test_fused_ce_kl_equals_the_pairwise_losses(T_, detach):
    zs, y = _logits()
    w = torch.rand(len(y), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ce, K, _ = fused_ce_kl(zs, y, None, T_, detach)
    for i, z in enumerate(zs):
        assert float(ce[i]) == pytest.approx(float(masked_ce(z, y)), rel=1e-12)
        for j, t in enumerate(zs):
            want = 0.0 if i == j else float(masked_kl(t, z, y, T_, detach_target=detach))
            assert float(K[j, i]) == pytest.approx(want, rel=1e-10, abs=1e-12)
    # token weights: the weighted sum of per-token terms
    ce_w, K_w, _ = fused_ce_kl(zs, y, w, T_, detach)
    per_tok = torch.stack([-torch.log_softmax(z, -1).gather(1, y[:, None])[:, 0] for z in zs])
    torch.testing.assert_close(ce_w, per_tok @ w, rtol=1e-12, atol=0)
    lq = torch.log_softmax(zs[0] / T_, -1)
    lp = torch.log_softmax(zs[1] / T_, -1)
    assert float(K_w[0, 1]) == pytest.approx(float(((lq.exp() * (lq - lp)).sum(-1) @ w) * T_ * T_), rel=1e-10)


def test_fused_gradients_equal_the_pairwise_losses_and_pass_gradcheck():
    zs, y = _logits(p=3, n=5, V=6)
    wts = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)

    def fused(*z):
        ce, K, _ = fused_ce_kl(list(z), y, None, 1.5, detach_targets=False)
        return 0.6 * (wts * ce).sum() + 0.4 * (wts @ K).sum()

    def plain(*z):
        ce = torch.stack([masked_ce(zi, y) for zi in z])
        kl = sum(wts[j] * masked_kl(z[j], z[i], y, 1.5, detach_target=False)
                 for i in range(3) for j in range(3) if i != j)
        return 0.6 * (wts * ce).sum() + 0.4 * kl

    g_f = torch.autograd.grad(fused(*zs), zs)
    g_p = torch.autograd.grad(plain(*zs), zs)
    for a, b in zip(g_f, g_p):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(fused, tuple(zs))
    # detached targets: a finite difference would move them, so hold them as constants (target_logits)
    frozen = [z.detach().clone() for z in zs]
    assert torch.autograd.gradcheck(
        lambda *z: fused_ce_kl(list(z), y, None, 1.0, True, target_logits=frozen)[1].sum(), tuple(zs))


def test_fused_teacher_term_equals_masked_kl_and_leaves_the_teacher_alone():
    zs, y = _logits(p=2)
    teacher = torch.randn(zs[0].shape, dtype=torch.float64, requires_grad=True)
    ce, K, kt = fused_ce_kl(zs, y, None, 2.0, teacher_logits=teacher, pairs=False)
    assert K is None
    for i, z in enumerate(zs):
        assert float(kt[i]) == pytest.approx(float(masked_kl(teacher, z, y, 2.0)), rel=1e-10)
    kt.sum().backward()
    assert teacher.grad is None


def test_bf16_logits_are_upcast_before_the_softmax():
    zs, y = _logits(p=2)
    half = [z.detach().bfloat16() for z in zs]
    ce, K, _ = fused_ce_kl(half, y)
    ce64, K64, _ = fused_ce_kl([h.double() for h in half], y)
    assert ce.dtype == torch.float32
    torch.testing.assert_close(ce.double(), ce64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(K.double(), K64, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# merged micro-batches


def test_merged_micro_batches_keep_each_ones_mean(corpus):
    from dwml.config import TrainConfig
    from dwml.methods import make_method

    micro = [lines_batch(corpus, seed=s, batch_size=5) for s in range(3)]
    models = peers(len(corpus.tokenizer), 2)
    method = make_method(TrainConfig(method="dml", loss_alpha=0.5), models)
    each = sum(method.loss(b)[0] for b in micro)
    merged = method.loss(merge_batches(micro))[0]
    assert abs(float(each - merged)) < 1e-12
    packed = [pack_lines(b, BLOCK) for b in micro]
    assert abs(float(method.loss(merge_batches(packed))[0] - each)) < 1e-12


@pytest.mark.parametrize("packing", ["lines", "packed"])
def test_chunked_steps_equal_the_micro_batch_loop(corpus, tmp_path, packing):
    """3 steps of 4 micro-batches with an outer step at step 2, float64, dropout off: one chunk of 4 (and
    chunks of 3 + 1) end with the parameters and w of four separate passes (< 1e-10)."""
    ends = []
    for chunk in (1, 4, 3):
        models = peers(len(corpus.tokenizer), 2)
        res = train.train(config(chunk_size=chunk, packing=packing), corpus, models, tmp_path / f"c{chunk}",
                      progress=False)
        ends.append((params(models), res.weights))
    (ref, w_ref), *others = ends
    assert w_ref != [0.5, 0.5]
    for got, w in others:
        assert max(abs(a - b) for a, b in zip(w, w_ref)) < 1e-10
        for a, b in zip(got, ref):
            assert (a - b).abs().max().item() < 1e-10


# ----------------------------------------------------------------------------------------------------
# no host synchronisation in the micro-batch loop


def test_the_counter_sees_a_sync():
    x = torch.randn(5)
    with SyncCounter() as c:
        x[x > 0].sum().item()
    assert c.seen == ["aten.index[bool]", "aten._local_scalar_dense"]
    with SyncCounter() as c:
        torch.nonzero(x > 0)
        bool(x.sum() > 0)
    assert c.seen == ["aten.nonzero", "aten.is_nonzero"] or c.seen[0] == "aten.nonzero"


@pytest.mark.parametrize("method", ["dwml", "kd_dwml", "sd", "mlm"])
def test_no_sync_inside_the_micro_batch_loop(corpus, tmp_path, method):
    vocab = len(corpus.tokenizer)
    models = peers(vocab, 2, dtype=torch.float32)
    kw = {}
    if method == "kd_dwml":
        kw["teacher"] = peers(vocab, 1, seed=5, dtype=torch.float32)[0]
    trainer = train.Trainer(config(method=method, packing="packed", num_batches=3, chunk_size=2), corpus, models,
                        tmp_path / method, progress=False, **kw)
    chunks, last, _, _ = trainer.next_batches()
    with SyncCounter() as c:
        loss, parts = trainer.accumulate(chunks)
    assert c.seen == [], c.seen
    _, _, host = trainer.check(loss, parts)  # the step's one read-back
    assert len(host["ce"]) == 2 and len(host["grad_norm"]) == 2
