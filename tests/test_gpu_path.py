"""The CUDA path's exactness, checked on the CPU: where TF32 may round (dwml.precision), float32 losses under
autocast, no read-back in the whole step for every layout, fused AdamW against the unfused one, the
sliced loss against the one-piece loss in float64, and batches built ahead (dwml.prefetch).

Tiny models on the 30k-word synthetic corpus; seconds each.
"""
from __future__ import annotations

import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from dwml import train
from dwml.config import Config
from dwml.losses import combine, ensemble_loss, fused_ce_kl, inner_loss, per_peer_losses, token_ce
from dwml.precision import matmul_precision, tf32_state
from dwml.prefetch import Prefetcher
from conftest import SyncCounter, flat_params, tiny_roberta, tiny_train_config

BLOCK = 32
EXACT = (False, False, "highest")
TF32 = (True, True, "high")


@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory):
    from dwml.config import DataConfig
    from dwml.data import prepare_corpus

    return prepare_corpus(DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=BLOCK,
                                     cache_dir=str(tmp_path_factory.mktemp("cache"))), progress=False)


def peers(vocab: int, n: int = 2, seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    shapes = [(2, 32, 2), (1, 24, 3), (1, 16, 1)]
    return [tiny_roberta(vocab, l, h, a, positions=BLOCK + 4, dtype=dtype, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0) for l, h, a in shapes[:n]]


def config(**train) -> Config:
    return tiny_train_config(BLOCK, **{"num_batches": 3, "num_epochs": 4, "weight_update_frequency": 1, **train})


params = flat_params


@pytest.fixture
def restore_tf32():
    before = tf32_state()
    yield
    torch.set_float32_matmul_precision(before[2])
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[0], before[1]


# ----------------------------------------------------------------------------------------------------
# TF32 where the run asks, never in the outer step


def test_matmul_precision_sets_and_restores_the_three_flags(restore_tf32):
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    torch.set_float32_matmul_precision("medium")
    start = tf32_state()
    assert start[1:] == (True, "medium")
    with matmul_precision(True):
        assert tf32_state() == TF32
        with matmul_precision(False):
            assert tf32_state() == EXACT
        assert tf32_state() == TF32
    assert tf32_state() == start
    with pytest.raises(RuntimeError, match="boom"):
        with matmul_precision(False):
            assert tf32_state() == EXACT
            raise RuntimeError("boom")
    assert tf32_state() == start
    with pytest.raises(TypeError, match="train.tf32"):
        with matmul_precision("yes"):
            pass


def test_the_outer_step_runs_exact_float32_whatever_the_process_allows(corpus, tmp_path, restore_tf32, monkeypatch):
    from dwml import methods

    seen = {}
    original = methods.DWML.outer_step

    def spy(self, *a, **k):
        seen["outer"] = tf32_state()
        return original(self, *a, **k)

    monkeypatch.setattr(methods.DWML, "outer_step", spy)
    trainer = train.Trainer(config(num_epochs=1), corpus, peers(len(corpus.tokenizer)), tmp_path / "r", progress=False)
    inner = trainer.accumulate
    trainer.accumulate = lambda chunks: (seen.setdefault("inner", tf32_state()), inner(chunks))[1]
    trainer.tf32 = True  # what train.tf32 gives on CUDA
    torch.backends.cuda.matmul.allow_tf32 = True  # a process that allowed TF32 everywhere
    trainer.train_step()
    assert seen == {"inner": TF32, "outer": EXACT}
    assert tf32_state()[0] is True  # the process's own setting, back after the step


# ----------------------------------------------------------------------------------------------------
# the losses stay float32 under autocast


class MatmulDtypes(TorchDispatchMode):
    """The input dtypes of every matrix product, and whether ``dwml/losses.py`` is on the Python stack."""

    OPS = ("aten.mm", "aten.bmm", "aten.addmm", "aten.baddbmm", "aten.matmul", "aten.dot", "aten.mv")

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, tuple, bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in self.OPS:
            f, in_losses = sys._getframe(), False
            while f is not None:
                in_losses |= f.f_code.co_filename.replace("\\", "/").endswith("dwml/losses.py")
                f = f.f_back
            self.seen.append((name, tuple(a.dtype for a in args if torch.is_tensor(a)), in_losses))
        return func(*args, **(kwargs or {}))


def test_the_recorder_sees_autocast_cast_a_matmul_to_bf16():
    a, b = torch.randn(4, 5), torch.randn(5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), MatmulDtypes() as rec:
        a @ b
    assert rec.seen and rec.seen[0][1] == (torch.bfloat16, torch.bfloat16) and not rec.seen[0][2]


def test_no_matmul_inside_the_losses_runs_in_bf16_under_autocast():
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(9, 13, generator=g).bfloat16().requires_grad_(True) for _ in range(3)]
    y = torch.randint(0, 13, (9,), generator=g)
    wt = torch.rand(9, generator=g)
    w = torch.tensor([0.2, 0.3, 0.5])
    teacher = torch.randn(9, 13, generator=g).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16), MatmulDtypes() as rec:
        ce, K, kt = fused_ce_kl(zs, y, wt, 2.0, teacher_logits=teacher)
        total, kl = combine(ce, K, w, 0.5)
        fused_ce_kl(zs, y, wt, rows=4)
        token_ce(zs[0], y, wt)
        inner_loss(zs, y, w, 0.5, token_weight=wt)
        per_peer_losses(zs, y, 0.5, token_weight=wt)
        ensemble_loss(zs, y, w, "logits")
    with MatmulDtypes() as back:  # the backward pass, outside autocast as in the loop
        (total + kt.sum()).backward()
    assert len(rec.seen) >= 6 and all(s[2] for s in rec.seen) and back.seen, (rec.seen, back.seen)
    rec.seen += back.seen
    bad = [s for s in rec.seen if torch.bfloat16 in s[1] or torch.float16 in s[1]]
    assert bad == [] and {s[1][0] for s in rec.seen} == {torch.float32}


@pytest.mark.parametrize("method", ["dwml", "kd_dwml"])
def test_a_method_loss_under_autocast_keeps_its_vocabulary_matmuls_float32(corpus, method):
    from dwml.config import TrainConfig
    from dwml.methods import make_method

    vocab = len(corpus.tokenizer)
    teacher = peers(vocab, 1, seed=5)[0] if method == "kd_dwml" else None
    m = make_method(TrainConfig(method=method, loss_alpha=0.5), peers(vocab, 2), teacher)
    b = corpus.batcher("train", config().data, 4, seed=0).next_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16), MatmulDtypes() as rec:
        m.loss(b)
    in_losses = [s for s in rec.seen if s[2]]
    in_model = [s for s in rec.seen if not s[2]]
    assert in_losses and all(s[1] == (torch.float32, torch.float32) for s in in_losses), in_losses
    assert any(torch.bfloat16 in s[1] for s in in_model)  # the peers themselves do run in bf16


# ----------------------------------------------------------------------------------------------------
# no read-back in the whole step


class ReadBacks(TorchFunctionMode):
    NAMES = ("tolist", "item", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy")

    def __init__(self, counter: SyncCounter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.NAMES and not self.counter.paused:
            self.counter.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_the_step_counter_sees_python_level_reads():
    c = SyncCounter()
    x = torch.randn(3)
    with c, ReadBacks(c):
        x.tolist()
        float(x.sum())
    assert c.seen[:2] == ["tolist", "__float__"]


@pytest.mark.parametrize("packing", ["blocks", "lines", "packed"])
def test_no_read_back_in_the_whole_step_but_the_check(corpus, tmp_path, packing, monkeypatch):
    """Two whole steps (batches, forward and backward of 2 chunks, the outer step, clipping and AdamW; not
    a logging step): the one read-back of :meth:`Trainer.check` is all. AdamW is the fused one the loop
    takes on CUDA (the unfused one keeps its step count on the host)."""
    monkeypatch.setattr(train, "make_optimizer", lambda *a, **k: train.torch.optim.AdamW(
        [q for m in a[0] for q in m.parameters()], lr=a[1], fused=True))
    trainer = train.Trainer(config(packing=packing, log_interval=100, num_epochs=5, chunk_size=2), corpus,
                            peers(len(corpus.tokenizer)), tmp_path / packing, progress=False)
    c = SyncCounter()

    def allowed(fn):
        def call(*a):
            c.paused = True
            try:
                return fn(*a)
            finally:
                c.paused = False
        return call

    # the check's read-back is the step's one; the batchers work on host tensors by construction (their
    # reads of them are no device read-back on CUDA, where the copies to the device come after)
    trainer.check = allowed(trainer.check)
    trainer.host_batches = allowed(trainer.host_batches)
    for b in trainer.batchers.values():
        b.next_batch = allowed(b.next_batch)
    with c, ReadBacks(c):
        rows = [trainer.train_step(), trainer.train_step()]
    assert c.seen == [], c.seen
    assert all(torch.is_tensor(r["hypergrad"]) for r in rows)  # read back where a line is written
    host = trainer.host_row(rows[-1])
    assert len(host["w"]) == 2 and abs(sum(host["w"]) - 1) < 1e-6 and host["w"] != [0.5, 0.5]


def test_a_non_finite_hypergradient_stops_at_the_next_read_back(corpus, tmp_path, monkeypatch):
    from dwml import bilevel

    monkeypatch.setattr(bilevel, "hypergradient", lambda models, *a, **k: torch.tensor([float("nan"), 0.0]))
    with pytest.raises(FloatingPointError, match=r"step 1: non-finite hypergradient \[nan, 0.0\]"):
        train.train(config(), corpus, peers(len(corpus.tokenizer)), tmp_path / "nan", progress=False)


# ----------------------------------------------------------------------------------------------------
# fused AdamW


def test_fused_adamw_equals_the_unfused_one_across_a_save_and_resume(tmp_path):
    torch.manual_seed(0)
    base = tiny_roberta(50, 1, 16, 2)
    grads = [[torch.randn_like(p) for p in base.parameters()] for _ in range(6)]

    def run(fused: bool, stop: int | None = None):
        model = tiny_roberta(50, 1, 16, 2)
        model.load_state_dict(base.state_dict())
        opt = train.make_optimizer([model], 1e-2, 0.1, (0.9, 0.95), fused=fused)
        for k, gs in enumerate(grads):
            if k == stop:  # save, then a fresh model and optimizer from the file
                torch.save({"m": model.state_dict(), "o": opt.state_dict()}, tmp_path / f"ck{fused}.pt")
                ck = torch.load(tmp_path / f"ck{fused}.pt", weights_only=True)
                model = tiny_roberta(50, 1, 16, 2)
                model.load_state_dict(ck["m"])
                opt = train.make_optimizer([model], 1e-2, 0.1, (0.9, 0.95), fused=fused)
                opt.load_state_dict(ck["o"])
            for p, g in zip(model.parameters(), gs):
                p.grad = g.clone()
            opt.step()
        return params([model])

    plain, fused, fused_resumed = run(False), run(True), run(True, stop=3)
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(plain, params([base])))  # it moved
    for a, b, c in zip(plain, fused, fused_resumed):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        assert torch.equal(b, c)  # resume is bit for bit


# ----------------------------------------------------------------------------------------------------
# the sliced loss


def _logits(p=3, n=11, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ([(2 * torch.randn(n, V, generator=g, dtype=torch.float64)).requires_grad_(True) for _ in range(p)],
            torch.randint(0, V, (n,), generator=g), torch.rand(n, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("T_,detach,teacher", [(1.0, True, False), (2.0, False, True), (1.5, True, True)])
def test_sliced_loss_equals_the_one_piece_loss_in_float64(T_, detach, teacher):
    zs, y, wt = _logits()
    t = torch.randn(zs[0].shape, dtype=torch.float64) if teacher else None
    coef = torch.randn(3, 3, dtype=torch.float64)

    def value(rows, *z):
        ce, K, kt = fused_ce_kl(list(z), y, wt, T_, detach, teacher_logits=t, rows=rows)
        return ce @ torch.arange(1.0, 4.0, dtype=torch.float64) + (K * coef).sum() + (0 if kt is None else kt.sum())

    for rows in (1, 4, 5):
        one, sliced = value(0, *zs), value(rows, *zs)
        assert abs(float(one - sliced)) < 1e-12
        for a, b in zip(torch.autograd.grad(one, zs), torch.autograd.grad(sliced, zs)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    if not detach:
        assert torch.autograd.gradcheck(lambda *z: value(4, *z), tuple(zs))
    frozen = [z.detach().clone() for z in zs]  # detached targets as constants, so a difference can hold them
    assert torch.autograd.gradcheck(lambda *z: fused_ce_kl(list(z), y, None, T_, True, target_logits=frozen,
                                                           rows=3)[1].sum(), tuple(zs))


def test_sliced_loss_default_weight_is_the_whole_batch_mean():
    zs, y, _ = _logits(n=10)
    a, b = fused_ce_kl(zs, y), fused_ce_kl(zs, y, rows=3)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-12)


def test_a_sliced_run_is_its_one_piece_twin(corpus, tmp_path):
    ends = []
    for rows in (0, 7):
        models = peers(len(corpus.tokenizer), 2, dtype=torch.float64)
        res = train.train(config(loss_rows=rows, num_epochs=2, chunk_size=3), corpus, models, tmp_path / f"r{rows}",
                          progress=False)
        ends.append((params(models), res.weights))
    (a, wa), (b, wb) = ends
    assert max(abs(x - y) for x, y in zip(wa, wb)) < 1e-12
    for x, y in zip(a, b):
        assert (x - y).abs().max().item() < 1e-10


# ----------------------------------------------------------------------------------------------------
# batches built ahead


def test_prefetcher_serves_the_producers_items_in_order_and_rewinds_to_the_first_unused():
    state = {"i": 0}

    def produce():
        state["i"] += 1
        return state["i"]

    pf = Prefetcher(produce, lambda: dict(state), lambda s: state.update(s), depth=3)
    assert [pf.next() for _ in range(4)] == [1, 2, 3, 4]
    assert pf.state_dict() == {"i": 4}  # items 5.. were built ahead and are dropped
    assert pf.next() == 5
    pf.close()

    def broken():
        raise ValueError("bad batch")

    pf = Prefetcher(broken, lambda: 0, lambda s: None)
    with pytest.raises(ValueError, match="bad batch"):
        pf.next()
    with pytest.raises(ValueError, match="train.prefetch"):
        Prefetcher(produce, lambda: 0, lambda s: None, depth=0)


@pytest.mark.parametrize("packing", ["blocks", "packed"])
def test_prefetched_batches_are_the_serial_ones_bit_for_bit(corpus, tmp_path, packing):
    got = []
    for prefetch in (0, 2):
        tr = train.Trainer(config(packing=packing, prefetch=prefetch, chunk_size=2), corpus,
                           peers(len(corpus.tokenizer)), tmp_path / f"p{prefetch}", progress=False)
        steps = [tr.next_batches() for _ in range(3)]
        if tr.prefetcher is not None:
            tr.prefetcher.close()
        got.append(steps)
    for (c0, l0, r0, p0), (c1, l1, r1, p1) in zip(*got):
        assert (r0, p0) == (r1, p1) and len(c0) == len(c1)
        for a, b in zip(c0 + [l0], c1 + [l1]):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k], k


def test_a_prefetched_run_stopped_and_resumed_is_the_serial_run(corpus, tmp_path):
    vocab = len(corpus.tokenizer)
    serial = peers(vocab)
    ref = train.train(config(num_epochs=4), corpus, serial, tmp_path / "serial", progress=False)
    cfg = config(num_epochs=4, prefetch=2)
    train.train(cfg, corpus, peers(vocab), tmp_path / "pf", progress=False, max_steps=2)
    resumed = peers(vocab, seed=9)
    res = train.train(cfg, corpus, resumed, tmp_path / "pf", progress=False)
    assert res.weights == ref.weights
    for a, b in zip(params(serial), params(resumed)):
        assert torch.equal(a, b)
