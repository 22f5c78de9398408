"""dwml.experiments: the tables over seeds against hand-computed values, and the published numbers."""
from __future__ import annotations

import math
import types

import pandas as pd
import pytest

from dwml import experiments


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
    seeded = experiments.per_seed(fake_scores()).set_index(["method", "peer", "seed"])["accuracy"]
    assert seeded["dml", 1, 0] == pytest.approx(100 * (1.0 + 0.5) / 2)  # not the micro 5/6
    assert seeded["dwml", 2, 1] == pytest.approx(100 * (0.75 + 0.0) / 2)


def test_t_interval_golden_value():
    m, lo, hi = experiments.t_interval([50.0, 60.0, 70.0])
    # mean 60, sd 10, n 3: half width t_{0.975, 2} * 10 / sqrt(3) with t = 4.302652729749462
    half = 4.302652729749462 * 10 / math.sqrt(3)
    assert (m, lo, hi) == pytest.approx((60.0, 60 - half, 60 + half))
    m1, lo1, hi1 = experiments.t_interval([42.0])
    assert m1 == 42.0 and math.isnan(lo1) and math.isnan(hi1)


def test_r_interval_goes_through_fisher_z():
    from scipy import stats

    r = [0.5, 0.6, 0.9]
    z = [math.atanh(x) for x in r]
    mz, sz = sum(z) / 3, (sum((x - sum(z) / 3) ** 2 for x in z) / 2) ** 0.5
    half = stats.t.ppf(0.975, 2) * sz / math.sqrt(3)
    assert experiments.r_interval(r) == pytest.approx((math.tanh(mz), math.tanh(mz - half), math.tanh(mz + half)))
    m, lo, hi = experiments.r_interval([0.95, 0.98, 0.999])
    assert -1 < lo < m < hi < 1  # a t-interval on R itself would pass 1 here
    assert experiments.t_interval([0.95, 0.98, 0.999])[2] > 1


def test_best_peer_is_chosen_per_seed_on_the_average():
    best = experiments.best_peer(experiments.per_seed(fake_scores())).set_index(["method", "seed"])["peer"]
    # dml: peer 1 beats peer 2 in both seeds; dwml: peer 2 in seed 0 (100 vs 50), peer 1 in seed 1 (50 vs 37.5)
    assert best.to_dict() == {("dml", 0): 1, ("dml", 1): 1, ("dwml", 0): 2, ("dwml", 1): 1}


def test_paired_differences_pair_by_seed():
    seeded = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3 + ["c"] * 2, "seed": [0, 1, 2] * 2 + [0, 1],
                           "suite": "s", "accuracy": [60.0, 70.0, 80.0, 62.0, 73.0, 84.0, 50.0, 40.0]})
    d = experiments.paired_differences(seeded, "a").set_index("method")
    # b - a = 2, 3, 4 per seed: mean 3, sd 1, n 3 (the unpaired intervals of a and b overlap widely)
    half = 4.302652729749462 / math.sqrt(3)
    assert (d.loc["b", "difference"], d.loc["b", "ci_low"], d.loc["b", "ci_high"]) == pytest.approx((3, 3 - half, 3 + half))
    assert d.loc["b", "differs"] and d.loc["b", "seeds"] == 3
    # c has seeds 0 and 1 only: -10 and -30
    assert d.loc["c", "difference"] == pytest.approx(-20) and d.loc["c", "seeds"] == 2 and not d.loc["c", "differs"]
    with pytest.raises(ValueError, match="reference 'z'"):
        experiments.paired_differences(seeded, "z")


def test_ablation_differences_use_the_best_peer_per_seed():
    scores = fake_scores().assign(alpha=lambda d: d["method"].map({"dml": 0.3, "dwml": 0.5}))
    d = experiments.ablation_differences(scores, "alpha", 0.5)
    # best peers (see the test above): alpha 0.3 (dml) 75 and 62.5; alpha 0.5 (dwml) 100 and 50
    row = d.iloc[0]
    assert (row["setting"], row["value"], row["reference"], row["seeds"]) == ("alpha", 0.3, 0.5, 2)
    assert (row["difference"], row["ci_low"], row["ci_high"]) == pytest.approx(experiments.t_interval([75.0 - 100.0, 62.5 - 50.0]))


def test_table2_rows_intervals_and_params():
    t = experiments.table2(fake_scores(), params={("dml", 1): 10, ("dml", 2): 5, ("dwml", 1): 10, ("dwml", 2): 5})
    row = t[(t["method"] == "dwml") & (t["peer"] == "best")].iloc[0]
    want = experiments.t_interval([100.0, 50.0])
    assert (row["accuracy"], row["ci_low"], row["ci_high"]) == pytest.approx(want)
    assert row["seeds"] == 2 and pd.isna(row["params"])
    assert t[(t["method"] == "dml") & (t["peer"] == 2)]["params"].iloc[0] == 5


def test_published_tables_and_their_long_form():
    t2 = experiments.published("table2")
    assert t2.loc[(t2["benchmark"] == "blimp_filtered") & (t2["method"] == "DWML"), "best_reported"].iloc[0] == 51.58
    long = experiments.published_table2_long()
    assert set(long["suite"]) == {"blimp", "supplement", "ewok"}
    assert set(long["method"]) == {"mlm", "sd", "kd", "dml", "kd_dwml", "dwml"}
    got = long[(long["method"] == "kd_dwml") & (long["suite"] == "ewok") & (long["peer"] == 2)]["paper"].iloc[0]
    assert got == 40.36
    with pytest.raises(FileNotFoundError, match="table9"):
        experiments.published("table9")


def test_teacher_arch_and_run_names():
    meta = {"teacher": {"layers": 4, "hidden": 192, "heads": 4, "params": 2237696}}
    a = experiments.teacher_arch(meta)
    assert (a.num_layers, a.hidden_size, a.num_heads, a.intermediate_size, a.params) == (4, 192, 4, 768, 2237696)
    assert experiments.run_name("dwml", 2) == "dwml_seed2" and experiments.run_name("dwml", 0, "alpha0.3") == "dwml_alpha0.3_seed0"


def test_train_run_refuses_overrides_without_a_tag_and_kd_without_teacher(tmp_path):
    with pytest.raises(ValueError, match="need a tag"):
        experiments.train_run({}, None, [], {}, "dwml", 0, tmp_path, train_overrides={"loss_alpha": 0.3})
    with pytest.raises(ValueError, match="teacher_dir"):
        experiments.train_run({}, None, [], {}, "kd", 0, tmp_path)


def test_plots_draw_one_panel_per_suite_and_a_line_per_suite():
    from dwml.plots.experiments import plot_methods, plot_study

    seeded = experiments.best_peer(experiments.per_seed(fake_scores()))
    fig = plot_methods(seeded, experiments.over_seeds(seeded.assign(peer="best")), ["dml", "dwml"],
                       pd.DataFrame([{"method": "dwml", "suite": "synthetic", "paper": 51.58}]))
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["dml", "dwml"]
    table = experiments.ablation_table(fake_scores().assign(alpha=lambda d: d["method"].map({"dml": 0.3, "dwml": 0.5})), "alpha")
    fig = plot_study(table, "alpha", "a")
    assert len(fig.axes[0].lines) >= 1 and fig.axes[0].get_xlabel() == "alpha"


def test_learning_curve_points_leave_the_run_unchanged(small_corpus, tmp_path):
    """A run stopped and scored at steps 2 and 4 ends exactly where an uninterrupted run of the seed ends,
    and its curve holds every peer and paradigm at each point, then the final scores."""
    import torch
    from transformers import AutoModelForMaskedLM

    from dwml.config import DataConfig
    from dwml.data import prepare_corpus
    from dwml.evaluate import subsample
    from dwml.suites import load_synthetic
    from dwml.search import PeerArch

    data = {"corpus": str(small_corpus), "vocab_size": 600, "block_size": 40, "packing": "lines",
            "cache_dir": str(tmp_path / "cache")}
    prep = prepare_corpus(DataConfig(**data), progress=False)
    sections = {"data": data, "train": dict(learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, lr_decay_iters=6,
                                            batch_size=4, num_epochs=6, eval_interval=3, eval_batches=2,
                                            checkpoint_interval=100, device="cpu")}
    arch = dict(num_heads=2, intermediate_size=64, params=0, target=0, rel_error=0.0, method="test")
    archs = [PeerArch(num_layers=2, hidden_size=32, **arch), PeerArch(num_layers=1, hidden_size=16, **arch)]
    meta = {"vocab_size": len(prep.tokenizer), "max_position_embeddings": 42}
    pairs = {"synthetic": subsample(load_synthetic(small_corpus), 2, 0)}

    curved = experiments.train_run(sections, prep, archs, meta, "dml", 0, tmp_path / "a", progress=False,
                         curve_steps=[4, 2, 99], curve_pairs=pairs)
    plain = experiments.train_run(sections, prep, archs, meta, "dml", 0, tmp_path / "b", progress=False)
    for da, db in zip(curved.peer_dirs, plain.peer_dirs):
        a, b = AutoModelForMaskedLM.from_pretrained(da), AutoModelForMaskedLM.from_pretrained(db)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    experiments.score_run(curved, pairs)
    curve = experiments.learning_curve([curved.run_dir])
    assert sorted(curve["step"].unique()) == [2, 4, 6]  # 99 is past the run: its end is the final point
    assert curve.groupby("step").size().to_dict() == {k: 2 * 10 for k in (2, 4, 6)}  # 2 peers x 10 paradigms
    assert curve["tokens"].is_monotonic_increasing and set(curve["seed"]) == {0}
    from dwml.plots.experiments import plot_learning_curve

    one = curve[curve["peer"] == 1]
    fig = plot_learning_curve(one)
    macro = [l for l in fig.axes[0].lines if l.get_label() == "macro average"][0]
    assert list(macro.get_ydata()) == pytest.approx(one.groupby("step")["accuracy"].mean().tolist())
    assert len(fig.axes[0].lines) == 10 + 2  # a line per paradigm, the average, the chance line
    with pytest.raises(ValueError, match="curve_pairs"):
        experiments.train_run(sections, prep, archs, meta, "dml", 1, tmp_path / "c", progress=False, curve_steps=[2])


def test_verdict_golden_sentences():
    from dwml.experiments import verdict

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
    import pandas as pd

    from dwml.experiments import paired_differences, verdicts

    seeded = pd.DataFrame({"method": ["a"] * 3 + ["b"] * 3 + ["c"] * 3, "seed": [0, 1, 2] * 3, "suite": "s",
                           "accuracy": [70, 72, 74, 60, 61, 63, 69, 74, 70]})
    table = paired_differences(seeded, "a")
    lines = verdicts(table, "method")
    # b is 10.67 points below a on every seed (10, 11, 11): a clear win for a
    assert lines[0].startswith("a beats b by 10.7 points")
    # c - a = (-1, 2, -4): mean -1, an interval across 0
    assert lines[1].startswith("no difference between c and a larger than")
    lo, hi = table.iloc[1][["ci_low", "ci_high"]]
    assert f"{max(abs(lo), abs(hi)):.1f} points" in lines[1]
    claims = table.assign(claim="my claim")
    assert verdicts(claims, "method", label="claim")[0].startswith("my claim: a beats b")


def test_method_curves_follow_each_methods_best_peer():
    import pandas as pd

    from dwml.experiments import method_curves

    # two peers, two seeds; peer 2 is best in seed 0 and peer 1 in seed 1 (final scores)
    scores = pd.DataFrame([{"method": "m", "seed": s, "peer": p, "suite": "x", "task": t, "correct": c}
                           for s, p, c in [(0, 1, 0), (0, 2, 1), (1, 1, 1), (1, 2, 0)]
                           for t in ("t1", "t2") for _ in range(2)])
    rows = []
    for s in (0, 1):
        for p in (1, 2):
            for step, tokens in ((10, 100 + s), (20, 200 + s)):
                rows += [{"seed": s, "peer": p, "suite": "x", "task": "t1", "step": step, "tokens": tokens,
                          "accuracy": 10 * p + step + s},
                         {"seed": s, "peer": p, "suite": "x", "task": "t2", "step": step, "tokens": tokens,
                          "accuracy": 30 * p + step + s}]
    out = method_curves({"m": pd.DataFrame(rows)}, scores)
    assert set(zip(out["seed"], out["peer"])) == {(0, 2), (1, 1)}
    r = out[(out["seed"] == 0) & (out["step"] == 20)].iloc[0]
    assert r["accuracy"] == ((20 + 20) + (60 + 20)) / 2 and r["tokens"] == 200  # macro over the two tasks
    r = out[(out["seed"] == 1) & (out["step"] == 10)].iloc[0]
    assert r["accuracy"] == ((10 + 11) + (30 + 11)) / 2


def test_run_and_score_trains_and_scores_every_seed(monkeypatch):
    """The loop of notebook 04: one train_run per seed with the study's parts, one score_run each, the
    scores concatenated in seed order and the results keyed by seed."""
    calls = []
    study = experiments.Study(sections={"train": {}}, cfg=types.SimpleNamespace(eval="E"), prep="P",
                              archs=["a1"], meta={"m": 1}, pairs={"synthetic": {}})

    def train_run(sections, prep, archs, meta, method, seed, run_root, *, tag="", **kw):
        calls.append((sections, prep, archs, meta, method, seed, run_root, tag, kw))
        return f"result{seed}"

    def score_run(res, pairs, eval_cfg):
        assert pairs is study.pairs and eval_cfg == "E"
        return pd.DataFrame({"result": [res], "n": [len(calls)]})

    monkeypatch.setattr(experiments, "train_run", train_run)
    monkeypatch.setattr(experiments, "score_run", score_run)
    scores, results = experiments.run_and_score(study, "dml", [3, 1], "root", "p2", num_peers=2)
    assert calls == [(study.sections, "P", ["a1"], {"m": 1}, "dml", s, "root", "p2", {"num_peers": 2}) for s in (3, 1)]
    assert scores.to_dict("list") == {"result": ["result3", "result1"], "n": [1, 2]}
    assert results == {3: "result3", 1: "result1"}


def test_size_weight_points_by_hand():
    # fake_scores' dwml runs, macro accuracy per (seed, peer): the mean of the two tasks' accuracies
    points = experiments.size_weight_points(fake_scores()[lambda d: d["method"] == "dwml"],
                                            {0: [0.3, 0.7], 1: [0.6, 0.4]}, {1: 100, 2: 50})
    got = {(r.seed, r.peer): (r.accuracy, r.params, r.weight) for r in points.itertuples()}
    assert got == {(0, 1): (pytest.approx(50.0), 100, 0.3), (0, 2): (pytest.approx(100.0), 50, 0.7),
                   (1, 1): (pytest.approx(50.0), 100, 0.6), (1, 2): (pytest.approx(37.5), 50, 0.4)}
    from dwml.plots.experiments import plot_size_weight

    paper = pd.DataFrame({"metric": ["average_accuracy", "other"], "setting": ["4", "x"]})
    fig = plot_size_weight(points, paper)
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]  # a line per seed on both panels
    assert list(fig.axes[0].lines[0].get_xdata()) == [100, 50] and list(fig.axes[1].lines[1].get_xdata()) == [0.6, 0.4]
    assert fig.axes[0].get_title() == "size (paper: 4 peers)"


def test_peer_flops_and_profile_method_with_its_record_cache(small_corpus, tmp_path, monkeypatch):
    """Notebook 05's measurement on two tiny peers: the counted FLOPs per peer match the closed form, the
    record holds the run's numbers with the per-peer FLOPs scaled to its tokens, and a second call reads
    the record back without training."""
    from dwml import profiling
    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.search import PeerArch

    data = {"corpus": str(small_corpus), "vocab_size": 600, "block_size": 40, "packing": "lines",
            "cache_dir": str(tmp_path / "cache")}
    cfg = Config.from_dict(data=data, train=dict(num_epochs=2, num_batches=1, batch_size=2, eval_interval=2,
                                                 eval_batches=1, checkpoint_interval=2, warmup_iters=0,
                                                 lr_decay_iters=2, enable_early_stopping=False, device="cpu"))
    prep = prepare_corpus(cfg.data, progress=False)
    arch = dict(num_heads=2, intermediate_size=64, params=0, target=0, rel_error=0.0, method="test")
    archs = [PeerArch(num_layers=2, hidden_size=32, **arch), PeerArch(num_layers=1, hidden_size=16, **arch)]
    meta = {"vocab_size": len(prep.tokenizer), "max_position_embeddings": 42}
    flops = experiments.peer_flops(archs, meta, cfg, ["p1", "p2"], "cpu")
    assert list(flops["peer"]) == ["p1", "p2"] and ((flops["ratio"] - 1).abs() < 0.10).all()
    assert flops["counted_flops"].iloc[0] > flops["counted_flops"].iloc[1]  # the deeper, wider peer costs more

    record, trace = experiments.profile_method("dml", "dml", archs, meta, cfg, prep, tmp_path / "prof",
                                               flops["counted_flops"], interval_s=0.05)
    assert (record["method"], record["peers"], record["device"]) == ("dml", 2, "CPU")
    batch_tokens = cfg.train.batch_size * cfg.data.block_size
    assert record["flops_per_peer"] == pytest.approx(
        [profiling.run_flops(float(f), batch_tokens, record["tokens"]) for f in flops["counted_flops"]])
    assert record["method_flops"] > 0 and record["train_time_s"] > 0 and len(trace) == record["samples"]
    assert (tmp_path / "prof" / "run" / "DONE").is_file()

    monkeypatch.setattr("dwml.train.train", lambda *a, **k: pytest.fail("a finished record must be reused"))
    again, trace2 = experiments.profile_method("dml", "dml", archs, meta, cfg, prep, tmp_path / "prof",
                                               flops["counted_flops"])
    assert again == record and len(trace2) == len(trace)


# --------------------------------------------------------------------------------------------------
# Notebook 03's runs and tables
# --------------------------------------------------------------------------------------------------

def fake_scores_with_mlm():
    """:func:`fake_scores` and a single-model run (one peer): macro accuracy 25 in seed 0, 62.5 in seed 1."""
    rows = []
    for s, (a, b) in ((0, (0.5, 0.0)), (1, (0.75, 0.5))):
        for task, n, frac in (("a", 4, a), ("b", 2, b)):
            rows += [{"method": "mlm", "peer": 1, "seed": s, "suite": "synthetic", "task": task, "pair_id": i,
                      "correct": i < round(frac * n), "tie": False} for i in range(n)]
    return pd.concat([fake_scores(), pd.DataFrame(rows)], ignore_index=True)


def test_train_methods_trains_the_teacher_first_and_hands_it_on(monkeypatch):
    calls = []
    study = experiments.Study(sections={"train": {}}, cfg=None, prep="P", archs=["a1"], meta={"m": 1}, pairs={})

    def train_run(sections, prep, archs, meta, method, seed, run_root, *, teacher_dir="", **kw):
        calls.append((method, seed, teacher_dir, kw))
        return types.SimpleNamespace(peer_dirs=[f"{method}{seed}/peer_0", f"{method}{seed}/peer_1"])

    monkeypatch.setattr(experiments, "train_run", train_run)
    results = experiments.train_methods(study, ["sd", "kd", "dwml"], [3, 1], "root", curve_steps=[5])
    # mlm is trained first in each seed although not listed (kd learns from it), and only kd reads its teacher_dir
    assert [(m, s, t) for m, s, t, _ in calls] == [
        ("mlm", 3, ""), ("sd", 3, "mlm3/peer_0"), ("kd", 3, "mlm3/peer_0"), ("dwml", 3, "mlm3/peer_0"),
        ("mlm", 1, ""), ("sd", 1, "mlm1/peer_0"), ("kd", 1, "mlm1/peer_0"), ("dwml", 1, "mlm1/peer_0")]
    assert all(kw == {"curve_steps": [5]} for *_, kw in calls)
    assert list(results) == [("sd", 3), ("kd", 3), ("dwml", 3), ("sd", 1), ("kd", 1), ("dwml", 1)]
    assert results["kd", 1].peer_dirs[0] == "kd1/peer_0"
    calls.clear()
    experiments.train_methods(study, ["dml", "dwml"], [0], "root")
    assert [(m, t) for m, _, t, _ in calls] == [("dml", ""), ("dwml", "")]  # no teacher needed, none trained


def test_runs_table_score_runs_and_model_params(monkeypatch):
    res = {("mlm", 0): types.SimpleNamespace(summary={"steps": 10, "elapsed_s": 90.0, "stopped_early": False,
                                                      "final_dev_ensemble": 4.5}, weights=None, run_dir="r/mlm_seed0"),
           ("dwml", 0): types.SimpleNamespace(summary={"steps": 8, "elapsed_s": 30.0, "stopped_early": True,
                                                       "final_dev_ensemble": 4.0}, weights=[0.6, 0.4], run_dir="r/dwml_seed0")}
    runs = experiments.runs_table(res)
    assert runs.to_dict("list") == {"method": ["mlm", "dwml"], "seed": [0, 0], "steps": [10, 8], "minutes": [1.5, 0.5],
                                    "stopped_early": [False, True], "final_dev_ensemble": [4.5, 4.0],
                                    "weights": [None, [0.6, 0.4]]}
    monkeypatch.setattr(experiments, "score_run", lambda r, suites, eval_cfg: pd.DataFrame({"run": [r.run_dir] * 2,
                                                                                           "cfg": [eval_cfg] * 2}))
    scores = experiments.score_runs(res, {}, "E")
    assert scores["run"].tolist() == ["r/mlm_seed0"] * 2 + ["r/dwml_seed0"] * 2 and list(scores.index) == [0, 1, 2, 3]
    meta = {"teacher": {"layers": 4, "hidden": 192, "heads": 4, "params": 2237696}}
    archs = [types.SimpleNamespace(params=900), types.SimpleNamespace(params=500)]
    assert experiments.model_params(["mlm", "dwml"], archs, meta) == {("mlm", 1): 2237696, ("dwml", 1): 900,
                                                                      ("dwml", 2): 500}


def test_subsample_suites_caps_each_task():
    from dwml.evaluate import MinimalPair

    pairs = [MinimalPair("synthetic", t, i, "g", "b") for t, n in (("x", 5), ("y", 2)) for i in range(n)]
    cut = experiments.subsample_suites({"synthetic": pairs}, 3)["synthetic"]
    assert [p.task for p in cut].count("x") == 3 and [p.pair_id for p in cut if p.task == "y"] == [0, 1]
    assert experiments.subsample_suites({"synthetic": pairs}, 0)["synthetic"] == pairs


def test_learning_curve_tables(monkeypatch):
    seen = []
    monkeypatch.setattr(experiments, "learning_curve", lambda dirs: seen.append(list(dirs)) or len(seen))
    res = {("mlm", 0): types.SimpleNamespace(run_dir="m0"), ("dwml", 0): types.SimpleNamespace(run_dir="d0"),
           ("mlm", 1): types.SimpleNamespace(run_dir="m1"), ("dwml", 1): types.SimpleNamespace(run_dir="d1")}
    assert experiments.method_learning_curves(res, ["dwml", "mlm"]) == {"dwml": 1, "mlm": 2}
    assert seen == [["d0", "d1"], ["m0", "m1"]]
    curve = pd.DataFrame([{"step": st, "tokens": 10 * st, "seed": s, "task": t, "accuracy": acc}
                          for st, s, t, acc in [(5, 0, "t1", 40.0), (5, 0, "t2", 60.0), (5, 1, "t1", 50.0),
                                                (5, 1, "t2", 80.0), (9, 0, "t1", 70.0), (9, 0, "t2", 90.0)]])
    table = experiments.paradigm_curve_table(curve)
    assert table[["step", "seed", "t1", "t2", "macro"]].values.tolist() == [[5, 0, 40, 60, 50], [5, 1, 50, 80, 65],
                                                                            [9, 0, 70, 90, 80]]
    method_curve = pd.DataFrame({"method": ["a", "a", "b", "a"], "seed": [0, 1, 0, 0], "suite": "x",
                                 "step": [5, 5, 5, 9], "accuracy": [40.0, 60.0, 70.0, 80.0]})
    wide = experiments.method_curve_table(method_curve)
    assert wide[["step", "a"]].values.tolist() == [[5, 50], [9, 80]]  # the mean over seeds
    assert wide["b"].iloc[0] == 70 and pd.isna(wide["b"].iloc[1])


def test_table2_with_paper_sets_the_published_value_beside_ours():
    t2 = experiments.table2_with_paper(fake_scores().assign(suite="blimp"))
    assert set(t2["peer"]) == {"1", "2", "best"}
    row = t2[(t2["method"] == "dwml") & (t2["peer"] == "best")].iloc[0]
    assert row["paper"] == 51.58 and row["accuracy"] == pytest.approx(75.0)
    assert t2[(t2["method"] == "dml") & (t2["peer"] == "2")]["paper"].iloc[0] == 47.77


def test_weakest_peers_by_hand():
    # macro accuracy per seed (see fake_scores): dml peer 1: 75, 62.5; peer 2: 25, 62.5 -> peer 2 (43.75);
    # dwml peer 1: 50, 50; peer 2: 100, 37.5 -> peer 1 (50)
    w = experiments.weakest_peers(fake_scores())
    assert w[["method", "weakest_peer"]].values.tolist() == [["dml", 2], ["dwml", 1]]
    assert w["accuracy"].tolist() == pytest.approx([43.75, 50.0])


def test_method_differences_against_dwml_then_the_single_model():
    seeded = experiments.best_peer(experiments.per_seed(fake_scores_with_mlm()))
    d = experiments.method_differences(seeded, ["mlm", "dml", "dwml"])
    # best peers per seed: dml 75, 62.5; dwml 100, 50; mlm 25, 62.5
    assert d[["method", "reference"]].values.tolist() == [["dml", "dwml"], ["mlm", "dwml"], ["dml", "mlm"],
                                                          ["dwml", "mlm"]]
    want = [experiments.t_interval(x) for x in ([-25.0, 12.5], [-75.0, 12.5], [50.0, 0.0], [75.0, -12.5])]
    assert d[["difference", "ci_low", "ci_high"]].values.tolist() == [pytest.approx(list(w)) for w in want]
    assert d["verdict"].iloc[0].startswith("no difference between dml and dwml larger than")
    only_dml = experiments.method_differences(seeded, ["mlm", "dml"])
    assert set(only_dml["reference"]) == {"mlm"}
    with pytest.raises(ValueError, match="no DWML and no single-model method"):
        experiments.method_differences(seeded, ["dml", "sd"])


def test_table1_rows_values_glue_and_the_papers_rows():
    scores = fake_scores_with_mlm()
    assert experiments.table1_labels(["sd", "dwml", "mlm"]) == {"mlm": "ours: RoBERTa (mlm)",
                                                                 "dwml": "ours: RoBERTa-DWML (best peer)"}
    t1 = experiments.table1(scores, ["mlm", "sd", "dml", "dwml"])
    assert t1["model"].tolist() == ["ours: RoBERTa-DWML (best peer)", "ours: RoBERTa (mlm)", "paper: BabyLlama",
                                    "paper: LTG-BERT", "paper: RoBERTa-base", "paper: RoBERTa-DWML"]
    assert list(t1.columns) == ["model", "synthetic", "blimp", "supplement", "ewok", "glue"]
    # the best peer within each seed, then the mean: dwml (100 + 50) / 2, mlm (25 + 62.5) / 2; dml is not a row
    assert t1["synthetic"].iloc[:2].tolist() == pytest.approx([75.0, 43.75])
    assert t1.iloc[2:][["blimp", "supplement", "ewok", "glue"]].values.tolist()[0] == [69.8, 59.5, 50.7, 63.3]
    assert t1["glue"].iloc[:2].isna().all()
    glue = {"mlm": pd.DataFrame({"task": ["rte", "cola"], "accuracy": [0.5, 0.7], "majority_accuracy": [0.5, 0.6]}),
            "dwml": pd.DataFrame({"task": ["rte", "cola"], "accuracy": [0.6, 0.9], "majority_accuracy": [0.5, 0.7]})}
    t1 = experiments.table1(scores, ["mlm", "dwml"], glue).set_index("model")
    assert t1.loc["ours: RoBERTa (mlm)", "glue"] == pytest.approx(60.0)
    assert t1.loc["ours: RoBERTa-DWML (best peer)", "glue"] == pytest.approx(75.0)
    assert t1.loc[experiments.MAJORITY_ROW, "glue"] == pytest.approx(60.0)
    assert pd.isna(t1.loc[experiments.MAJORITY_ROW, "synthetic"]) and len(t1) == 7


def test_best_peer_glue_fine_tunes_each_best_peer(monkeypatch, tmp_path):
    scores = fake_scores_with_mlm()
    results = {(m, s): types.SimpleNamespace(peer_dirs=[tmp_path / f"{m}{s}" / f"peer_{i}" for i in range(2)],
                                             run_dir=tmp_path / f"{m}{s}") for m in ("mlm", "dml", "dwml") for s in (0, 1)}
    calls = []

    def finetune(model_dir, data_dir, out_dir, cfg):
        calls.append((model_dir, data_dir, out_dir, cfg.tasks))
        return pd.DataFrame({"accuracy": [0.5], "majority_accuracy": [0.5]})

    out = experiments.best_peer_glue(scores, results, ["mlm", "dml", "dwml"], 0, ["rte", "cola"], "G", finetune)
    # seed 0's best peers: mlm peer 1 (its only one), dwml peer 2 (100 against 50); dml has no Table 1 row
    assert calls == [(tmp_path / "mlm0" / "peer_0", "G", tmp_path / "mlm0" / "glue", ("rte", "cola")),
                     (tmp_path / "dwml0" / "peer_1", "G", tmp_path / "dwml0" / "glue", ("rte", "cola"))]
    assert list(out) == ["mlm", "dwml"]
    out = experiments.best_peer_glue(scores, results, ["dwml"], 1, ["rte"], "G", finetune)
    assert calls[-1][0] == tmp_path / "dwml1" / "peer_0"  # seed 1: peer 1 (50 against 37.5)
    import dwml.evaluate

    monkeypatch.setattr(dwml.evaluate, "data_root", lambda: None)
    with pytest.raises(FileNotFoundError, match="glue_filtered"):
        experiments.best_peer_glue(scores, results, ["dwml"], 0, ["rte"], finetune=finetune)
