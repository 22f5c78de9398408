"""dwml.ngrams: the n-gram model against hand-computed values, normalisation, and pair scoring."""
from __future__ import annotations

import math

import pytest

from dwml.ngrams import NgramLM, ngram_accuracy_table, ngram_pair_scores
from dwml.evaluate import MinimalPair

LINES = ["a b", "a a"]


def test_unigram_golden_values():
    # counts a 3, b 1, </s> 2 (N = 6, 3 types); counts of counts n1 = 1, n2 = 1: D = 1/3; floor 1/4
    lm = NgramLM(LINES, 1)
    assert lm.discount == [pytest.approx(1 / 3)]
    assert lm.prob("a") == pytest.approx(35 / 72)
    assert lm.prob("b") == pytest.approx(11 / 72)
    assert lm.prob("</s>") == pytest.approx(23 / 72)
    assert lm.prob("zebra") == pytest.approx(3 / 72)  # the unknown word
    assert lm.logprob("a b") == pytest.approx(math.log(35 / 72) + math.log(11 / 72) + math.log(23 / 72))


def test_bigram_golden_value_and_normalisation():
    # bigram counts <s>a 2, ab 1, aa 1, a</s> 1, b</s> 1: n1 = 4, n2 = 1, D = 2/3
    lm = NgramLM(LINES, 2)
    assert lm.discount[1] == pytest.approx(2 / 3)
    # P(b | a) = (1 - 2/3) / 3 + (2/3 * 3 / 3) * P1(b) = 1/9 + (2/3)(11/72)
    assert lm.prob("b", ["a"]) == pytest.approx(1 / 9 + (2 / 3) * (11 / 72))
    assert lm.prob("b", ["zzz"]) == pytest.approx(lm.prob("b"))  # an unseen context backs off whole
    for n in (1, 2, 3):
        lm = NgramLM(["the dog runs", "the dogs run", "a dog sleeps", "the cat runs fast"], n)
        for ctx in [(), ("the",), ("<s>", "the"), ("dog",), ("never", "seen")]:
            total = sum(lm.prob(w, ctx) for w in lm.vocab) + lm.prob("<unknown>", ctx)
            assert total == pytest.approx(1.0), (n, ctx)


def test_pairs_that_word_frequency_decides_and_those_it_cannot():
    lines = ["the dog runs"] * 6 + ["the dogs run"] * 5 + ["the dog sees the dogs"] * 5
    pairs = [MinimalPair(suite="s", task="agreement", pair_id=0, good="the dog runs", bad="the dog run"),
             MinimalPair(suite="s", task="agreement", pair_id=1, good="the dogs run", bad="the dogs runs"),
             MinimalPair(suite="s", task="order", pair_id=0, good="the dog runs", bad="dog the runs")]
    scores = ngram_pair_scores(lines, pairs, orders=(1, 2))
    table = ngram_accuracy_table(scores)
    # a unigram model sees the same words in the 'order' pair (a tie, counted wrong) and prefers one verb
    # form whatever the subject (one agreement pair of two); a bigram model gets all three
    assert table.loc["order", "1-gram"] == 0 and bool(scores[(scores["order"] == 1) & (scores["task"] == "order")]["tie"].all())
    assert table.loc["agreement", "1-gram"] == 50
    assert table.loc["agreement", "2-gram"] == 100 and table.loc["order", "2-gram"] == 100
    assert table.loc["macro average", "2-gram"] == 100
    # the same words in any order tie exactly under a unigram model (no rounding noise in the sum)
    lm = NgramLM(["x y z w v u t s"] * 3 + ["x x y"], 1)
    words = "x y z w v u t s x y z".split()
    import random

    for seed in range(20):
        random.Random(seed).shuffle(words)
        assert lm.logprob(" ".join(words)) == lm.logprob("x y z w v u t s x y z")
    with pytest.raises(ValueError, match="order=0"):
        NgramLM(lines, 0)
