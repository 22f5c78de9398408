"""Peer search: the closed-form count against real models, the searches against brute force, bad input."""
from __future__ import annotations

import dataclasses

import itertools
import json
import random

import pytest
import torch
from transformers import RobertaConfig, RobertaForMaskedLM

from dwml import search
from dwml.model import build_peer, build_peers
from dwml.config import SearchConfig


def real_count(**config) -> int:
    """Parameters of a real RobertaForMaskedLM, built on the meta device (shapes only, no memory)."""
    cfg = RobertaConfig(tie_word_embeddings=True, pad_token_id=1, bos_token_id=0, eos_token_id=2, **config)
    with torch.device("meta"):
        model = RobertaForMaskedLM(cfg)
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied matrix once


def test_roberta_base_golden_value():
    # RoBERTa-base at its own vocabulary: 124,697,433 parameters (Hugging Face's "roberta-base", 125M)
    real = real_count(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1)
    assert real == 124_697_433
    assert search.teacher_params(50265) == real
    assert search.count_params(12, 768, 12, 50265) == real


def test_count_params_matches_real_models():
    rng = random.Random(0)
    for _ in range(24):
        heads = rng.randint(1, 8)
        hidden = heads * rng.randint(1, 24)
        kw = dict(num_layers=rng.randint(1, 4), hidden_size=hidden, num_heads=heads, vocab_size=rng.randint(5, 700),
                  max_position_embeddings=rng.randint(3, 140), type_vocab_size=rng.randint(1, 2))
        # half the models take an intermediate size other than 4 x hidden
        inter = rng.choice([None, rng.randint(1, 300)])
        real = real_count(vocab_size=kw["vocab_size"], hidden_size=hidden, num_hidden_layers=kw["num_layers"],
                          num_attention_heads=heads, intermediate_size=inter or 4 * hidden,
                          max_position_embeddings=kw["max_position_embeddings"], type_vocab_size=kw["type_vocab_size"])
        assert search.count_params(intermediate_size=inter, **kw) == real, kw


def test_built_peer_has_the_searched_count():
    peers = search.search_peers(search.teacher_params(300, 2, 64, 2, 34), 2, 300, "exhaustive", max_layers=2,
                           max_hidden=64, min_hidden=8, max_heads=4, max_position_embeddings=34)
    for arch in peers:
        model = build_peer(arch, 300, max_position_embeddings=34)
        assert sum(p.numel() for p in model.parameters()) == arch.params
        assert model.lm_head.decoder.weight is model.roberta.embeddings.word_embeddings.weight
        assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (1, 0, 2)


def test_count_params_rejects_indivisible_hidden():
    with pytest.raises(search.SearchError, match="hidden_size=100 is not divisible by num_heads=3"):
        search.count_params(2, 100, 3, 500)
    with pytest.raises(search.SearchError, match="num_layers"):
        search.count_params(0, 64, 2, 500)


def test_targets_follow_eq_1():
    assert search.peer_targets(120, 4) == [60, 40, 30, 24]


def brute_force_best(target, bounds: search.Bounds, counts) -> int:
    """Smallest |params - target| over every valid architecture, by plain loops and the scalar count."""
    best = None
    for layers, heads, hidden in itertools.product(range(bounds.min_layers, bounds.max_layers + 1),
                                                   range(bounds.min_heads, bounds.max_heads + 1),
                                                   range(bounds.min_hidden, bounds.max_hidden + 1)):
        if hidden % heads or (hidden // heads) % bounds.head_dim_multiple:
            continue
        miss = abs(search.count_params(layers, hidden, heads, **counts) - target)
        best = miss if best is None else min(best, miss)
    return best


@pytest.mark.parametrize("multiple", [1, 8])
def test_exhaustive_is_exact_on_the_grid(multiple):
    counts = dict(vocab_size=2048, max_position_embeddings=130, type_vocab_size=1)
    bounds = search.Bounds(1, 6, 1, 8, 32, 384, multiple)
    teacher = search.teacher_params(2048, 6, 384, 6, 130)
    peers = search.search_peers(teacher, 4, 2048, "exhaustive", max_position_embeddings=130,
                           **{k: getattr(bounds, k) for k in search.Bounds.__dataclass_fields__})
    for arch, target in zip(peers, search.peer_targets(teacher, 4)):
        assert arch.target == target
        assert abs(arch.params - target) == brute_force_best(target, bounds, counts)
        assert arch.hidden_size % arch.num_heads == 0 and arch.head_dim % multiple == 0
        assert arch.params == search.count_params(arch.num_layers, arch.hidden_size, arch.num_heads, **counts)
        assert arch.rel_error == pytest.approx((arch.params - target) / target)


def test_bayes_is_valid_seeded_and_no_better_than_exact():
    kw = dict(max_layers=6, max_heads=8, min_hidden=32, max_hidden=384, max_position_embeddings=130,
              init_points=4, n_iter=6)
    teacher = search.teacher_params(2048, 6, 384, 6, 130)
    first = search.search_peers(teacher, 3, 2048, "bayes", seed=1, **kw)
    again = search.search_peers(teacher, 3, 2048, "bayes", seed=1, **kw)
    assert first == again  # same seed, same peers, same traces
    exact = search.search_peers(teacher, 3, 2048, "exhaustive", **kw)
    for arch, ref in zip(first, exact):
        assert arch.hidden_size % arch.num_heads == 0 and arch.head_dim % 8 == 0
        assert 1 <= arch.num_layers <= 6 and 1 <= arch.num_heads <= 8 and 32 <= arch.hidden_size <= 384
        assert abs(arch.rel_error) >= abs(ref.rel_error)
        assert len(arch.trace) == arch.evaluations and 1 <= arch.evaluations <= 10
        assert min(arch.trace) == pytest.approx(abs(arch.rel_error))


def test_every_bayes_proposal_is_valid(monkeypatch):
    seen = []
    original = search._arch

    def spy(layers, heads, hidden, *args):
        seen.append((layers, heads, hidden))
        return original(layers, heads, hidden, *args)

    monkeypatch.setattr(search, "_arch", spy)
    # bounds where most head counts admit few hidden sizes: 2..7 heads, hidden 60..130, head size % 4
    search.search_peers(10**6, 2, 1000, "bayes", min_layers=2, max_layers=3, min_heads=2, max_heads=7, min_hidden=60,
                   max_hidden=130, head_dim_multiple=4, init_points=8, n_iter=4, max_position_embeddings=34)
    assert len(seen) >= 8
    for layers, heads, hidden in seen:
        assert 2 <= layers <= 3 and 2 <= heads <= 7 and 60 <= hidden <= 130
        assert hidden % heads == 0 and (hidden // heads) % 4 == 0


def test_save_and_load_round_trip(tmp_path):
    cfg = SearchConfig(teacher_layers=2, teacher_hidden=64, teacher_heads=2, max_layers=2, max_hidden=64,
                       min_hidden=8, num_peers=2, bayesian_init_points=3, bayesian_n_iter=2)
    peers, meta = search.run_search(cfg, vocab_size=300, max_position_embeddings=34)
    path = search.save_peers(tmp_path / "peers.json", peers, meta)
    loaded, meta2 = search.load_peers(path)
    assert loaded == peers and meta2 == json.loads(json.dumps(meta))
    models = build_peers(loaded, meta2)
    assert [sum(p.numel() for p in m.parameters()) for m in models] == [a.params for a in peers]


def test_load_peers_names_the_file_and_entry(tmp_path):
    with pytest.raises(search.SearchError, match="no peer file"):
        search.load_peers(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(search.SearchError, match="bad.json: not valid JSON"):
        search.load_peers(bad)
    arch = search.PeerArch(2, 3, 96, 384, 1, 1, 0.0)
    search.save_peers(bad, [arch], {"vocab_size": 300, "max_position_embeddings": 34})
    doc = json.loads(bad.read_text())
    doc["peers"][0]["num_heads"] = 5
    bad.write_text(json.dumps(doc))
    with pytest.raises(search.SearchError, match=r"peers\[0\]: hidden_size=96 is not divisible by num_heads=5"):
        search.load_peers(bad)


def test_bounds_without_a_valid_architecture():
    with pytest.raises(search.SearchError, match="no valid architecture in bounds.*min_hidden=65"):
        search.search_peers(10**6, 2, 1000, min_heads=2, max_heads=2, min_hidden=65, max_hidden=79, head_dim_multiple=8)
    with pytest.raises(search.SearchError, match="max_layers=1: must be an integer >= min_layers=3"):
        search.search_peers(10**6, 2, 1000, min_layers=3, max_layers=1)


@pytest.mark.parametrize("num_peers", [0, -1])
def test_num_peers_must_be_positive(num_peers):
    with pytest.raises(search.SearchError, match=f"num_peers={num_peers}"):
        search.search_peers(10**6, num_peers, 1000)


def test_target_below_the_smallest_architecture():
    # 50 peers of a RoBERTa-base teacher: N/51 = 2.4M, below 1 layer x 64 wide at vocab 50,265 (3.3M)
    with pytest.raises(search.SearchError, match="num_peers=50 .* below the smallest architecture"):
        search.search_peers(search.teacher_params(50265), 50, 50265, "exhaustive")
    with pytest.raises(search.SearchError, match="above the largest architecture.*max_layers"):
        search.search_peers(search.teacher_params(50265), 1, 50265, "exhaustive", max_layers=2, max_hidden=256)


def test_unknown_method():
    with pytest.raises(search.SearchError, match="method='grid'"):
        search.search_peers(10**6, 2, 1000, "grid")


def test_tables_and_figures_show_the_search():
    import matplotlib

    matplotlib.use("Agg")
    from dwml.plots.search import plot_peer_shapes, plot_search_convergence

    kw = dict(max_layers=4, max_heads=4, min_hidden=32, max_hidden=256, max_position_embeddings=66,
              init_points=3, n_iter=2)
    teacher = search.teacher_params(600, 4, 256, 4, 66)
    bayes = search.search_peers(teacher, 2, 600, "bayes", **kw)
    exact = search.search_peers(teacher, 2, 600, "exhaustive", **kw)
    table = search.compare_table(search.peer_table(bayes, vocab=600), search.peer_table(exact, vocab=600))
    assert list(table["target"]) == search.peer_targets(teacher, 2)
    assert list(table["params_exhaustive"]) == [a.params for a in exact]
    assert table["rel_error_pct_bayes"].tolist() == pytest.approx([100 * a.rel_error for a in bayes])

    fig = plot_search_convergence({"v600": bayes}, {"v600": exact}, init_points=3)
    line = fig.axes[0].lines[0]
    running = [min(bayes[0].trace[: k + 1]) for k in range(len(bayes[0].trace))]
    assert list(line.get_ydata()) == pytest.approx([100 * max(r, 1e-6) for r in running])
    shapes = pd_concat([search.peer_table(bayes, vocab=600), search.peer_table(exact, vocab=600)])
    fig = plot_peer_shapes(shapes, {600: (256, 4)})
    points = {tuple(map(float, xy)) for c in fig.axes[0].collections for xy in c.get_offsets()}
    assert {(float(a.hidden_size), float(a.num_layers)) for a in bayes + exact} | {(256.0, 4.0)} == points


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_ensure_peers_searches_once_then_reads(tmp_path):
    from dwml.config import SearchConfig

    cfg = SearchConfig(teacher_layers=2, teacher_hidden=128, teacher_heads=2, num_peers=2, method="exhaustive")
    path = tmp_path / "peers.json"
    peers, meta = search.ensure_peers(path, cfg, vocab_size=600, max_position_embeddings=66)
    assert path.is_file() and len(peers) == 2 and meta["vocab_size"] == 600
    assert [p.target for p in peers] == search.peer_targets(meta["teacher"]["params"], 2)
    import json

    doc = json.loads(path.read_text())
    doc["peers"][0]["num_layers"] = changed = peers[0].num_layers % 12 + 1
    path.write_text(json.dumps(doc))
    again, _ = search.ensure_peers(path, cfg, vocab_size=600, max_position_embeddings=66)
    assert again[0].num_layers == changed  # read back, not searched again


def _tiny_search_cfg(**kw):
    from dwml.config import SearchConfig

    return SearchConfig(teacher_layers=2, teacher_hidden=128, teacher_heads=2, num_peers=2, method="bayes",
                        bayesian_init_points=2, bayesian_n_iter=2, min_layers=1, max_layers=3, max_heads=4,
                        max_hidden=256, **kw)


def test_a_pinned_peer_file_is_written_by_the_first_search_and_then_used_instead_of_searching(tmp_path, monkeypatch):
    pinned = tmp_path / "kept" / "peers.json"
    cfg = _tiny_search_cfg(pinned=str(pinned))
    first, _ = search.ensure_peers(tmp_path / "a" / "peers.json", cfg, vocab_size=600, max_position_embeddings=66)
    assert pinned.is_file() and search._shapes(search.load_peers(pinned)[0]) == search._shapes(first)
    # another machine: its search would find other peers (stand-in: a search that must not run)
    import json

    doc = json.loads(pinned.read_text())
    doc["peers"][1].update(num_layers=3, num_heads=2, hidden_size=64, intermediate_size=256)
    pinned.write_text(json.dumps(doc))
    monkeypatch.setattr(search, "run_search", lambda *a, **k: pytest.fail("searched despite the pinned file"))
    fresh = tmp_path / "b" / "peers.json"
    peers, _ = search.ensure_peers(fresh, cfg, vocab_size=600, max_position_embeddings=66)
    assert (peers[1].num_layers, peers[1].hidden_size) == (3, 64)
    assert search._shapes(search.load_peers(fresh)[0]) == search._shapes(peers)  # the run folder holds them too
    # a run folder searched on its own (other peers) is refused, naming both files
    with pytest.raises(search.SearchError, match=r"holds other peers than the pinned .*search.pinned"):
        search.ensure_peers(tmp_path / "a" / "peers.json", cfg, vocab_size=600, max_position_embeddings=66)


def test_a_pinned_file_of_other_settings_is_refused_naming_the_setting(tmp_path):
    pinned = tmp_path / "peers.json"
    search.ensure_peers(tmp_path / "a.json", _tiny_search_cfg(pinned=str(pinned)), vocab_size=600,
                        max_position_embeddings=66)
    with pytest.raises(search.SearchError, match=r"search.pinned.*search.num_peers: file 2, now 3"):
        search.ensure_peers(tmp_path / "b.json", dataclasses.replace(_tiny_search_cfg(pinned=str(pinned)), num_peers=3),
                            vocab_size=600, max_position_embeddings=66)


def test_ensure_peers_saves_a_search_already_run_instead_of_searching(tmp_path, monkeypatch):
    cfg = _tiny_search_cfg()
    found = search.run_search(cfg, 600, 66)
    monkeypatch.setattr(search, "run_search", lambda *a, **k: pytest.fail("searched again"))
    peers, meta = search.ensure_peers(tmp_path / "p.json", cfg, 600, 66, searched=found)
    assert search._shapes(peers) == search._shapes(found[0]) and meta["vocab_size"] == 600
