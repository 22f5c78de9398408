"""``train.compile`` on the CPU (inductor): a compiled DWML run is the eager run, outer step included,
within float32 rounding; no Dynamo frame hits the recompile limit; the encoder compiles without a graph
break. Two tiny peers, the fewest compiled graphs that cover train, evaluation and the outer step.
"""
from __future__ import annotations

import pytest
import torch

from dwml import train
from dwml.config import Config
from conftest import tiny_roberta

BLOCK = 32


@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory):
    from dwml.config import DataConfig
    from dwml.data import prepare_corpus

    return prepare_corpus(DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=BLOCK,
                                     cache_dir=str(tmp_path_factory.mktemp("cache"))), progress=False)


def peers(vocab: int):
    torch.manual_seed(0)
    return [tiny_roberta(vocab, l, h, 2, positions=BLOCK + 4, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0) for l, h in ((2, 32), (1, 16))]


def config(**kw) -> Config:
    base = dict(method="dwml", learning_rate=3e-3, min_lr=3e-4, warmup_iters=1, lr_decay_iters=10, batch_size=4,
                num_batches=2, chunk_size=2, num_epochs=3, weight_update_frequency=3, eval_interval=100,
                eval_batches=1, checkpoint_interval=100, step_size=0.5, min_step_size=0.05, device="cpu", dropout=0.0)
    base.update(kw)
    return Config.from_dict(data={"corpus": "unused", "vocab_size": 600, "block_size": BLOCK, "packing": "blocks"},
                            train=base)


# inductor compiles ~10 graphs (tens of seconds on 2 cores); in `make test` all the same: issue 26 asks that the
# compiled path be checked on every change, not only by `make test-slow`
def test_a_compiled_run_is_the_eager_run(corpus, tmp_path):
    """3 steps, the outer step (hypergradient through the compiled peers) at step 3, evaluations at steps 0
    and 3: parameters, w and the hypergradient as the eager run's to float32 rounding."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    vocab = len(corpus.tokenizer)
    eager_models = peers(vocab)
    eager = train.train(config(), corpus, eager_models, tmp_path / "eager", progress=False)
    torch._dynamo.reset()
    counters.clear()
    compiled_models = peers(vocab)
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):  # a refused recompile raises
        comp = train.train(config(compile=True), corpus, compiled_models, tmp_path / "compiled", progress=False)
    assert counters["stats"]["unique_graphs"] >= 2  # it did compile (each peer's encoder at least)
    assert dict(counters["graph_break"]) == {}, dict(counters["graph_break"])
    h_e, h_c = eager.history, comp.history
    g_e = h_e[h_e["kind"] == "train"]["hypergrad"].dropna().tolist()
    g_c = h_c[h_c["kind"] == "train"]["hypergrad"].dropna().tolist()
    assert len(g_e) == len(g_c) == 1
    torch.testing.assert_close(torch.tensor(g_c), torch.tensor(g_e), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.tensor(comp.weights), torch.tensor(eager.weights), rtol=1e-5, atol=1e-7)
    assert eager.weights != [0.5, 0.5]
    for a, b in zip(eager_models, compiled_models):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5, msg=name)


def test_the_encoder_compiles_without_a_graph_break(corpus):
    import torch._dynamo

    from dwml.model import encoder_inputs

    model = peers(len(corpus.tokenizer))[1]
    for packing in ("blocks", "packed"):
        cfg = config().data
        cfg.packing = packing
        batch = corpus.batcher("train", cfg, 3, seed=0).next_batch()
        out = torch._dynamo.explain(model.roberta)(**encoder_inputs(model, batch))
        assert out.graph_break_count == 0, (packing, out.break_reasons)


def test_the_compiled_loss_is_the_eager_loss_whole_and_in_slices():
    from dwml.losses import fused_ce_kl

    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(10, 17, generator=g).requires_grad_(True) for _ in range(3)]
    y = torch.randint(0, 17, (10,), generator=g)
    teacher = torch.randn(10, 17, generator=g)
    coef = torch.randn(3, 3, generator=g)
    for rows in (0, 4):
        out = []
        for compiled in (False, True):
            ce, K, kt = fused_ce_kl(zs, y, None, 2.0, teacher_logits=teacher, rows=rows, compiled=compiled)
            loss = ce.sum() + (K * coef).sum() + kt.sum()
            out.append((loss.detach(), torch.autograd.grad(loss, zs)))
        (l0, g0), (l1, g1) = out
        torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
        for a, b in zip(g0, g1):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
