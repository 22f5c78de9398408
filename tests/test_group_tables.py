"""The paper's Tables 6-8 (dwml.studies.baselines.per_group_tables) and the published-bug table
(dwml.studies.published_bugs.bug_table): every paradigm, task and domain grouped exactly once, cells equal
to macro averages computed by hand, on synthetic score frames and on the real file lists."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dwml import compare, reports, suites
from dwml.studies import baselines, published_bugs, study as studies_study


def fake_scores(tasks: dict[str, list[tuple[str, str]]], methods=("mlm", "dwml"), seeds=(0, 1), peers=(1, 2),
                n: int = 12, seed: int = 0) -> pd.DataFrame:
    """One row per (method, seed, peer, pair): ``tasks`` maps a suite to its (task, phenomenon) list."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        for s in seeds:
            for peer in peers:
                p_right = rng.uniform(0.3, 0.9)
                for suite, items in tasks.items():
                    for task, phen in items:
                        for i in range(n):
                            rows.append({"method": method, "seed": s, "peer": peer, "suite": suite, "task": task,
                                         "phenomenon": phen, "pair_id": i, "correct": bool(rng.random() < p_right),
                                         "tie": bool(rng.random() < 0.05)})
    return pd.DataFrame(rows)


SYNTH = {
    "blimp": [("p1", "anaphor_agreement"), ("p2", "anaphor_agreement"), ("p3", "island_effects"),
              ("p4", "s-selection"), ("p5", "argument_structure")],
    "supplement": [("hypernym", "hypernym"), ("turn_taking", "turn_taking")],
    "ewok": [("social-relations", "social-relations"), ("spatial-relations", "spatial-relations")],
}


def test_tables_6_to_8_on_a_synthetic_case(tmp_path):
    scores = fake_scores(SYNTH)
    out = baselines.per_group_tables(scores, tmp_path, n_boot=200)
    assert set(out) == {f"{n}{s}" for n, _ in baselines.GROUP_TABLES.values() for s in ("", "_intervals")}
    t6, t6i = out["table6_blimp_phenomena"], out["table6_blimp_phenomena_intervals"]
    assert list(t6.columns) == ["method", "AA", "AS", "IFS", "Avg.", "ties", "paper (Table 2)"]
    # every paradigm exactly once: the groups' paradigm counts add up to the suite's
    per_method = t6i[t6i["group"] != "Avg."].groupby("method")["n_tasks"].sum()
    assert (per_method == 5).all()
    assert (t6i[t6i["group"] == "Avg."]["n_tasks"] == 5).all()
    # a cell by hand: dwml's best peer per seed (best on average over the suites), AS = macro of p4, p5
    seeded = compare.per_seed(scores)
    avg = seeded.groupby(["method", "seed", "peer"])["accuracy"].mean()
    best = {s: avg.loc["dwml", s].idxmax() for s in (0, 1)}
    mine = pd.concat([scores[(scores["method"] == "dwml") & (scores["seed"] == s) & (scores["peer"] == p)]
                      for s, p in best.items()])
    b = mine[mine["suite"] == "blimp"]
    want_as = 100 * np.mean([b[b["task"] == t]["correct"].mean() for t in ("p4", "p5")])
    want_avg = 100 * np.mean([b[b["task"] == t]["correct"].mean() for t in ("p1", "p2", "p3", "p4", "p5")])
    row = t6.set_index("method").loc["dwml"]
    assert row["AS"] == pytest.approx(want_as) and row["Avg."] == pytest.approx(want_avg)
    assert row["ties"] == pytest.approx(100 * b["tie"].mean())
    paper = pd.read_csv(studies_study.PAPER_DIR / "table2.csv")
    want_paper = paper[(paper["benchmark"] == "blimp_filtered") & (paper["method"] == "DWML")]["best_reported"].item()
    assert row["paper (Table 2)"] == pytest.approx(want_paper)
    cell = t6i[(t6i["method"] == "dwml") & (t6i["group"] == "AS")].iloc[0]
    assert cell["ci_low"] <= cell["accuracy"] <= cell["ci_high"] and cell["seeds"] == 2
    assert list(out["table8_ewok"].columns[1:3]) == ["SR", "SpR"]
    assert (tmp_path / "table7_supplement.md").is_file() and (tmp_path / "table8_ewok_intervals.csv").is_file()


def test_tables_6_to_8_are_skipped_for_the_synthetic_suite():
    scores = fake_scores({"synthetic": [("agreement", "agreement")]})
    assert baselines.per_group_tables(scores) == {}


@pytest.mark.data
def test_real_suites_group_every_paradigm_task_and_domain_exactly_once(shared_data):
    from dwml.evaluate import load_suites

    loaded = load_suites(shared_data)
    columns = {"blimp": suites.PHENOMENON_COLUMNS, "supplement": suites.SUPPLEMENT_COLUMNS, "ewok": suites.EWOK_COLUMNS}
    files = {"blimp": sorted(p.stem for p in (shared_data / "blimp_filtered").glob("*.jsonl")),
             "supplement": sorted(p.stem for p in (shared_data / "supplement_filtered").glob("*.jsonl"))}
    frame = pd.DataFrame([{"suite": p.suite, "task": p.task, "phenomenon": p.phenomenon, "pair_id": p.pair_id}
                          for pairs in loaded.values() for p in pairs])
    grouped = reports.with_groups(frame)
    for suite, part in grouped.groupby("suite"):
        per_task = part.groupby("task")["group"].nunique()
        assert (per_task == 1).all(), f"{suite}: a task in two groups"
        assert set(part["group"]) <= set(columns[suite]), f"{suite}: groups outside the paper's columns"
        if suite in files:
            assert sorted(part["task"].unique()) == files[suite]
    assert grouped[grouped["suite"] == "ewok"]["task"].nunique() == len(suites.EWOK_COLUMNS)
    assert set(grouped[grouped["suite"] == "blimp"]["group"]) == set(suites.PHENOMENON_COLUMNS)
    # through the tables: each task counted once, each pair once
    scores = frame.assign(method="dwml", seed=0, peer=1, correct=frame["pair_id"] % 2 == 0, tie=False)
    out = baselines.per_group_tables(scores, n_boot=10)
    for suite, (name, _) in baselines.GROUP_TABLES.items():
        cells = out[f"{name}_intervals"]
        groups = cells[cells["group"] != "Avg."]
        n_tasks = grouped[grouped["suite"] == suite]["task"].nunique()
        assert groups["n_tasks"].sum() == n_tasks == cells[cells["group"] == "Avg."]["n_tasks"].item()
        assert groups["n_pairs"].sum() == (grouped["suite"] == suite).sum()


# ----------------------------------------------------------------------------------------------------
# what each published bug costs


def test_published_bug_settings_switch_each_bug_alone_and_all_together():
    sections = {"data": {"packing": "packed"}, "train": {"learning_rate": 1e-3}}
    s = published_bugs.bug_settings(sections)
    assert list(s) == ["corrected", "corrected_blocks", "token_file", "hypergradient", "kl", "all"]
    assert s["corrected"] == sections and s["corrected_blocks"]["data"]["packing"] == "blocks"
    assert s["hypergradient"]["train"] == {"learning_rate": 1e-3, "published_hypergradient": True}
    assert s["token_file"]["data"] == {"packing": "blocks", "published_token_file": True}
    assert s["all"]["train"]["published_kl"] and s["all"]["train"]["published_hypergradient"]
    assert s["all"]["data"]["published_token_file"]
    assert sections == {"data": {"packing": "packed"}, "train": {"learning_rate": 1e-3}}  # not modified
    assert "corrected_blocks" not in published_bugs.bug_settings({"data": {"packing": "blocks"}})
    assert list(published_bugs.bug_settings(sections, ["kl"])) == ["corrected", "kl"]
    with pytest.raises(ValueError, match="unknown published bug"):
        published_bugs.bug_settings(sections, ["nope"])


def test_published_bug_table_on_fake_score_frames():
    tasks = {"blimp": [("p1", "anaphor_agreement"), ("p2", "binding")]}
    frames = [fake_scores(tasks, methods=("dwml",), seed=k, n=40).assign(setting=name)
              for k, name in enumerate(["corrected", "corrected_blocks", "token_file", "kl"])]
    scores = pd.concat(frames, ignore_index=True)
    t = published_bugs.bug_table(scores, n_boot=500).set_index("setting")
    assert list(t.index) == ["corrected", "corrected_blocks", "token_file", "kl"]
    assert t.loc["token_file", "reference"] == "corrected_blocks" and t.loc["kl", "reference"] == "corrected"
    # the difference by hand: best peer per seed (the higher macro accuracy), macro over tasks, mean over seeds
    def macro_best(name):
        part = scores[scores["setting"] == name]
        by = part.groupby(["seed", "peer", "task"])["correct"].mean().groupby(["seed", "peer"]).mean()
        return 100 * by.groupby("seed").max().mean()
    assert t.loc["kl", "accuracy"] == pytest.approx(macro_best("kl"))
    assert t.loc["kl", "difference"] == pytest.approx(macro_best("kl") - macro_best("corrected"))
    assert t.loc["token_file", "difference"] == pytest.approx(macro_best("token_file") - macro_best("corrected_blocks"))
    row = t.loc["kl"]
    assert row["ci_low"] < row["difference"] < row["ci_high"]
    assert row["seed_ci_low"] < row["difference"] < row["seed_ci_high"]
    assert np.isnan(t.loc["corrected"].get("difference", np.nan))
    with pytest.raises(ValueError, match="no 'corrected'"):
        published_bugs.bug_table(scores[scores["setting"] == "kl"])


@pytest.mark.slow
def test_published_bug_runs_on_the_ci_profile(tmp_path):
    """End to end on the ci profile's settings (one seed): every setting trains, scores the same pairs, and
    the table pairs each bug with its reference."""
    from dwml import runner

    prof = runner.load_profile("ci")
    study = studies_study.setup(prof["data"], prof["search"], prof["train"], tmp_path / "runs", prof["suites"],
                                prof["max_pairs_per_task"], prof.get("suite_dirs"))
    scores = published_bugs.bug_runs(study.sections, study.archs, study.meta, [0], tmp_path / "runs", study.pairs,
                                  study.cfg.eval, progress=False)
    assert set(scores["setting"]) == {"corrected", "corrected_blocks", "token_file", "hypergradient", "kl", "all"}
    assert (tmp_path / "runs" / "dwml_seed0").is_dir() and (tmp_path / "runs" / "dwml_bug-all_seed0").is_dir()
    t = published_bugs.bug_table(scores, n_boot=100)
    assert set(t["setting"]) == set(scores["setting"])
    # one row a (setting, suite): the ci profile scores the synthetic pairs and their Zorro-format copy
    assert set(t.loc[t["setting"] == "token_file", "reference"]) == {"corrected_blocks"}


def test_published_bug_runs_budget_of_its_own(monkeypatch):
    """With train_overrides every setting, 'corrected' included, trains under them in a folder of its own;
    blocks_overrides reach only the settings that cut blocks. Without, 'corrected' is the profile's run."""
    calls = []

    def fake_train(secs, prep, archs, meta, method, seed, run_root, tag="", progress=True, train_overrides=None):
        calls.append((tag, secs["data"].get("packing"), dict(train_overrides or {})))
        return None

    monkeypatch.setattr(published_bugs, "train_run", fake_train)
    monkeypatch.setattr(published_bugs, "score_run", lambda res, pairs, eval_cfg: pd.DataFrame({"correct": [True]}))
    monkeypatch.setattr(published_bugs, "prepare_corpus", lambda cfg, progress=True: None)
    sections = {"data": {"packing": "packed"}, "search": {}, "train": {}}
    published_bugs.bug_runs(sections, [], {}, [0], "runs", {}, progress=False)
    assert ("", "packed", {}) in calls and all(tag != "bug-corrected" for tag, _, _ in calls)
    calls.clear()
    scores = published_bugs.bug_runs(sections, [], {}, [0], "runs", {}, progress=False,
                                  train_overrides={"num_epochs": 5}, blocks_overrides={"batch_size": 2})
    got = {tag: (packing, o) for tag, packing, o in calls}
    assert got == {"bug-corrected": ("packed", {"num_epochs": 5}),
                   "bug-corrected_blocks": ("blocks", {"num_epochs": 5, "batch_size": 2}),
                   "bug-token_file": ("blocks", {"num_epochs": 5, "batch_size": 2}),
                   "bug-hypergradient": ("packed", {"num_epochs": 5}),
                   "bug-kl": ("packed", {"num_epochs": 5}),
                   "bug-all": ("blocks", {"num_epochs": 5, "batch_size": 2})}
    assert list(scores["setting"]) == ["corrected", "corrected_blocks", "token_file", "hypergradient", "kl", "all"]
