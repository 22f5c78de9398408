"""Typed hyperparameters for every stage of the method.

Every field documents one hyperparameter, in the manner of Hugging Face's ``run_mlm.py``. The defaults
are the *champion peer's* published values (the model card of arXiv 2411.16487; also
``../shared/paper/model_card.md``):

    weight_decay 0.1, beta1 0.9, beta2 0.95, bayesian_init_points 10, bayesian_n_iter 100,
    grad_clip 1.0, prune_importance 'l1', layer_bound 0.9, batch_size 3, block_size 512,
    num_epochs 100, loss_alpha 0.5, num_batches 60, warmup_iters 5, learning_rate 0.05,
    lr_decay_iters 200, min_lr 0.005, enable_early_stopping True.

Two caveats a reader should know before trusting those defaults:

* ``prune_importance`` and ``layer_bound`` are leftovers of the pruning method of Zhang et al. (2022),
  which this method replaces by a Bayesian architecture search (``dwml.search``). They are kept so that
  a config round-trips the published one, and nothing in ``dwml`` reads them.
* ``learning_rate = 0.05`` is an unusually high AdamW learning rate for transformers of this size
  (1e-4 to 1e-3 is conventional). Profiles may override it, and ``notebooks/04_ablations`` compares the
  published schedule with a conventional one.

How the published "epoch" maps onto steps and tokens: one epoch is one optimizer step made of
``num_batches`` accumulated micro-batches, each ``batch_size`` blocks of ``block_size`` tokens, so
60 x 3 x 512 = 92,160 tokens a step and 100 epochs = 100 steps = 9.2M tokens, about one pass over the
BabyLM 10M corpus. Note ``lr_decay_iters = 200 > num_epochs = 100``: the published cosine schedule never
reaches ``min_lr``.

A :class:`Config` groups the sections; :meth:`Config.from_dict` builds one from a (papermill / YAML)
mapping and names any unknown key, and :meth:`Config.validate` checks ranges with errors that name the
parameter.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """A hyperparameter has a bad value; the message names it (``section.field``)."""


# The method registry, name -> class: dwml.methods fills it (@register) and is its only writer. It sits on this
# floor so that Config can check train.method without importing the methods (floor 3, torch); before
# dwml.methods is imported it is empty, no method can be built, and make_method checks the name again.
METHODS: dict[str, type] = {}


def check_alpha(alpha: float, name: str = "alpha (train.loss_alpha)") -> float:
    """``alpha`` as a float, or :class:`ConfigError` naming it if it is outside [0, 1] (or NaN)."""
    a = float(alpha)
    if not 0.0 <= a <= 1.0:  # also False for NaN
        raise ConfigError(f"{name}={alpha!r}: a in eq. 2 must lie in [0, 1]")
    return a


@dataclass
class DataConfig:
    """Corpus, tokenizer and masked-LM batches (``dwml.corpus``, ``dwml.tokenizer``, ``dwml.tokens``, ``dwml.batches``, ``dwml.synthetic``)."""

    corpus: str = "synthetic"
    """'synthetic' for the embedded grammar corpus that the package generates, or the path of a folder
    in the BabyLM layout (``*.train`` / ``*.dev`` / ``*.test`` text files, e.g. ``../shared/data/corpus``)."""
    synthetic_words: int = 1_000_000
    """Size of the generated training corpus in words (the dev split is a tenth of it)."""
    synthetic_seed: int = 0
    """Seed of the synthetic corpus generator: the same seed gives the same corpus byte for byte."""
    synthetic_lexicon: int = 0
    """Keep only the first (most frequent) this-many words of every word list of the synthetic grammar, in
    the corpus and its minimal pairs alike; 0 keeps the full lexicon (~300 content words, 808 types)."""
    vocab_size: int = 8192
    """Byte-level BPE vocabulary size, the five RoBERTa special tokens included."""
    min_frequency: int = 2
    """A BPE merge needs a pair seen at least this often."""
    lowercase: bool = True
    """Lower-case text in the tokenizer's normaliser (saved with it, so it applies at load time too)."""
    drop_markers: bool = False
    """Drop CHILDES markers of unintelligible speech (``xxx``, ``yyy``, ``www``) while reading."""
    block_size: int = 512
    """Tokens per training block, ``<s>`` and ``</s>`` included (published: 512); with ``packing='lines'``
    the longest sequence (longer utterances are cut), with 'packed' the width of a packed row."""
    packing: str = "blocks"
    """How training sequences are cut from the token stream: 'blocks' (random contiguous blocks of
    ``block_size`` tokens across utterance boundaries, the published recipe) or 'lines' (one utterance per
    sequence, padded: a small model learns to use context far sooner than on random blocks; see
    ``docs/decisions.md``) or 'packed' (the same utterances as 'lines', several whole ones a row, each
    attending only to itself: the same computation on fewer positions; ``dwml.batches.pack_lines``)."""
    length_grouping: int = 1
    """With ``packing='lines'`` or 'packed': draw this many batches' worth of utterances at once, sort them by length
    and cut them into batches served in random order, so that a batch pads to about its own length
    (Hugging Face's ``group_by_length``). 1 draws every batch independently. Utterances are still drawn
    uniformly; only which ones share a batch changes. Faster steps, but batches of only short or only long
    utterances learn worse, so the profiles keep 1 (``docs/decisions.md``)."""
    mlm_probability: float = 0.15
    """Share of (non-special) tokens selected for prediction (BERT: 0.15)."""
    mask_replace_prob: float = 0.8
    """Of the selected tokens, the share replaced by ``<mask>``."""
    random_replace_prob: float = 0.1
    """Of the selected tokens, the share replaced by a random token; the rest are kept unchanged."""
    cache_dir: str = ".cache/dwml"
    """Where token caches and tokenizers are written (one sub-folder per corpus fingerprint)."""
    published_token_file: bool = False
    """Train on the token stream as the published code ends up reading it (off: the corrected stream). Its
    tokenizer script writes the list of ids as printed text (``str(ids)``, e.g. ``[0, 412, 9]``) and its
    loader reads that file back as binary ``uint16``, so each id it trains on is a pair of characters of
    that text (digits, commas, spaces, brackets), never a word piece (``dwml.tokens.published_token_stream``).
    Needs ``packing='blocks'``: the stream has no utterance boundaries left."""


@dataclass
class SearchConfig:
    """Peer architecture search (``dwml.search``), paper section 3.1."""

    teacher_layers: int = 12
    """Teacher depth; RoBERTa-base shape by default."""
    teacher_hidden: int = 768
    """Teacher width."""
    teacher_heads: int = 12
    """Teacher attention heads."""
    num_peers: int = 4
    """Number of peers p; peer i targets N / (i + 1) parameters, i = 1..p."""
    method: str = "bayes"
    """'bayes' (``bayes_opt``, the paper's) or 'exhaustive' (the exact grid reference)."""
    bayesian_init_points: int = 10
    """Random probes before the Gaussian-process search starts (published: 10)."""
    bayesian_n_iter: int = 100
    """Gaussian-process-guided probes per peer (published: 100)."""
    min_layers: int = 1
    """Smallest depth searched."""
    max_layers: int = 12
    """Largest depth searched."""
    min_heads: int = 1
    """Fewest attention heads searched."""
    max_heads: int = 16
    """Most attention heads searched."""
    min_hidden: int = 64
    """Narrowest hidden size searched."""
    max_hidden: int = 1024
    """Widest hidden size searched."""
    seed: int = 0
    """Seed of the search: a rerun with the same seed returns the same peers on the same machine (the Gaussian
    process's floating point differs between CPUs, and with it the probes; ``pinned`` fixes the result)."""
    pinned: str = ""
    """A peer file kept with the project (e.g. ``figures/peers.json``): where it exists and was searched under
    these settings, every run uses its peers instead of this machine's search, so a profile trains the same
    peers on any machine; where it does not exist, the first search writes it (``dwml.search.ensure_peers``)."""
    prune_importance: str = "l1"
    """Leftover of the pruning method of Zhang et al. (2022); unused here (no pruning)."""
    layer_bound: float = 0.9
    """Leftover of the pruning method of Zhang et al. (2022); unused here (no pruning)."""


@dataclass
class TrainConfig:
    """The one training loop (``dwml.train``) and the bi-level method (``dwml.bilevel``)."""

    method: str = "dwml"
    """The name of a registered training method (``dwml.methods``; the names are the keys of :data:`METHODS`)."""
    learning_rate: float = 0.05
    """Peak AdamW learning rate (published: 0.05, unusually high; see the module docstring)."""
    min_lr: float = 0.005
    """Learning rate at the end of the cosine decay."""
    warmup_iters: int = 5
    """Optimizer steps of linear warm-up from 0 to ``learning_rate``."""
    lr_decay_iters: int = 200
    """Optimizer step at which the cosine reaches ``min_lr`` (constant afterwards)."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to matrices only (not biases or LayerNorm)."""
    beta1: float = 0.9
    """AdamW first-moment decay."""
    beta2: float = 0.95
    """AdamW second-moment decay."""
    grad_clip: float = 1.0
    """Clip each peer's gradient norm to this (0 disables)."""
    batch_size: int = 3
    """Blocks per micro-batch."""
    num_batches: int = 60
    """Micro-batches accumulated per optimizer step (one published 'epoch' is one step)."""
    chunk_size: int = 1
    """Micro-batches run as one forward/backward pass (a chunk), each keeping its own per-token mean
    (``dwml.batches.merge_batches``): the same objective as one pass each, in fewer, larger matrix products.
    Capped at ``num_batches``."""
    num_epochs: int = 100
    """Optimizer steps to run (the published 'epochs')."""
    max_tokens: int = 0
    """If > 0, stop once this many training tokens were seen (overrides ``num_epochs`` when smaller)."""
    loss_alpha: float = 0.5
    """a in eq. 2: weight of peer (KL) supervision against label (CE) supervision, in [0, 1]."""
    temperature: float = 1.0
    """Softmax temperature T of the peers' distributions in the KL terms."""
    detach_targets: bool = True
    """Treat the peer targets p_j in KL(p_j || p_i) as constants (deep mutual learning's convention)."""
    weight_update_frequency: int = 5
    """Inner (optimizer) steps between two outer mirror-descent steps on the peer weights w."""
    step_size: float = 0.25
    """Initial mirror-descent step eta (eq. 4), annealed like the learning rate."""
    min_step_size: float = 0.0025
    """Final mirror-descent step eta."""
    ensemble: str = "mixture"
    """Ensemble of the outer loss L2: 'mixture' (sum_i w_i p_i) or 'logits' (softmax of sum_i w_i z_i)."""
    hypergrad_mode: str = "jvp"
    """'jvp' (exact, forward-mode AD) or 'fd' (central finite difference along grad L2)."""
    outer_grad: str = "reuse"
    """Where the outer step's unrolled inner step theta' = theta - lr grad L1 takes its gradient from:
    'reuse' (the inner step's own backward, at the same theta, w and batch; the outer step then runs between
    that backward and the optimizer step and costs one forward + backward less) or 'recompute' (a fresh
    forward + backward in eval mode on a separate training micro-batch, after the optimizer step)."""
    teacher_dir: str = ""
    """Folder of a saved teacher (``save_pretrained``) for a method that uses one (its class's ``uses_teacher``, e.g. kd)."""
    eval_interval: int = 10
    """Evaluate on dev batches every this many optimizer steps."""
    eval_batches: int = 8
    """Dev micro-batches per evaluation."""
    enable_early_stopping: bool = True
    """Stop when the dev ensemble loss has not improved for ``patience`` evaluations."""
    patience: int = 5
    """Evaluations without improvement before early stopping."""
    seed: int = 0
    """Seed of parameters, batches and masks."""
    device: str = "auto"
    """'auto' (CUDA if present), 'cpu' or 'cuda[:n]'."""
    dropout: float | None = None
    """If set, the hidden and attention dropout of every peer (written into each model's config, so the
    saved peers carry it); None keeps what the models were built with (Hugging Face's 0.1). Dropout
    regularises long runs; a few hundred steps on a small corpus are far from overfitting, and there it
    only slows learning (the default profile's 0.0: ``docs/decisions.md``)."""
    mixed_precision: bool | str = False
    """bf16 autocast of the forward passes: True, False, or 'auto', which turns it on where the device
    computes bf16 natively (CUDA with bf16 support; a CPU with AVX512-BF16 or AMX) and off elsewhere, where
    bf16 is emulated and several times slower than fp32 (``dwml.model.use_bf16``). A run records what
    'auto' resolved to. Weights, optimiser states and the hypergradient stay fp32."""
    compile: bool = False
    """``torch.compile`` each peer's encoder and LM head and the loss over the vocabulary (inductor, on CUDA or
    the CPU) with dynamic shapes. The outer step runs them eagerly (forward-mode AD; ``docs/decisions.md``)."""
    tf32: bool = False
    """Let float32 matmuls of the inner step (forward, backward, evaluation) round to TF32 on CUDA. The
    outer step always runs in IEEE float32 (``dwml.precision``); on the CPU this does nothing."""
    loss_rows: int = 8192
    """Predicted positions per slice of the loss over the vocabulary (``dwml.losses.fused_ce_kl``): with
    more positions than this the loss runs slice by slice, recomputing each slice's softmax in the
    backward pass, so that no [peers, positions, vocab] float32 tensor is kept; 0: never slice."""
    prefetch: int = 0
    """Optimizer steps' batches built ahead on a background thread (``dwml.prefetch``), pinned and copied
    without blocking on CUDA; the same batches in the same order as without it. 0: built in series."""
    checkpoint_interval: int = 50
    """Write a resumable checkpoint every this many optimizer steps (and at the end)."""
    log_interval: int = 1
    """Write a metrics line every this many optimizer steps."""
    published_hypergradient: bool = False
    """Replace the outer step (eq. 3, 4) by the published code's (off: the corrected one). Its La is a
    detached copy, so the second term of eq. 3 is identically zero (and is added with a + where eq. 3 has
    a -); what is left is dL2/dw_k of its linear ensemble loss sum_k w_k CE_k, i.e. each peer's dev
    cross-entropy divided by ``num_batches``, clamped to [0, ``grad_clip``], then one exponentiated-gradient
    step, repeated on ``num_batches`` fresh dev batches (``dwml.bilevel.published_outer_step``)."""
    published_kl: bool = False
    """Scale the peer KL terms of eq. 2 as the published code does (off: a mean per predicted token). It
    calls ``kl_div(..., reduction='batchmean')`` on [rows, positions, vocab]: the KL summed over every
    (non-padding) position of a micro-batch, masked or not, divided by its number of rows only (about
    ``block_size`` times the CE's scale with blocks of 512). Needs ``chunk_size=1``."""
    nproc: int = 1
    """Processes (GPUs) of the run, data parallel (``dwml.distributed``); ``batch_size`` is each one's
    micro-batch, so a step holds ``nproc`` times the tokens. > 1: ``dwml.runs`` starts the run with
    torchrun; ``python -m dwml.train`` under torchrun sets it to the launch's world size."""


@dataclass
class EvalConfig:
    """Zero-shot minimal-pair evaluation (``dwml.evaluate``)."""

    reduction: str = "sum"
    """How token log-probabilities combine into a sentence PLL: 'sum' or 'mean'."""
    batch_size: int = 128
    """Masked copies per forward pass."""
    max_pairs_per_paradigm: int = 0
    """If > 0, a seeded subsample of at most this many pairs per paradigm (documented in reports)."""
    dtype: str = "float32"
    """'float32' (exact) or 'bfloat16' (faster on CPUs with AMX and on GPUs)."""
    bootstrap: int = 1000
    """Bootstrap resamples for the 95% intervals."""


SECTIONS = {"data": DataConfig, "search": SearchConfig, "train": TrainConfig, "eval": EvalConfig}


@dataclass
class Config:
    """All sections together; ``Config()`` is the champion configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None = None, **sections: Mapping[str, Any] | None) -> "Config":
        """Build from ``{"data": {...}, "train": {...}}`` (or keyword sections), champion defaults elsewhere.

        Unknown sections or fields raise :class:`ConfigError` naming them; values are coerced to the
        field's type (so YAML's ``1e-3`` string or an int for a float field are accepted)."""
        merged: dict[str, Any] = dict(d or {})
        merged.update({k: v for k, v in sections.items() if v is not None})
        unknown = set(merged) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; expected {sorted(SECTIONS)}")
        built = {name: _build_section(name, klass, merged.get(name) or {}) for name, klass in SECTIONS.items()}
        cfg = cls(**built)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        from dwml.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def from_json(cls, path: str | Path) -> "Config":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first parameter out of its range."""
        d, s, t, e = self.data, self.search, self.train, self.eval
        for section in SECTIONS:  # every field of its declared type; no NaN or infinity anywhere
            _check_types(section, getattr(self, section))
        for name, value in (("data.synthetic_seed", d.synthetic_seed), ("search.seed", s.seed), ("train.seed", t.seed)):
            _check(0 <= value <= SEED_MAX, name, value, f"must be in [0, {SEED_MAX}] (numpy and bayes_opt take 32-bit seeds)")
        _check(d.min_frequency >= 1, "data.min_frequency", d.min_frequency, "must be >= 1")
        for name in ("teacher_layers", "teacher_hidden", "teacher_heads", "min_layers", "min_heads", "min_hidden"):
            _check(getattr(s, name) >= 1, f"search.{name}", getattr(s, name), "must be >= 1")
        for lo, hi in (("min_layers", "max_layers"), ("min_heads", "max_heads"), ("min_hidden", "max_hidden")):
            _check(getattr(s, hi) >= getattr(s, lo), f"search.{hi}", getattr(s, hi), f"must be >= search.{lo}={getattr(s, lo)}")
        _check(s.teacher_hidden % s.teacher_heads == 0, "search.teacher_hidden", s.teacher_hidden,
               f"must be divisible by search.teacher_heads={s.teacher_heads}")
        _check(s.bayesian_init_points >= 0, "search.bayesian_init_points", s.bayesian_init_points, "must be >= 0")
        _check(s.bayesian_n_iter >= 0, "search.bayesian_n_iter", s.bayesian_n_iter, "must be >= 0")
        for name in ("beta1", "beta2"):
            _check(0.0 <= getattr(t, name) < 1.0, f"train.{name}", getattr(t, name), "must be in [0, 1) (AdamW)")
        _check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
        _check(t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0: no clipping)")
        _check(e.batch_size >= 1, "eval.batch_size", e.batch_size, "must be >= 1")
        _check(e.max_pairs_per_paradigm >= 0, "eval.max_pairs_per_paradigm", e.max_pairs_per_paradigm, "must be >= 0 (0: all)")
        _check(e.bootstrap >= 1, "eval.bootstrap", e.bootstrap, "must be >= 1 (resamples of the 95% intervals)")
        _check(d.vocab_size >= 5 + 256, "data.vocab_size", d.vocab_size,
               "must hold the 5 special tokens and the 256 byte-level symbols (>= 261)")
        _check(d.block_size >= 3, "data.block_size", d.block_size, "must be >= 3 (<s>, a token, </s>)")
        _check(0.0 < d.mlm_probability < 1.0, "data.mlm_probability", d.mlm_probability, "must be in (0, 1)")
        _check(0.0 <= d.mask_replace_prob and 0.0 <= d.random_replace_prob
               and d.mask_replace_prob + d.random_replace_prob <= 1.0,
               "data.mask_replace_prob/random_replace_prob", (d.mask_replace_prob, d.random_replace_prob),
               "must be >= 0 and sum to <= 1")
        _check(d.synthetic_words > 0, "data.synthetic_words", d.synthetic_words, "must be > 0")
        _check(t.mixed_precision in (True, False, "auto"), "train.mixed_precision", t.mixed_precision,
               "must be true, false or 'auto'")
        _check(d.packing in ("blocks", "lines", "packed"), "data.packing", d.packing,
               "must be 'blocks', 'lines' or 'packed'")
        _check(d.length_grouping >= 1, "data.length_grouping", d.length_grouping, "must be >= 1 (1: off)")
        _check(d.synthetic_lexicon >= 0, "data.synthetic_lexicon", d.synthetic_lexicon, "must be >= 0 (0: full lexicon)")
        _check(s.num_peers >= 1, "search.num_peers", s.num_peers, "must be >= 1")
        _check(s.method in ("bayes", "exhaustive"), "search.method", s.method, "must be 'bayes' or 'exhaustive'")
        check_alpha(t.loss_alpha, "train.loss_alpha")
        _check(t.method in METHODS or not METHODS, "train.method", t.method, f"must be one of {', '.join(METHODS)}")
        _check(t.learning_rate > 0 and math.isfinite(t.learning_rate), "train.learning_rate", t.learning_rate, "must be > 0")
        _check(0 <= t.min_lr <= t.learning_rate, "train.min_lr", t.min_lr, "must be in [0, learning_rate]")
        _check(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be >= 1")
        _check(isinstance(t.nproc, int) and not isinstance(t.nproc, bool) and t.nproc >= 1, "train.nproc", t.nproc,
               "must be an integer >= 1")
        # The loop divides by the intervals and runs num_epochs steps: 0 or less cannot run.
        for name in ("num_epochs", "eval_interval", "log_interval", "checkpoint_interval", "eval_batches", "patience"):
            value = getattr(t, name)
            _check(isinstance(value, int) and value >= 1, f"train.{name}", value, "must be an integer >= 1")
        _check(t.max_tokens >= 0, "train.max_tokens", t.max_tokens, "must be >= 0 (0: no token limit)")
        _check(t.warmup_iters >= 0, "train.warmup_iters", t.warmup_iters, "must be >= 0")
        _check(t.lr_decay_iters >= 1, "train.lr_decay_iters", t.lr_decay_iters, "must be >= 1")
        _check(isinstance(t.device, str) and _DEVICE.fullmatch(t.device) is not None, "train.device", t.device,
               "must be 'auto', 'cpu', 'cuda' or 'cuda:N' (the devices the loop can resolve)")
        _check(t.num_batches >= 1, "train.num_batches", t.num_batches, "must be >= 1")
        _check(t.chunk_size >= 1, "train.chunk_size", t.chunk_size, "must be >= 1")
        _check(t.loss_rows >= 0, "train.loss_rows", t.loss_rows,
               "must be an integer >= 0 (0: the loss over the vocabulary in one piece)")
        _check(0 <= t.prefetch <= 64, "train.prefetch", t.prefetch,
               "must be an integer in [0, 64] (steps built ahead; 0: none)")
        _check(t.temperature > 0, "train.temperature", t.temperature, "must be > 0")
        _check(t.weight_update_frequency >= 1, "train.weight_update_frequency", t.weight_update_frequency, "must be >= 1")
        _check(t.ensemble in ("mixture", "logits"), "train.ensemble", t.ensemble, "must be 'mixture' or 'logits'")
        _check(t.hypergrad_mode in ("jvp", "fd"), "train.hypergrad_mode", t.hypergrad_mode, "must be 'jvp' or 'fd'")
        _check(t.dropout is None or (isinstance(t.dropout, (int, float)) and not isinstance(t.dropout, bool)
                                      and 0.0 <= t.dropout < 1.0), "train.dropout", t.dropout, "must be in [0, 1) or null")
        _check(t.outer_grad in ("reuse", "recompute"), "train.outer_grad", t.outer_grad,
               "must be 'reuse' or 'recompute'")
        _check(0 <= t.min_step_size <= t.step_size, "train.min_step_size", t.min_step_size, "must be in [0, step_size]")
        _check(not d.published_token_file or d.packing == "blocks", "data.published_token_file", d.published_token_file,
               "needs data.packing='blocks' (the published stream has no utterance boundaries)")
        _check(not t.published_kl or t.chunk_size == 1, "train.published_kl", t.published_kl,
               "needs train.chunk_size=1 (its KL divides by the rows of each micro-batch)")
        _check(e.reduction in ("sum", "mean"), "eval.reduction", e.reduction, "must be 'sum' or 'mean'")
        _check(e.dtype in ("float32", "bfloat16"), "eval.dtype", e.dtype, "must be 'float32' or 'bfloat16'")


_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
SEED_MAX = 2**31 - 1
"""Largest seed a setting may hold: the loop adds small offsets, and numpy and ``bayes_opt`` take 32-bit seeds."""


def _is_int(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


_TYPE_CHECKS = {"int": (_is_int, "an integer"), "float": (_is_real, "a finite number"),
                "bool": (lambda v: isinstance(v, bool), "true or false"), "str": (lambda v: isinstance(v, str), "a string"),
                "float | None": (lambda v: v is None or _is_real(v), "a finite number or null")}


def _check_types(section: str, obj: Any) -> None:
    """Each field of a section holds its declared type: integers are not booleans, numbers are finite
    (``grad_clip: .nan`` would turn clipping off, and the run could then never resume: NaN != NaN)."""
    for f in fields(obj):
        check = _TYPE_CHECKS.get(str(f.type))
        if check is not None and not check[0](getattr(obj, f.name)):
            raise ConfigError(f"{section}.{f.name}={getattr(obj, f.name)!r}: must be {check[1]}")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (the option's name is added by argparse)."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def seed_int(text: str) -> int:
    """An argparse type: a seed in [0, SEED_MAX]."""
    value = _int_at_least(text, 0)
    if value > SEED_MAX:
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r}: must be at most {SEED_MAX}")
    return value


def _int_at_least(text: str, low: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer >= {low}")
    return value


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: {why}")


def _build_section(name: str, klass: type, values: Mapping[str, Any]):
    if not isinstance(values, Mapping):
        raise ConfigError(f"config section {name!r} must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(klass)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {sorted(f'{name}.{u}' for u in unknown)}; "
                          f"known: {sorted(known)}")
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _coerce(f"{name}.{key}", known[key], value)
    return klass(**kwargs)


def _coerce(qualname: str, f: dataclasses.Field, value: Any) -> Any:
    default = f.default
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    if "str" in str(f.type):  # a bool-or-word field ('auto'): validate() checks the word
                        return value
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(value, bool) and isinstance(default, (int, float)):  # YAML's true is not the number 1
            raise ValueError(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{qualname}={value!r}: expected {type(default).__name__}") from None
    return value
