"""dwml.scoring: suites cut per task and every run scored (the cache and the kept peers: test_full_scoring.py;
the suites' folders: test_suites.py)."""
from __future__ import annotations

import types

import pandas as pd

from dwml import scoring


def test_subsample_suites_caps_each_task():
    from dwml.evaluate import MinimalPair

    pairs = [MinimalPair("synthetic", t, i, "g", "b") for t, n in (("x", 5), ("y", 2)) for i in range(n)]
    cut = scoring.subsample_suites({"synthetic": pairs}, 3)["synthetic"]
    assert [p.task for p in cut].count("x") == 3 and [p.pair_id for p in cut if p.task == "y"] == [0, 1]
    assert scoring.subsample_suites({"synthetic": pairs}, 0)["synthetic"] == pairs


def test_score_runs_scores_every_run_in_order(monkeypatch):
    res = {("mlm", 0): types.SimpleNamespace(run_dir="r/mlm_seed0"), ("dwml", 0): types.SimpleNamespace(run_dir="r/dwml_seed0")}
    monkeypatch.setattr(scoring, "score_run", lambda r, suites, eval_cfg: pd.DataFrame({"run": [r.run_dir] * 2,
                                                                                       "cfg": [eval_cfg] * 2}))
    scores = scoring.score_runs(res, {}, "E")
    assert scores["run"].tolist() == ["r/mlm_seed0"] * 2 + ["r/dwml_seed0"] * 2 and list(scores.index) == [0, 1, 2, 3]
    assert set(scores["cfg"]) == {"E"}
