"""PLL scoring against a plain one-token-at-a-time loop, and the minimal-pair loaders on the real files."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from dwml.config import EvalConfig
from dwml.evaluate import (EvalDataError, MinimalPair, data_root, encode_for_pll, evaluate_model, pll_scores,
                           score_pairs, subsample)
from dwml.suites import load_blimp, load_ewok, load_supplement, load_synthetic

LINES = ["the dog sees the cat", "a cat runs", "the dogs see a bird", "the birds sing", "she likes the dog",
         "we saw them yesterday", "is the cat here ?", "they run to the park"] * 20
SENTENCES = ["the dog sees the cat .", "a bird sings", "the dogs runs", "she saw a cat in the park yesterday",
             "x", "the the the", "cat"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from dwml.tokenizer import train_tokenizer

    return train_tokenizer(LINES, vocab_size=300, out_dir=tmp_path_factory.mktemp("tok") / "tok", min_frequency=1)


def tiny_model(tok, dtype=torch.float32, max_positions=64, seed=0):
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = RobertaForMaskedLM._from_config(cfg, attn_implementation="eager").to(dtype).eval()
    # A random init puts almost all mass near uniform; scale the head so log-probs differ clearly.
    with torch.no_grad():
        model.lm_head.bias.normal_(0, 1.0)
    return model


def loop_pll(model, tok, sentence, prefix=None, reduction="sum"):
    """The definition, written plainly: one sentence, one masked position, one full forward pass at a time."""
    ids = tok(sentence)["input_ids"]
    scored = list(range(1, len(ids) - 1))
    if prefix is not None:
        p = tok(prefix, add_special_tokens=False)["input_ids"]
        ids = ids[:1] + p + ids[1:]
        scored = [t + len(p) for t in scored]
    total = 0.0
    with torch.no_grad():
        for t in scored:
            x = torch.tensor([ids])
            x[0, t] = tok.mask_token_id
            logits = model(input_ids=x).logits[0, t]
            total += torch.log_softmax(logits.double(), -1)[ids[t]].item()
    return total / len(scored) if reduction == "mean" else total


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_pll_equals_plain_loop(tok, reduction):
    model = tiny_model(tok)
    ours = pll_scores(model, tok, SENTENCES, reduction=reduction, batch_size=16, progress=False)
    ref = np.array([loop_pll(model, tok, s, reduction=reduction) for s in SENTENCES])
    assert np.abs(ours - ref).max() < 1e-5
    assert np.all(ours < 0)


def test_pll_float64_model_matches_loop_tightly(tok):
    model = tiny_model(tok, dtype=torch.float64)
    ours = pll_scores(model, tok, SENTENCES, batch_size=5, progress=False)
    ref = np.array([loop_pll(model, tok, s) for s in SENTENCES])
    assert np.abs(ours - ref).max() < 1e-10


def test_prefix_visible_but_never_scored(tok):
    model = tiny_model(tok)
    conts = ["the cat runs", "a dog sings", "the bird"]
    ctxs = ["she saw the dogs .", "we like them", "is the cat here ?"]
    for reduction in ("sum", "mean"):
        ours = pll_scores(model, tok, conts, prefixes=ctxs, reduction=reduction, progress=False)
        ref = np.array([loop_pll(model, tok, c, p, reduction) for c, p in zip(conts, ctxs)])
        assert np.abs(ours - ref).max() < 1e-5
    # The context changes the score (it is visible) ...
    plain = pll_scores(model, tok, conts, progress=False)
    assert np.abs(plain - pll_scores(model, tok, conts, prefixes=ctxs, progress=False)).min() > 1e-4
    # ... and only the continuation's tokens are scored: the scored span is exactly the continuation.
    for (ids, start, end), c, p in zip(encode_for_pll(tok, conts, ctxs), conts, ctxs):
        n_prefix = len(tok(p, add_special_tokens=False)["input_ids"])
        assert (start, end) == (1 + n_prefix, len(ids) - 1)
        assert ids[start:end] == tok(c, add_special_tokens=False)["input_ids"]
        # The same ids as encoding "context continuation" in one go (how minicons joins them).
        assert ids == tok(p + " " + c)["input_ids"]
    # A None prefix in the list means no context for that item.
    mixed = pll_scores(model, tok, conts, prefixes=[None, ctxs[1], None], progress=False)
    assert abs(mixed[0] - plain[0]) < 1e-6 and abs(mixed[2] - plain[2]) < 1e-6


def test_batching_sorting_and_duplicates_change_nothing(tok):
    model = tiny_model(tok)
    ref = pll_scores(model, tok, SENTENCES, batch_size=1, progress=False)
    for bs in (3, 7, 1000):
        assert np.abs(pll_scores(model, tok, SENTENCES, batch_size=bs, progress=False) - ref).max() < 1e-5
    perm = np.random.default_rng(0).permutation(len(SENTENCES))
    shuffled = pll_scores(model, tok, [SENTENCES[i] for i in perm], batch_size=4, progress=False)
    assert np.abs(shuffled - ref[perm]).max() < 1e-5
    doubled = pll_scores(model, tok, SENTENCES + SENTENCES[::-1], batch_size=4, progress=False)
    assert np.abs(doubled - np.concatenate([ref, ref[::-1]])).max() < 1e-5


def test_bfloat16_close_to_float32(tok):
    model = tiny_model(tok)
    f32 = pll_scores(model, tok, SENTENCES, progress=False, reduction="mean")
    bf16 = pll_scores(model, tok, SENTENCES, progress=False, reduction="mean", dtype="bfloat16")
    assert np.abs(bf16 - f32).max() < 0.1  # bf16 keeps 8 bits of mantissa: ~1% per log-prob
    assert np.abs(bf16 - f32).max() > 0    # and it really ran in reduced precision


def test_too_long_sentence_names_it(tok):
    model = tiny_model(tok, max_positions=12)  # RoBERTa: 12 - (pad_id + 1) = 10 tokens
    ok = "the cat runs"
    long = " ".join(["the dog sees the cat"] * 3)
    with pytest.raises(ValueError, match=r"sentence 1 .*more than the 10 positions"):
        pll_scores(model, tok, [ok, long], progress=False)
    with pytest.raises(ValueError, match="reduction"):
        pll_scores(model, tok, [ok], reduction="max", progress=False)


def test_score_pairs_ties_are_wrong(tok):
    model = tiny_model(tok)
    pairs = [MinimalPair("t", "a", 0, "the cat runs", "the cat runs"),
             MinimalPair("t", "a", 1, "the dog sees the cat", "the dog see the cat"),
             MinimalPair("t", "b", 0, "a bird sings", "a birds sings")]
    df = score_pairs(model, tok, pairs, EvalConfig(batch_size=8), progress=False)
    assert list(df["tie"]) == [True, False, False]
    assert not df["correct"].iloc[0]
    assert (df["correct"] == (df["score_good"] > df["score_bad"])).all()
    direct = pll_scores(model, tok, [p.bad for p in pairs], progress=False)
    assert np.abs(df["score_bad"].to_numpy() - direct).max() < 1e-5


def test_evaluate_model_on_saved_folder(tok, tmp_path):
    from dwml.synthetic import write_corpus

    model = tiny_model(tok, max_positions=258)  # the toy tokenizer spells unseen words byte by byte
    model.save_pretrained(tmp_path / "peer")
    tok.save_pretrained(tmp_path / "peer")
    corpus = write_corpus(tmp_path / "corpus", words=2_000, seed=1, n_pairs=6)
    pairs = load_synthetic(corpus)
    assert len({p.task for p in pairs}) >= 5 and all(p.suite == "synthetic" for p in pairs)
    df = evaluate_model(tmp_path / "peer", suites={"synthetic": pairs}, cfg=EvalConfig(max_pairs_per_paradigm=3),
                        progress=False)
    assert len(df) == 3 * len({p.task for p in pairs})
    assert set(df.columns) >= {"suite", "task", "pair_id", "score_good", "score_bad", "correct", "tie"}
    sub = subsample(pairs, 3, seed=0)
    direct = pll_scores(model, tok, [p.good for p in sub], progress=False)
    assert np.abs(df["score_good"].to_numpy() - direct).max() < 1e-5


# ---------------------------------------------------------------------------------------------- loaders

def test_loader_errors_name_file_and_line(tmp_path):
    good = {"sentence_good": "a b", "sentence_bad": "b a", "UID": "u", "linguistics_term": "t", "field": "f", "pair_id": 0}
    folder = tmp_path / "blimp"
    folder.mkdir()
    (folder / "u.jsonl").write_text(json.dumps(good) + "\n" + "{not json\n")
    with pytest.raises(EvalDataError, match=r"u\.jsonl:2: not valid JSON"):
        load_blimp(folder)
    bad = dict(good)
    del bad["sentence_bad"]
    (folder / "u.jsonl").write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(EvalDataError, match=r"u\.jsonl:3: field 'sentence_bad'"):
        load_blimp(folder)
    alt = dict(good, pairID="7")
    del alt["pair_id"]
    (folder / "u.jsonl").write_text(json.dumps(alt) + "\n")
    assert load_blimp(folder)[0].pair_id == 7  # the other spelling
    with pytest.raises(EvalDataError, match="does not exist"):
        load_supplement(tmp_path / "nowhere")
    z = tmp_path / "e.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ewok_filtered/d.jsonl", json.dumps({"Domain": "d", "Context1": "c", "Target1": "t"}) + "\n")
    with pytest.raises(EvalDataError, match=r"e\.zip!ewok_filtered/d\.jsonl:1: field 'Target2'"):
        load_ewok(z)


def _real(sub: str):
    root = data_root()
    if root is None or not (root / sub).exists():
        pytest.skip(f"../shared/data not found: {sub} (set DWML_DATA to the BabyLM data folder)")
    return root / sub


def _records(folder):
    return sum(1 for f in folder.glob("*.jsonl") for line in f.read_text().split("\n") if line.strip())


@pytest.mark.data
def test_blimp_loader_parses_every_file():
    folder = _real("blimp_filtered")
    pairs = load_blimp(folder)
    assert len({p.task for p in pairs}) == len(list(folder.glob("*.jsonl"))) == 67
    assert len(pairs) == _records(folder) == 59_875
    assert {p.phenomenon for p in pairs} >= {"island_effects", "npi_licensing", "s-selection"}


@pytest.mark.data
def test_supplement_loader_parses_every_file():
    folder = _real("supplement_filtered")
    pairs = load_supplement(folder)
    assert len(pairs) == _records(folder) == 5_218
    assert {p.task for p in pairs} == {f.stem for f in folder.glob("*.jsonl")}
    assert any("\n" in p.good for p in pairs)  # dialogue turns survive


@pytest.mark.data
def test_ewok_loader_reads_the_zip_in_memory():
    z = _real("ewok_filtered.zip")
    pairs = load_ewok(z)
    with zipfile.ZipFile(z) as zf:
        n = sum(1 for name in zf.namelist() if name.endswith(".jsonl")
                for line in zf.read(name, pwd=b"ewok").decode().split("\n") if line.strip())
    assert len(pairs) == n == 2 * 3_809
    assert len({p.task for p in pairs}) == 11 and all(p.prefix for p in pairs)
