"""dwml.runs: run folders named and parsed back, one run trained (refusals, learning-curve points that leave
the run unchanged, the torchrun launch), every method over seeds with the teacher first."""
from __future__ import annotations

import subprocess
import types
import pytest

from dwml import runs, scoring


def test_teacher_arch_and_run_names():
    meta = {"teacher": {"layers": 4, "hidden": 192, "heads": 4, "params": 2237696}}
    a = runs.teacher_arch(meta)
    assert (a.num_layers, a.hidden_size, a.num_heads, a.intermediate_size, a.params) == (4, 192, 4, 768, 2237696)
    assert runs.run_name("dwml", 2) == "dwml_seed2" and runs.run_name("dwml", 0, "alpha0.3") == "dwml_alpha0.3_seed0"


def test_run_folder_and_its_seed_parsed_back(tmp_path):
    d = runs.run_folder(tmp_path, "kd_dwml", 12, "bug-kl")
    assert d == tmp_path / "kd_dwml_bug-kl_seed12" and runs.run_seed(d) == 12
    assert runs.run_seed(runs.run_folder("r", "dwml", 0)) == 0
    with pytest.raises(ValueError, match="not a run folder name"):
        runs.run_seed(tmp_path / "dwml_seedless")


def test_peers_for_asks_the_search_for_this_corpus(monkeypatch, tmp_path):
    """The one call of the peer search: the run root's peers.json, the tokenizer's size and fingerprint, the
    block size plus its two special positions."""
    seen = {}
    monkeypatch.setattr(runs, "ensure_peers", lambda *a, **k: seen.update(args=a, kw=k) or (["p"], {"m": 1}))
    monkeypatch.setattr(runs, "tokenizer_fingerprint", lambda tok: f"fp{len(tok)}")
    cfg = types.SimpleNamespace(search="S", data=types.SimpleNamespace(block_size=30, vocab_size=700))
    prep = types.SimpleNamespace(tokenizer=[0] * 650)
    assert runs.peers_for(cfg, prep, tmp_path) == (["p"], {"m": 1})
    assert seen["args"] == (tmp_path / "peers.json", "S", 650, 32)
    assert seen["kw"] == {"data_vocab_size": 700, "tokenizer": "fp650"}


def test_train_run_refuses_overrides_without_a_tag_and_kd_without_teacher(tmp_path):
    with pytest.raises(ValueError, match="need a tag"):
        runs.train_run({}, None, [], {}, "dwml", 0, tmp_path, train_overrides={"loss_alpha": 0.3})
    with pytest.raises(ValueError, match="teacher_dir"):
        runs.train_run({}, None, [], {}, "kd", 0, tmp_path)


def test_launch_run_starts_torchrun_and_names_a_failure(monkeypatch, tmp_path):
    calls = []

    def run(cmd, capture_output, text):
        calls.append(cmd)
        return types.SimpleNamespace(returncode=calls[-1].count("--no-progress"), stderr="rank 1: boom")

    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(runs, "read_metrics", lambda d: "metrics")
    res = runs.launch_run({"train": {"nproc": 2}, "other": {}}, "dml", 3, tmp_path, tmp_path / "dml_seed3", 2,
                          num_peers=2)
    cmd = calls[0]
    assert cmd[cmd.index("--nproc_per_node=2") - 1] == "--standalone" and cmd[cmd.index("-m", 3) + 1] == "dwml.train"
    assert cmd[cmd.index("--num-peers") + 1] == "2" and "--teacher-dir" not in cmd and "--max-steps" not in cmd
    assert (tmp_path / "dml_seed3.launch.json").read_text().strip().startswith("{")
    assert "other" not in (tmp_path / "dml_seed3.launch.json").read_text()
    assert res.done is False and res.history == "metrics"
    with pytest.raises(RuntimeError, match="(?s)on 2 processes failed \\(exit 1\\).*rank 1: boom"):
        runs.launch_run({"train": {}}, "dml", 3, tmp_path, tmp_path / "dml_seed3", 2, progress=False)


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

    curved = runs.train_run(sections, prep, archs, meta, "dml", 0, tmp_path / "a", progress=False,
                         curve_steps=[4, 2, 99], curve_pairs=pairs)
    plain = runs.train_run(sections, prep, archs, meta, "dml", 0, tmp_path / "b", progress=False)
    for da, db in zip(curved.peer_dirs, plain.peer_dirs):
        a, b = AutoModelForMaskedLM.from_pretrained(da), AutoModelForMaskedLM.from_pretrained(db)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    scoring.score_run(curved, pairs)
    curve = runs.learning_curve([curved.run_dir])
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
        runs.train_run(sections, prep, archs, meta, "dml", 1, tmp_path / "c", progress=False, curve_steps=[2])


def test_train_methods_trains_the_teacher_first_and_hands_it_on(monkeypatch):
    calls = []
    study = runs.Study(sections={"train": {}}, cfg=None, prep="P", archs=["a1"], meta={"m": 1}, pairs={})

    def train_run(sections, prep, archs, meta, method, seed, run_root, *, teacher_dir="", **kw):
        calls.append((method, seed, teacher_dir, kw))
        return types.SimpleNamespace(peer_dirs=[f"{method}{seed}/peer_0", f"{method}{seed}/peer_1"])

    monkeypatch.setattr(runs, "train_run", train_run)
    results = runs.train_methods(study, ["sd", "kd", "dwml"], [3, 1], "root", curve_steps=[5])
    # mlm is trained first in each seed although not listed (kd learns from it), and only kd reads its teacher_dir
    assert [(m, s, t) for m, s, t, _ in calls] == [
        ("mlm", 3, ""), ("sd", 3, "mlm3/peer_0"), ("kd", 3, "mlm3/peer_0"), ("dwml", 3, "mlm3/peer_0"),
        ("mlm", 1, ""), ("sd", 1, "mlm1/peer_0"), ("kd", 1, "mlm1/peer_0"), ("dwml", 1, "mlm1/peer_0")]
    assert all(kw == {"curve_steps": [5]} for *_, kw in calls)
    assert list(results) == [("sd", 3), ("kd", 3), ("dwml", 3), ("sd", 1), ("kd", 1), ("dwml", 1)]
    assert results["kd", 1].peer_dirs[0] == "kd1/peer_0"
    calls.clear()
    runs.train_methods(study, ["dml", "dwml"], [0], "root")
    assert [(m, t) for m, _, t, _ in calls] == [("dml", ""), ("dwml", "")]  # no teacher needed, none trained


def test_runs_table_and_model_params():
    res = {("mlm", 0): types.SimpleNamespace(summary={"steps": 10, "elapsed_s": 90.0, "stopped_early": False,
                                                      "final_dev_ensemble": 4.5}, weights=None, run_dir="r/mlm_seed0"),
           ("dwml", 0): types.SimpleNamespace(summary={"steps": 8, "elapsed_s": 30.0, "stopped_early": True,
                                                       "final_dev_ensemble": 4.0}, weights=[0.6, 0.4], run_dir="r/dwml_seed0")}
    table = runs.runs_table(res)
    assert table.to_dict("list") == {"method": ["mlm", "dwml"], "seed": [0, 0], "steps": [10, 8], "minutes": [1.5, 0.5],
                                    "stopped_early": [False, True], "final_dev_ensemble": [4.5, 4.0],
                                    "weights": [None, [0.6, 0.4]]}
    meta = {"teacher": {"layers": 4, "hidden": 192, "heads": 4, "params": 2237696}}
    archs = [types.SimpleNamespace(params=900), types.SimpleNamespace(params=500)]
    assert runs.model_params(["mlm", "dwml"], archs, meta) == {("mlm", 1): 2237696, ("dwml", 1): 900,
                                                                      ("dwml", 2): 500}
