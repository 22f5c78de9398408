"""Shared fixtures: a small synthetic corpus and its tokenizer, built once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

import dwml.methods  # noqa: F401  (fills the method registry that Config checks train.method against)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The precision decisions of ``train.mixed_precision: auto`` (dwml.precision) cached in the session's
    temporary folder, never in the user's ``~/.cache`` (spawned workers inherit the environment)."""
    saved = os.environ.get("DWML_CACHE_DIR")
    os.environ["DWML_CACHE_DIR"] = str(tmp_path_factory.mktemp("dwml-cache"))
    yield
    if saved is None:
        os.environ.pop("DWML_CACHE_DIR", None)
    else:
        os.environ["DWML_CACHE_DIR"] = saved


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
    from dwml.corpus import read_corpus
    from dwml.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(read_corpus(small_corpus, "train"), vocab_size=600, out_dir=out)
    return out


def tiny_train_config(block: int, packing: str = "lines", **train):
    """A ``Config`` for a few CPU steps of DWML on the 600-token test vocabulary (``train``: overrides)."""
    from dwml.config import Config

    base = dict(method="dwml", learning_rate=3e-3, min_lr=3e-4, warmup_iters=1, lr_decay_iters=10, batch_size=6,
                num_batches=4, num_epochs=3, weight_update_frequency=2, eval_interval=100, eval_batches=1,
                checkpoint_interval=100, step_size=0.5, min_step_size=0.05, device="cpu", dropout=0.0)
    data = {"corpus": "unused", "vocab_size": 600, "block_size": block, "packing": packing}
    return Config.from_dict(data=data, train={**base, **train})


def flat_params(models):
    """Every tensor of the models' state dicts, detached copies in order (to compare runs)."""
    return [p.detach().clone() for m in models for p in m.state_dict().values()]


def saved_tiny_roberta(out: Path, lines, vocab_size: int = 300) -> Path:
    """A tiny RoBERTa masked LM with our byte-level BPE tokenizer trained on ``lines``, saved to ``out`` like any
    Hugging Face model; its LM-head bias is random (seed 0) so that pseudo-log-likelihoods differ between sentences."""
    import torch

    from dwml.tokenizer import train_tokenizer

    tok = train_tokenizer(lines, vocab_size=vocab_size, out_dir=out, min_frequency=1)
    torch.manual_seed(0)
    model = tiny_roberta(len(tok), layers=2, hidden=32, heads=2, positions=130)
    with torch.no_grad():
        model.lm_head.bias.normal_(0, 1.0)
    model.save_pretrained(out)
    return out


class SyncCounter(TorchDispatchMode):
    """Counts the aten ops that read a value back to the host (``.item()``, ``bool(t)``, boolean-mask indexing) or
    need a data-dependent shape (``nonzero``); ``paused`` stops the count (a test's own reads)."""

    SYNCING = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.is_nonzero")

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import torch

        name = str(func.overloadpacket)
        if not self.paused:
            if name in self.SYNCING:
                self.seen.append(name)
            elif name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_"):
                # a boolean (mask) index is a nonzero inside the kernel: its result's size depends on the data
                if any(torch.is_tensor(i) and i.dtype == torch.bool for i in (args[1] or ()) if i is not None):
                    self.seen.append(name + "[bool]")
        return func(*args, **(kwargs or {}))
