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

A run folder holds ``config.json``, ``metrics.jsonl``, ``checkpoint.pt`` and at the end ``peer_<i>/``,
``summary.json`` and ``DONE`` (its format: ``dwml.runfolder``; the checkpoint, everything needed to continue
bit for bit, written and restored by ``dwml.checkpoint``; the optimiser and schedule: ``dwml.optim``).
Calling :func:`train` again on the folder continues the run.

Longer than the house's ~600 lines on purpose: the :class:`Trainer` (its set-up steps, one step, evaluation,
checkpointing, the outer step across ranks) reads top to bottom as one page of phases; what is not a phase of
the loop lives in the modules named above and in ``dwml.teacher``.

Under ``torchrun`` (``python -m dwml.train``, or ``train.nproc`` > 1 through ``dwml.runs.launch_run``) the same
loop runs data parallel (``dwml.distributed``): ``train.batch_size`` is each rank's micro-batch, the run
computes what one process with ``nproc`` times that micro-batch computes, and rank 0 alone writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from dwml import distributed
from dwml.bilevel import across_ranks
from dwml.checkpoint import (RunLock, check_checkpoint, check_metrics_file, checkpoint_note, claim_run_folder,
                             extension_note, finished_without_checkpoint, read_checkpoint, restore_checkpoint,
                             rng_state, warn_threads, write_checkpoint)
from dwml.config import Config, ConfigError
from dwml.batches import merge_batches
from dwml.device import resolve_device
from dwml.io import atomic_write_json, project_path
from dwml.methods import Method, make_method, method_class
from dwml.model import restore_attention, use_fast_attention
from dwml.optim import cosine_schedule, make_optimizer, use_fused
from dwml.precision import (PrecisionChoice, choose_bf16, matmul_precision, probe_key, recorded_choice,
                            time_passes)
from dwml.prefetch import Prefetcher
from dwml.teacher import check_teacher_vocab, load_teacher
from dwml.runfolder import (CHECKPOINT, CONFIG, DONE, METRICS, PRECISION, SUMMARY, MetricsLog, TrainResult,
                            load_result,
                            read_metrics, weights_list, write_finished_run)


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------

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


def time_method_passes(cfg: Config, corpus, models: Sequence[nn.Module], teacher: nn.Module | None, bf16: bool,
                       n: int = 5, warmup: int = 2) -> list[float]:
    """Seconds of ``n`` forward-backward passes of ``cfg.train.method``'s loss over ``models`` on one training
    micro-batch (after ``warmup``), under bf16 autocast or not: the probe of ``train.mixed_precision: auto``.
    The peers are left as they were (no gradients, their attention restored) and the RNG streams untouched."""
    t = cfg.train
    if teacher is None and method_class(t.method).uses_teacher:
        teacher = load_teacher(t.teacher_dir, torch.device("cpu"), corpus)
    rng = torch.get_rng_state()
    before = use_fast_attention(models)
    batch = corpus.batcher("train", cfg.data, t.batch_size, seed=t.seed + 3).fixed_batches(1)[0]
    method = make_method(dataclasses.replace(t, mixed_precision=False), list(models), teacher)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def one_pass() -> None:
        with cast:
            loss, _ = method.loss(batch)
        loss.backward()

    try:
        return time_passes(one_pass, n=n, warmup=warmup)
    finally:
        for m in models:
            m.zero_grad(set_to_none=True)
        restore_attention(models, before)
        torch.set_rng_state(rng)


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
    from dwml.tokenizer import tokenizer_fingerprint

    return {"tokenizer": tokenizer_fingerprint(corpus.tokenizer), "train_tokens": len(corpus.train),
            "dev_tokens": len(corpus.dev)}


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
        self.cfg, self.corpus, self.progress, self.t = cfg, corpus, progress, cfg.train
        self.run_dir = project_path(run_dir)
        self.ckpt_path, self.metrics_path = self.run_dir / CHECKPOINT, self.run_dir / METRICS
        self._join_ranks()
        self._resolve_precision(models, teacher, resume)
        self._check_peers(models)
        self._record_identity(models)
        self.finished = self._finished_run(resume)
        if self.finished is not None:
            return
        self._check_corpus_ids(models)
        self._place_peers(models)
        teacher = self._place_teacher(teacher)
        self._build_method(teacher, method_kwargs)
        self._build_batchers()
        self._init_loop_state(teacher)
        self._restore_or_start(resume)
        # After the restore: DDP broadcasts rank 0's parameters, the same on every rank anyway.
        self.ddp = distributed.wrap_peers(self.method, self.ranks, self.device)

    # ---- set-up, in the order __init__ takes it ---------------------------------------------------

    def _join_ranks(self) -> None:
        """This process alone, or its rank of a torchrun launch (CUDA: the GPU of its LOCAL_RANK); rank 0
        alone writes, and claims the run folder (created with its marker, or checked to be a run's)."""
        world = distributed.env_ranks().world
        if self.t.nproc != world:
            raise ConfigError(f"train.nproc={self.t.nproc} but {world} process(es) run: launch it with torchrun "
                              f"--nproc_per_node {self.t.nproc} (python -m dwml.train) or through dwml.runs.launch_run")
        self.ranks, self.device = distributed.setup(resolve_device(self.t.device))
        self.main = self.ranks.main
        if self.main:  # nothing else in the folder is deleted
            claim_run_folder(self.run_dir)

    def _resolve_precision(self, models: Sequence[nn.Module], teacher: nn.Module | None, resume: bool) -> None:
        """``train.mixed_precision='auto'`` replaced by what this run will use (``dwml.precision.choose_bf16``: on a
        CPU with bf16 instructions a timed probe of this method on these peers, cached per machine and shape; the
        rule elsewhere, and under several ranks, which must agree): the run records the value and why. A run
        that goes on from its folder (checkpoint or DONE) keeps the choice it recorded at its start."""
        t = self.t
        if isinstance(t.mixed_precision, bool):
            self.precision = PrecisionChoice(t.mixed_precision, "set by train.mixed_precision")
            return
        began = self.ckpt_path.is_file() or (self.run_dir / DONE).is_file()
        kept = recorded_choice(self.run_dir / PRECISION) if resume and began else None
        if kept is not None:
            self._use_precision(kept)
            return
        probe = None
        if self.ranks.world == 1 and self.device.type == "cpu":
            def probe(bf16: bool) -> list[float]:
                return time_method_passes(self.cfg, self.corpus, models, teacher, bf16)
        shape = {"method": t.method, "peers": [[m.config.num_hidden_layers, m.config.hidden_size,
                                                m.config.num_attention_heads, m.config.vocab_size] for m in models],
                 "batch_size": t.batch_size, "block_size": self.cfg.data.block_size, "packing": self.cfg.data.packing,
                 "compile": t.compile, "loss_rows": t.loss_rows}
        self._use_precision(choose_bf16(t.mixed_precision, self.device, probe, key=probe_key(self.device, shape)))

    def _use_precision(self, choice: PrecisionChoice) -> None:
        self.precision = choice
        self.cfg = dataclasses.replace(self.cfg, train=dataclasses.replace(self.t, mixed_precision=choice.bf16))
        self.t = self.cfg.train

    def _check_peers(self, models: Sequence[nn.Module]) -> None:
        """Every peer must embed the tokenizer's ids and a block's positions (+2: RoBERTa's offset)."""
        vocab, block = len(self.corpus.tokenizer), self.cfg.data.block_size
        for i, m in enumerate(models):
            if m.config.vocab_size < vocab:
                raise ConfigError(f"peer {i}: vocab_size {m.config.vocab_size} is smaller than the tokenizer's "
                                  f"{vocab} (data.vocab_size); build the peers with the corpus's vocabulary")
            if m.config.max_position_embeddings < block + 2:
                raise ConfigError(f"peer {i}: max_position_embeddings {m.config.max_position_embeddings} < "
                                  f"data.block_size + 2 = {block + 2}")

    def _record_identity(self, models: Sequence[nn.Module]) -> None:
        """What a checkpoint must match (``cfg_dict``, ``arch``): the settings, the corpus, the peers' shapes."""
        self.cfg_dict = self.cfg.to_dict()
        # The corpus itself, not only its settings: a new grammar version or tokenizer under the same
        # profile must not reuse (or resume) a run trained on the old text.
        self.cfg_dict["corpus"] = corpus_identity(self.corpus)
        if self.t.nproc == 1:  # one process: config.json and checkpoints as before the key existed (old runs resume)
            self.cfg_dict["train"].pop("nproc")
        # CPU results depend on the thread count (reductions split differently): recorded, not compared
        self.cfg_dict["threads"] = torch.get_num_threads()
        self.arch = architecture(models)

    def _finished_run(self, resume: bool) -> TrainResult | None:
        """A finished run of the same computation, reused (returned); a longer run of the same settings goes on
        from the final checkpoint (``dwml.checkpoint``; its DONE removed, None returned); anything else is
        refused, naming fields."""
        run_dir = self.run_dir
        if not (resume and (run_dir / DONE).is_file()):
            return None
        if not self.ckpt_path.is_file():  # the checkpoint is gone: reused only if config.json computes the same thing
            finished_without_checkpoint(run_dir, self.cfg_dict)
            return load_result(run_dir)
        ck = read_checkpoint(self.ckpt_path)
        if check_checkpoint(ck, self.cfg_dict, self.arch, self.ckpt_path, done=True) == "same":
            return load_result(run_dir)
        distributed.barrier(self.ranks)  # every rank has decided before rank 0 changes the folder
        warnings.warn(extension_note(self.ckpt_path, ck["config"], self.cfg_dict, ck["state"]), stacklevel=3)
        if self.main:
            (run_dir / DONE).unlink()
            (run_dir / SUMMARY).unlink(missing_ok=True)
        return None

    def _check_corpus_ids(self, models: Sequence[nn.Module]) -> None:
        """Token ids outside the smallest peer's vocabulary: caught here, naming the cache file."""
        for cache in (self.corpus.train, self.corpus.dev):
            cache.check_ids(min(m.config.vocab_size for m in models))

    def _place_peers(self, models: Sequence[nn.Module]) -> None:
        """The run's seed (its own dropout stream on each rank > 0), the peers on the device in training mode,
        with the run's dropout."""
        torch.manual_seed(self.t.seed)
        if self.ranks.rank > 0:  # rank 0 keeps a single process's stream
            torch.manual_seed(self.t.seed + 7919 * self.ranks.rank)
        self.models = [m.to(self.device).train() for m in models]
        if self.t.dropout is not None:
            set_dropout(self.models, self.t.dropout)

    def _place_teacher(self, teacher: nn.Module | None) -> nn.Module | None:
        """The method's teacher: the one given, else loaded from ``train.teacher_dir`` if the method uses one;
        checked to share the peers' vocabulary."""
        if teacher is None and method_class(self.t.method).uses_teacher:
            teacher = load_teacher(self.t.teacher_dir, self.device, self.corpus)
        elif teacher is not None:
            teacher = teacher.to(self.device)
        if teacher is not None:
            check_teacher_vocab(teacher, self.models, self.t.teacher_dir)
        return teacher

    def _build_method(self, teacher: nn.Module | None, method_kwargs: dict) -> None:
        """Fast attention (restored at the end of :meth:`fit`, before saving), the method, one AdamW per peer."""
        t = self.t
        self.attention = use_fast_attention(self.models)
        if teacher is not None:
            use_fast_attention([teacher])
        self.method: Method = make_method(t, self.models, teacher, **method_kwargs)
        self.optimizers = [make_optimizer(self.method.peer_modules(i), t.learning_rate, t.weight_decay,
                                          (t.beta1, t.beta2), fused=use_fused(self.device))
                           for i in range(self.method.p)]

    def _build_batchers(self) -> None:
        """Three streams of training/dev batches with their own generators: the inner loop's, and the outer
        step's fresh train and dev micro-batches (so adding outer steps does not shift the inner batches).
        On N ranks each draws the global micro-batch of N x batch_size and keeps its rows (dwml.distributed).
        Rank 0 alone evaluates, on the dev batches one process with the global micro-batch would use."""
        t, data, corpus, ranks = self.t, self.cfg.data, self.corpus, self.ranks
        shard = (ranks.rank, ranks.world)
        self.batchers = {"train": corpus.batcher("train", data, t.batch_size, seed=t.seed, shard=shard),
                         "outer_train": corpus.batcher("train", data, t.batch_size, seed=t.seed + 1, shard=shard),
                         "outer_dev": corpus.batcher("dev", data, t.batch_size, seed=t.seed + 2, shard=shard)}
        self.eval_batches = [self.to_device(b) for b in
                             corpus.batcher("dev", data, t.batch_size * ranks.world, seed=t.seed)
                             .fixed_batches(t.eval_batches)] if self.main else []

    def _init_loop_state(self, teacher: nn.Module | None) -> None:
        """The loop's counters, its precision (TF32, bf16 autocast), compiled peers, no prefetcher yet."""
        t, device = self.t, self.device
        self.n_steps = total_steps(self.cfg)
        self.state = {"step": 0, "tokens": 0, "best": math.inf, "bad_evals": 0, "stopped_early": False,
                      "elapsed": 0.0}
        # TF32 only inside the inner step and evaluation, when the run asks (train.tf32); never process-wide,
        # so the outer step's float32 stays IEEE (dwml.precision).
        self.tf32 = bool(t.tf32 and device.type == "cuda")
        if t.compile:
            compile_peers(self.models + ([teacher] if teacher is not None else []))
        self.prefetcher = None  # built on the first step (after a restore has set the batcher's state)
        self._pending_outer: tuple[int, torch.Tensor] | None = None  # (step, g): checked at the next read-back
        # bf16 autocast: on CUDA, and on CPUs with bf16 matrix instructions (AVX512-BF16, AMX), where it is
        # faster too. Master weights, optimiser states, the losses over the vocabulary (dwml.losses) and the
        # hypergradient (dwml.bilevel turns autocast off) stay float32.
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                         if t.mixed_precision and device.type in ("cuda", "cpu") else contextlib.nullcontext())

    def _restore_or_start(self, resume: bool) -> None:
        """Continue from the folder's checkpoint (:meth:`restore`), or start afresh: the run's files cleared,
        ``config.json`` written, and the peers evaluated at initialisation (step 0)."""
        if resume and self.ckpt_path.is_file():
            ck = read_checkpoint(self.ckpt_path)
            distributed.barrier(self.ranks)  # every rank has read it before rank 0 writes again
            self.restore(ck)
            return
        distributed.barrier(self.ranks)
        if self.main:
            for name in (METRICS, DONE, SUMMARY, CHECKPOINT):
                (self.run_dir / name).unlink(missing_ok=True)
            atomic_write_json(self.run_dir / CONFIG, self.cfg_dict)
            atomic_write_json(self.run_dir / PRECISION, dataclasses.asdict(self.precision))
        self.metrics = MetricsLog(self.metrics_path, write=self.main)
        self.evaluate()

    # ---- checkpoints (the format and its writing: dwml.checkpoint) ---------------------------------

    def restore(self, ck: dict) -> None:
        """Continue from a checkpoint: models, optimisers, weights, batchers, RNG and loop state; the metrics
        file cut back to the checkpoint's length (what was logged after it is redone)."""
        check_checkpoint(ck, self.cfg_dict, self.arch, self.ckpt_path, done=False)
        warn_threads(ck["config"], self.cfg_dict, self.ckpt_path, self.device)
        if self.main:
            check_metrics_file(self.metrics_path, ck["metrics_bytes"], self.ckpt_path)
            atomic_write_json(self.run_dir / CONFIG, self.cfg_dict)  # config.json: the run that goes on
        self.state.update(restore_checkpoint(ck, models=self.models, optimizers=self.optimizers, method=self.method,
                                             batchers=self.batchers,
                                             rank=self.ranks.rank if self.ranks.active else None))
        if self.main:
            with open(self.metrics_path, "r+b") as fh:
                fh.truncate(ck["metrics_bytes"])
        self.metrics = MetricsLog(self.metrics_path, write=self.main)

    def save_checkpoint(self) -> None:
        """Rank 0 writes; on N ranks the checkpoint also holds every rank's RNG state (its dropout stream).
        With batches built ahead, the training batcher's state is that of the first batch not yet used."""
        self._settle_outer()
        # the thread stopped and the batcher put back first, then every batcher read
        train_state = self.prefetcher.state_dict() if self.prefetcher is not None else None
        batchers = {k: b.state_dict() for k, b in self.batchers.items()}
        if train_state is not None:
            batchers["train"] = train_state
        rng = rng_state()
        rng_ranks = distributed.gather_objects(rng, self.ranks) if self.ranks.active else None
        if not self.main:
            return
        write_checkpoint(self.ckpt_path, config=self.cfg_dict, architecture=self.arch, models=self.models,
                         optimizers=self.optimizers, method=self.method, batchers=batchers, rng=rng,
                         state=self.state, metrics_bytes=self.metrics.size(), rng_ranks=rng_ranks)

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
            self._check_finite_loss(k, host[k])
        for i, v in enumerate(host["grad_norm"]):
            if not math.isfinite(v):
                raise FloatingPointError(f"step {step}, peer {i}: non-finite gradient norm {v}; "
                                         f"stopped before updating; {self._kept()}")
        return grads, norms, host

    def _kept(self) -> str:
        return checkpoint_note(self.ckpt_path)

    def _check_finite_loss(self, name: str, vals: list[float], rank: int | None = None) -> None:
        """A non-finite value among one loss part's per-peer values (of ``rank``, under torchrun) raises
        ``FloatingPointError`` naming step, peer (and rank), before anything is updated."""
        bad = [i for i, v in enumerate(vals) if not math.isfinite(v)]
        if bad:
            where, who = ("", "") if rank is None else (f", rank {rank}", "every rank ")
            raise FloatingPointError(f"step {self.state['step'] + 1}, peer {bad[0]}{where}: non-finite training loss "
                                     f"({name} = {vals[bad[0]]}); {who}stopped before updating; {self._kept()}")

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
        at = 1
        for k in names:
            for r, row in enumerate(rows):
                self._check_finite_loss(k, row[at:at + parts[k].numel()], rank=r)
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
                            "w": weights_list(self.method.weights), **out})
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
                    return TrainResult(self.run_dir, weights_list(self.method.weights), read_metrics(self.run_dir), done=False)
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
            return TrainResult(self.run_dir, weights_list(self.method.weights), read_metrics(self.run_dir), done=True)
        result = write_finished_run(self.run_dir, self.models, self.corpus.tokenizer, self.method.name,
                                    weights_list(self.method.weights), self.state)
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
