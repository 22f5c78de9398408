"""Table 1's inputs on real-data profiles: the kept peer of each run scored again on all the pairs
(dwml.scoring.rescore_best, score_run's peers and cache), and the word n-gram rows beside it."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from dwml import runs, scoring
from dwml.evaluate import MinimalPair
from dwml.ngrams import ngram_pair_scores


def pair(suite, task, i, good, bad, prefix=None):
    return MinimalPair(suite=suite, task=task, pair_id=i, good=good, bad=bad, prefix=prefix)


def test_ngram_rows_are_macro_accuracies_and_read_the_prefix():
    # repeated lines, so that the discounts are below 1 and a seen bigram beats a backed-off one
    lines = ["the cat sleeps"] * 2 + ["the dog barks"] * 2 + ["the dogs bark", "a cat runs"]
    suites = {"blimp": [pair("blimp", "agr", 0, "the dogs bark", "the dogs barks"),
                        pair("blimp", "agr", 1, "the dog barks", "the dog bark"),
                        pair("blimp", "order", 0, "the dog barks", "dog the barks")],
              "ewok": [pair("ewok", "animals", 0, "sleeps", "barks", prefix="the cat")]}
    rows = scoring.ngram_rows(lines, suites, orders=(1, 2)).set_index("model")
    by_hand = ngram_pair_scores(lines, [p for v in suites.values() for p in v], (1, 2))
    for n in (1, 2):
        sc = by_hand[by_hand["order"] == n]
        blimp = sc[sc["suite"] == "blimp"].groupby("task")["correct"].mean().mean() * 100
        assert rows.loc[f"word {n}-gram (same corpus)", "blimp"] == pytest.approx(blimp)
    # a bigram model reads 'cat' before the target: sleeps wins; a unigram one ties (counted wrong)
    assert rows.loc["word 2-gram (same corpus)", "ewok"] == 100
    assert rows.loc["word 1-gram (same corpus)", "ewok"] == 0
    assert rows.loc["word 2-gram (same corpus)", "blimp"] == 100  # every pair decided by local order
    assert rows.loc["word 1-gram (same corpus)", "blimp"] == pytest.approx((50 + 0) / 2)  # the order pair ties


def fake_run(tmp_path, method, seed, peers):
    run_dir = tmp_path / f"{method}_seed{seed}"
    run_dir.mkdir()
    return SimpleNamespace(run_dir=run_dir, peer_dirs=[run_dir / f"peer_{i}" for i in range(peers)],
                           summary={"method": method})


def test_rescore_best_scores_only_the_kept_peer_and_caches_it(tmp_path, monkeypatch):
    calls = []

    def fake_evaluate(model_dir, suites=None, cfg=None, progress=False):
        calls.append((model_dir.name, {k: len(v) for k, v in suites.items()}))
        peer = int(model_dir.name.split("_")[1])
        return pd.DataFrame([{"suite": s, "task": p.task, "pair_id": p.pair_id, "correct": peer == 1, "tie": False}
                             for s, v in suites.items() for p in v])

    monkeypatch.setattr(scoring, "evaluate_model", fake_evaluate)
    results = {("mlm", 0): fake_run(tmp_path, "mlm", 0, 1), ("dwml", 0): fake_run(tmp_path, "dwml", 0, 3)}
    few = {"blimp": [pair("blimp", "t", i, "a", "b") for i in range(2)]}
    every = {"blimp": [pair("blimp", "t", i, "a", "b") for i in range(5)]}
    scores = pd.concat([scoring.score_run(r, few) for r in results.values()], ignore_index=True)
    assert len(calls) == 4  # every peer on the subsample
    calls.clear()
    full = scoring.rescore_best(results, scores, every)
    # dwml's peer 2 (index 1) is its best on the subsample: only it is scored again, on all 5 pairs
    assert sorted(calls) == [("peer_0", {"blimp": 5}), ("peer_1", {"blimp": 5})]
    assert set(map(tuple, full[["method", "peer"]].drop_duplicates().values)) == {("mlm", 1), ("dwml", 2)}
    assert len(full) == 10 and full.groupby("method")["correct"].all().to_dict() == {"dwml": True, "mlm": False}
    assert (results["dwml", 0].run_dir / scoring.FULL_SCORES).is_file()
    assert len(pd.read_csv(results["dwml", 0].run_dir / runs.SCORES)) == 6  # the subsample's cache is kept
    calls.clear()
    scoring.rescore_best(results, scores, every)
    assert calls == []  # reused from the cache
    with pytest.raises(ValueError, match="peers 1..3"):
        scoring.score_run(results["dwml", 0], few, peers=[4])
