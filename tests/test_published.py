"""The published code's behaviour as options (data.published_token_file, train.published_hypergradient,
train.published_kl): each reproduces the published computation, written out independently here, on a
tiny case; and each is off by default.

The references never call the function under test's helpers: the token file is written as text and read
back with numpy.fromfile and struct; the outer step and the KL are loops over peers, rows and positions
of the models' full outputs."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from dwml.corpus import DataError
from dwml.data import prepare_corpus
from dwml.tokenizer import SPECIAL_TOKENS
from dwml.tokens import PUBLISHED_CHARS, published_ids_in_vocab, published_pair_values, published_token_stream
from dwml.config import Config, ConfigError, DataConfig, TrainConfig

from test_methods import V, batch, peers


# ----------------------------------------------------------------------------------------------------
# data.published_token_file


def test_published_token_stream_is_the_printed_list_read_back_as_uint16(tmp_path):
    ids = [0, 412, 9, 2, 8191, 33]
    path = tmp_path / "processed_encoded_train.bin"
    path.write_text(str(ids), encoding="utf-8")  # what the published tokenizer script writes
    raw = path.read_bytes()
    want_np = np.fromfile(path, dtype="<u2", count=len(raw) // 2)
    want_struct = struct.unpack(f"<{len(raw) // 2}H", raw[: len(raw) // 2 * 2])
    got = published_token_stream(ids)
    assert got.tolist() == want_np.tolist() == list(want_struct)
    # '[0' -> 0x30 * 256 + 0x5B: the first "token" is two characters of the text, not the id 0
    assert got[0] == ord("0") * 256 + ord("[") == 12379
    assert len(got) == len(str(ids)) // 2  # an odd last byte is dropped, as the loader's trim does


def test_published_ids_in_vocab_is_a_one_to_one_relabelling():
    raw = published_token_stream(list(range(0, 3000, 7)))
    ids = published_ids_in_vocab(raw)
    values = published_pair_values()
    assert len(values) == len(PUBLISHED_CHARS) ** 2
    assert ids.min() >= len(SPECIAL_TOKENS) and ids.max() < len(SPECIAL_TOKENS) + len(values)
    # one-to-one: the relabelling maps back to the raw values
    assert (values[ids.astype(np.int64) - len(SPECIAL_TOKENS)] == raw).all()
    with pytest.raises(DataError, match="not a pair"):
        published_ids_in_vocab(np.array([ord("a") + 256 * ord("b")]))


def test_published_token_file_option_replaces_the_caches(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = "\n".join(f"the cat sat on mat number {i}" for i in range(300))
    (corpus / "a.train").write_text(text)
    (corpus / "a.dev").write_text(text)
    base = dict(corpus=str(corpus), vocab_size=300, block_size=16, packing="blocks", cache_dir=str(tmp_path / "c"))
    right = prepare_corpus(DataConfig(**base), progress=False)
    wrong = prepare_corpus(DataConfig(**base, published_token_file=True), progress=False)
    for a, b in ((right.train, wrong.train), (right.dev, wrong.dev)):
        want = published_ids_in_vocab(published_token_stream(np.asarray(a.tokens).tolist()))
        assert np.asarray(b.tokens).tolist() == want.tolist()
    again = prepare_corpus(DataConfig(**base, published_token_file=True), progress=False)  # reused
    assert again.train.meta["sha256"] == wrong.train.meta["sha256"]
    with pytest.raises(ConfigError, match="data.published_token_file"):
        Config.from_dict(data={"published_token_file": True, "packing": "lines"})


# ----------------------------------------------------------------------------------------------------
# train.published_hypergradient


@pytest.mark.parametrize("clip", [1.0, 0.0, 10.0])
def test_published_outer_step_is_a_clamped_softmin_of_dev_cross_entropies(clip):
    from dwml.methods import make_method

    models = peers(3, layers=(1, 2, 1), hidden=(16, 24, 8))
    nb = 2
    cfg = TrainConfig(method="dwml", loss_alpha=0.5, published_hypergradient=True, num_batches=nb, grad_clip=clip)
    m = make_method(cfg, models)
    w0 = torch.tensor([0.5, 0.3, 0.2])
    m.weights = w0.clone()
    dev = batch(seed=3)
    eta = 0.7
    g = m.outer_step(batch(seed=1), dev, lr=0.01, eta=eta)
    assert all(model.training for model in models)  # modes restored
    # by hand: each peer's mean CE over the dev batch's labelled positions, from its full output
    ces = []
    for model in models:
        with torch.no_grad():
            logits = model.eval()(input_ids=dev["input_ids"], attention_mask=dev["attention_mask"]).logits
        total, n = 0.0, 0
        for r in range(dev["labels"].shape[0]):
            for t in range(dev["labels"].shape[1]):
                y = int(dev["labels"][r, t])
                if y != -100:
                    total -= float(torch.log_softmax(logits[r, t].double(), -1)[y])
                    n += 1
        ces.append(total / n)
    gk = [c / nb for c in ces]
    if clip:
        gk = [min(max(x, 0.0), clip) for x in gk]
    un = [float(w0[k]) * math.exp(-eta * gk[k]) for k in range(3)]
    want = [u / sum(un) for u in un]
    assert g.tolist() == pytest.approx(gk, rel=1e-5)
    assert m.weights.tolist() == pytest.approx(want, rel=1e-5)


def test_published_outer_step_is_off_by_default():
    assert TrainConfig().published_hypergradient is False and TrainConfig().published_kl is False
    assert DataConfig().published_token_file is False


# ----------------------------------------------------------------------------------------------------
# train.published_kl


@pytest.mark.parametrize("method", ["dml", "dwml"])
def test_published_kl_sums_over_positions_and_divides_by_rows(method):
    from dwml.methods import make_method

    models = peers(2)
    alpha = 0.4
    cfg = TrainConfig(method=method, loss_alpha=alpha, published_kl=True)
    m = make_method(cfg, models)
    m.weights = torch.tensor([0.7, 0.3], dtype=torch.float32)
    b = batch(seed=5)
    b["attention_mask"][1, -3:] = 0  # padding: not a position of the sum (and never a label)
    b["labels"][1, -3:] = -100
    total, parts = m.loss(b)
    outs = [mm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits for mm in models]
    rows, width = b["input_ids"].shape
    w = [0.7, 0.3]
    ce = []
    for z in outs:
        keep = b["labels"] != -100
        ce.append(torch.nn.functional.cross_entropy(z[keep], b["labels"][keep]))
    kl = [0.0, 0.0]  # kl[i] = sum_j w_j sum_{r,t} KL(p_j || p_i) / rows
    for i in range(2):
        for j in range(2):
            if i == j:
                continue
            s = 0.0
            for r in range(rows):
                for t in range(width):
                    if b["attention_mask"][r, t]:
                        lp, lq = torch.log_softmax(outs[j][r, t], -1), torch.log_softmax(outs[i][r, t], -1)
                        s = s + (lp.exp() * (lp - lq)).sum()
            kl[i] = kl[i] + w[j] * s / rows
    want = (1 - alpha) * sum(wk * c for wk, c in zip(w, ce)) + alpha * (kl[0] + kl[1])
    torch.testing.assert_close(total.double(), want.double(), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(parts["kl"].double(), torch.stack([torch.as_tensor(k) for k in kl]).double(),
                               rtol=1e-6, atol=1e-8)
    # the per-token mean of the default is much smaller: the published KL is ~ positions-per-row times it
    m_default = make_method(TrainConfig(method=method, loss_alpha=alpha), models)
    m_default.weights = m.weights
    assert float(parts["kl"].sum()) > 3 * float(m_default.loss(b)[1]["kl"].sum())


def test_published_kl_needs_one_micro_batch_a_chunk():
    with pytest.raises(ConfigError, match="train.published_kl"):
        Config.from_dict(train={"published_kl": True, "chunk_size": 2, "num_batches": 2})


# ----------------------------------------------------------------------------------------------------
# wired through the loop


@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory):
    from test_train import BLOCK

    return prepare_corpus(DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=BLOCK,
                                       cache_dir=str(tmp_path_factory.mktemp("cache"))), progress=False)


def test_a_run_with_the_published_outer_step_moves_w_by_its_clamped_softmin(corpus, tmp_path):
    from dwml import train as T
    from test_train import tiny_config, tiny_peers

    clip = 3.0
    cfg = tiny_config(published_hypergradient=True, num_batches=1, grad_clip=clip)
    h = T.train(cfg, corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "run", progress=False).history
    rows = h[h["kind"] == "train"].reset_index(drop=True)
    outer = [i for i in range(len(rows)) if isinstance(rows.loc[i, "hypergrad"], list)]
    assert outer, "no outer step was logged"
    for i in outer:
        g = rows.loc[i, "hypergrad"]
        w_prev = rows.loc[i - 1, "w"] if i else [0.5, 0.5]
        eta = rows.loc[i, "eta"]
        assert all(0.0 <= x <= clip for x in g)
        assert max(g) == pytest.approx(clip)  # an untrained peer's dev CE (~ln 600) is clamped
        un = [w * math.exp(-eta * x) for w, x in zip(w_prev, g)]
        assert rows.loc[i, "w"] == pytest.approx([u / sum(un) for u in un], rel=1e-5)


def test_a_run_with_the_published_kl_logs_the_kl_at_its_scale(corpus, tmp_path):
    from dwml import train as T
    from test_train import BLOCK, tiny_config, tiny_peers

    kl = {}
    for flag in (False, True):
        cfg = tiny_config(method="dml", published_kl=flag, num_epochs=1)
        h = T.train(cfg, corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / f"run{flag}", progress=False).history
        kl[flag] = sum(h[h["kind"] == "train"]["kl"].iloc[0])
    # the same models and batches: every position of a row summed (BLOCK of them), not a mean over masked ones
    assert BLOCK / 3 < kl[True] / kl[False] < 3 * BLOCK
