"""Report tables: macro averages by hand, bootstrap against explicit resampling, McNemar by counting."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from dwml.reports import (accuracy_table, compare_models, paired_test, save_tables, summary_table, wide_table,
                          with_groups)
from dwml.suites import EWOK_DOMAINS, PHENOMENA, PHENOMENON_COLUMNS


def results(rows):
    """rows: (suite, task, phenomenon, score_good, score_bad)."""
    df = pd.DataFrame(rows, columns=["suite", "task", "phenomenon", "score_good", "score_bad"])
    df["pair_id"] = df.groupby(["suite", "task"]).cumcount()
    df["field"] = ""
    df["correct"] = df["score_good"] > df["score_bad"]
    df["tie"] = df["score_good"] == df["score_bad"]
    return df


def toy():
    rows = []
    # paradigm p1 (island_effects): 3 of 4 right; p2 (island_effects): 1 of 2 right, one a tie;
    # p3 (s-selection, counted as argument structure): 2 of 2 right.
    rows += [("blimp", "p1", "island_effects", -1, -2)] * 3 + [("blimp", "p1", "island_effects", -3, -2)]
    rows += [("blimp", "p2", "island_effects", -1, -2), ("blimp", "p2", "island_effects", -2, -2)]
    rows += [("blimp", "p3", "s-selection", -1, -5)] * 2
    rows += [("ewok", "spatial-relations", "spatial-relations", -1, -2), ("ewok", "social-relations", "social-relations", -2, -1)]
    return results(rows)


def test_macro_accuracy_and_ties_by_hand():
    df = toy()
    by_task = accuracy_table(df, "task", n_boot=200).set_index("task")
    assert by_task.loc["p1", "accuracy"] == pytest.approx(75.0)
    assert by_task.loc["p2", "accuracy"] == pytest.approx(50.0)  # the tie is wrong
    assert by_task.loc["p2", "tie_rate"] == pytest.approx(50.0)
    suites = accuracy_table(df, "suite", n_boot=200).set_index("suite")
    assert suites.loc["blimp", "accuracy"] == pytest.approx((75 + 50 + 100) / 3)  # macro, not 6/8 micro
    assert suites.loc["blimp", "n_pairs"] == 8 and suites.loc["blimp", "n_tasks"] == 3
    assert suites.loc["blimp", "tie_rate"] == pytest.approx(100 / 8)
    groups = accuracy_table(df, "group", n_boot=200).set_index("group")
    assert groups.loc["IFS", "accuracy"] == pytest.approx(62.5)  # mean of p1 and p2
    assert groups.loc["AS", "accuracy"] == pytest.approx(100.0)
    assert set(groups.index) >= {"SpR", "SR"}
    for _, r in suites.iterrows():
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]


def test_paired_test_by_counting():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 0], bool)
    bb = np.array([1, 0, 0, 0, 1, 1, 0, 0], bool)
    r = paired_test(a, bb, n_boot=500)
    assert (r["a_only"], r["b_only"]) == (3, 1)
    assert r["diff"] == pytest.approx(25.0)
    assert r["diff_lo"] <= r["diff"] <= r["diff_hi"]
    assert r["p_value"] == pytest.approx(2 * (1 + 4) / 16)
    with pytest.raises(ValueError, match="same pairs"):
        paired_test(a, bb[:-1])


def test_compare_models_aligns_pairs():
    a = toy()
    b = a.copy()
    b["correct"] = ~b["correct"]
    out = compare_models(a, b.sample(frac=1, random_state=0), n_boot=100).set_index("suite")
    assert out.loc["blimp", "a_only"] == 6 and out.loc["blimp", "b_only"] == 2
    with pytest.raises(ValueError, match="only one of the two models"):
        compare_models(a, b.iloc[1:])


def test_wide_and_summary_tables(tmp_path):
    a, b = toy(), toy()
    b["correct"] = True
    wide = wide_table({"A": a, "B": b}, suite="blimp")
    assert list(wide.columns) == ["model", "AS", "IFS", "Avg."]  # Table 6 order, only present columns
    assert wide.set_index("model").loc["B", "Avg."] == pytest.approx(100.0)
    ewok = wide_table({"A": a}, suite="ewok")
    assert list(ewok.columns) == ["model", "SR", "SpR", "Avg."]
    summ = summary_table({"A": a, "B": b}, n_boot=100)
    assert summ.set_index("model").loc["A", "blimp"] == pytest.approx((75 + 50 + 100) / 3)
    paths = save_tables({"wide": wide}, tmp_path)
    assert {p.name for p in paths} == {"wide.csv", "wide.md"}
    assert "IFS" in (tmp_path / "wide.md").read_text()
    with pytest.raises(ValueError, match="lack column"):
        accuracy_table(a.drop(columns=["tie"]))


@pytest.mark.data
def test_every_blimp_term_maps_to_a_table6_column():
    from dwml.evaluate import data_root
    from dwml.suites import load_blimp, load_ewok

    root = data_root()
    if root is None:
        pytest.skip("../shared/data not found (set DWML_DATA)")
    pairs = load_blimp(root / "blimp_filtered")
    terms = {p.phenomenon for p in pairs}
    assert terms <= set(PHENOMENA), f"unmapped: {terms - set(PHENOMENA)}"
    paradigms = {}
    for p in pairs:
        paradigms.setdefault(PHENOMENA[p.phenomenon], set()).add(p.task)
    assert sorted(paradigms) == sorted(PHENOMENON_COLUMNS)
    # BLiMP's paradigm counts per phenomenon (Warstadt et al. 2020, Table 4).
    assert {k: len(v) for k, v in paradigms.items()} == {"AA": 2, "AS": 9, "B": 7, "CR": 5, "DNA": 8, "E": 2,
                                                         "FG": 7, "IF": 2, "IFS": 8, "NPI": 7, "Q": 4, "SVA": 6}
    assert {p.task for p in load_ewok(root / "ewok_filtered.zip")} == set(EWOK_DOMAINS)
    df = pd.DataFrame({"suite": "blimp", "task": [p.task for p in pairs], "phenomenon": [p.phenomenon for p in pairs]})
    assert with_groups(df)["group"].isin(PHENOMENON_COLUMNS).all()
