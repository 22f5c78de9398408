"""dwml.experiments: the tables over seeds against hand-computed values, and the published numbers."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from dwml import experiments as X


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


def test_per_seed_is_the_macro_average_over_tasks():
    seeded = X.per_seed(fake_scores()).set_index(["method", "peer", "seed"])["accuracy"]
    assert seeded["dml", 1, 0] == pytest.approx(100 * (1.0 + 0.5) / 2)  # not the micro 5/6
    assert seeded["dwml", 2, 1] == pytest.approx(100 * (0.75 + 0.0) / 2)


def test_t_interval_golden_value():
    m, lo, hi = X.t_interval([50.0, 60.0, 70.0])
    # mean 60, sd 10, n 3: half width t_{0.975, 2} * 10 / sqrt(3) with t = 4.302652729749462
    half = 4.302652729749462 * 10 / math.sqrt(3)
    assert (m, lo, hi) == pytest.approx((60.0, 60 - half, 60 + half))
    m1, lo1, hi1 = X.t_interval([42.0])
    assert m1 == 42.0 and math.isnan(lo1) and math.isnan(hi1)


def test_best_peer_is_chosen_per_seed_on_the_average():
    best = X.best_peer(X.per_seed(fake_scores())).set_index(["method", "seed"])["peer"]
    # dml: peer 1 beats peer 2 in both seeds; dwml: peer 2 in seed 0 (100 vs 50), peer 1 in seed 1 (50 vs 37.5)
    assert best.to_dict() == {("dml", 0): 1, ("dml", 1): 1, ("dwml", 0): 2, ("dwml", 1): 1}


def test_table2_rows_intervals_and_params():
    t = X.table2(fake_scores(), params={("dml", 1): 10, ("dml", 2): 5, ("dwml", 1): 10, ("dwml", 2): 5})
    row = t[(t["method"] == "dwml") & (t["peer"] == "best")].iloc[0]
    want = X.t_interval([100.0, 50.0])
    assert (row["accuracy"], row["ci_low"], row["ci_high"]) == pytest.approx(want)
    assert row["seeds"] == 2 and pd.isna(row["params"])
    assert t[(t["method"] == "dml") & (t["peer"] == 2)]["params"].iloc[0] == 5


def test_published_tables_and_their_long_form():
    t2 = X.published("table2")
    assert t2.loc[(t2["benchmark"] == "blimp_filtered") & (t2["method"] == "DWML"), "best_reported"].iloc[0] == 51.58
    long = X.published_table2_long()
    assert set(long["suite"]) == {"blimp", "supplement", "ewok"}
    assert set(long["method"]) == {"mlm", "sd", "kd", "dml", "kd_dwml", "dwml"}
    got = long[(long["method"] == "kd_dwml") & (long["suite"] == "ewok") & (long["peer"] == 2)]["paper"].iloc[0]
    assert got == 40.36
    with pytest.raises(FileNotFoundError, match="table9"):
        X.published("table9")


def test_teacher_arch_and_run_names():
    meta = {"teacher": {"layers": 4, "hidden": 192, "heads": 4, "params": 2237696}}
    a = X.teacher_arch(meta)
    assert (a.num_layers, a.hidden_size, a.num_heads, a.intermediate_size, a.params) == (4, 192, 4, 768, 2237696)
    assert X.run_name("dwml", 2) == "dwml_seed2" and X.run_name("dwml", 0, "alpha0.3") == "dwml_alpha0.3_seed0"


def test_train_run_refuses_overrides_without_a_tag_and_kd_without_teacher(tmp_path):
    with pytest.raises(ValueError, match="need a tag"):
        X.train_run({}, None, [], {}, "dwml", 0, tmp_path, train_overrides={"loss_alpha": 0.3})
    with pytest.raises(ValueError, match="teacher_dir"):
        X.train_run({}, None, [], {}, "kd", 0, tmp_path)


def test_plots_draw_one_panel_per_suite_and_a_line_per_suite():
    from dwml.plots.experiments import plot_methods, plot_study

    seeded = X.best_peer(X.per_seed(fake_scores()))
    fig = plot_methods(seeded, X.over_seeds(seeded.assign(peer="best")), ["dml", "dwml"],
                       pd.DataFrame([{"method": "dwml", "suite": "synthetic", "paper": 51.58}]))
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["dml", "dwml"]
    table = X.ablation_table(fake_scores().assign(alpha=lambda d: d["method"].map({"dml": 0.3, "dwml": 0.5})), "alpha")
    fig = plot_study(table, "alpha", "a")
    assert len(fig.axes[0].lines) >= 1 and fig.axes[0].get_xlabel() == "alpha"
