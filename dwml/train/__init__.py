"""The one training loop, for every method (``dwml.methods``) and any number of peers.

One optimizer step (the published "epoch") accumulates ``num_batches`` micro-batches of ``batch_size``
blocks of ``block_size`` tokens: ``num_batches * batch_size * block_size`` tokens a step (92,160 with the
published 60 x 3 x 512), and ``num_epochs`` steps in all (``max_tokens`` can cut that shorter). Each peer
has its own AdamW (decay on matrices only) and its own gradient clipping, and all peers share one
learning-rate schedule: linear warm-up, then cosine decay to ``min_lr`` at ``lr_decay_iters``. Methods
with learned weights (DWML) get an outer mirror-descent step every ``weight_update_frequency`` optimizer
steps, with gamma = the current learning rate and its own annealed step size eta (eq. 3, 4): by default
(``outer_grad='reuse'``) between that step's backward and its clipping, from the step's own gradient and
batch and a dev micro-batch; with 'recompute', after the step on a fresh training and a dev micro-batch.

A run folder holds ``config.json``, ``metrics.jsonl`` (one line per logged step and per evaluation),
``checkpoint.pt`` (everything needed to continue bit for bit: models, optimisers, weights, batcher and RNG
states, step, early-stopping state), and at the end ``peer_<i>/`` (``save_pretrained`` beside the
tokenizer), ``summary.json`` and ``DONE``. Calling :func:`train` again on the folder continues the run.

Under ``torchrun`` (``python -m dwml.train``, or ``train.nproc`` > 1 through ``dwml.experiments``) the same
loop runs data parallel (``dwml.distributed``): ``train.batch_size`` is each rank's micro-batch, the run
computes what one process with ``nproc`` times that micro-batch computes, and rank 0 alone writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from dwml import distributed
from dwml.bilevel import across_ranks
from dwml.checkpoint import (CheckpointMismatchError, check_checkpoint, checkpoint_note,  # noqa: F401 (T.CheckpointMismatchError)
                             extension_note, read_checkpoint)
from dwml.checkpoint import (CheckpointError, RunLock, check_metrics_file, claim_run_folder, finished_without_checkpoint,
                             read_json_file)
from dwml.config import Config, ConfigError
from dwml.data import merge_batches, save_tokenizer_files
from dwml.io import atomic_torch_save, atomic_write_json, project_path
from dwml.methods import Method, make_method, method_class
from dwml.model import restore_attention, use_bf16, use_fast_attention
from dwml.precision import matmul_precision
from dwml.prefetch import Prefetcher

CHECKPOINT, METRICS, CONFIG, SUMMARY, DONE = "checkpoint.pt", "metrics.jsonl", "config.json", "summary.json", "DONE"

@dataclass
class TrainResult:
    run_dir: Path
    weights: list[float] | None
    history: "object"  # pandas.DataFrame of metrics.jsonl
    peer_dirs: list[Path] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    done: bool = False


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------

def resolve_device(name: str, param: str = "train.device") -> torch.device:
    """'auto' (CUDA if present), 'cpu' or 'cuda[:n]' as a device; ``param`` names the setting in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{param}={name!r}: no CUDA device is available")
    return dev


def cosine_schedule(step: int, peak: float, minimum: float, warmup_iters: int, decay_iters: int) -> float:
    """Linear warm-up then cosine decay (the shape of nanoGPT's learning-rate schedule), for both the
    learning rate and the mirror-descent step eta of eq. 4.

    ``step`` is the 0-based optimizer step. Steps 0..warmup_iters-1 rise linearly,
    peak (step + 1) / (warmup_iters + 1); from ``warmup_iters`` to ``decay_iters`` a half cosine falls from
    ``peak`` to ``minimum``; after ``decay_iters`` it stays at ``minimum`` (also when decay_iters <=
    warmup_iters, i.e. there is no decay span)."""
    if warmup_iters < 0 or decay_iters < 0:
        raise ValueError(f"warmup_iters={warmup_iters!r}, decay_iters={decay_iters!r}: must be >= 0")
    if not 0 <= minimum <= peak:
        raise ValueError(f"minimum={minimum!r}, peak={peak!r}: the schedule needs 0 <= minimum <= peak")
    if step < warmup_iters:
        return peak * (step + 1) / (warmup_iters + 1)
    if step >= decay_iters:
        return minimum
    ratio = (step - warmup_iters) / (decay_iters - warmup_iters)
    return minimum + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (peak - minimum)


def make_optimizer(modules: Sequence[nn.Module], lr: float, weight_decay: float, betas,
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the modules' parameters, decaying matrices (linear and embedding weights) only:
    decaying a bias or a LayerNorm gain pulls it toward 0, which is not a simpler model but a broken one.
    ``fused``: PyTorch's fused kernel (one launch for all parameters; the loop asks for it on CUDA)."""
    seen, decay, no_decay = set(), [], []
    for mod in modules:
        for p in mod.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))


def compile_peers(models: Sequence[nn.Module]) -> None:
    """``torch.compile`` (inductor, dynamic shapes: packed rows and predicted counts vary) each model's
    encoder and LM head in place, so that state_dict keys and ``save_pretrained`` stay as they were.

    The p encoders share one code object, hence one Dynamo cache, and each needs its own graphs for
    training under autocast, evaluation and the outer step's float32 forward: the recompile limit is raised
    to hold them all (``tests/test_compile.py`` checks that none is refused)."""
    import torch._dynamo

    need = 4 * len(models) + 4  # per model: train, eval, outer step (float32), one spare; plus the heads'
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), need))
    for m in models:
        getattr(m, "roberta", m).compile(dynamic=True)
        if hasattr(m, "lm_head"):
            m.lm_head.compile(dynamic=True)


def total_steps(cfg: Config) -> int:
    t = cfg.train
    if t.max_tokens > 0:
        return min(t.num_epochs, math.ceil(t.max_tokens / tokens_per_step(cfg)))
    return t.num_epochs


def tokens_per_step(cfg: Config) -> int:
    """Tokens of one optimizer step with ``data.packing='blocks'``; an upper bound with 'lines' and
    'packed' (utterances are shorter than a block)."""
    return cfg.train.num_batches * cfg.train.batch_size * cfg.train.nproc * cfg.data.block_size


def architecture(models: Sequence[nn.Module]) -> list[list]:
    """Each peer's parameter names and shapes: enough to tell that a checkpoint holds other peers."""
    return [[[n, list(p.shape)] for n, p in m.state_dict().items()] for m in models]


def set_dropout(models: Sequence[nn.Module], p: float) -> None:
    """Set the hidden and attention dropout of Hugging Face models in place: every ``nn.Dropout`` (RoBERTa's
    attention reads its module's ``p`` too) and the config fields, so that ``save_pretrained`` records it."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout={p!r}: must be in [0, 1)")
    for m in models:
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = p
        cfg = getattr(m, "config", None)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if cfg is not None and hasattr(cfg, name):
                setattr(cfg, name, p)


def corpus_identity(corpus) -> dict:
    """What identifies the training text: the tokenizer's fingerprint and the token counts of both splits."""
    from dwml.data import tokenizer_fingerprint

    return {"tokenizer": tokenizer_fingerprint(corpus.tokenizer), "train_tokens": len(corpus.train),
            "dev_tokens": len(corpus.dev)}


def load_teacher(teacher_dir: str, device: torch.device, corpus=None) -> nn.Module:
    """The fixed teacher saved in ``teacher_dir``; with ``corpus``, its tokenizer is first checked to be the
    peers' (:func:`check_teacher_tokenizer`). Errors name the setting and the folder."""
    from transformers import AutoModelForMaskedLM

    path = project_path(teacher_dir) if teacher_dir else None
    if path is None or not (path / "config.json").is_file():
        raise ConfigError(f"train.teacher_dir={teacher_dir!r}: no saved model there (a folder written by "
                          "save_pretrained, e.g. the peer_0 of a finished 'mlm' run)")
    if corpus is not None:
        check_teacher_tokenizer(path, corpus)
    try:
        model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True)
    except Exception as err:  # a truncated model.safetensors, a config of another model type, ...
        raise ConfigError(f"train.teacher_dir={teacher_dir!r}: the model in {path} cannot be loaded "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})") from None
    return model.to(device).eval().requires_grad_(False)


def check_teacher_tokenizer(teacher_path: Path, corpus) -> None:
    """A teacher must read the peers' ids as the peers do: its folder's tokenizer must map every token to the
    id the peers' tokenizer gives it (a tokenizer of the same size trained on other text shares the size,
    not the meaning of the ids). Raises :class:`ConfigError` naming both folders."""
    from dwml.data import DataError, load_tokenizer

    theirs_dir = getattr(corpus, "tokenizer_dir", "the corpus's tokenizer")
    if not (teacher_path / "tokenizer.json").is_file():
        raise ConfigError(f"train.teacher_dir={str(teacher_path)!r}: no tokenizer.json there, so nothing shows "
                          f"that the teacher shares the peers' tokenizer ({theirs_dir}); save that tokenizer "
                          "beside the teacher (a finished run's peer_<i> folder has it)")
    try:
        vocab = load_tokenizer(teacher_path).get_vocab()
    except DataError as err:
        raise ConfigError(f"train.teacher_dir={str(teacher_path)!r}: {err}") from None
    ours = corpus.tokenizer.get_vocab()
    if vocab != ours:
        same = sum(1 for tok, i in ours.items() if vocab.get(tok) == i)
        raise ConfigError(f"train.teacher_dir={str(teacher_path)!r}: the teacher's tokenizer is not the peers' "
                          f"({theirs_dir}): {len(vocab)} and {len(ours)} tokens, only {same} of the peers' ids "
                          "mean the same token in both; train the teacher on this corpus's tokenizer")


def check_teacher_vocab(teacher: nn.Module, models: Sequence[nn.Module], teacher_dir: str) -> None:
    """The teacher's output layer must have the peers' vocabulary size (the KL compares their
    distributions id by id); else :class:`ConfigError` naming the folder and both sizes."""
    t_vocab = getattr(getattr(teacher, "config", None), "vocab_size", None)
    p_vocab = models[0].config.vocab_size if models else None
    if t_vocab is not None and p_vocab is not None and t_vocab != p_vocab:
        where = f"train.teacher_dir={teacher_dir!r}" if teacher_dir else "the teacher given"
        raise ConfigError(f"{where}: the teacher has vocab_size {t_vocab}, the peers {p_vocab}; a teacher must "
                          "share the peers' tokenizer and vocabulary")


def read_metrics(run_dir: str | Path):
    """metrics.jsonl as a DataFrame (one row a line; ``kind`` is 'train' or 'eval')."""
    import pandas as pd

    path = Path(run_dir) / METRICS
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for k, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as err:
                raise ValueError(f"{path}:{k}: not a JSON line ({err}); the file was damaged after it was "
                                 "written") from None
    return pd.DataFrame(rows)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Metrics:
    """Append-only JSONL; the checkpoint records its length so a resumed run drops the lines after it."""

    def __init__(self, path: Path, write: bool = True):
        self.path = path
        self.fh = open(path, "a", encoding="utf-8") if write else None  # ranks other than 0 write nothing

    def write(self, row: dict) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(row) + "\n")
            self.fh.flush()

    def size(self) -> int:
        if self.fh is None:
            return 0
        self.fh.flush()
        return self.path.stat().st_size

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


# --------------------------------------------------------------------------------------------------
# The loop, in named phases
# --------------------------------------------------------------------------------------------------

class Trainer:
    """One run of ``cfg.train.method`` on ``corpus`` in ``run_dir``, as phases that others can call or
    override (the benchmarks call :meth:`train_step`, the loop's own step, instead of copying it):

    ``__init__`` (set-up and restore) -> per step :meth:`next_batches` (host: draw, pack, merge into
    chunks, copy) -> :meth:`accumulate` (forward and backward of every chunk) -> :meth:`check`
    (per-peer gradient norms, and the one read-back of the step: non-finite losses or norms stop the run
    before anything is updated) -> :meth:`outer_step` (learned weights, ``train.outer_grad='reuse'``) ->
    :meth:`clip_and_step` -> :meth:`log_evaluate_checkpoint`. :meth:`fit` runs them to the end.

    Nothing between the start of :meth:`accumulate` and :meth:`check` reads a value back from the
    device (``tests/test_fast_step.py`` counts): losses and metrics stay on the device until the step's one
    read-back, and every batch carries its predicted positions, computed on the host.
    """

    def __init__(self, cfg: Config, corpus, models: Sequence[nn.Module], run_dir: str | Path,
                 teacher: nn.Module | None = None, resume: bool = True, progress: bool = True, **method_kwargs):
        cfg.validate()
        self.cfg, self.corpus, self.progress = cfg, corpus, progress
        t = self.t = cfg.train
        self.run_dir = run_dir = project_path(run_dir)
        ranks = distributed.env_ranks()
        if t.nproc != ranks.world:
            raise ConfigError(f"train.nproc={t.nproc} but {ranks.world} process(es) run: launch it with torchrun "
                              f"--nproc_per_node {t.nproc} (python -m dwml.train) or through dwml.experiments")
        # one process, or this rank of a torchrun launch (CUDA: the GPU of its LOCAL_RANK)
        self.ranks, self.device = distributed.setup(resolve_device(t.device))
        ranks, device = self.ranks, self.device
        self.main = ranks.main  # rank 0 alone writes files
        if self.main:  # created as a run folder (marker), or checked to be one: nothing else is deleted
            claim_run_folder(run_dir)
        if not isinstance(t.mixed_precision, bool):  # 'auto': the run records what it resolved to
            cfg = self.cfg = dataclasses.replace(cfg, train=dataclasses.replace(t, mixed_precision=use_bf16(t.mixed_precision, device)))
            t = self.t = cfg.train
        self.ckpt_path, self.metrics_path = run_dir / CHECKPOINT, run_dir / METRICS
        vocab = len(corpus.tokenizer)
        for i, m in enumerate(models):
            if m.config.vocab_size < vocab:
                raise ConfigError(f"peer {i}: vocab_size {m.config.vocab_size} is smaller than the tokenizer's "
                                  f"{vocab} (data.vocab_size); build the peers with the corpus's vocabulary")
            if m.config.max_position_embeddings < cfg.data.block_size + 2:
                raise ConfigError(f"peer {i}: max_position_embeddings {m.config.max_position_embeddings} < "
                                  f"data.block_size + 2 = {cfg.data.block_size + 2}")
        self.cfg_dict = cfg.to_dict()
        # The corpus itself, not only its settings: a new grammar version or tokenizer under the same
        # profile must not reuse (or resume) a run trained on the old text.
        self.cfg_dict["corpus"] = corpus_identity(corpus)
        if t.nproc == 1:  # one process: config.json and checkpoints as before the key existed (old runs resume)
            self.cfg_dict["train"].pop("nproc")
        # CPU results depend on the thread count (reductions split differently): recorded, not compared
        self.cfg_dict["threads"] = torch.get_num_threads()
        self.arch = architecture(models)
        self.finished = None
        if resume and (run_dir / DONE).is_file() and self.ckpt_path.is_file():
            # A finished run is reused only for the same computation; a longer run of the same settings
            # goes on from the final checkpoint (dwml.checkpoint); anything else is refused, naming fields.
            ck = read_checkpoint(self.ckpt_path)
            if check_checkpoint(ck, self.cfg_dict, self.arch, self.ckpt_path, done=True) == "same":
                self.finished = load_result(run_dir)
                return
            distributed.barrier(ranks)  # every rank has decided before rank 0 changes the folder
            warnings.warn(extension_note(self.ckpt_path, ck["config"], self.cfg_dict, ck["state"]), stacklevel=2)
            if self.main:
                (run_dir / DONE).unlink()
                (run_dir / SUMMARY).unlink(missing_ok=True)
        elif resume and (run_dir / DONE).is_file():
            # the checkpoint is gone: reused only if config.json computes the same thing, else refused
            finished_without_checkpoint(run_dir, self.cfg_dict)
            self.finished = load_result(run_dir)
            return
        for cache in (corpus.train, corpus.dev):  # ids outside the vocabulary: caught here, naming the file
            cache.check_ids(min(m.config.vocab_size for m in models))

        torch.manual_seed(t.seed)
        if ranks.rank > 0:  # dropout draws of its own on each rank (rank 0 keeps a single process's stream)
            torch.manual_seed(t.seed + 7919 * ranks.rank)
        self.models = models = [m.to(device).train() for m in models]
        if t.dropout is not None:
            set_dropout(models, t.dropout)
        if teacher is None and method_class(t.method).uses_teacher:
            teacher = load_teacher(t.teacher_dir, device, corpus)
        elif teacher is not None:
            teacher = teacher.to(device)
        if teacher is not None:
            check_teacher_vocab(teacher, models, t.teacher_dir)
        self.attention = use_fast_attention(models)  # restored at the end of fit, before saving
        if teacher is not None:
            use_fast_attention([teacher])
        self.method: Method = make_method(t, models, teacher, **method_kwargs)
        self.optimizers = [make_optimizer(self.method.peer_modules(i), t.learning_rate, t.weight_decay,
                                          (t.beta1, t.beta2), fused=device.type == "cuda")
                           for i in range(self.method.p)]
        # Three streams of training/dev batches with their own generators: the inner loop's, and the outer
        # step's fresh train and dev micro-batches (so adding outer steps does not shift the inner batches).
        # On N ranks each draws the global micro-batch of N x batch_size and keeps its rows (dwml.distributed).
        shard = (ranks.rank, ranks.world)
        self.batchers = {"train": corpus.batcher("train", cfg.data, t.batch_size, seed=t.seed, shard=shard),
                         "outer_train": corpus.batcher("train", cfg.data, t.batch_size, seed=t.seed + 1, shard=shard),
                         "outer_dev": corpus.batcher("dev", cfg.data, t.batch_size, seed=t.seed + 2, shard=shard)}
        # Rank 0 alone evaluates, on the dev batches one process with the global micro-batch would use.
        self.eval_batches = [self.to_device(b) for b in
                             corpus.batcher("dev", cfg.data, t.batch_size * ranks.world, seed=t.seed)
                             .fixed_batches(t.eval_batches)] if self.main else []
        self.n_steps = total_steps(cfg)
        self.state = {"step": 0, "tokens": 0, "best": math.inf, "bad_evals": 0, "stopped_early": False,
                      "elapsed": 0.0}
        # TF32 only inside the inner step and evaluation, when the run asks (train.tf32); never process-wide,
        # so the outer step's float32 stays IEEE (dwml.precision).
        self.tf32 = bool(t.tf32 and device.type == "cuda")
        if t.compile:
            compile_peers(models + ([teacher] if teacher is not None else []))
        self.prefetcher = None  # built on the first step (after a restore has set the batcher's state)
        self._pending_outer: tuple[int, torch.Tensor] | None = None  # (step, g): checked at the next read-back
        # bf16 autocast: on CUDA, and on CPUs with bf16 matrix instructions (AVX512-BF16, AMX), where it is
        # faster too. Master weights, optimiser states, the losses over the vocabulary (dwml.losses) and the
        # hypergradient (dwml.bilevel turns autocast off) stay float32.
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                         if t.mixed_precision and device.type in ("cuda", "cpu") else contextlib.nullcontext())
        if resume and self.ckpt_path.is_file():
            ck = read_checkpoint(self.ckpt_path)
            distributed.barrier(ranks)  # every rank has read it before rank 0 writes again
            self.restore(ck)
        else:
            distributed.barrier(ranks)
            if self.main:
                for name in (METRICS, DONE, SUMMARY, CHECKPOINT):
                    (run_dir / name).unlink(missing_ok=True)
                atomic_write_json(run_dir / CONFIG, self.cfg_dict)
            self.metrics = _Metrics(self.metrics_path, write=self.main)
            self.evaluate()  # step 0: the peers at initialisation
        # After the restore: DDP broadcasts rank 0's parameters, the same on every rank anyway.
        self.ddp = distributed.wrap_peers(self.method, ranks, device)

    # ---- set-up and restore ---------------------------------------------------------------------

    def restore(self, ck: dict) -> None:
        """Continue from a checkpoint: models, optimisers, weights, batchers, RNG and loop state."""
        check_checkpoint(ck, self.cfg_dict, self.arch, self.ckpt_path, done=False)
        _warn_threads(ck["config"], self.cfg_dict, self.ckpt_path, self.device)
        if self.main:
            check_metrics_file(self.metrics_path, ck["metrics_bytes"], self.ckpt_path)
            atomic_write_json(self.run_dir / CONFIG, self.cfg_dict)  # config.json: the run that goes on
        for m, sd in zip(self.models, ck["models"]):
            m.load_state_dict(sd)
        for opt, sd in zip(self.optimizers, ck["optimizers"]):
            opt.load_state_dict(sd)
        self.method.load_state_dict(ck["method"])
        for name, b in self.batchers.items():
            b.load_state_dict(ck["batchers"][name])
        _set_rng_state(ck["rng_ranks"][self.ranks.rank] if self.ranks.active else ck["rng"])
        self.state.update(ck["state"])
        if self.main:
            with open(self.metrics_path, "r+b") as fh:  # drop what was logged after the checkpoint: it is redone
                fh.truncate(ck["metrics_bytes"])
        self.metrics = _Metrics(self.metrics_path, write=self.main)

    def save_checkpoint(self) -> None:
        """Rank 0 writes; on N ranks the checkpoint also holds every rank's RNG state (its dropout stream).
        With batches built ahead, the training batcher's state is that of the first batch not yet used."""
        self._settle_outer()
        # the thread stopped and the batcher put back first, then every batcher read
        train_state = self.prefetcher.state_dict() if self.prefetcher is not None else None
        batchers = {k: b.state_dict() for k, b in self.batchers.items()}
        if train_state is not None:
            batchers["train"] = train_state
        rng = _rng_state()
        extra = {"rng_ranks": distributed.gather_objects(rng, self.ranks)} if self.ranks.active else {}
        if not self.main:
            return
        atomic_torch_save(self.ckpt_path, {
            "config": self.cfg_dict, "architecture": self.arch, "models": [m.state_dict() for m in self.models],
            "optimizers": [o.state_dict() for o in self.optimizers], "method": self.method.state_dict(),
            "batchers": batchers, "rng": rng,
            "state": dict(self.state), "metrics_bytes": self.metrics.size(), **extra})

    # ---- one step ---------------------------------------------------------------------------------

    def pin(self, batch: dict) -> dict:
        """A host batch in pinned memory when the device is CUDA (so that its copy does not block); as it is else."""
        if self.device.type != "cuda":
            return batch
        return {k: v.pin_memory() if torch.is_tensor(v) and not v.is_pinned() else v for k, v in batch.items()}

    def to_device(self, batch: dict) -> dict:
        """Tensors to the device (through pinned memory on CUDA, without blocking); numbers stay as they are."""
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in self.pin(batch).items()}

    def host_batches(self) -> tuple[list[dict], dict | None, int, int]:
        """The step's ``num_batches`` micro-batches drawn and merged into chunks of ``chunk_size``, on the
        host (pinned for CUDA): (chunks, the last micro-batch on its own where it is not a chunk (else
        None), real tokens, positions). The prefetching thread calls it; nothing here touches the device."""
        t = self.t
        micro = [self.batchers["train"].next_batch() for _ in range(t.num_batches)]
        size = min(t.chunk_size, t.num_batches)
        chunks = [self.pin(merge_batches(micro[i:i + size])) for i in range(0, len(micro), size)]
        last = None if size == 1 else self.pin(micro[-1])
        real = sum(b["n_real"] for b in micro)
        positions = sum(b["input_ids"].numel() for b in micro)
        return chunks, last, real, positions

    def next_batches(self) -> tuple[list[dict], dict, int, int]:
        """The step's chunks on the device (built ahead by ``train.prefetch``, else now): (chunks, the last
        micro-batch on its own (the outer step's), real tokens, positions)."""
        if self.t.prefetch > 0 and self.prefetcher is None:
            b = self.batchers["train"]
            self.prefetcher = Prefetcher(self.host_batches, b.state_dict, b.load_state_dict, depth=self.t.prefetch)
        chunks, last, real, positions = self.prefetcher.next() if self.prefetcher else self.host_batches()
        chunks = [self.to_device(c) for c in chunks]
        return chunks, chunks[-1] if last is None else self.to_device(last), real, positions

    def accumulate(self, chunks: Sequence[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Zero the gradients, then forward and backward every chunk. Each chunk's loss is the sum of
        its micro-batches' per-token means, so dividing by ``num_batches`` gives the step's mean over
        micro-batches however they are chunked. Returns (mean loss, mean per-peer parts), on the device."""
        nb = self.t.num_batches
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss_sum, sums = None, {}
        for k, batch in enumerate(chunks):
            if self.ddp is None:
                with self.autocast:
                    loss, parts = self.method.loss(batch)
                (loss / nb).backward()
            else:
                # This rank's share of the global mean (its tokens weigh 1/n_global), times N: DDP's average
                # over ranks is then the global mean's gradient. Gradients are all-reduced at the last chunk.
                sync = contextlib.nullcontext() if k == len(chunks) - 1 else self.ddp.no_sync()
                with sync:
                    with self.autocast:
                        loss, parts = self.ddp(batch)
                    (loss * (self.ranks.world / nb)).backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            for k, v in parts.items():
                sums[k] = v.float() if k not in sums else sums[k] + v.float()
        return loss_sum / nb, {k: v / nb for k, v in sums.items()}

    def check(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> tuple[list, list[float], dict]:
        """Per-peer gradient norms, and the step's one read-back (losses, parts and norms together):
        a non-finite loss or norm raises ``FloatingPointError`` naming step and peer, before any update.
        Returns (each peer's gradient tensors, norms on the device, host copies of loss/parts/norms)."""
        grads = [[q for g in opt.param_groups for q in g["params"] if q.grad is not None] for opt in self.optimizers]
        dev = loss.device
        norms = [torch.nn.utils.get_total_norm([q.grad for q in ps]) if ps else torch.zeros((), device=dev)
                 for ps in grads]
        names = list(parts)
        pending = self._pending_outer  # the last outer step's g, checked here in the same read-back
        flat = torch.cat([loss.float().reshape(1)] + [parts[k].reshape(-1) for k in names]
                         + [torch.stack(norms).float().to(dev)]
                         + ([pending[1].float().to(dev)] if pending else [])).cpu().tolist()
        if pending:
            self._settle_outer(flat[len(flat) - pending[1].numel():])
            flat = flat[:len(flat) - pending[1].numel()]
        if self.ranks.active:
            flat = self._across_ranks(flat, names, parts)
        host = {"loss": flat[0]}
        at = 1
        for k in names:
            host[k] = flat[at:at + parts[k].numel()]
            at += parts[k].numel()
        host["grad_norm"] = flat[at:]
        step = self.state["step"] + 1
        for k in names:
            bad = [i for i, v in enumerate(host[k]) if not math.isfinite(v)]
            if bad:
                raise FloatingPointError(f"step {step}, peer {bad[0]}: non-finite training loss ({k} = {host[k][bad[0]]}); "
                                         f"stopped before updating; {self._kept()}")
        for i, v in enumerate(host["grad_norm"]):
            if not math.isfinite(v):
                raise FloatingPointError(f"step {step}, peer {i}: non-finite gradient norm {v}; "
                                         f"stopped before updating; {self._kept()}")
        return grads, norms, host

    def _kept(self) -> str:
        return checkpoint_note(self.ckpt_path)

    def _settle_outer(self, host_g: list[float] | None = None) -> None:
        """Check the last outer step's hypergradient, read back now (``host_g``: already read): the outer
        step runs without reading anything back, so a non-finite g is caught at the next read-back (the
        next step's :meth:`check`, a log line, an evaluation or a checkpoint), before w is used or saved."""
        if self._pending_outer is None:
            return
        step, g = self._pending_outer
        self._pending_outer = None
        vals = g.detach().double().cpu().tolist() if host_g is None else host_g
        bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"step {step}: non-finite hypergradient {vals} (peer(s) {bad}) in the outer "
                                     f"step; stopped before the new weights were used; {self._kept()}")

    def _across_ranks(self, flat: list[float], names: list[str], parts: dict) -> list[float]:
        """Every rank's loss and parts (each a share of the global mean) gathered, checked and summed: a
        non-finite value on any rank stops every rank with the same error, naming step, peer and rank,
        before anything is updated. The gradient norms, taken after DDP's all-reduce, are the same everywhere."""
        n_loss = 1 + sum(parts[k].numel() for k in names)
        rows = distributed.gather_rows(flat[:n_loss], self.ranks, self.device)
        step, at = self.state["step"] + 1, 1
        for k in names:
            for r, row in enumerate(rows):
                vals = row[at:at + parts[k].numel()]
                bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
                if bad:
                    raise FloatingPointError(f"step {step}, peer {bad[0]}, rank {r}: non-finite training loss "
                                             f"({k} = {vals[bad[0]]}); every rank stopped before updating; "
                                             f"{self._kept()}")
            at += parts[k].numel()
        return [sum(col) for col in zip(*rows)] + flat[n_loss:]

    def outer_step(self, train_batch: dict, lr: float, eta: float) -> torch.Tensor | None:
        """The outer mirror-descent step on w (eq. 3, 4) with a fresh dev micro-batch; ``train_batch`` is
        the step's own last micro-batch ('reuse': theta' from the .grad just accumulated) or a fresh one
        ('recompute', after the update)."""
        if self.t.published_hypergradient:  # the published code: one step on each of num_batches dev batches
            for _ in range(self.t.num_batches):
                g = self.method.outer_step(train_batch, self.to_device(self.batchers["outer_dev"].next_batch()), lr, eta)
            return g
        dev_batch = self.to_device(self.batchers["outer_dev"].next_batch())
        sums = distributed.RankSums(self.ranks) if self.ranks.active else None
        # IEEE float32 whatever the inner step allows (dwml.precision); nothing read back (check=False):
        # g is checked at the next read-back (_settle_outer).
        with self.autocast, across_ranks(sums), matmul_precision(False):
            g = self.method.outer_step(train_batch, dev_batch, lr, eta, reuse_grad=self.t.outer_grad == "reuse",
                                       check=False)
        if g is not None:
            self._pending_outer = (self.state["step"] + 1, g)
        if self.method.weights is not None:  # the same on every rank by construction; checked, it is cheap
            distributed.check_same(self.method.weights, f"step {self.state['step'] + 1}: the weights w", self.ranks)
        return g

    def clip_and_step(self, grads: list, norms: list) -> None:
        """Each peer's own gradient clipping (with the norms :meth:`check` took), then its AdamW."""
        for ps, norm in zip(grads, norms):
            if self.t.grad_clip > 0 and ps:
                torch.nn.utils.clip_grads_with_norm_(ps, self.t.grad_clip, norm)
        for opt in self.optimizers:
            opt.step()

    def schedule(self, step: int) -> tuple[float, float | None]:
        """Learning rate (set on every optimiser) and mirror-descent step eta at 0-based ``step``."""
        t = self.t
        lr = cosine_schedule(step, t.learning_rate, t.min_lr, t.warmup_iters, t.lr_decay_iters)
        for opt in self.optimizers:
            for g in opt.param_groups:
                g["lr"] = lr
        eta = (cosine_schedule(step, t.step_size, t.min_step_size, t.warmup_iters, t.lr_decay_iters)
               if self.method.learns_weights else None)
        return lr, eta

    def train_step(self) -> dict:
        """One optimizer step, every phase in order; returns what it logged (also when not written)."""
        t = self.t
        t0 = time.perf_counter()
        step = self.state["step"]  # 0-based index of the step being taken; logged as step + 1
        lr, eta = self.schedule(step)
        chunks, last, real, positions = self.next_batches()
        if self.ranks.active:  # the step's tokens on all ranks
            real, positions = (int(v) for v in distributed.sum_counts([real, positions], self.ranks, self.device))
        with matmul_precision(self.tf32):
            loss, parts = self.accumulate(chunks)
        grads, norms, host = self.check(loss, parts)
        hyper = None
        outer_now = self.method.learns_weights and (step + 1) % t.weight_update_frequency == 0
        if outer_now and t.outer_grad == "reuse":
            # Here, before clipping and the optimizer step, .grad is grad_theta L1(theta, w) at the theta
            # and w of this step: theta' of eq. 3 at no extra cost (dwml.bilevel). The new w weighs the
            # peers from the next step on.
            hyper = self.outer_step(last, lr, eta)
        self.clip_and_step(grads, norms)
        self.state["step"] = step + 1
        self.state["tokens"] += real
        if outer_now and t.outer_grad == "recompute":
            hyper = self.outer_step(self.to_device(self.batchers["outer_train"].next_batch()), lr, eta)
        if self.device.type == "cuda" and self._timed(self.state["step"]):
            # the one wait for the device, where a time is written: the step's trailing work (outer step,
            # optimizer) is otherwise waited for by the next step's read-back, and counted in its time
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.state["elapsed"] += dt
        # w and the hypergradient stay on the device: read back where the line is written (host_row)
        row = {"kind": "train", "step": self.state["step"], "tokens": self.state["tokens"], "lr": lr, "eta": eta,
               "w": self.method.weights, **host, "tokens_per_step": real, "tokens_per_s": real / dt,
               "real_fraction": real / positions,
               "elapsed_s": self.state["elapsed"]}
        if hyper is not None:
            row["hypergrad"] = hyper
        return row

    def _due(self, step: int, interval: int) -> bool:
        """Whether ``step`` (1-based) is one of an interval's: a multiple of it, or the last step."""
        return step % interval == 0 or step == self.n_steps

    def _timed(self, step: int) -> bool:
        """Whether the loop writes, evaluates or saves after ``step`` (1-based): where a time is read."""
        t = self.t
        return self._due(step, t.log_interval) or self._due(step, t.eval_interval) or step % t.checkpoint_interval == 0

    def host_row(self, row: dict) -> dict:
        """A metrics row with its device tensors (w, the hypergradient) read back as lists."""
        self._settle_outer()
        return {k: v.detach().cpu().tolist() if torch.is_tensor(v) else v for k, v in row.items()}

    def log_evaluate_checkpoint(self, row: dict, bar=None) -> None:
        """Write the metrics line, evaluate and early-stop, checkpoint: each at its interval."""
        t, state = self.t, self.state
        if self._due(state["step"], t.log_interval):
            self.metrics.write(self.host_row(row))
        if self._due(state["step"], t.eval_interval):
            dev = self.evaluate()
            if dev < state["best"]:
                state["best"], state["bad_evals"] = dev, 0
            else:
                state["bad_evals"] += 1
                if t.enable_early_stopping and state["bad_evals"] >= t.patience:
                    state["stopped_early"] = True
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", dev=f"{dev:.3f}")
        if state["step"] % t.checkpoint_interval == 0:
            self.save_checkpoint()

    def evaluate(self) -> float:
        """Per-peer dev CE and the dev ensemble loss on the fixed dev batches, logged; returns the latter."""
        if not self.main:  # rank 0's loss decides early stopping on every rank
            return distributed.broadcast_float(math.nan, self.ranks, self.device)
        self._settle_outer()
        with self.autocast, matmul_precision(self.tf32):
            out = self.method.eval_losses(self.eval_batches)
        self.metrics.write({"kind": "eval", "step": self.state["step"], "tokens": self.state["tokens"],
                            "w": _weights(self.method), **out})
        return distributed.broadcast_float(out["dev_ensemble"], self.ranks, self.device)

    def fit(self, max_steps: int | None = None) -> TrainResult:
        """Run to the end (or stop after ``max_steps`` steps in all, leaving a checkpoint), then save."""
        from tqdm.auto import tqdm

        if self.finished is not None:
            return self.finished
        state = self.state
        bar = tqdm(total=self.n_steps, initial=state["step"], disable=not self.progress,
                   desc=f"{self.t.method} x{self.method.p}", unit="step")
        try:
            while state["step"] < self.n_steps and not state["stopped_early"]:
                if max_steps is not None and state["step"] >= max_steps:
                    self.save_checkpoint()
                    return TrainResult(self.run_dir, _weights(self.method), read_metrics(self.run_dir), done=False)
                row = self.train_step()
                self.log_evaluate_checkpoint(row, bar)
                bar.update(1)
            self.save_checkpoint()
        finally:
            if self.prefetcher is not None:
                self.prefetcher.close()
                self.prefetcher = None
            bar.close()
            self.metrics.close()
            restore_attention(self.models, self.attention)  # as the caller gave them, before saving
        return self.finish()

    def finish(self) -> TrainResult:
        if not self.main:
            distributed.barrier(self.ranks)  # rank 0 has saved the peers
            return TrainResult(self.run_dir, _weights(self.method), read_metrics(self.run_dir), done=True)
        result = _finish(self.run_dir, self.models, self.corpus.tokenizer, self.method, self.state)
        distributed.barrier(self.ranks)
        return result


def train(cfg: Config, corpus, models: Sequence[nn.Module], run_dir: str | Path, teacher: nn.Module | None = None,
          resume: bool = True, progress: bool = True, max_steps: int | None = None, **method_kwargs) -> TrainResult:
    """Train ``models`` with ``cfg.train.method`` on ``corpus`` (a ``dwml.data.PreparedCorpus``) in ``run_dir``.

    ``resume``: continue from ``run_dir/checkpoint.pt`` if present (the configuration must match), or
    return the finished result if the run is DONE and the configuration computes the same thing; a
    finished run asked for more steps (and nothing else) continues from its final checkpoint with a
    warning; any other difference raises ``CheckpointMismatchError`` naming the fields (``dwml.checkpoint``). ``max_steps``: stop this call after that many optimizer
    steps in all, leaving a checkpoint to continue from (time-sliced runs, and the resume test).
    Raises ``FloatingPointError`` naming the step and peer on a non-finite loss or gradient; the last
    checkpoint is left as it was. (:class:`Trainer` holds the phases.)
    """
    # rank 0 holds the folder's lock while the run writes: a second process on it is refused
    lock = RunLock(project_path(run_dir)) if distributed.env_ranks().main else contextlib.nullcontext()
    with lock:
        return Trainer(cfg, corpus, models, run_dir, teacher=teacher, resume=resume, progress=progress,
                       **method_kwargs).fit(max_steps)


def _warn_threads(saved: dict, current: dict, path, device: torch.device) -> None:
    """A resume under another CPU thread count goes on, with a warning: its steps differ in the last digits."""
    before, now = saved.get("threads"), current.get("threads")
    if device.type == "cpu" and before is not None and before != now:
        warnings.warn(f"{path}: the run was written with {before} torch thread(s) and resumes with {now}: CPU "
                      "reductions split differently, so its steps differ in the last digits from an uninterrupted "
                      f"run (torch.set_num_threads({before}) reproduces it)", stacklevel=3)


def _weights(method: Method) -> list[float] | None:
    return None if method.weights is None else method.weights.detach().cpu().tolist()


def _finish(run_dir: Path, models, tokenizer, method: Method, state: dict) -> TrainResult:
    peer_dirs = []
    for i, m in enumerate(models):
        out = run_dir / f"peer_{i}"
        m.save_pretrained(out)
        save_tokenizer_files(tokenizer, out)  # a config that transformers 4.x loads too (dwml.data)
        peer_dirs.append(out)
    history = read_metrics(run_dir)
    evals = history[history["kind"] == "eval"]
    summary = {"method": method.name, "steps": state["step"], "tokens": state["tokens"],
               "stopped_early": state["stopped_early"], "elapsed_s": state["elapsed"], "weights": _weights(method),
               "final_dev_ce": evals["dev_ce"].iloc[-1], "final_dev_ensemble": evals["dev_ensemble"].iloc[-1],
               "initial_dev_ce": evals["dev_ce"].iloc[0], "best_dev_ensemble": state["best"],
               "threads": torch.get_num_threads(),
               "peer_dirs": [str(d) for d in peer_dirs]}
    atomic_write_json(run_dir / SUMMARY, summary)
    (run_dir / DONE).write_text("done\n")
    return TrainResult(run_dir, summary["weights"], history, peer_dirs, summary, done=True)


def load_result(run_dir: str | Path) -> TrainResult:
    """The result of a finished run folder (DONE), without training."""
    run_dir = project_path(run_dir)
    if not (run_dir / DONE).is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no {DONE} marker)")
    summary = read_json_file(run_dir / SUMMARY, "the finished run's summary")
    if not isinstance(summary, dict) or not {"weights", "peer_dirs"} <= set(summary):
        raise CheckpointError(f"{run_dir / SUMMARY}: not a run summary (a JSON object with 'weights' and 'peer_dirs')")
    return TrainResult(run_dir, summary["weights"], read_metrics(run_dir),
                       [Path(d) for d in summary["peer_dirs"]], summary, done=True)
