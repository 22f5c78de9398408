"""Peer architecture search: student i of p gets about N / (i + 1) parameters (paper eq. 1, section 3.1).

The paper replaces the pruning of Zhang et al. (2022) by a search: for a teacher of N parameters, peer i
(i = 1..p) is the RoBERTa architecture (layers, attention heads, hidden size) whose parameter count is
closest to N_i = N / (i + 1), found with Bayesian optimisation (``bayes_opt``). Three things differ from the
published search, each for a reason:

* The count is closed form (:func:`count_params`), not a Hugging Face model built per evaluation: it is
  exact (a test compares it with ``sum(p.numel())`` of real models) and takes microseconds, which also
  makes an exhaustive reference search over the whole integer grid affordable.
* Every proposal is a valid architecture by construction, so there is no -1e6 penalty (which scored an
  invalid shape above a valid one missing its target by more than 1M parameters). The optimiser moves over
  ``num_layers`` (integer), ``heads_index`` (integer, indexing the head counts that admit at least one
  hidden size in bounds) and ``hidden_size`` (continuous), and the hidden size is snapped to the nearest
  multiple of ``heads x head_dim_multiple`` inside ``[min_hidden, max_hidden]``.
* The objective is the relative error -|params - N_i| / N_i, bounded and comparable across targets.

``head_dim_multiple`` (default 8) restricts the size of one head to multiples of 8: GPU matrix units work on
tiles of 8 or 16, and RoBERTa's own head is 64 wide. The grid stays dense enough that the best architecture
misses its target by well under 1% at the paper's scale (``notebooks/01_peer_search``).

Diversity. The paper wants diverse peers but its search asks only for a parameter count, and so does this
one: peers differ because their targets differ, not because anything rewards different shapes. The count
does not depend on the number of heads at all (heads only split the hidden size), so heads are decided by
divisibility alone. Where several architectures tie exactly, the exhaustive search prefers the head size
closest to RoBERTa's 64, then fewer layers, then fewer heads; the Bayesian search keeps the first best
architecture it evaluated. Nothing else is added.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dwml.config import SearchConfig
from dwml.io import atomic_write_json, project_path
from dwml.model import roberta_config

PAPER_VOCAB_SIZE = 50265
"""RoBERTa's (and the BabyLM baselines') byte-level BPE vocabulary."""
ROBERTA_HEAD_DIM = 64
"""RoBERTa-base's head size (768 / 12); the exhaustive search breaks exact ties towards it."""
PEERS_FORMAT = 1
_SEARCH_DEFAULTS = SearchConfig()


class SearchError(ValueError):
    """Bad search bounds, targets or peer file; the message names the parameter or the file."""


# --------------------------------------------------------------------------------------------------
# Counting parameters
# --------------------------------------------------------------------------------------------------

def _count(num_layers, hidden_size, intermediate_size, vocab_size, max_position_embeddings, type_vocab_size):
    """The count of :func:`count_params` as plain arithmetic, so it also runs on numpy integer arrays."""
    h, i = hidden_size, intermediate_size
    # word, position and token-type embeddings + their LayerNorm (weight, bias)
    embeddings = (vocab_size + max_position_embeddings + type_vocab_size) * h + 2 * h
    # per layer: Q, K, V and output projections with biases, two LayerNorms, the two feed-forward layers
    layer = 4 * (h * h + h) + 2 * (2 * h) + (h * i + i) + (i * h + h)
    # MLM head: dense + LayerNorm; the decoder matrix is tied to the word embeddings, its bias (vocab) is not
    head = (h * h + h) + 2 * h + vocab_size
    return embeddings + num_layers * layer + head


def count_params(num_layers: int, hidden_size: int, num_heads: int, vocab_size: int,
                 intermediate_size: int | None = None, max_position_embeddings: int = 514,
                 type_vocab_size: int = 1) -> int:
    """Exact parameter count of ``RobertaForMaskedLM`` with the decoder tied to the word embeddings.

    No model is built. ``intermediate_size=None`` means ``4 * hidden_size`` (RoBERTa's ratio). The count
    does not depend on ``num_heads``; it is checked only because ``hidden_size`` must divide into heads.
    RoBERTa-base's shape at vocab 50,265 gives 124,697,433."""
    for name, value, low in (("num_layers", num_layers, 1), ("hidden_size", hidden_size, 1),
                             ("num_heads", num_heads, 1), ("vocab_size", vocab_size, 1),
                             ("max_position_embeddings", max_position_embeddings, 1),
                             ("type_vocab_size", type_vocab_size, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise SearchError(f"{name}={value!r}: must be an integer >= {low}")
    if hidden_size % num_heads:
        raise SearchError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    if intermediate_size is None:
        intermediate_size = 4 * hidden_size
    if not isinstance(intermediate_size, (int, np.integer)) or intermediate_size < 1:
        raise SearchError(f"intermediate_size={intermediate_size!r}: must be an integer >= 1")
    return int(_count(int(num_layers), int(hidden_size), int(intermediate_size), int(vocab_size),
                      int(max_position_embeddings), int(type_vocab_size)))


def teacher_params(vocab_size: int, layers: int = 12, hidden: int = 768, heads: int = 12,
                   max_position_embeddings: int = 514) -> int:
    """N of eq. 1: the parameters of the teacher (RoBERTa-base's shape by default) at ``vocab_size``."""
    return count_params(layers, hidden, heads, vocab_size, max_position_embeddings=max_position_embeddings)


def peer_targets(teacher: int, num_peers: int) -> list[int]:
    """Eq. 1: N_i = N / (i + 1) for i = 1..p, rounded to whole parameters."""
    if not isinstance(num_peers, (int, np.integer)) or num_peers < 1:
        raise SearchError(f"num_peers={num_peers!r}: must be an integer >= 1")
    return [round(teacher / (i + 1)) for i in range(1, num_peers + 1)]


# --------------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------------

@dataclass
class PeerArch:
    """One searched peer: its shape, its count and how far the count is from its target (eq. 1)."""

    num_layers: int
    num_heads: int
    hidden_size: int
    intermediate_size: int
    params: int
    target: int
    rel_error: float
    """(params - target) / target; signed."""
    method: str = ""
    evaluations: int = 0
    """Parameter counts the search computed for this peer (the whole grid for 'exhaustive')."""
    trace: list[float] = field(default_factory=list)
    """|relative error| of each evaluation in order (Bayesian search only), for convergence plots."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_roberta_config(self, vocab_size: int, max_position_embeddings: int = 514, **overrides):
        """A ``RobertaConfig`` of this shape (``dwml.model.roberta_config``); ``dwml.model.build_peer``
        builds the model."""
        return roberta_config(self.num_layers, self.num_heads, self.hidden_size, self.intermediate_size,
                              vocab_size, max_position_embeddings, **overrides)


def _arch(layers: int, heads: int, hidden: int, target: int, counts: dict, method: str) -> PeerArch:
    params = count_params(layers, hidden, heads, **counts)
    return PeerArch(num_layers=int(layers), num_heads=int(heads), hidden_size=int(hidden),
                    intermediate_size=4 * int(hidden), params=params, target=int(target),
                    rel_error=(params - target) / target, method=method)


# --------------------------------------------------------------------------------------------------
# The search space
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Bounds:
    """The integer search space: layers x heads x hidden, hidden a multiple of heads x head_dim_multiple."""

    min_layers: int = _SEARCH_DEFAULTS.min_layers
    max_layers: int = _SEARCH_DEFAULTS.max_layers
    min_heads: int = _SEARCH_DEFAULTS.min_heads
    max_heads: int = _SEARCH_DEFAULTS.max_heads
    min_hidden: int = _SEARCH_DEFAULTS.min_hidden
    max_hidden: int = _SEARCH_DEFAULTS.max_hidden
    head_dim_multiple: int = 8

    def __post_init__(self):
        for name in ("min_layers", "min_heads", "min_hidden", "head_dim_multiple"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise SearchError(f"{name}={value!r}: must be an integer >= 1")
        for lo, hi in (("min_layers", "max_layers"), ("min_heads", "max_heads"), ("min_hidden", "max_hidden")):
            if not isinstance(getattr(self, hi), (int, np.integer)) or getattr(self, hi) < getattr(self, lo):
                raise SearchError(f"{hi}={getattr(self, hi)!r}: must be an integer >= {lo}={getattr(self, lo)}")
        if not self.valid_heads():
            raise SearchError(
                f"no valid architecture in bounds: no head count in [min_heads={self.min_heads}, "
                f"max_heads={self.max_heads}] divides a hidden size in [min_hidden={self.min_hidden}, "
                f"max_hidden={self.max_hidden}] into heads of a multiple of head_dim_multiple="
                f"{self.head_dim_multiple}; widen min_hidden/max_hidden or the head range")

    def hidden_range(self, heads: int) -> tuple[int, int, int]:
        """(step, smallest, largest) hidden size for ``heads`` heads; smallest > largest if none fits."""
        step = heads * self.head_dim_multiple
        return step, -(-self.min_hidden // step) * step, (self.max_hidden // step) * step

    def valid_heads(self) -> list[int]:
        """Head counts that admit at least one hidden size in bounds."""
        return [h for h in range(self.min_heads, self.max_heads + 1) if self.hidden_range(h)[1] <= self.hidden_range(h)[2]]

    def snap_hidden(self, heads: int, hidden: float) -> int:
        """The multiple of ``heads x head_dim_multiple`` in bounds nearest to ``hidden``."""
        step, lo, hi = self.hidden_range(heads)
        return int(min(max(math.floor(hidden / step + 0.5) * step, lo), hi))

    def grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every valid (layers, heads, hidden) as three int64 arrays."""
        pairs = [(h, d) for h in self.valid_heads() for d in range(*self._inclusive(h))]
        heads, hidden = (np.array(x, dtype=np.int64) for x in zip(*pairs))
        layers = np.arange(self.min_layers, self.max_layers + 1, dtype=np.int64)
        return (np.repeat(layers, len(pairs)), np.tile(heads, len(layers)), np.tile(hidden, len(layers)))

    def _inclusive(self, heads: int) -> tuple[int, int, int]:
        step, lo, hi = self.hidden_range(heads)
        return lo, hi + 1, step

    def extremes(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """The smallest and largest (layers, heads, hidden) in bounds (the count grows with both)."""
        spans = {h: self.hidden_range(h) for h in self.valid_heads()}
        h_small = min(spans, key=lambda h: (spans[h][1], h))
        h_large = max(spans, key=lambda h: (spans[h][2], -h))
        return ((self.min_layers, h_small, spans[h_small][1]), (self.max_layers, h_large, spans[h_large][2]))


def _check_targets(targets: list[int], teacher: int, bounds: Bounds, counts: dict) -> None:
    (l0, h0, d0), (l1, h1, d1) = bounds.extremes()
    smallest, largest = count_params(l0, d0, h0, **counts), count_params(l1, d1, h1, **counts)
    for i, t in enumerate(targets, start=1):
        if t < smallest:
            raise SearchError(
                f"num_peers={len(targets)} with teacher_params={teacher:,}: target N/{i + 1} = {t:,} is below "
                f"the smallest architecture in bounds ({l0} layers, hidden {d0}: {smallest:,} parameters at "
                f"vocab_size={counts['vocab_size']}); lower min_layers/min_hidden or num_peers")
        if t > largest:
            raise SearchError(
                f"teacher_params={teacher:,}: target N/{i + 1} = {t:,} is above the largest architecture in "
                f"bounds ({l1} layers, hidden {d1}: {largest:,} parameters at vocab_size="
                f"{counts['vocab_size']}); raise max_layers/max_hidden")


# --------------------------------------------------------------------------------------------------
# The two searches
# --------------------------------------------------------------------------------------------------

def _exhaustive(target: int, bounds: Bounds, counts: dict, grid) -> PeerArch:
    layers, heads, hidden = grid
    params = _count(layers, hidden, 4 * hidden, **counts)
    miss = np.abs(params - target)
    # np.lexsort sorts by its last key first: |error|, then head size nearest 64, then layers, then heads
    best = np.lexsort((heads, layers, np.abs(hidden // heads - ROBERTA_HEAD_DIM), miss))[0]
    arch = _arch(layers[best], heads[best], hidden[best], target, counts, "exhaustive")
    arch.evaluations = len(layers)
    return arch


def _bayes(target: int, bounds: Bounds, counts: dict, init_points: int, n_iter: int, seed: int) -> PeerArch:
    from bayes_opt import BayesianOptimization

    heads_list = bounds.valid_heads()
    evaluated: list[PeerArch] = []

    def objective(num_layers, heads_index, hidden_size):
        heads = heads_list[round(heads_index)]
        arch = _arch(round(num_layers), heads, bounds.snap_hidden(heads, hidden_size), target, counts, "bayes")
        evaluated.append(arch)
        return -abs(arch.rel_error)

    # All three move continuously and are rounded here: bayes_opt's integer parameters (experimental in 3.x)
    # switch its acquisition search to differential evolution, 10x slower and no better on this problem.
    # The +-0.5 margins give the end values of layers and heads the same share of the box as the others.
    pbounds = {"num_layers": (bounds.min_layers - 0.499, bounds.max_layers + 0.499),
               "heads_index": (-0.499, len(heads_list) - 0.501),
               "hidden_size": (float(bounds.min_hidden), float(bounds.max_hidden))}
    opt = BayesianOptimization(objective, pbounds, random_state=seed, verbose=0)
    opt.maximize(init_points=init_points, n_iter=n_iter)
    best = min(evaluated, key=lambda a: abs(a.rel_error))  # min() keeps the first of equal errors
    return dataclasses.replace(best, evaluations=len(evaluated), trace=[abs(a.rel_error) for a in evaluated])


def search_peers(teacher_params: int, num_peers: int, vocab_size: int, method: str = "bayes", *,
                 min_layers: int = _SEARCH_DEFAULTS.min_layers, max_layers: int = _SEARCH_DEFAULTS.max_layers,
                 min_heads: int = _SEARCH_DEFAULTS.min_heads, max_heads: int = _SEARCH_DEFAULTS.max_heads,
                 min_hidden: int = _SEARCH_DEFAULTS.min_hidden, max_hidden: int = _SEARCH_DEFAULTS.max_hidden,
                 head_dim_multiple: int = 8, init_points: int = _SEARCH_DEFAULTS.bayesian_init_points,
                 n_iter: int = _SEARCH_DEFAULTS.bayesian_n_iter, seed: int = _SEARCH_DEFAULTS.seed,
                 max_position_embeddings: int = 514, progress: bool = False) -> list[PeerArch]:
    """The p peers of eq. 1: for i = 1..p, the architecture whose count is nearest N / (i + 1).

    ``method='bayes'`` runs ``bayes_opt`` (``init_points`` random probes, then ``n_iter`` Gaussian-process
    probes; peer i uses random state ``seed + i``), ``'exhaustive'`` scores the whole integer grid and is
    exact. Counts are at ``vocab_size`` and ``max_position_embeddings`` (block size + 2), which must be the
    ones the peers are built with."""
    from tqdm.auto import tqdm

    if method not in ("bayes", "exhaustive"):
        raise SearchError(f"method={method!r}: must be 'bayes' or 'exhaustive'")
    for name, value, low in (("init_points", init_points, 0), ("n_iter", n_iter, 0), ("seed", seed, 0),
                             ("teacher_params", teacher_params, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise SearchError(f"{name}={value!r}: must be an integer >= {low}")
    if method == "bayes" and init_points + n_iter < 1:
        raise SearchError(f"init_points={init_points} + n_iter={n_iter}: the Bayesian search needs >= 1 probe")
    counts = dict(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, type_vocab_size=1)
    count_params(1, 1, 1, **counts)  # validates vocab_size and max_position_embeddings, naming them
    targets = peer_targets(teacher_params, num_peers)
    bounds = Bounds(min_layers, max_layers, min_heads, max_heads, min_hidden, max_hidden, head_dim_multiple)
    _check_targets(targets, teacher_params, bounds, counts)
    grid = bounds.grid() if method == "exhaustive" else None
    peers = []
    for i, target in enumerate(tqdm(targets, desc=f"peer search ({method})", disable=not progress), start=1):
        if method == "exhaustive":
            peers.append(_exhaustive(target, bounds, counts, grid))
        else:
            peers.append(_bayes(target, bounds, counts, init_points, n_iter, seed + i))
    return peers


def search_kwargs(cfg: SearchConfig, head_dim_multiple: int = 8) -> dict[str, Any]:
    """The keywords of :func:`search_peers` that a :class:`SearchConfig` holds."""
    return dict(min_layers=cfg.min_layers, max_layers=cfg.max_layers, min_heads=cfg.min_heads,
                max_heads=cfg.max_heads, min_hidden=cfg.min_hidden, max_hidden=cfg.max_hidden,
                head_dim_multiple=getattr(cfg, "head_dim_multiple", head_dim_multiple),
                init_points=cfg.bayesian_init_points, n_iter=cfg.bayesian_n_iter, seed=cfg.seed)


def run_search(cfg: SearchConfig, vocab_size: int, max_position_embeddings: int = 514,
               method: str | None = None, progress: bool = False, **overrides) -> tuple[list[PeerArch], dict]:
    """Search the peers of ``cfg``'s teacher shape at ``vocab_size``; returns (peers, meta for save_peers).

    ``overrides`` replace keywords of :func:`search_peers` (e.g. ``head_dim_multiple``)."""
    meta = search_meta(cfg, vocab_size, max_position_embeddings, method, **overrides)
    kwargs = {**search_kwargs(cfg), **overrides}
    peers = search_peers(meta["teacher"]["params"], cfg.num_peers, vocab_size, meta["method"],
                         max_position_embeddings=max_position_embeddings, progress=progress, **kwargs)
    return peers, meta


def search_meta(cfg: SearchConfig, vocab_size: int, max_position_embeddings: int = 514, method: str | None = None,
                **overrides) -> dict:
    """What :func:`run_search` records beside its peers (the settings and vocabulary they were searched for),
    without searching."""
    method = method or cfg.method
    n = teacher_params(vocab_size, cfg.teacher_layers, cfg.teacher_hidden, cfg.teacher_heads, max_position_embeddings)
    kwargs = {**search_kwargs(cfg), **overrides}
    return dict(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, method=method,
                num_peers=cfg.num_peers, teacher=dict(layers=cfg.teacher_layers, hidden=cfg.teacher_hidden,
                                                      heads=cfg.teacher_heads, params=n), **kwargs)


# meta key of a peer file -> the setting it comes from (head_dim_multiple is no setting: 01 passes its own)
META_SETTINGS = {"method": "search.method", "num_peers": "search.num_peers", "teacher.layers": "search.teacher_layers",
                 "teacher.hidden": "search.teacher_hidden", "teacher.heads": "search.teacher_heads",
                 "min_layers": "search.min_layers", "max_layers": "search.max_layers", "min_heads": "search.min_heads",
                 "max_heads": "search.max_heads", "min_hidden": "search.min_hidden", "max_hidden": "search.max_hidden",
                 "init_points": "search.bayesian_init_points", "n_iter": "search.bayesian_n_iter", "seed": "search.seed",
                 "max_position_embeddings": "data.block_size + 2", "tokenizer": "the tokenizer (its fingerprint)"}


def peers_differences(saved: dict, wanted: dict, vocab_sizes: Sequence[int]) -> list[str]:
    """``'setting: file X, now Y'`` for each setting a peer file's meta was searched under that differs from
    ``wanted`` (:func:`search_meta`); keys an older file lacks are not compared. ``vocab_sizes``: the
    vocabulary sizes the file may have been searched at (the tokenizer's, and ``data.vocab_size``, which
    ``01_peer_search`` uses)."""
    flat = lambda m: {**{k: v for k, v in m.items() if k != "teacher"},  # noqa: E731
                      **{f"teacher.{k}": v for k, v in (m.get("teacher") or {}).items()}}
    a, b = flat(saved), flat(wanted)
    diffs = [f"{setting}: file {a[key]!r}, now {b[key]!r}" for key, setting in META_SETTINGS.items()
             if key in a and key in b and a[key] != b[key]]
    if "vocab_size" in a and a["vocab_size"] not in vocab_sizes:
        diffs.append(f"vocabulary size (data.vocab_size / the tokenizer's): file {a['vocab_size']!r}, now "
                     f"{' or '.join(str(v) for v in dict.fromkeys(vocab_sizes))}")
    return diffs


# --------------------------------------------------------------------------------------------------
# Saving and loading (later notebooks start from peers.json)
# --------------------------------------------------------------------------------------------------

def save_peers(path: str | Path, peers: Sequence[PeerArch], meta: dict) -> Path:
    """Write the search result as JSON, atomically. ``meta`` must hold vocab_size and max_position_embeddings."""
    for key in ("vocab_size", "max_position_embeddings"):
        if key not in meta:
            raise SearchError(f"save_peers({path}): meta lacks {key!r}, which build_peers needs")
    atomic_write_json(path, {"format": PEERS_FORMAT, "meta": dict(meta), "peers": [dataclasses.asdict(p) for p in peers]})
    return Path(path)


def load_peers(path: str | Path) -> tuple[list[PeerArch], dict]:
    """Read :func:`save_peers`'s file; returns (peers, meta). Errors name the file and the bad entry."""
    path = Path(path)
    if not path.is_file():
        raise SearchError(f"{path}: no peer file (run notebooks/01_peer_search first)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SearchError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != PEERS_FORMAT or not isinstance(doc.get("peers"), list):
        raise SearchError(f"{path}: not a peer file of format {PEERS_FORMAT} (keys 'format', 'meta', 'peers')")
    names = {f.name for f in dataclasses.fields(PeerArch)}
    peers = []
    for k, entry in enumerate(doc["peers"]):
        try:
            arch = PeerArch(**{key: entry[key] for key in names if key in entry})
        except TypeError as err:
            raise SearchError(f"{path}: peers[{k}]: {err}") from None
        if arch.hidden_size % arch.num_heads:
            raise SearchError(f"{path}: peers[{k}]: hidden_size={arch.hidden_size} is not divisible by "
                              f"num_heads={arch.num_heads}")
        peers.append(arch)
    return peers, doc.get("meta", {})


def ensure_peers(path: str | Path, cfg: SearchConfig, vocab_size: int, max_position_embeddings: int,
                 data_vocab_size: int | None = None, tokenizer: str | None = None,
                 searched: tuple[list[PeerArch], dict] | None = None) -> tuple[list[PeerArch], dict]:
    """The peers saved at ``path`` (by ``01_peer_search``); if there are none yet, run ``cfg``'s search at
    this vocabulary and block size (or take ``searched``, a search already run) and save it there first, so
    every later notebook can run on its own.

    A saved file is used only if it was searched under these settings: its meta (the search settings, the
    block size, the vocabulary size, and the tokenizer's fingerprint ``tokenizer`` where both record it) is
    compared, and a difference raises :class:`SearchError` naming the file and every differing setting
    (peers searched for 2 peers or a 128-wide teacher are not the peers of 3, or of a 256-wide one).
    ``data_vocab_size``: ``data.vocab_size``, the size ``01_peer_search`` searches at (the tokenizer may
    hold fewer ids).

    ``cfg.pinned`` (a peer file kept with the project): where it exists it is checked the same way and its
    peers are the ones saved at ``path`` (this machine's search is not used), and a ``path`` holding other
    peers is refused; where it does not exist, the search saved at ``path`` is written there too."""
    path = Path(path)
    vocab_sizes = [vocab_size] + ([data_vocab_size] if data_vocab_size else [])
    wanted = search_meta(cfg, vocab_size, max_position_embeddings)
    if tokenizer is not None:
        wanted["tokenizer"] = tokenizer
    pinned = project_path(cfg.pinned) if cfg.pinned else None
    if pinned is not None and pinned.is_file():
        peers, meta = _checked(pinned, wanted, vocab_sizes, "search.pinned")
        if path.is_file() and _shapes(load_peers(path)[0]) != _shapes(peers):
            raise SearchError(f"{path} holds other peers than the pinned {pinned} (search.pinned): its runs were "
                              f"trained on them. Use another run_root, or delete {path.name} and the runs under it")
        if not path.is_file():
            save_peers(path, peers, meta)
        return peers, meta
    if not path.is_file():
        found, meta = searched if searched is not None else run_search(cfg, vocab_size, max_position_embeddings)
        meta = dict(meta)
        if tokenizer is not None:
            meta["tokenizer"] = tokenizer
        save_peers(path, found, meta)
    peers, meta = _checked(path, wanted, vocab_sizes, "")
    if pinned is not None:  # the first search of a pinned profile: kept with the project from now on
        save_peers(pinned, peers, meta)
    return peers, meta


def _shapes(peers: Sequence[PeerArch]) -> list[tuple[int, int, int, int]]:
    return [(p.num_layers, p.num_heads, p.hidden_size, p.intermediate_size) for p in peers]


def _checked(path: Path, wanted: dict, vocab_sizes: Sequence[int], setting: str) -> tuple[list[PeerArch], dict]:
    peers, meta = load_peers(path)
    diffs = peers_differences(meta, wanted, vocab_sizes)
    if diffs:
        named = f"{path} ({setting})" if setting else str(path)
        raise SearchError(f"{named} was searched under other settings than these: " + "; ".join(diffs)
                          + f". Delete {path.name} to search again under these settings, or use another run_root")
    return peers, meta


# --------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------

def peer_table(peers: Sequence[PeerArch], **labels):
    """One row per peer (target, shape, params, relative error in %), with ``labels`` as leading columns."""
    import pandas as pd

    rows = [dict(**labels, peer=i, method=a.method, target=a.target, layers=a.num_layers, heads=a.num_heads,
                 hidden=a.hidden_size, head_dim=a.head_dim, params=a.params, rel_error_pct=100 * a.rel_error,
                 evaluations=a.evaluations) for i, a in enumerate(peers, start=1)]
    return pd.DataFrame(rows)


def best_so_far(trace: Sequence[float]) -> np.ndarray:
    """Running minimum of a peer's |relative error| trace: the best error after each evaluation."""
    return np.minimum.accumulate(np.asarray(trace, dtype=float)) if len(trace) else np.zeros(0)


def compare_table(bayes, exact):
    """:func:`peer_table` of the Bayesian and the exhaustive peers side by side, one row per target."""
    keys = [c for c in bayes.columns if c not in ("method", "layers", "heads", "hidden", "head_dim", "params",
                                                   "rel_error_pct", "evaluations")]
    cols = ["layers", "heads", "hidden", "params", "rel_error_pct", "evaluations"]
    return bayes[keys + cols].merge(exact[keys + cols], on=keys, suffixes=("_bayes", "_exhaustive"))
