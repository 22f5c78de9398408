"""Shared fixtures: a small synthetic corpus and its tokenizer, built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import dwml.methods  # noqa: F401  (fills the method registry that Config checks train.method against)

ROOT = Path(__file__).resolve().parents[1]


def tiny_roberta(vocab: int, layers: int = 1, hidden: int = 16, heads: int = 2, ffn: int | None = None,
                 positions: int = 36, dtype=None, **config):
    """A freshly initialised small ``RobertaForMaskedLM`` (``ffn``: 2 x hidden by default; ``config``: more
    ``RobertaConfig`` fields such as dropout or ``attn_implementation``); seed torch first."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    model = RobertaForMaskedLM(RobertaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=ffn or 2 * hidden, max_position_embeddings=positions, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, **config))
    return model if dtype is None else model.to(dtype)


def shared_data_root() -> Path | None:
    """``$DWML_DATA`` or ``../shared/data`` beside the checkout, if present."""
    env = os.environ.get("DWML_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not found: set DWML_DATA or place the BabyLM data at ../shared/data")
    return root


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if item.get_closest_marker("gpu"):  # the marker, not a keyword (a test id may contain "gpu")
                item.add_marker(skip)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    from dwml.synthetic import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus") / "synthetic", words=30_000, seed=3, n_pairs=20)


@pytest.fixture(scope="session")
def small_tokenizer(small_corpus, tmp_path_factory):
    from dwml.data import read_corpus, train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(read_corpus(small_corpus, "train"), vocab_size=600, out_dir=out)
    return out
