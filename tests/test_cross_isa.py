"""benchmarks/bench_cross_isa.py's comparison of two run folders, on folders made here (no training): the same
folder is the same bytes with every decision kept; a moved weight and a flipped pair are seen and counted."""
from __future__ import annotations

import importlib.util
import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_cross_isa", ROOT / "benchmarks" / "bench_cross_isa.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(folder, weights, correct):
    """A run folder with one peer's weights and its scores on 2 tasks x 2 pairs."""
    (folder / "peer_0").mkdir(parents=True)
    save_file(weights, str(folder / "peer_0" / "model.safetensors"))
    rows = [{"suite": "synthetic", "task": f"t{i // 2}", "pair_id": i % 2, "peer": 1, "score_good": -1.0,
             "score_bad": -2.0 if c else -0.5, "correct": c} for i, c in enumerate(correct)]
    pd.DataFrame(rows).to_csv(folder / "scores.csv", index=False)
    return folder


def test_the_same_folder_compares_equal(bench, tmp_path):
    w = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    ref = _run(tmp_path / "ref" / "mlm_seed0", w, [True, False, True, True])
    new = tmp_path / "new" / "mlm_seed0"
    shutil.copytree(ref, new)
    (row,) = bench.compare(ref, new)
    assert row["same bytes"] and row["files differing"] == 0 and row["max |weight diff|"] == 0
    assert row["reference macro %"] == row["this level macro %"] == 75.0  # (50 + 100) / 2, macro over tasks
    assert row["same decisions %"] == 100 and row["pairs"] == 4


def test_a_moved_weight_and_a_flipped_pair_are_counted(bench, tmp_path):
    w = {"a": torch.zeros(2, 3)}
    moved = {"a": torch.zeros(2, 3)}
    moved["a"][1, 2] = -0.25
    ref = _run(tmp_path / "ref" / "mlm_seed0", w, [True, False, True, True])
    new = _run(tmp_path / "new" / "mlm_seed0", moved, [True, True, True, True])
    (row,) = bench.compare(ref, new)
    assert not row["same bytes"] and row["files differing"] == 2  # the weights and the scores
    assert row["max |weight diff|"] == pytest.approx(0.25)
    assert row["this level macro %"] == 100.0 and row["difference (points)"] == 25.0
    assert row["same decisions %"] == 75.0


def test_other_pairs_are_refused(bench, tmp_path):
    w = {"a": torch.zeros(1)}
    ref = _run(tmp_path / "ref" / "mlm_seed0", w, [True, True, True, True])
    new = _run(tmp_path / "new" / "mlm_seed0", w, [True, True])
    with pytest.raises(ValueError, match="scores other pairs"):
        bench.compare(ref, new)
