"""dwml.compare: macro accuracy per seed, the kept peer, differences over seeds and their verdicts, against
hand-computed values and golden sentences."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from dwml import compare
from dwml.stats import t_interval


def fake_scores():
    """Two methods x two peers x two seeds, one suite of two tasks of unequal size."""
    rows = []
    # accuracy per (method, peer, seed, task): task a has 4 pairs, task b 2 pairs
    acc = {("dml", 1, 0): (1.0, 0.5), ("dml", 1, 1): (0.75, 0.5), ("dml", 2, 0): (0.5, 0.0), ("dml", 2, 1): (0.25, 1.0),
           ("dwml", 1, 0): (0.5, 0.5), ("dwml", 1, 1): (0.5, 0.5), ("dwml", 2, 0): (1.0, 1.0), ("dwml", 2, 1): (0.75, 0.0)}
    for (m, p, s), (a, b) in acc.items():
        for task, n, frac in (("a", 4, a), ("b", 2, b)):
            for i in range(n):
                rows.append({"method": m, "peer": p, "seed": s, "suite": "synthetic", "task": task, "pair_id": i,
                             "correct": i < round(frac * n), "tie": False})
    return pd.DataFrame(rows)


def fake_scores_with_mlm():
    """:func:`fake_scores` and a single-model run (one peer): macro accuracy 25 in seed 0, 62.5 in seed 1."""
    rows = []
    for s, (a, b) in ((0, (0.5, 0.0)), (1, (0.75, 0.5))):
        for task, n, frac in (("a", 4, a), ("b", 2, b)):
            rows += [{"method": "mlm", "peer": 1, "seed": s, "suite": "synthetic", "task": task, "pair_id": i,
                      "correct": i < round(frac * n), "tie": False} for i in range(n)]
    return pd.concat([fake_scores(), pd.DataFrame(rows)], ignore_index=True)


def test_per_seed_is_the_macro_average_over_tasks():
    seeded = compare.per_seed(fake_scores()).set_index(["method", "peer", "seed"])["accuracy"]
    assert seeded["dml", 1, 0] == pytest.approx(100 * (1.0 + 0.5) / 2)  # not the micro 5/6
    assert seeded["dwml", 2, 1] == pytest.approx(100 * (0.75 + 0.0) / 2)


def test_best_peer_is_chosen_per_seed_on_the_average():
    best = compare.best_peer(compare.per_seed(fake_scores())).set_index(["method", "seed"])["peer"]
    # dml: peer 1 beats peer 2 in both seeds; dwml: peer 2 in seed 0 (100 vs 50), peer 1 in seed 1 (50 vs 37.5)
    assert best.to_dict() == {("dml", 0): 1, ("dml", 1): 1, ("dwml", 0): 2, ("dwml", 1): 1}


def test_t_over_seeds_pairs_by_seed():
    seeded = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3 + ["c"] * 2, "seed": [0, 1, 2] * 2 + [0, 1],
                           "suite": "s", "accuracy": [60.0, 70.0, 80.0, 62.0, 73.0, 84.0, 50.0, 40.0]})
    d = compare.t_over_seeds(seeded, "a").set_index("method")
    # b - a = 2, 3, 4 per seed: mean 3, sd 1, n 3 (the unpaired intervals of a and b overlap widely)
    half = 4.302652729749462 / math.sqrt(3)
    assert (d.loc["b", "difference"], d.loc["b", "ci_low"], d.loc["b", "ci_high"]) == pytest.approx((3, 3 - half, 3 + half))
    assert d.loc["b", "differs"] and d.loc["b", "seeds"] == 3
    # c has seeds 0 and 1 only: -10 and -30
    assert d.loc["c", "difference"] == pytest.approx(-20) and d.loc["c", "seeds"] == 2 and not d.loc["c", "differs"]
    with pytest.raises(ValueError, match="reference 'z'"):
        compare.t_over_seeds(seeded, "z")


def test_verdict_golden_sentences():
    verdict = compare.verdict

    assert verdict("dwml", "mlm", 4.2, 1.5, 6.9) == "dwml beats mlm by 4.2 points [1.5, 6.9]"
    assert verdict("dml", "dwml", -4.7, -9.3, -0.1) == "dwml beats dml by 4.7 points [0.1, 9.3]"
    # an interval that crosses 0: the bound is the farther end, not the half-width (3.0 here)
    s = verdict("kd", "dwml", 1.0, -2.0, 4.0)
    assert s == "no difference between kd and dwml larger than 4.0 points (kd - dwml = +1.0 [-2.0, +4.0], half-width 3.0)"
    s = verdict("sd", "mlm", -0.5, -2.5, 1.5, suite="blimp")
    assert s.startswith("no difference between sd and mlm on blimp larger than 2.5 points")
    assert "no interval" in verdict("a", "b", 2.0, float("nan"), float("nan"))
    # an interval touching 0 exactly does not exclude it
    assert verdict("a", "b", 1.0, 0.0, 2.0).startswith("no difference")


def test_verdicts_follow_the_table():
    seeded = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3 + ["c"] * 3, "seed": [0, 1, 2] * 3, "suite": "s",
                           "accuracy": [70, 72, 74, 60, 61, 63, 69, 74, 70]})
    table = compare.t_over_seeds(seeded, "a")
    lines = compare.verdicts(table, "method")
    # b is 10.67 points below a on every seed (10, 11, 11): a clear win for a
    assert lines[0].startswith("a beats b by 10.7 points")
    # c - a = (-1, 2, -4): mean -1, an interval across 0
    assert lines[1].startswith("no difference between c and a larger than")
    lo, hi = table.iloc[1][["ci_low", "ci_high"]]
    assert f"{max(abs(lo), abs(hi)):.1f} points" in lines[1]
    claims = table.assign(claim="my claim")
    assert compare.verdicts(claims, "method", label="claim")[0].startswith("my claim: a beats b")


def test_weakest_peers_by_hand():
    # macro accuracy per seed (see fake_scores): dml peer 1: 75, 62.5; peer 2: 25, 62.5 -> peer 2 (43.75);
    # dwml peer 1: 50, 50; peer 2: 100, 37.5 -> peer 1 (50)
    w = compare.weakest_peers(fake_scores())
    assert w[["method", "weakest_peer"]].values.tolist() == [["dml", 2], ["dwml", 1]]
    assert w["accuracy"].tolist() == pytest.approx([43.75, 50.0])


def test_method_differences_against_dwml_then_the_single_model():
    seeded = compare.best_peer(compare.per_seed(fake_scores_with_mlm()))
    d = compare.method_differences(seeded, ["mlm", "dml", "dwml"])
    # best peers per seed: dml 75, 62.5; dwml 100, 50; mlm 25, 62.5
    assert d[["method", "reference"]].values.tolist() == [["dml", "dwml"], ["mlm", "dwml"], ["dml", "mlm"],
                                                          ["dwml", "mlm"]]
    want = [t_interval(x) for x in ([-25.0, 12.5], [-75.0, 12.5], [50.0, 0.0], [75.0, -12.5])]
    assert d[["difference", "ci_low", "ci_high"]].values.tolist() == [pytest.approx(list(w)) for w in want]
    assert d["verdict"].iloc[0].startswith("no difference between dml and dwml larger than")
    only_dml = compare.method_differences(seeded, ["mlm", "dml"])
    assert set(only_dml["reference"]) == {"mlm"}
    with pytest.raises(ValueError, match="no DWML and no single-model method"):
        compare.method_differences(seeded, ["dml", "sd"])


def test_best_peer_choice_names_the_kept_peer_of_each_run():
    pick = compare.best_peer_choice(fake_scores())
    assert sorted(pick.values.tolist()) == [["dml", 0, 1], ["dml", 1, 1], ["dwml", 0, 2], ["dwml", 1, 1]]


def test_over_seeds_is_the_t_interval_of_the_seeds():
    seeded = compare.per_seed(fake_scores())
    row = compare.over_seeds(seeded).set_index(["method", "peer"]).loc[("dml", 2)]
    # dml peer 2: macro 25 in seed 0, 62.5 in seed 1
    assert (row["accuracy"], row["ci_low"], row["ci_high"]) == pytest.approx(t_interval([25.0, 62.5]))
    assert row["seeds"] == 2 and row["suite"] == "synthetic"


def test_bootstrap_over_pairs_by_hand():
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for method, p_right in (("mlm", 0.7), ("dwml", 0.5)):
        for seed in (0, 1):
            for peer in ((1,) if method == "mlm" else (1, 2)):
                for task in ("a", "b", "c"):
                    for i in range(40):
                        right = rng.random() < (p_right if peer == 1 else 0.2)
                        rows.append({"method": method, "seed": seed, "peer": peer, "suite": "blimp", "task": task,
                                     "pair_id": i, "correct": right, "tie": False})
    scores = pd.DataFrame(rows)
    d = compare.bootstrap_over_pairs(scores, "mlm", n_boot=400).set_index("method")
    kept = scores[scores["peer"] == 1]  # dwml's peer 1 is its best in both seeds
    by_task = kept.groupby(["method", "seed", "task"])["correct"].mean().unstack("method")
    assert d.loc["dwml", "difference"] == pytest.approx(100 * (by_task["dwml"] - by_task["mlm"]).mean())
    assert d.loc["dwml", "pairs"] == 240 and d.loc["dwml", "seeds"] == 2
    assert d.loc["dwml", "ci_low"] < d.loc["dwml", "difference"] < d.loc["dwml", "ci_high"] < 0
    assert d.loc["dwml", "verdict"].startswith("mlm beats dwml on blimp")
    same = pd.concat([kept[kept["method"] == "mlm"], kept[kept["method"] == "mlm"].assign(method="twin")])
    t = compare.bootstrap_over_pairs(same, "mlm", n_boot=100).iloc[0]
    assert t["difference"] == 0 and t["ci_low"] == 0 and t["ci_high"] == 0
    with pytest.raises(ValueError, match="same pairs"):
        compare.bootstrap_over_pairs(pd.concat([kept[kept["method"] == "mlm"], kept[kept["method"] == "dwml"].iloc[:-1]]), "mlm")
    with pytest.raises(ValueError, match="reference 'kd'"):
        compare.bootstrap_over_pairs(kept, "kd")
