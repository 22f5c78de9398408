"""The GPU profiles at the paper's scale, checked on the CPU: their configuration validates, the search
finds peers of a RoBERTa-base-shaped teacher, and those models train one DWML step (with an outer step)
in blocks of 512 on a tiny stand-in corpus. The runs themselves need a GPU and the BabyLM corpus."""
from __future__ import annotations

import math

import pytest

from dwml import runner
from dwml.config import Config
from dwml.data import prepare_corpus
from dwml.model import build_peers
from dwml.search import run_search
from dwml.train import train


@pytest.mark.parametrize("name", ["babylm10m", "gpu"])
def test_paper_scale_profile_builds_its_models_and_trains_one_step(name, small_corpus, tmp_path):
    prof = runner.load_profile(name)
    data = {**prof["data"], "corpus": str(small_corpus), "cache_dir": str(tmp_path / "cache")}
    # The exact grid instead of the profile's 10 + 100 Bayesian probes (a minute on this CPU; the Bayesian
    # search is tested in test_search): the point here is the teacher's shape and the peers it implies.
    search = {**prof["search"], "method": "exhaustive"}
    # One optimizer step of one block on the CPU in fp32, with the outer step at that step (batch 1: the
    # profiles' batch of 3 took 32 s for this step here).
    steps = {"device": "cpu", "mixed_precision": False, "method": "dwml", "num_epochs": 1, "num_batches": 1,
             "batch_size": 1, "eval_batches": 1, "eval_interval": 1, "weight_update_frequency": 1,
             "warmup_iters": 0, "lr_decay_iters": 1, "compile": False}  # compiling 4 peers: minutes on 2 cores
    cfg = Config.from_dict(data=data, search=search, train={**prof.get("train", {}), **steps})
    assert (cfg.data.block_size, cfg.search.teacher_layers, cfg.search.teacher_hidden, cfg.search.teacher_heads,
            cfg.search.num_peers) == (512, 12, 768, 12, 4)

    prep = prepare_corpus(cfg.data, progress=False)
    vocab = len(prep.tokenizer)  # a 30k-word corpus fills far fewer tokens than the profile's vocabulary
    archs, meta = run_search(cfg.search, vocab, cfg.data.block_size + 2)
    teacher = meta["teacher"]["params"]
    assert all(abs(a.target - teacher / (i + 1)) <= 1 for i, a in enumerate(archs, start=1))  # N / (i + 1)
    assert all(abs(a.rel_error) < 0.05 for a in archs), [a.rel_error for a in archs]
    models = build_peers(archs, meta)
    assert [sum(p.numel() for p in m.parameters()) for m in models] == [a.params for a in archs]

    res = train(cfg, prep, models, tmp_path / "run", progress=False)
    assert res.summary["steps"] == 1 and res.summary["tokens"] == cfg.train.batch_size * 512
    assert res.weights != [0.25] * 4 and math.isclose(sum(res.weights), 1.0, rel_tol=1e-6)  # the outer step ran
    rows = res.history[res.history["kind"] == "train"]
    assert len(rows) == 1 and all(math.isfinite(x) for x in rows["ce"].iloc[0] + rows["kl"].iloc[0])
