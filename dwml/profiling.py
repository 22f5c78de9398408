"""What a training method costs: FLOPs per peer, device utilisation over a run, model FLOPs utilisation.

The paper's efficiency claim (its Table 9 and Figure 4, appendix F) is that DWML had the lowest average
GPU utilisation (43.2% on one H100) and the longest training time, with FLOPs listed per peer. The
published code measured none of it (the numbers look like a logging service's system charts), so this
module measures the same three things the same way for every method, on whatever machine runs it:

1. FLOPs of one training step of one peer, counted by ``torch.utils.flop_counter.FlopCounterMode`` and
   checked against a closed form (:func:`analytic_step_flops`): a matmul of an ``m x k`` by a ``k x n``
   matrix costs ``2 m k n`` FLOPs, the backward pass of a matmul costs twice its forward (one matmul for
   the input's gradient, one for the weight's), so a step costs about ``6 N T`` for ``N`` weights in
   matmuls and ``T`` tokens, plus attention's ``12 L s d T`` (Kaplan et al. 2020, section 2.1).
2. Utilisation over time (``dwml.utilization.UtilizationSampler``), a background thread that samples at a fixed
   interval: NVML's GPU and memory-controller utilisation, memory used and power on CUDA (what such
   system charts show), and this process's share of the CPU cores otherwise.
3. Model FLOPs utilisation (:func:`mfu`, PaLM, Chowdhery et al. 2022, appendix B): achieved model FLOP/s
   over the device's peak, from a table of vendor datasheet peaks (:data:`GPU_PEAKS`) or, on a CPU or an
   unknown GPU, a measured matmul peak (:func:`measure_matmul_peak`).
"""
from __future__ import annotations

import math
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from dwml.losses import IGNORE_INDEX

# A clock the tests can replace, so the FLOP/s arithmetic can be checked against a known duration.
_clock = time.perf_counter


# --------------------------------------------------------------------------------------------------
# 1. FLOPs: counted and analytic
# --------------------------------------------------------------------------------------------------

def _attention_flops(b: int, h: int, s_q: int, s_k: int, d_q: int, d_v: int) -> int:
    """softmax(Q K^T) V for ``b x h`` heads: ``Q K^T`` then ``P V``, two batched matmuls."""
    return 2 * b * h * s_q * s_k * (d_q + d_v)


def _attention_backward_flops(b: int, h: int, s_q: int, s_k: int, d_q: int, d_v: int) -> int:
    """The backward of a fused attention kernel: it recomputes ``Q K^T`` (it never stored P), then takes
    the gradients of P V (for P and for V) and of Q K^T (for Q and for K): five matmuls in all."""
    return 2 * b * h * s_q * s_k * (3 * d_q + 2 * d_v)


def _cpu_flash_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return _attention_flops(b, h, s_q, s_k, d_q, d_v)


def _cpu_flash_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return _attention_backward_flops(b, h, s_q, s_k, d_q, d_v)


def _extra_formulas() -> dict:
    """FLOP formulas that torch's counter lacks. PyTorch's CPU flash-attention kernel (what
    ``scaled_dot_product_attention`` runs on a CPU when there is no attention dropout, e.g. in eval mode
    or with ``attention_probs_dropout_prob=0``) has no formula in ``FlopCounterMode`` (torch 2.13), which
    then counts attention as free. Only ops this torch has are mapped."""
    aten = torch.ops.aten
    mapping = {}
    for name, fn in [("_scaled_dot_product_flash_attention_for_cpu", _cpu_flash_forward),
                     ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_flash_backward)]:
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = fn
    return mapping


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of the matmul-like ops that ``fn()`` runs (``FlopCounterMode``, with CPU flash attention
    added): ``(total, {op name: flops})``. Elementwise ops (softmax, GELU, LayerNorm, the optimizer) are
    not counted, as is the convention of model FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    with counter:
        fn()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def hf_mlm_loss(model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Hugging Face's masked-LM loss: the LM head runs on every position of the block."""
    return model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                 labels=batch["labels"]).loss


def count_step_flops(model, batch: Mapping[str, torch.Tensor], backward: bool = True,
                     loss_fn: Callable | None = None) -> int:
    """FLOPs of one training step of ``model`` on ``batch`` (forward of the masked-LM loss, and its
    backward if ``backward``), counted with ``FlopCounterMode``; the optimizer's update is not counted.

    ``loss_fn(model, batch) -> loss`` defaults to :func:`hf_mlm_loss`. The count leaves no trace: the
    parameters' ``.grad`` and the random-number generators are as they were before the call, so counting
    inside a training run does not change it."""
    for key in ("input_ids", "labels"):
        if key not in batch:
            raise KeyError(f"count_step_flops: batch has no {key!r} (keys: {sorted(batch)})")
    loss_fn = loss_fn or hf_mlm_loss
    params = list(model.parameters())
    saved = [p.grad for p in params]
    devices = [batch["input_ids"].device] if batch["input_ids"].device.type == "cuda" else []

    def step():
        if backward:
            for p in params:
                p.grad = None
            loss_fn(model, batch).backward()
        else:
            with torch.no_grad():
                loss_fn(model, batch)

    try:
        with torch.random.fork_rng(devices=devices):  # dropout draws here must not shift the run's stream
            total, _ = count_flops(step)
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    return total


def _shape(config_or_model) -> tuple[int, int, int, int]:
    config = getattr(config_or_model, "config", config_or_model)
    values = []
    for name in ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size"):
        value = getattr(config, name, None)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"analytic FLOPs need a BERT/RoBERTa-style config: {type(config).__name__}.{name}"
                             f" is {value!r}")
        values.append(value)
    return tuple(values)


def analytic_flops_breakdown(config_or_model, tokens: int, seq_len: int, backward: bool = True,
                             head_tokens: int | None = None, attention_recompute: bool = False) -> dict[str, int]:
    """The closed-form FLOPs of a RoBERTa masked-LM step, by part (see :func:`analytic_step_flops`)."""
    L, d, f, V = _shape(config_or_model)
    if seq_len <= 0 or tokens <= 0 or tokens % seq_len:
        raise ValueError(f"tokens={tokens} must be a positive multiple of seq_len={seq_len} (batch x block)")
    head_tokens = tokens if head_tokens is None else head_tokens
    if not 0 <= head_tokens <= tokens:
        raise ValueError(f"head_tokens={head_tokens} must lie in [0, tokens={tokens}]")
    # Forward, 2 FLOPs a multiply-add. Per layer: Q, K, V and output projections (4 d^2 weights) and the
    # feed-forward pair (2 d f weights) act on every token; attention's Q K^T and P V cost 2 s d each a
    # token (summed over heads, the head sizes add up to d). The LM head (a d x d dense layer, then the
    # d x V decoder, tied to the embeddings or not) acts on head_tokens positions. The embedding lookups
    # are gathers, not matmuls: free.
    linear = 2 * tokens * L * (4 * d * d + 2 * d * f)
    attention = 4 * tokens * L * seq_len * d
    head = 2 * head_tokens * (d * d + d * V)
    parts = {"linear": linear, "attention": attention, "lm_head": head}
    if backward:
        # Every matmul's backward makes two matmuls of its size (gradient of each operand): the input's
        # gradient is needed down to the first layer because the embeddings are trained.
        parts.update(linear_backward=2 * linear, attention_backward=2 * attention, lm_head_backward=2 * head)
        if attention_recompute:
            # Fused kernels (flash, memory-efficient, CPU flash) recompute Q K^T in the backward pass.
            parts["attention_recompute"] = attention // 2
    return parts


def analytic_step_flops(config_or_model, tokens: int, seq_len: int, backward: bool = True,
                        head_tokens: int | None = None, attention_recompute: bool = False) -> int:
    """FLOPs of one masked-LM step of a RoBERTa model, in closed form:

        forward  = 2 T L (4 d^2 + 2 d f) + 4 T L s d + 2 T_head (d^2 + d V)
        step     = 3 x forward  (+ 2 T L s d when a fused attention kernel recomputes Q K^T)

    ``T = tokens`` (batch x block) through ``L`` layers of width ``d``, feed-forward width ``f``, sequence
    length ``s = seq_len``, vocabulary ``V``; ``T_head = head_tokens`` positions through the LM head (all
    of them, as Hugging Face's forward does, by default; ``dwml.methods`` runs the head on the masked
    positions only). With ``f = 4 d`` this is the familiar ``6 N T + 12 L s d T`` of Kaplan et al. (2020)
    with ``N = 12 L d^2`` plus the head. Biases, LayerNorm, GELU and softmax are left out, like in
    ``FlopCounterMode``."""
    return sum(analytic_flops_breakdown(config_or_model, tokens, seq_len, backward, head_tokens,
                                        attention_recompute).values())


def random_mlm_batch(vocab_size: int, batch_size: int, block_size: int, mlm_probability: float = 0.15,
                     device: str | torch.device = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of random token ids with exactly ``round(mlm_probability * tokens)`` (at least one) labelled
    positions, for counting FLOPs without a corpus (a FLOP count depends on shapes only)."""
    if not 0.0 < mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability={mlm_probability} must lie in (0, 1]")
    g = torch.Generator().manual_seed(seed)
    n = batch_size * block_size
    ids = torch.randint(5, vocab_size, (n,), generator=g)  # 0..4 are the special tokens
    labels = torch.full((n,), IGNORE_INDEX, dtype=torch.long)
    picked = torch.randperm(n, generator=g)[:max(1, round(mlm_probability * n))]
    labels[picked] = ids[picked]
    shape = (batch_size, block_size)
    return {"input_ids": ids.view(shape).to(device), "attention_mask": torch.ones(shape, dtype=torch.long, device=device),
            "labels": labels.view(shape).to(device)}


def flops_per_peer(models: Sequence, batch_size: int, block_size: int, mlm_probability: float = 0.15,
                   loss_fn: Callable | None = None, head: str = "all", count: bool = True, names: Sequence[str] | None = None):
    """One row per peer: its shape, parameters, and the FLOPs of one training micro-batch of
    ``batch_size x block_size`` tokens, analytic and (if ``count``) counted on a random batch.

    ``head``: where the LM head runs, 'all' positions (Hugging Face's loss, the default ``loss_fn``) or
    the 'labels' positions only (pass the matching ``loss_fn``, e.g. one built on
    ``dwml.model.predicted_logits``). ``analytic_flops`` are model FLOPs (no recompute); ``ratio`` is
    counted over analytic: 1 when attention runs as plain matmuls (eager, or sdpa's math path, which the
    CPU takes under attention dropout), up to ``1 + 2 T L s d / analytic`` when a fused kernel recomputed
    Q K^T in the backward pass."""
    import pandas as pd

    if head not in ("all", "labels"):
        raise ValueError(f"head={head!r}: must be 'all' or 'labels'")
    rows = []
    for i, model in enumerate(models):
        cfg = model.config
        device = next(model.parameters()).device
        batch = random_mlm_batch(cfg.vocab_size, batch_size, block_size, mlm_probability, device, seed=i)
        tokens = batch_size * block_size
        head_tokens = tokens if head == "all" else int((batch["labels"] != IGNORE_INDEX).sum())
        analytic = analytic_step_flops(cfg, tokens, block_size, head_tokens=head_tokens)
        counted = count_step_flops(model, batch, loss_fn=loss_fn) if count else math.nan
        rows.append({"peer": names[i] if names else f"peer {i}", "layers": cfg.num_hidden_layers,
                     "hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
                     "params": sum(p.numel() for p in model.parameters()), "tokens": tokens,
                     "analytic_flops": analytic, "counted_flops": counted,
                     "ratio": counted / analytic if count else math.nan})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# 3. Peaks and model FLOPs utilisation
# --------------------------------------------------------------------------------------------------

T = 1e12
# Dense (not 2:4 sparse) peak FLOP/s by matmul precision, from NVIDIA's datasheets; where a datasheet
# gives only the "with sparsity" figure, the dense one is half of it. 'fp32' is the CUDA cores' rate,
# 'tf32' / 'bf16' / 'fp16' the tensor cores' (fp16 and bf16 with fp32 accumulation, as PyTorch runs them).
# None: the GPU has no such tensor-core mode (T4 and V100 lack tf32 and bf16; their fp32 matmul runs on
# the CUDA cores). Patterns are matched in order against torch.cuda.get_device_name(), lower-cased.
GPU_PEAKS: list[tuple[str, str, dict[str, float | None]]] = [
    (r"h100.*nvl", "H100 NVL", {"fp32": 60 * T, "tf32": 835 / 2 * T, "bf16": 1671 / 2 * T, "fp16": 1671 / 2 * T}),
    (r"h100.*pcie", "H100 PCIe", {"fp32": 51 * T, "tf32": 756 / 2 * T, "bf16": 1513 / 2 * T, "fp16": 1513 / 2 * T}),
    (r"gh200", "GH200", {"fp32": 67 * T, "tf32": 989 / 2 * T, "bf16": 1979 / 2 * T, "fp16": 1979 / 2 * T}),
    (r"h100", "H100 SXM", {"fp32": 67 * T, "tf32": 989 / 2 * T, "bf16": 1979 / 2 * T, "fp16": 1979 / 2 * T}),
    (r"h200.*nvl", "H200 NVL", {"fp32": 60 * T, "tf32": 835 / 2 * T, "bf16": 1671 / 2 * T, "fp16": 1671 / 2 * T}),
    (r"h200", "H200 SXM", {"fp32": 67 * T, "tf32": 989 / 2 * T, "bf16": 1979 / 2 * T, "fp16": 1979 / 2 * T}),
    (r"a100", "A100", {"fp32": 19.5 * T, "tf32": 156 * T, "bf16": 312 * T, "fp16": 312 * T}),
    (r"\ba10\b", "A10", {"fp32": 31.2 * T, "tf32": 62.5 * T, "bf16": 125 * T, "fp16": 125 * T}),
    (r"l40s", "L40S", {"fp32": 91.6 * T, "tf32": 366 / 2 * T, "bf16": 733 / 2 * T, "fp16": 733 / 2 * T}),
    (r"\bl4\b", "L4", {"fp32": 30.3 * T, "tf32": 120 / 2 * T, "bf16": 242 / 2 * T, "fp16": 242 / 2 * T}),
    (r"\bt4\b", "T4", {"fp32": 8.1 * T, "tf32": None, "bf16": None, "fp16": 65 * T}),
    (r"v100.*sxm", "V100 SXM2", {"fp32": 15.7 * T, "tf32": None, "bf16": None, "fp16": 125 * T}),
    (r"v100", "V100 PCIe", {"fp32": 14 * T, "tf32": None, "bf16": None, "fp16": 112 * T}),
    (r"rtx 4090", "RTX 4090", {"fp32": 82.6 * T, "tf32": 82.6 * T, "bf16": 165.2 * T, "fp16": 165.2 * T}),
    (r"rtx 3090", "RTX 3090", {"fp32": 35.6 * T, "tf32": 35.6 * T, "bf16": 71 * T, "fp16": 71 * T}),
]

_PRECISIONS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def matmul_precision(dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cuda") -> str:
    """'fp32', 'tf32', 'bf16' or 'fp16': the precision matmuls of ``dtype`` run in on ``device``. A float32
    matmul on CUDA runs in TF32 when PyTorch allows it (``torch.backends.cuda.matmul.allow_tf32``, which
    ``dwml.train`` sets)."""
    if isinstance(dtype, str):
        if dtype not in ("fp32", "tf32", "bf16", "fp16"):
            raise ValueError(f"dtype={dtype!r}: must be a torch dtype or one of fp32, tf32, bf16, fp16")
        return dtype
    if dtype not in _PRECISIONS:
        raise ValueError(f"dtype={dtype}: no peak for it (float32, bfloat16 or float16)")
    name = _PRECISIONS[dtype]
    if name == "fp32" and torch.device(device).type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return name


def lookup_gpu_peak(device_name: str, precision: str) -> tuple[float, str] | None:
    """``(flops_per_s, source)`` from :data:`GPU_PEAKS` for a device name, or None if it is not listed or
    has no such mode (a float32 matmul asked as tf32 on a GPU without TF32 gets the fp32 peak)."""
    name = device_name.lower()
    for pattern, label, peaks in GPU_PEAKS:
        if re.search(pattern, name):
            if precision == "tf32" and peaks["tf32"] is None:
                precision = "fp32"  # no TF32 cores: float32 matmuls run on the CUDA cores
            peak = peaks.get(precision)
            if peak is None:
                return None
            return peak, f"datasheet: NVIDIA {label}, dense {precision}"
    return None


def measure_matmul_peak(dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 10,
                        device: str | torch.device = "cpu") -> float:
    """The FLOP/s of the fastest of ``repeats`` ``n x n`` by ``n x n`` matmuls (``2 n^3`` FLOPs each)
    on ``device``, after one warm-up: an attainable peak, for devices without a datasheet entry."""
    if n < 1 or repeats < 1:
        raise ValueError(f"measure_matmul_peak: n={n} and repeats={repeats} must be >= 1")
    device = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = _clock()
        torch.mm(a, b)
        sync()
        best = min(best, _clock() - t0)
    return 2 * n**3 / max(best, 1e-12)


def peak_flops(device: str | torch.device | None = None, dtype: torch.dtype | str = torch.float32,
               n: int = 2048, repeats: int = 10) -> tuple[float, str]:
    """``(flops_per_s, source)``: the peak that MFU divides by. A listed GPU gets its datasheet's dense
    peak for the matmul precision of ``dtype``; a CPU, or a GPU not in :data:`GPU_PEAKS`, gets a measured
    ``n x n`` matmul peak (:func:`measure_matmul_peak`), and ``source`` says which it is."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = matmul_precision(dtype, device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        found = lookup_gpu_peak(name, precision)
        if found is not None:
            return found
        where = f"{name} (not in the datasheet table)"
    else:
        where = f"cpu, {torch.get_num_threads()} threads"
    torch_dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    flops = measure_matmul_peak(torch_dtype, n=n, repeats=repeats, device=device)
    return flops, f"measured: {n}x{n} {precision} matmul, best of {repeats}, {where}"


def run_flops(batch_flops: float, batch_tokens: int, run_tokens: int) -> float:
    """A run's model FLOPs from those counted on one full batch of ``batch_tokens`` positions, scaled to
    the ``run_tokens`` real (unpadded) tokens the run trained on.

    Why: with ``data.packing='lines'`` a batch is padded only to its longest utterance and carries padding
    besides, so ``steps x batch_FLOPs`` of a full ``batch_size x block_size`` batch overstated the work (and
    the MFU) by up to 2x. Counting model FLOPs per real token is PaLM's convention: padding is not useful
    work. Exact for the per-token terms (projections, MLP, LM head), which dominate here; the attention
    score term (4 s d per token and layer) is taken at the full block length, an upper bound."""
    for name, value in [("batch_flops", batch_flops), ("batch_tokens", batch_tokens), ("run_tokens", run_tokens)]:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"run_flops: {name}={value!r} must be a finite number >= 0")
    if batch_tokens == 0:
        raise ValueError("run_flops: batch_tokens=0")
    return float(batch_flops) * float(run_tokens) / float(batch_tokens)


def mfu(flops_per_step: float, step_time_s: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: ``flops_per_step / step_time_s / peak_flops_per_s``, a fraction (PaLM,
    appendix B). Use model FLOPs (analytic, no recompute) to compare methods fairly."""
    for name, value in [("flops_per_step", flops_per_step), ("step_time_s", step_time_s),
                        ("peak_flops_per_s", peak_flops_per_s)]:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"mfu: {name}={value!r} must be a positive finite number")
    return flops_per_step / step_time_s / peak_flops_per_s


# --------------------------------------------------------------------------------------------------
# 4. Table 9
# --------------------------------------------------------------------------------------------------

PAPER_AVG_UTILISATION = {"dwml": 43.20}
"""The paper's Table 9 values that survive in its text (appendix F; one NVIDIA H100 80 GB): DWML's
average GPU utilisation, in percent. The other methods' values and the FLOPs per peer are not available."""

TABLE9_FIELDS = ("method", "peers", "avg_util_pct", "flops_per_peer", "train_time_s")


def table9(records: Iterable[Mapping[str, Any]], baseline: str = "mlm",
           paper: Mapping[str, float] | None = PAPER_AVG_UTILISATION):
    """The paper's Table 9 from measured records, one per method:
    ``{method, peers, avg_util_pct, flops_per_peer (a list, one per peer, the run's total FLOPs),
    train_time_s}`` and optionally ``tokens`` and ``device``.

    Columns: average utilisation, TFLOPs per peer (mean over the method's peers), training time in
    minutes, each with its change against the ``baseline`` method in percent (negative = less), tokens/s
    if ``tokens`` is given, and the paper's average utilisation where known (``paper``)."""
    import pandas as pd

    rows = []
    for i, rec in enumerate(records):
        missing = [k for k in TABLE9_FIELDS if k not in rec]
        if missing:
            raise KeyError(f"table9: record {i} ({rec.get('method', '?')}) lacks {missing}")
        flops = rec["flops_per_peer"]
        flops = [float(flops)] if isinstance(flops, (int, float)) else [float(x) for x in flops]
        row = {"method": rec["method"], "device": rec.get("device", ""), "peers": int(rec["peers"]),
               "avg_util_pct": float(rec["avg_util_pct"]), "tflops_per_peer": sum(flops) / len(flops) / T,
               "train_time_min": float(rec["train_time_s"]) / 60.0}
        if "tokens" in rec:
            row["tokens_per_s"] = float(rec["tokens"]) / float(rec["train_time_s"])
        rows.append(row)
    df = pd.DataFrame(rows)
    if baseline not in set(df.get("method", [])):
        raise ValueError(f"table9: baseline {baseline!r} is not among the methods {list(df.get('method', []))}")
    base = df[df["method"] == baseline].iloc[0]
    for col, change in [("avg_util_pct", "util_change_pct"), ("tflops_per_peer", "flops_change_pct"),
                        ("train_time_min", "time_change_pct")]:
        df.insert(df.columns.get_loc(col) + 1, change, (df[col] - base[col]) / base[col] * 100.0)
    if paper is not None:
        df["paper_avg_util_pct"] = [paper.get(m, math.nan) for m in df["method"]]
    return df


def table9_claims(table, method: str, device_kind: str) -> list[str]:
    """The paper's two claims about ``method`` read off :func:`table9`'s output: which method used the device
    least (``device_kind`` says what utilisation means here) and which trained longest, each with ``method``'s
    own value; no lines when ``method`` was not measured."""
    by = table.set_index("method")
    if method not in by.index:
        return []
    lowest, longest = by["avg_util_pct"].idxmin(), by["train_time_min"].idxmax()
    return [f"{device_kind} utilisation: lowest {lowest} ({by.loc[lowest, 'avg_util_pct']:.1f}%); "
            f"{method} {by.loc[method, 'avg_util_pct']:.1f}% (paper: 43.2% on an H100)",
            f"training time: longest {longest} ({by.loc[longest, 'train_time_min']:.2f} min); "
            f"{method} {by.loc[method, 'train_time_min']:.2f} min, {by.loc[method, 'time_change_pct']:+.0f}% "
            "against the baseline"]
