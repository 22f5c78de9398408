"""Scoring conventions (ties, sum / mean, the BabyLM 2024 / 2025 prefixing) on golden cases, and the
within-word left-to-right PLL against a plain loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dwml.config import EvalConfig
from dwml.evaluate import (CONVENTIONS, MinimalPair, encode_scored, pll_scores, resolve_convention,
                           score_pairs)

LINES = ["the dog sees the cat", "a cat runs", "the dogs see a bird", "the birds sing", "she likes the dog",
         "we saw them yesterday", "is the cat here ?", "they run to the park"] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from dwml.tokenizer import train_tokenizer

    return train_tokenizer(LINES, vocab_size=300, out_dir=tmp_path_factory.mktemp("tok") / "tok", min_frequency=1)


@pytest.fixture(scope="module")
def model(tok):
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    m = RobertaForMaskedLM._from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        m.lm_head.bias.normal_(0, 1.0)
        # Word identity dominates the (layer-normed) input, so masking a neighbour changes a prediction
        # clearly: the l2r test can tell its extra masks from none.
        m.roberta.embeddings.word_embeddings.weight.mul_(20)
    return m


def loop_score(model, tok, ids, positions, mask_sets, reduction):
    """The definition: for each scored position, one full forward pass with its mask set masked."""
    total = 0.0
    with torch.no_grad():
        for p, masked in zip(positions, mask_sets):
            x = torch.tensor([ids])
            x[0, list(masked)] = tok.mask_token_id
            total += torch.log_softmax(model(input_ids=x).logits[0, p].double(), -1)[ids[p]].item()
    return total / len(positions) if reduction == "mean" else total


def tokens(tok, ids, positions):
    return [tok.convert_ids_to_tokens(ids[p]) for p in positions]


def test_presets_and_overrides():
    assert CONVENTIONS["dwml"].ties == "wrong" and CONVENTIONS["dwml"].reduction == "sum"
    assert (CONVENTIONS["babylm2024"].ties, CONVENTIONS["babylm2024"].reduction) == ("correct", "mean")
    assert (CONVENTIONS["babylm2025"].ties, CONVENTIONS["babylm2025"].reduction) == ("correct", "sum")
    c = resolve_convention("babylm2024", ties="wrong")
    assert (c.name, c.ties, c.reduction, c.prefixing) == ("babylm2024+ties=wrong", "wrong", "mean", "babylm2024")
    assert resolve_convention("babylm2025", reduction="sum").name == "babylm2025"  # not an override
    assert resolve_convention(None, default_reduction="mean").reduction == "mean"  # the profile's eval.reduction
    with pytest.raises(ValueError, match="convention='babylm2023'"):
        resolve_convention("babylm2023")
    with pytest.raises(ValueError, match="ties='maybe'"):
        resolve_convention("dwml", ties="maybe")


def test_babylm2024_prefixing_golden(tok):
    # The 2024 hf-mlm path: minicons conditional_score('</s>', ' ' + s) joins with a space: '</s>  s'.
    (ids, pos, ends), = encode_scored(tok, ["the cat runs"], prefixing="babylm2024")
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "</s>", "Ġ", "Ġthe", "Ġcat", "Ġrun", "s", "</s>"]
    assert list(pos) == [2, 3, 4, 5, 6] and tokens(tok, ids, pos) == ["Ġ", "Ġthe", "Ġcat", "Ġrun", "s"]
    assert list(ends) == [3, 4, 5, 6, 7]
    # With a context (EWoK): 'context  target'; the context's tokens are visible, never scored.
    (ids, pos, _), = encode_scored(tok, ["the dog runs"], ["a cat runs."], prefixing="babylm2024")
    assert tok.convert_ids_to_tokens(ids)[:8] == ["<s>", "Ġa", "Ġcat", "Ġrun", "s", ".", "Ġ", "Ġthe"]
    assert tokens(tok, ids, pos) == ["Ġ", "Ġthe", "Ġdog", "Ġrun", "s"]


def test_babylm2025_prefixing_golden(tok):
    # 2025 sentence_zero_shot, backend mlm: the sentence as encoded, every real token scored (= dwml's).
    (ids, pos, _), = encode_scored(tok, ["the cat runs"], prefixing="babylm2025")
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "Ġthe", "Ġcat", "Ġrun", "s", "</s>"]
    assert list(pos) == [1, 2, 3, 4]
    # EWoK: 'Context1 Target' encoded in one go, the tokens overlapping ' Target' scored.
    (ids, pos, _), = encode_scored(tok, ["the dog runs"], ["a cat runs."], prefixing="babylm2025")
    assert ids == tok("a cat runs. the dog runs")["input_ids"]
    assert tokens(tok, ids, pos) == ["Ġthe", "Ġdog", "Ġrun", "s"]


@pytest.mark.parametrize("prefixing,reduction,expected", [
    ("dwml", "sum", [1, 2, 3, 4]), ("babylm2024", "mean", [2, 3, 4, 5, 6]), ("babylm2025", "sum", [1, 2, 3, 4])])
def test_each_preset_scores_its_tokens_with_its_reduction(tok, model, prefixing, reduction, expected):
    sentence = "the cat runs"
    conv = CONVENTIONS[prefixing]  # each preset is named after its prefixing
    assert (conv.prefixing, conv.reduction) == (prefixing, reduction)
    (ids, pos, _), = encode_scored(tok, [sentence], prefixing=prefixing)
    assert list(pos) == expected
    ours = pll_scores(model, tok, [sentence], reduction=reduction, prefixing=prefixing, progress=False)[0]
    ref = loop_score(model, tok, ids, expected, [[p] for p in expected], reduction)
    assert abs(ours - ref) < 1e-5
    if reduction == "mean":  # and the mean really is the sum over the scored tokens / their number
        total = pll_scores(model, tok, [sentence], reduction="sum", prefixing=prefixing, progress=False)[0]
        assert abs(ours - total / len(expected)) < 1e-9


def test_ties_under_each_convention(tok, model):
    pairs = [MinimalPair("t", "a", 0, "the cat runs", "the cat runs"),      # identical: an exact tie
             MinimalPair("t", "a", 1, "the dog sees the cat", "the dog see the cat")]
    got = {}
    for name in ("dwml", "babylm2024", "babylm2025"):
        df = score_pairs(model, tok, pairs, EvalConfig(batch_size=8), progress=False, convention=name)
        assert list(df["tie"]) == [True, False]
        got[name] = bool(df["correct"].iloc[0])
        assert df["correct"].iloc[1] == (df["score_good"].iloc[1] > df["score_bad"].iloc[1])
        assert df.attrs["convention"]["name"] == name
    assert got == {"dwml": False, "babylm2024": True, "babylm2025": True}
    # --ties overrides a preset either way
    df = score_pairs(model, tok, pairs, EvalConfig(), progress=False, convention="babylm2024", ties="wrong")
    assert not df["correct"].iloc[0] and df.attrs["convention"]["name"] == "babylm2024+ties=wrong"
    df = score_pairs(model, tok, pairs, EvalConfig(), progress=False, ties="correct")
    assert df["correct"].iloc[0]


def _l2r_masks(wid, positions):
    """Kauf & Ivanova (2023), written out: mask the token and every later scored token of its word."""
    return [[p] + [q for q in positions if q > p and wid[p] is not None and wid[q] == wid[p]] for p in positions]


@pytest.mark.parametrize("prefixing", ["dwml", "babylm2024", "babylm2025"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_within_word_l2r_equals_plain_loop(tok, model, prefixing, reduction):
    sentences = ["the zebra galloped", "a cat runs", "she likes the yellowish dog"]
    prefixes = [None, "the dogs see a bird.", None]
    ours = pll_scores(model, tok, sentences, prefixes, reduction=reduction, prefixing=prefixing,
                      pll_metric="within_word_l2r", batch_size=5, progress=False)
    orig = pll_scores(model, tok, sentences, prefixes, reduction=reduction, prefixing=prefixing, progress=False)
    for i, (s, p) in enumerate(zip(sentences, prefixes)):
        (ids, pos, _), = encode_scored(tok, [s], [p], prefixing=prefixing)
        # word ids of the text as laid out: the sentence's own for dwml, the joint text's otherwise
        if prefixing == "dwml":
            wid = tok(s).word_ids()
            n_pre = len(ids) - len(wid)
            wid = wid[:1] + [None] * n_pre + wid[1:]
        else:
            text = {"babylm2024": (p or "</s>") + "  " + s, "babylm2025": (p + " " + s) if p else s}[prefixing]
            enc = tok(text)
            assert enc["input_ids"] == ids
            wid = enc.word_ids()
        ref = loop_score(model, tok, ids, list(pos), _l2r_masks(wid, list(pos)), reduction)
        assert abs(ours[i] - ref) < 1e-5
    # words of several tokens exist here, so the metric differs from the original PLL
    assert np.abs(ours - orig).max() > 1e-3
