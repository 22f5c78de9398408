"""dwml.studies: the tables of notebooks 03 (baselines), 04 (ablations) and 05 (costs) against hand-computed
values and the paper's numbers; the study loops through stand-ins for training and scoring."""
from __future__ import annotations

import types
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dwml import studies
from dwml.stats import t_interval
from dwml import compare
from dwml import runs as runs_mod
from dwml.executor import RunResult, RunSpec
from dwml.studies import ablations, baselines, costs, study

ROOT = Path(__file__).resolve().parents[1]

from test_compare import fake_scores, fake_scores_with_mlm


def test_every_study_notebook_exists_and_maps_to_modules_of_the_package():
    from conftest import ROOT

    for notebook, modules in studies.NOTEBOOKS.items():
        assert (ROOT / "notebooks" / f"{notebook}.py").is_file(), notebook
        assert modules and all(m.__name__.startswith("dwml.studies.") for m in modules)


def test_table2_rows_intervals_and_params():
    t = baselines.table2(fake_scores(), params={("dml", 1): 10, ("dml", 2): 5, ("dwml", 1): 10, ("dwml", 2): 5})
    row = t[(t["method"] == "dwml") & (t["peer"] == "best")].iloc[0]
    want = t_interval([100.0, 50.0])
    assert (row["accuracy"], row["ci_low"], row["ci_high"]) == pytest.approx(want)
    assert row["seeds"] == 2 and pd.isna(row["params"])
    assert t[(t["method"] == "dml") & (t["peer"] == "2")]["params"].iloc[0] == 5


def test_table2_sets_the_papers_value_beside_ours():
    t2 = baselines.table2(fake_scores().assign(suite="blimp"))
    assert set(t2["peer"]) == {"1", "2", "best"}
    row = t2[(t2["method"] == "dwml") & (t2["peer"] == "best")].iloc[0]
    assert row["paper"] == 51.58 and row["accuracy"] == pytest.approx(75.0)
    assert t2[(t2["method"] == "dml") & (t2["peer"] == "2")]["paper"].iloc[0] == 47.77


def test_the_papers_tables_and_their_long_form():
    t2 = study.paper_table("table2")
    assert t2.loc[(t2["benchmark"] == "blimp_filtered") & (t2["method"] == "DWML"), "best_reported"].iloc[0] == 51.58
    long = study.paper_table2_long()
    assert set(long["suite"]) == {"blimp", "supplement", "ewok"}
    assert set(long["method"]) == {"mlm", "sd", "kd", "dml", "kd_dwml", "dwml"}
    got = long[(long["method"] == "kd_dwml") & (long["suite"] == "ewok") & (long["peer"] == 2)]["paper"].iloc[0]
    assert got == 40.36
    with pytest.raises(FileNotFoundError, match="table9"):
        study.paper_table("table9")


def test_run_and_score_runs_every_seed_through_the_executor(monkeypatch, tmp_path):
    """One spec per seed with the variant's tag, peers and overrides, handed to the executor with the study's
    source; the scores files concatenated in seed order and the results keyed by seed."""
    src = runs_mod.StudySource({}, {}, {}, str(tmp_path))
    st = study.Study(sections={}, cfg=None, prep=None, archs=[], meta={}, pairs={}, source=src)
    seen = {}

    def run_study(source, specs, executor, *, work, progress):
        seen.update(source=source, specs=specs, executor=executor, work=work)
        out = {}
        for s in specs:
            path = tmp_path / f"{s.name}.csv"
            pd.DataFrame({"seed": [s.seed]}).to_csv(path, index=False)
            out[s.name] = RunResult(s.name, str(tmp_path / s.name), {}, (), str(path))
        return out

    monkeypatch.setattr(study, "run_study", run_study)
    monkeypatch.setattr(study, "train_results", lambda done: {(r.name, 0): f"res:{r.name}" for r in done.values()})
    scores, results = study.run_and_score(st, "dml", [3, 1], "p2", {"kind": "serial"}, num_peers=2,
                                          train_overrides={"loss_alpha": 0.3})
    assert seen["source"] is src and seen["executor"] == {"kind": "serial"} and seen["work"] is study.run_spec
    assert [(s.method, s.seed, s.tag, s.num_peers, s.overrides) for s in seen["specs"]] == \
        [("dml", k, "p2", 2, {"loss_alpha": 0.3}) for k in (3, 1)]
    assert list(scores["seed"]) == [3, 1]
    assert results == {3: "res:dml_p2_seed3", 1: "res:dml_p2_seed1"}


def test_execute_trains_and_scores_a_ci_run_and_reuses_it(tmp_path):
    """A real run of the ci profile through run_spec (serial): trained, scored into scores.csv, then reused."""
    prof = yaml.safe_load((ROOT / "profiles" / "ci.yaml").read_text())
    train = {**prof["train"], "num_epochs": 2, "lr_decay_iters": 2, "warmup_iters": 1, "eval_interval": 1,
             "eval_batches": 1, "checkpoint_interval": 2, "batch_size": 8}
    st = study.setup(prof["data"], prof["search"], train, tmp_path, ["synthetic"], 2,
                     skip_tasks={"synthetic": ["npi_scope"]})
    assert "npi_scope" not in {p.task for p in st.pairs["synthetic"]}
    done = study.execute(st, [RunSpec("mlm", 0)], {"kind": "serial"}, progress=None)
    res = done["mlm_seed0"]
    assert (tmp_path / "mlm_seed0" / "DONE").is_file() and not res.reused
    scores = pd.read_csv(res.scores)
    assert len(scores) == len(st.pairs["synthetic"]) and set(scores["method"]) == {"mlm"}
    assert study.execute(st, [RunSpec("mlm", 0)], None, progress=None)["mlm_seed0"].reused


def test_size_weight_points_by_hand():
    # fake_scores' dwml runs, macro accuracy per (seed, peer): the mean of the two tasks' accuracies
    points = ablations.size_weight_points(fake_scores()[lambda d: d["method"] == "dwml"],
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


def test_ablation_differences_use_the_best_peer_per_seed():
    scores = fake_scores().assign(alpha=lambda d: d["method"].map({"dml": 0.3, "dwml": 0.5}))
    d = ablations.ablation_differences(scores, "alpha", 0.5)
    # best peers (see the test above): alpha 0.3 (dml) 75 and 62.5; alpha 0.5 (dwml) 100 and 50
    row = d.iloc[0]
    assert (row["setting"], row["value"], row["reference"], row["seeds"]) == ("alpha", 0.3, 0.5, 2)
    assert (row["difference"], row["ci_low"], row["ci_high"]) == pytest.approx(t_interval([75.0 - 100.0, 62.5 - 50.0]))


def test_plots_draw_one_panel_per_suite_and_a_line_per_suite():
    from dwml.plots.experiments import plot_methods, plot_study

    seeded = compare.best_peer(compare.per_seed(fake_scores()))
    fig = plot_methods(seeded, compare.over_seeds(seeded.assign(peer="best")), ["dml", "dwml"],
                       pd.DataFrame([{"method": "dwml", "suite": "synthetic", "paper": 51.58}]))
    assert len(fig.axes) == 1 and [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["dml", "dwml"]
    table = ablations.ablation_table(fake_scores().assign(alpha=lambda d: d["method"].map({"dml": 0.3, "dwml": 0.5})), "alpha")
    fig = plot_study(table, "alpha", "a")
    assert len(fig.axes[0].lines) >= 1 and fig.axes[0].get_xlabel() == "alpha"


def test_method_curves_follow_each_methods_best_peer():
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
    out = baselines.method_curves({"m": pd.DataFrame(rows)}, scores)
    assert set(zip(out["seed"], out["peer"])) == {(0, 2), (1, 1)}
    r = out[(out["seed"] == 0) & (out["step"] == 20)].iloc[0]
    assert r["accuracy"] == ((20 + 20) + (60 + 20)) / 2 and r["tokens"] == 200  # macro over the two tasks
    r = out[(out["seed"] == 1) & (out["step"] == 10)].iloc[0]
    assert r["accuracy"] == ((10 + 11) + (30 + 11)) / 2


def test_learning_curves_tables_per_method_and_per_paradigm(monkeypatch, tmp_path):
    """Notebook 03's curve cell: the runs' curves read per method (seeds in run order), each method's best
    peer along training (method_curves) pivoted to a column per method, and the single model's curve to a
    column per paradigm with their mean; tables and figures written."""
    curve = pd.DataFrame([{"step": st, "tokens": 10 * st, "seed": s, "peer": 1, "suite": "x", "task": t, "accuracy": acc}
                          for st, s, t, acc in [(5, 0, "t1", 40.0), (5, 0, "t2", 60.0), (5, 1, "t1", 50.0),
                                                (5, 1, "t2", 80.0), (9, 0, "t1", 70.0), (9, 0, "t2", 90.0)]])
    seen = []
    monkeypatch.setattr(baselines, "learning_curve", lambda dirs: seen.append(list(dirs)) or curve)
    res = {("mlm", 0): types.SimpleNamespace(run_dir="m0"), ("dwml", 0): types.SimpleNamespace(run_dir="d0"),
           ("mlm", 1): types.SimpleNamespace(run_dir="m1"), ("dwml", 1): types.SimpleNamespace(run_dir="d1")}
    scores = pd.DataFrame([{"method": m, "seed": s, "peer": 1, "suite": "x", "task": "t1", "correct": True}
                           for m in ("dwml", "mlm") for s in (0, 1)])
    out = baselines.learning_curves(res, scores, ["dwml", "mlm"], tmp_path)
    assert seen == [["d0", "d1"], ["m0", "m1"]]
    assert out["paradigm_table"][["step", "seed", "t1", "t2", "macro"]].values.tolist() == [
        [5, 0, 40, 60, 50], [5, 1, 50, 80, 65], [9, 0, 70, 90, 80]]
    # per method: the macro over tasks per seed, then the mean over seeds: step 5 (50 + 65) / 2, step 9 80
    assert out["method_table"][["step", "dwml", "mlm"]].values.tolist() == [[5, 57.5, 57.5], [9, 80, 80]]
    assert {p.name for p in tmp_path.iterdir()} >= {"table_method_curves.csv", "table_learning_curve.csv",
                                                    "figure_method_curves.png", "figure_learning_curve.png"}
    assert "paradigm_table" not in baselines.learning_curves(res, scores, ["dwml"])


def test_table1_differences_pair_the_two_rows_models():
    scores = fake_scores_with_mlm()
    d = baselines.table1_differences(scores, ["mlm", "dml", "dwml"], n_boot=50)
    assert d[["method", "reference"]].values.tolist() == [["dwml", "mlm"]]  # dml is not in Table 1
    assert baselines.table1_differences(scores, ["dml", "dwml"]) is None


def test_table1_rows_values_glue_and_the_papers_rows():
    scores = fake_scores_with_mlm()
    assert baselines.table1_labels(["sd", "dwml", "mlm"]) == {"mlm": "ours: RoBERTa (mlm)",
                                                                 "dwml": "ours: RoBERTa-DWML (best peer)"}
    t1 = baselines.table1(scores, ["mlm", "sd", "dml", "dwml"])
    assert t1["model"].tolist() == ["ours: RoBERTa-DWML (best peer)", "ours: RoBERTa (mlm)", "paper: BabyLlama",
                                    "paper: LTG-BERT", "paper: RoBERTa-base", "paper: RoBERTa-DWML"]
    assert list(t1.columns) == ["model", "synthetic", "blimp", "supplement", "ewok", "glue"]
    # the best peer within each seed, then the mean: dwml (100 + 50) / 2, mlm (25 + 62.5) / 2; dml is not a row
    assert t1["synthetic"].iloc[:2].tolist() == pytest.approx([75.0, 43.75])
    assert t1.iloc[2:][["blimp", "supplement", "ewok", "glue"]].values.tolist()[0] == [69.8, 59.5, 50.7, 63.3]
    assert t1["glue"].iloc[:2].isna().all()
    glue = {"mlm": pd.DataFrame({"task": ["rte", "cola"], "accuracy": [0.5, 0.7], "majority_accuracy": [0.5, 0.6]}),
            "dwml": pd.DataFrame({"task": ["rte", "cola"], "accuracy": [0.6, 0.9], "majority_accuracy": [0.5, 0.7]})}
    t1 = baselines.table1(scores, ["mlm", "dwml"], glue).set_index("model")
    assert t1.loc["ours: RoBERTa (mlm)", "glue"] == pytest.approx(60.0)
    assert t1.loc["ours: RoBERTa-DWML (best peer)", "glue"] == pytest.approx(75.0)
    assert t1.loc[baselines.MAJORITY_ROW, "glue"] == pytest.approx(60.0)
    assert pd.isna(t1.loc[baselines.MAJORITY_ROW, "synthetic"]) and len(t1) == 7


def test_best_peer_glue_fine_tunes_each_best_peer(monkeypatch, tmp_path):
    scores = fake_scores_with_mlm()
    results = {(m, s): types.SimpleNamespace(peer_dirs=[tmp_path / f"{m}{s}" / f"peer_{i}" for i in range(2)],
                                             run_dir=tmp_path / f"{m}{s}") for m in ("mlm", "dml", "dwml") for s in (0, 1)}
    calls = []

    def finetune(model_dir, data_dir, out_dir, cfg):
        calls.append((model_dir, data_dir, out_dir, cfg.tasks))
        return pd.DataFrame({"accuracy": [0.5], "majority_accuracy": [0.5]})

    out = baselines.best_peer_glue(scores, results, ["mlm", "dml", "dwml"], 0, ["rte", "cola"], "G", finetune)
    # seed 0's best peers: mlm peer 1 (its only one), dwml peer 2 (100 against 50); dml has no Table 1 row
    assert calls == [(tmp_path / "mlm0" / "peer_0", "G", tmp_path / "mlm0" / "glue", ("rte", "cola")),
                     (tmp_path / "dwml0" / "peer_1", "G", tmp_path / "dwml0" / "glue", ("rte", "cola"))]
    assert list(out) == ["mlm", "dwml"]
    out = baselines.best_peer_glue(scores, results, ["dwml"], 1, ["rte"], "G", finetune)
    assert calls[-1][0] == tmp_path / "dwml1" / "peer_0"  # seed 1: peer 1 (50 against 37.5)
    monkeypatch.setattr(baselines, "data_root", lambda: None)
    with pytest.raises(FileNotFoundError, match="glue_filtered"):
        baselines.best_peer_glue(scores, results, ["dwml"], 0, ["rte"], finetune=finetune)


def test_peer_flops_and_measure_cost_with_its_record_cache(small_corpus, tmp_path, monkeypatch):
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
    flops = costs.peer_flops(archs, meta, cfg, ["p1", "p2"], "cpu")
    assert list(flops["peer"]) == ["p1", "p2"] and ((flops["ratio"] - 1).abs() < 0.10).all()
    assert flops["counted_flops"].iloc[0] > flops["counted_flops"].iloc[1]  # the deeper, wider peer costs more

    record, trace = costs.measure_cost("dml", "dml", archs, meta, cfg, prep, tmp_path / "prof",
                                               flops["counted_flops"], interval_s=0.05)
    assert (record["method"], record["peers"], record["device"]) == ("dml", 2, "CPU")
    batch_tokens = cfg.train.batch_size * cfg.data.block_size
    assert record["flops_per_peer"] == pytest.approx(
        [profiling.run_flops(float(f), batch_tokens, record["tokens"]) for f in flops["counted_flops"]])
    assert record["method_flops"] > 0 and record["train_time_s"] > 0 and len(trace) == record["samples"]
    assert (tmp_path / "prof" / "run" / "DONE").is_file()

    monkeypatch.setattr(costs, "train", lambda *a, **k: pytest.fail("a finished record must be reused"))
    again, trace2 = costs.measure_cost("dml", "dml", archs, meta, cfg, prep, tmp_path / "prof",
                                               flops["counted_flops"])
    assert again == record and len(trace2) == len(trace)


def test_sweep_trains_each_value_under_its_tag_and_reuses_the_profiles_runs(monkeypatch):
    calls = []

    def run_and_score(st, method, seeds, executor=None, **kw):
        calls.append((method, tuple(seeds), executor, kw))
        return pd.DataFrame({"v": [kw["tag"]]}), {}

    monkeypatch.setattr(ablations, "run_and_score", run_and_score)
    base = pd.DataFrame({"v": ["base"]})
    out = ablations.sweep("S", "num_peers", [1, 4, 2], [0, 1], 4, base, executor="E")
    assert out.to_dict("list") == {"v": ["p1", "base", "p2"], "num_peers": [1, 4, 2]}
    assert calls == [("dwml", (0, 1), "E", {"tag": "p1", "num_peers": 1}),
                     ("dwml", (0, 1), "E", {"tag": "p2", "num_peers": 2})]
    out = ablations.sweep("S", "alpha", [0.3, 0.5], [0], 0.5, base)
    assert calls[-1][3] == {"tag": "a0.3", "train_overrides": {"loss_alpha": 0.3}} and list(out["alpha"]) == [0.3, 0.5]
    with pytest.raises(ValueError, match="unknown setting 'lr'"):
        ablations.sweep("S", "lr", [1], [0], 1, base)


def test_ablation_specs_list_every_run_of_the_notebook_once():
    specs = ablations.specs([0, 1], [1, 2, 4], [0.3, 0.5, 0.7], 4, 0.5, {"learning_rate": 0.05})
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) == 2 * 7
    per_seed = sorted(n for n in names if n.endswith("seed0"))
    assert per_seed == sorted(["dwml_seed0", "dml_seed0", "dwml_p1_seed0", "dwml_p2_seed0", "dwml_a0.3_seed0",
                               "dwml_a0.7_seed0", "dwml_publishedlr_seed0"])
    lr = next(s for s in specs if s.tag == "publishedlr")
    assert lr.overrides == {"learning_rate": 0.05}
    # the runs to train, longest first (every peer, then fewer peers), so that the pool ends on a short one
    new = [s.tag for s in specs if s.tag and s.seed == 0]
    assert new == ["publishedlr", "a0.3", "a0.7", "p2", "p1"]


def test_size_tables_give_r_per_seed_and_its_fisher_interval():
    from scipy import stats as scipy_stats

    from dwml.stats import r_interval

    # three peers so that R is defined; accuracy per (seed, peer) from one task of four pairs
    acc = {(0, 1): 4, (0, 2): 2, (0, 3): 1, (1, 1): 3, (1, 2): 3, (1, 3): 0}
    scores = pd.DataFrame([{"method": "dwml", "seed": s, "peer": p, "suite": "x", "task": "t", "pair_id": i,
                            "correct": i < n, "tie": False} for (s, p), n in acc.items() for i in range(4)])
    results = {0: types.SimpleNamespace(weights=[0.5, 0.3, 0.2]), 1: types.SimpleNamespace(weights=[0.2, 0.3, 0.5])}
    params = {1: 300, 2: 200, 3: 100}
    r, table, points = ablations.size_tables(scores, results, params)
    want0 = scipy_stats.pearsonr([300, 200, 100], [100, 50, 25])[0]
    want1 = scipy_stats.pearsonr([0.2, 0.3, 0.5], [75, 75, 0])[0]
    assert r.set_index("seed")["r_size_accuracy"][0] == pytest.approx(want0)
    assert r.set_index("seed")["r_weight_accuracy"][1] == pytest.approx(want1)
    summary = table.set_index("seed").loc["r_size_accuracy"]
    assert (summary["mean"], summary["ci_low"], summary["ci_high"]) == pytest.approx(r_interval(r["r_size_accuracy"]))
    assert len(points) == 6 and set(points["weight"]) == {0.5, 0.3, 0.2}


def test_final_dev_losses_average_each_runs_peers():
    res = {"lr a": {0: types.SimpleNamespace(summary={"final_dev_ce": [2.0, 4.0]})},
           "lr b": {0: types.SimpleNamespace(summary={"final_dev_ce": [1.0]}),
                    1: types.SimpleNamespace(summary={"final_dev_ce": [5.0, 7.0]})}}
    assert ablations.final_dev_losses(res).values.tolist() == [["lr a", 0, 3.0], ["lr b", 0, 1.0], ["lr b", 1, 6.0]]


def test_claims_table_stacks_the_studies_with_their_verdicts():
    scores = fake_scores().assign(alpha=lambda d: d["method"].map({"dml": 0.3, "dwml": 0.5}),
                                  weights=lambda d: d["method"])
    claims = ablations.claims_table([("claim b", scores, "alpha", 0.5), ("weights", scores, "weights", "dwml")])
    assert claims["claim"].tolist() == ["claim b", "weights"] and claims["value"].tolist() == ["0.3", "dml"]
    assert list(claims.columns) == ["claim", "setting", "value", "reference", "suite", "difference", "ci_low",
                                    "ci_high", "seeds", "differs", "verdict"]
    # best peers per seed: dml 75, 62.5; dwml 100, 50 (see test_compare)
    assert claims["difference"].tolist() == pytest.approx([-6.25, -6.25])
    assert claims["verdict"].iloc[0].startswith("no difference between alpha 0.3 and alpha 0.5 larger than")


def test_costs_teacher_and_the_measured_methods(monkeypatch, tmp_path):
    st = costs.CostStudy(cfg="C", device="cpu", device_name="CPU", prep="P", archs=["a1", "a2"], meta={"m": 1},
                         teacher_arch="T")
    assert costs.make_teacher(st, ["dml", "dwml"]) is None
    monkeypatch.setattr(costs, "load_teacher", lambda d, device: ("loaded", d, device))
    assert costs.make_teacher(st, ["kd"], "runs/mlm_seed0/peer_0") == ("loaded", "runs/mlm_seed0/peer_0", "cpu")
    calls = []

    def measure_cost(label, method, archs, meta, cfg, prep, out_dir, flops, teacher=None, interval_s=0.25):
        calls.append((label, method, archs, out_dir, list(flops), teacher, interval_s))
        return {"train_time_s": 1.0, "avg_util_pct": 50.0, "utilisation": "cpu", "samples": 3}, f"trace {label}"

    monkeypatch.setattr(costs, "measure_cost", measure_cost)
    records, traces = costs.measure_methods(st, ["dml"], pd.DataFrame({"counted_flops": [2.0, 1.0]}),
                                            pd.DataFrame({"counted_flops": [9.0]}), tmp_path, teacher="t", interval_s=0.1)
    assert calls == [("baseline", "mlm", ["T"], tmp_path / "baseline", [9.0], "t", 0.1),
                     ("dml", "dml", ["a1", "a2"], tmp_path / "dml", [2.0, 1.0], "t", 0.1)]
    assert traces == {"baseline": "trace baseline", "dml": "trace dml"} and len(records) == 2


def test_costs_setup_gives_every_method_the_same_budget(monkeypatch):
    seen = {}
    monkeypatch.setattr(costs, "prepare_corpus", lambda data_cfg: seen.setdefault("data", data_cfg) and "P")
    monkeypatch.setattr(costs, "peers_for", lambda cfg, prep, root: seen.update(root=root) or (["a"], {"teacher": {
        "layers": 2, "hidden": 32, "heads": 2, "params": 99}}))
    st = costs.setup({"corpus": "synthetic"}, {}, {"num_epochs": 500, "eval_interval": 7, "device": "cpu"}, "root", 12, 3)
    t = st.cfg.train
    assert (t.num_epochs, t.eval_interval, t.checkpoint_interval, t.enable_early_stopping, t.seed, t.max_tokens) == (
        12, 12, 12, False, 3, 0)
    assert st.device_name == "CPU" and st.archs == ["a"] and st.teacher_arch.params == 99 and seen["root"] == "root"


def _overlapping_labels(ax) -> list[tuple[str, str]]:
    """Neighbouring x tick labels whose drawn boxes intersect (after an Agg draw)."""
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in labels]
    return [(a.get_text(), b.get_text()) for (a, ba), (b, bb) in zip(zip(labels, boxes), zip(labels[1:], boxes[1:]))
            if ba.overlaps(bb)]


def test_figure_methods_tick_labels_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    from dwml.plots import set_style
    from dwml.plots.experiments import plot_methods

    set_style()  # the notebooks' style and size
    methods = ["mlm", "sd", "kd", "dml", "kd_dwml", "dwml"]
    seeded = pd.DataFrame([{"method": m, "seed": s, "suite": "synthetic", "accuracy": 50.0 + s} for m in methods
                           for s in range(3)])
    summary = pd.DataFrame([{"method": m, "suite": "synthetic", "accuracy": 51.0, "ci_low": 49.0, "ci_high": 53.0}
                            for m in methods])
    fig = plot_methods(seeded, summary, methods)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == methods
    assert _overlapping_labels(ax) == []
    # the check itself: the same labels level and close together do overlap
    ax.set_xticks(range(len(methods)), methods, rotation=0, ha="center")
    ax.set_xlim(-0.5, len(methods) + 8)
    assert ("kd_dwml", "dwml") in _overlapping_labels(ax)


def test_study_setup_reads_config_corpus_peers_and_suites(monkeypatch):
    seen = []
    monkeypatch.setattr(study, "prepare_corpus", lambda data_cfg: types.SimpleNamespace(corpus_dir="C"))
    monkeypatch.setattr(study, "peers_for", lambda cfg, prep, root: (["a"], {"m": root}))
    monkeypatch.setattr(study, "suite_folders", lambda names, corpus_dir, suite_dirs: seen.append(
        (names, corpus_dir, suite_dirs)) or {"zorro": "Z"})
    monkeypatch.setattr(study, "load_suites_for", lambda names, corpus_dir, max_pairs_per_task, suite_dirs, skip_tasks:
                        seen.append((max_pairs_per_task, suite_dirs, skip_tasks)) or {"zorro": ["pair"]})
    st = study.setup({"corpus": "synthetic"}, {}, {"learning_rate": 0.01}, "root", ["zorro"], 5, {"zorro": "synthetic"},
                     {"zorro": ["t1"]})
    assert st.sections == {"data": {"corpus": "synthetic"}, "search": {}, "train": {"learning_rate": 0.01}}
    assert st.cfg.train.learning_rate == 0.01 and st.archs == ["a"] and st.meta == {"m": "root"}
    assert st.pairs == {"zorro": ["pair"]} and st.suite_dirs == {"zorro": "Z"}
    assert seen == [(["zorro"], "C", {"zorro": "synthetic"}), (5, {"zorro": "Z"}, {"zorro": ["t1"]})]
    # the source a worker sets the same study up from, and this process's study kept under its key
    assert st.source == runs_mod.StudySource({"corpus": "synthetic"}, {}, {"learning_rate": 0.01}, "root", ("zorro",), 5,
                                             {"zorro": "synthetic"}, {"zorro": ["t1"]})
    assert study.load(st.source) is st


def test_at_once_is_the_number_of_runs_the_executor_trains_together(monkeypatch):
    from dwml.executor import ExecutorConfig
    from dwml.studies import study

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr("dwml.executor.visible_gpus", lambda: [])
    monkeypatch.setattr("dwml.executor.cpu_count", lambda: 6)
    assert study.at_once(None) == study.at_once({"kind": "serial"}) == 1
    assert study.at_once({"kind": "local", "workers": 3, "threads": 1}) == 3
    assert study.at_once({"kind": "local", "workers": "auto", "threads": 2}) == 3  # 6 cores, 2 threads a run
    assert study.at_once(ExecutorConfig(kind="local", workers="auto", threads=1)) == 6
