"""dwml.config: the champion defaults and clear errors."""
from __future__ import annotations

import pytest

from dwml.config import Config, ConfigError

# The published champion peer's hyperparameters (model card of arXiv 2411.16487).
CHAMPION = dict(weight_decay=0.1, beta1=0.9, beta2=0.95, bayesian_init_points=10, bayesian_n_iter=100,
                grad_clip=1.0, prune_importance="l1", layer_bound=0.9, batch_size=3, block_size=512,
                num_epochs=100, loss_alpha=0.5, num_batches=60, warmup_iters=5, learning_rate=0.05,
                lr_decay_iters=200, min_lr=0.005, enable_early_stopping=True)


def test_defaults_are_the_champion():
    cfg = Config()
    flat = {**vars(cfg.data), **vars(cfg.search), **vars(cfg.train)}
    for key, value in CHAMPION.items():
        assert flat[key] == value, key


def test_champion_matches_the_model_card_when_present():
    from pathlib import Path

    card = Path(__file__).resolve().parents[2] / "shared" / "paper" / "model_card.md"
    if not card.is_file():
        pytest.skip("../shared/paper/model_card.md not found")
    text = card.read_text()
    for key, value in CHAMPION.items():
        shown = f"'{value}'" if isinstance(value, str) else str(value)
        assert f"| {key} | {shown} |" in text, key


def test_from_dict_overrides_and_coerces():
    cfg = Config.from_dict(train={"learning_rate": "1e-3", "min_lr": 1e-4, "num_epochs": 20.0}, data={"lowercase": "false"})
    assert cfg.train.learning_rate == 1e-3 and cfg.train.num_epochs == 20 and cfg.data.lowercase is False
    assert cfg.train.beta2 == 0.95
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("sections, match", [
    ({"train": {"loss_alpha": 1.5}}, "train.loss_alpha"),
    ({"train": {"learnig_rate": 1.0}}, "train.learnig_rate"),
    ({"trian": {}}, "trian"),
    ({"train": {"num_epochs": 2.5}}, "train.num_epochs"),
    ({"data": {"vocab_size": 100}}, "data.vocab_size"),
    ({"search": {"num_peers": 0}}, "search.num_peers"),
    ({"train": {"method": "pkd"}}, "train.method"),
])
def test_bad_values_name_the_parameter(sections, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_dict(sections)


def test_json_round_trip(tmp_path):
    cfg = Config.from_dict(train={"seed": 3})
    cfg.to_json(tmp_path / "c.json")
    assert Config.from_json(tmp_path / "c.json") == cfg


def test_mixed_precision_auto_resolves_by_device():
    import torch

    from dwml.config import Config, ConfigError
    from dwml.model import cpu_has_native_bf16, use_bf16

    assert Config.from_dict(train={"mixed_precision": "auto"}).train.mixed_precision == "auto"
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        Config.from_dict(train={"mixed_precision": "fast"}).validate()
    assert use_bf16(True, "cpu") is True and use_bf16(False, "cpu") is False
    amd = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    sapphire = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert not cpu_has_native_bf16(amd) and cpu_has_native_bf16(sapphire)
    assert use_bf16("auto", "cpu") == cpu_has_native_bf16()
    if torch.cuda.is_available():
        assert use_bf16("auto", "cuda") == torch.cuda.is_bf16_supported()
