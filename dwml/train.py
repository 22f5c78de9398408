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
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from dwml.bilevel import cosine_schedule
from dwml.config import Config, ConfigError
from dwml.io import atomic_torch_save, atomic_write_json, project_path
from dwml.methods import Method, make_method

CHECKPOINT, METRICS, CONFIG, SUMMARY, DONE = "checkpoint.pt", "metrics.jsonl", "config.json", "summary.json", "DONE"

# Fields that may differ between a checkpoint and the run that resumes it: where it runs, how often it
# writes, and how long it goes on (the schedule depends on lr_decay_iters, not on the run's length).
# The eval and search sections are not read by training (the peers' shapes are compared separately).
HARMLESS = {"train.device", "train.compile", "train.log_interval", "train.checkpoint_interval",
            "train.num_epochs", "train.max_tokens", "data.cache_dir"}
COMPARED_SECTIONS = ("data", "train")


class CheckpointMismatchError(ConfigError):
    """The checkpoint in a run folder was written under another configuration or other peers."""


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

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r}: no CUDA device is available")
    return dev


def make_optimizer(modules: Sequence[nn.Module], lr: float, weight_decay: float, betas) -> torch.optim.AdamW:
    """AdamW over the modules' parameters, decaying matrices (linear and embedding weights) only:
    decaying a bias or a LayerNorm gain pulls it toward 0, which is not a simpler model but a broken one."""
    seen, decay, no_decay = set(), [], []
    for mod in modules:
        for p in mod.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def total_steps(cfg: Config) -> int:
    t = cfg.train
    if t.max_tokens > 0:
        return min(t.num_epochs, math.ceil(t.max_tokens / tokens_per_step(cfg)))
    return t.num_epochs


def tokens_per_step(cfg: Config) -> int:
    """Tokens of one optimizer step with ``data.packing='blocks'``; an upper bound with 'lines' (padding)."""
    return cfg.train.num_batches * cfg.train.batch_size * cfg.data.block_size


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


def config_differences(saved: dict, current: dict) -> list[str]:
    diffs = []
    if "corpus" in current and saved.get("corpus") != current["corpus"]:
        diffs.append(f"corpus: checkpoint {saved.get('corpus')!r}, now {current['corpus']!r}")
    for section in COMPARED_SECTIONS:
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            name = f"{section}.{key}"
            if name not in HARMLESS and a.get(key) != b.get(key):
                diffs.append(f"{name}: checkpoint {a.get(key)!r}, now {b.get(key)!r}")
    return diffs


def load_teacher(teacher_dir: str, device: torch.device) -> nn.Module:
    from transformers import AutoModelForMaskedLM

    path = project_path(teacher_dir) if teacher_dir else None
    if path is None or not (path / "config.json").is_file():
        raise ConfigError(f"train.teacher_dir={teacher_dir!r}: no saved model there (a folder written by "
                          "save_pretrained, e.g. the peer_0 of a finished 'mlm' run)")
    return AutoModelForMaskedLM.from_pretrained(path).to(device).eval().requires_grad_(False)


def read_metrics(run_dir: str | Path):
    """metrics.jsonl as a DataFrame (one row a line; ``kind`` is 'train' or 'eval')."""
    import pandas as pd

    path = Path(run_dir) / METRICS
    if not path.is_file():
        return pd.DataFrame()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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

    def __init__(self, path: Path):
        self.path = path
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()

    def size(self) -> int:
        self.fh.flush()
        return self.path.stat().st_size

    def close(self) -> None:
        self.fh.close()


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------

def train(cfg: Config, corpus, models: Sequence[nn.Module], run_dir: str | Path, teacher: nn.Module | None = None,
          resume: bool = True, progress: bool = True, max_steps: int | None = None, **method_kwargs) -> TrainResult:
    """Train ``models`` with ``cfg.train.method`` on ``corpus`` (a ``dwml.data.PreparedCorpus``) in ``run_dir``.

    ``resume``: continue from ``run_dir/checkpoint.pt`` if present (the configuration must match), or
    return the finished result if the run is DONE. ``max_steps``: stop this call after that many optimizer
    steps in all, leaving a checkpoint to continue from (time-sliced runs, and the resume test).
    Raises ``FloatingPointError`` naming the step and peer on a non-finite loss or gradient; the last
    checkpoint is left as it was.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    t = cfg.train
    run_dir = project_path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(t.device)
    ckpt_path, metrics_path = run_dir / CHECKPOINT, run_dir / METRICS
    vocab = len(corpus.tokenizer)
    for i, m in enumerate(models):
        if m.config.vocab_size < vocab:
            raise ConfigError(f"peer {i}: vocab_size {m.config.vocab_size} is smaller than the tokenizer's "
                              f"{vocab} (data.vocab_size); build the peers with the corpus's vocabulary")
        if m.config.max_position_embeddings < cfg.data.block_size + 2:
            raise ConfigError(f"peer {i}: max_position_embeddings {m.config.max_position_embeddings} < "
                              f"data.block_size + 2 = {cfg.data.block_size + 2}")

    cfg_dict = cfg.to_dict()
    # The corpus itself, not only its settings: a new grammar version or tokenizer under the same
    # profile must not reuse (or resume) a run trained on the old text.
    cfg_dict["corpus"] = corpus_identity(corpus)
    arch = architecture(models)
    if resume and (run_dir / DONE).is_file() and ckpt_path.is_file():
        _check_checkpoint(torch.load(ckpt_path, map_location="cpu", weights_only=True), cfg_dict, arch, ckpt_path)
        return load_result(run_dir)

    torch.manual_seed(t.seed)
    models = [m.to(device).train() for m in models]
    if t.dropout is not None:
        set_dropout(models, t.dropout)
    if teacher is None and t.method in ("kd", "kd_dwml"):
        teacher = load_teacher(t.teacher_dir, device)
    elif teacher is not None:
        teacher = teacher.to(device)
    method: Method = make_method(t, models, teacher, **method_kwargs)
    p = method.p
    optimizers = [make_optimizer(method.peer_modules(i), t.learning_rate, t.weight_decay, (t.beta1, t.beta2))
                  for i in range(p)]
    # Three streams of training/dev batches with their own generators: the inner loop's, and the outer
    # step's fresh train and dev micro-batches (so adding outer steps does not shift the inner batches).
    batchers = {"train": corpus.batcher("train", cfg.data, t.batch_size, seed=t.seed),
                "outer_train": corpus.batcher("train", cfg.data, t.batch_size, seed=t.seed + 1),
                "outer_dev": corpus.batcher("dev", cfg.data, t.batch_size, seed=t.seed + 2)}
    eval_batches = [_to(b, device) for b in
                    corpus.batcher("dev", cfg.data, t.batch_size, seed=t.seed).fixed_batches(t.eval_batches)]
    n_steps = total_steps(cfg)
    state = {"step": 0, "tokens": 0, "best": math.inf, "bad_evals": 0, "stopped_early": False, "elapsed": 0.0}

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        if t.compile:
            for m in models:  # in place, so state_dict keys and save_pretrained stay as they were
                getattr(m, "roberta", m).compile()
    # bf16 autocast: on CUDA, and on CPUs with bf16 matrix units (AMX/AVX512-BF16), where it is also faster.
    # The master weights, optimiser states and the hypergradient (dwml.bilevel turns autocast off) stay fp32.
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if t.mixed_precision and device.type in ("cuda", "cpu")
                else contextlib.nullcontext())

    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        _check_checkpoint(ck, cfg_dict, arch, ckpt_path)
        for m, sd in zip(models, ck["models"]):
            m.load_state_dict(sd)
        for opt, sd in zip(optimizers, ck["optimizers"]):
            opt.load_state_dict(sd)
        method.load_state_dict(ck["method"])
        for name, b in batchers.items():
            b.load_state_dict(ck["batchers"][name])
        _set_rng_state(ck["rng"])
        state.update(ck["state"])
        with open(metrics_path, "r+b") as fh:  # drop what was logged after the checkpoint: it is redone
            fh.truncate(ck["metrics_bytes"])
        metrics = _Metrics(metrics_path)
    else:
        for name in (METRICS, DONE, SUMMARY, CHECKPOINT):
            (run_dir / name).unlink(missing_ok=True)
        atomic_write_json(run_dir / CONFIG, cfg_dict)
        metrics = _Metrics(metrics_path)
        _evaluate(method, eval_batches, state, metrics, autocast)  # step 0: the peers at initialisation

    def save_checkpoint():
        atomic_torch_save(ckpt_path, {
            "config": cfg_dict, "architecture": arch, "models": [m.state_dict() for m in models],
            "optimizers": [o.state_dict() for o in optimizers], "method": method.state_dict(),
            "batchers": {k: b.state_dict() for k, b in batchers.items()}, "rng": _rng_state(),
            "state": dict(state), "metrics_bytes": metrics.size()})

    bar = tqdm(total=n_steps, initial=state["step"], disable=not progress, desc=f"{t.method} x{p}", unit="step")
    try:
        while state["step"] < n_steps and not state["stopped_early"]:
            if max_steps is not None and state["step"] >= max_steps:
                save_checkpoint()
                return TrainResult(run_dir, _weights(method), read_metrics(run_dir), done=False)
            t0 = time.perf_counter()
            step = state["step"]  # 0-based index of the step being taken; logged as step + 1
            lr = cosine_schedule(step, t.learning_rate, t.min_lr, t.warmup_iters, t.lr_decay_iters)
            for opt in optimizers:
                for g in opt.param_groups:
                    g["lr"] = lr
                opt.zero_grad(set_to_none=True)
            sums: dict[str, torch.Tensor] = {}
            loss_sum = 0.0
            step_tokens = 0  # real tokens: with data.packing='lines' the padding does not count
            for _ in range(t.num_batches):
                cpu_batch = batchers["train"].next_batch()
                step_tokens += int(cpu_batch["attention_mask"].sum())
                batch = _to(cpu_batch, device)
                with autocast:
                    loss, parts = method.loss(batch)
                (loss / t.num_batches).backward()
                loss_sum = loss_sum + loss.detach()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0) + v.float()
            parts = {k: (v / t.num_batches).cpu() for k, v in sums.items()}
            _check_finite(parts, step + 1, ckpt_path)

            # Per-peer gradient norms first (a non-finite one stops the run before anything is updated),
            # then the outer step where it reuses this step's gradient, then clipping and the update.
            grads = [[q for g in opt.param_groups for q in g["params"] if q.grad is not None] for opt in optimizers]
            norms = []
            for i, ps in enumerate(grads):
                norms.append(torch.nn.utils.get_total_norm([q.grad for q in ps]) if ps else torch.zeros(()))
                if not math.isfinite(float(norms[-1])):
                    raise FloatingPointError(f"step {step + 1}, peer {i}: non-finite gradient norm {float(norms[-1])}; "
                                             f"stopped before updating; the last good checkpoint ({ckpt_path}) is kept")

            eta, hyper, outer_now = None, None, False
            if method.learns_weights:
                eta = cosine_schedule(step, t.step_size, t.min_step_size, t.warmup_iters, t.lr_decay_iters)
                outer_now = (step + 1) % t.weight_update_frequency == 0
                if outer_now and t.outer_grad == "reuse":
                    # Here, before clipping and the optimizer step, .grad is grad_theta L1(theta, w) at the
                    # theta and w of this step: theta' of eq. 3 at no extra cost (dwml.bilevel). The new w
                    # weighs the peers from the next step on.
                    with autocast:
                        hyper = method.outer_step(batch, _to(batchers["outer_dev"].next_batch(), device), lr, eta,
                                                  reuse_grad=True)
            for ps, norm in zip(grads, norms):
                if t.grad_clip > 0 and ps:
                    torch.nn.utils.clip_grads_with_norm_(ps, t.grad_clip, norm)
            norms = [float(n) for n in norms]
            for opt in optimizers:
                opt.step()
            state["step"] = step + 1
            state["tokens"] += step_tokens

            if outer_now and t.outer_grad == "recompute":
                with autocast:
                    hyper = method.outer_step(_to(batchers["outer_train"].next_batch(), device),
                                              _to(batchers["outer_dev"].next_batch(), device), lr, eta)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            state["elapsed"] += dt
            if state["step"] % t.log_interval == 0 or state["step"] == n_steps:
                row = {"kind": "train", "step": state["step"], "tokens": state["tokens"], "lr": lr, "eta": eta,
                       "w": _weights(method), "loss": float(loss_sum) / t.num_batches,
                       **{k: v.tolist() for k, v in parts.items()}, "grad_norm": norms,
                       "tokens_per_s": step_tokens / dt, "elapsed_s": state["elapsed"]}
                if hyper is not None:
                    row["hypergrad"] = hyper.tolist()
                metrics.write(row)
            if state["step"] % t.eval_interval == 0 or state["step"] == n_steps:
                dev = _evaluate(method, eval_batches, state, metrics, autocast)
                if dev < state["best"]:
                    state["best"], state["bad_evals"] = dev, 0
                else:
                    state["bad_evals"] += 1
                    if t.enable_early_stopping and state["bad_evals"] >= t.patience:
                        state["stopped_early"] = True
                bar.set_postfix(loss=f"{float(loss_sum) / t.num_batches:.3f}", dev=f"{dev:.3f}")
            if state["step"] % t.checkpoint_interval == 0:
                save_checkpoint()
            bar.update(1)
        save_checkpoint()
    finally:
        bar.close()
        metrics.close()
    return _finish(run_dir, models, corpus.tokenizer, method, state)


def _check_finite(parts: dict[str, torch.Tensor], step: int, ckpt_path: Path) -> None:
    for name, values in parts.items():
        bad = torch.nonzero(~torch.isfinite(values)).flatten().tolist()
        if bad:
            raise FloatingPointError(
                f"step {step}, peer {bad[0]}: non-finite training loss ({name} = {values[bad[0]].item()}); "
                f"stopped before updating; the last good checkpoint ({ckpt_path}) is kept")


def _check_checkpoint(ck: dict, cfg_dict: dict, arch: list, path: Path) -> None:
    diffs = config_differences(ck["config"], cfg_dict)
    if diffs:
        raise CheckpointMismatchError(f"{path} was written under another configuration: " + "; ".join(diffs)
                                      + ". Use another run folder, or resume=False to start over.")
    if ck["architecture"] != arch:
        which = [i for i in range(max(len(arch), len(ck["architecture"])))
                 if i >= len(arch) or i >= len(ck["architecture"]) or arch[i] != ck["architecture"][i]]
        raise CheckpointMismatchError(f"{path} holds other peers: peer(s) {which} differ in number or shape "
                                      f"({len(ck['architecture'])} saved, {len(arch)} given)")


def _weights(method: Method) -> list[float] | None:
    return None if method.weights is None else method.weights.detach().cpu().tolist()


def _evaluate(method: Method, batches, state: dict, metrics: _Metrics, autocast) -> float:
    with autocast:
        out = method.eval_losses(batches)
    metrics.write({"kind": "eval", "step": state["step"], "tokens": state["tokens"], "w": _weights(method), **out})
    return out["dev_ensemble"]


def _finish(run_dir: Path, models, tokenizer, method: Method, state: dict) -> TrainResult:
    peer_dirs = []
    for i, m in enumerate(models):
        out = run_dir / f"peer_{i}"
        m.save_pretrained(out)
        tokenizer.save_pretrained(out)
        peer_dirs.append(out)
    history = read_metrics(run_dir)
    evals = history[history["kind"] == "eval"]
    summary = {"method": method.name, "steps": state["step"], "tokens": state["tokens"],
               "stopped_early": state["stopped_early"], "elapsed_s": state["elapsed"], "weights": _weights(method),
               "final_dev_ce": evals["dev_ce"].iloc[-1], "final_dev_ensemble": evals["dev_ensemble"].iloc[-1],
               "initial_dev_ce": evals["dev_ce"].iloc[0], "best_dev_ensemble": state["best"],
               "peer_dirs": [str(d) for d in peer_dirs]}
    atomic_write_json(run_dir / SUMMARY, summary)
    (run_dir / DONE).write_text("done\n")
    return TrainResult(run_dir, summary["weights"], history, peer_dirs, summary, done=True)


def load_result(run_dir: str | Path) -> TrainResult:
    """The result of a finished run folder (DONE), without training."""
    run_dir = project_path(run_dir)
    if not (run_dir / DONE).is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no {DONE} marker)")
    summary = json.loads((run_dir / SUMMARY).read_text())
    return TrainResult(run_dir, summary["weights"], read_metrics(run_dir),
                       [Path(d) for d in summary["peer_dirs"]], summary, done=True)

