"""A cost model of one training step on a GPU, computed on the CPU: the real step's operations, run on
meta tensors (shapes, no data), each costed as a kernel of a roofline.

:class:`OpLog` is a ``TorchDispatchMode`` that records every aten operation of the code it watches: its FLOPs
(PyTorch's own formulas, the ones ``torch.utils.flop_counter.FlopCounterMode`` uses), the bytes it reads
and writes (its tensor arguments and results), its dtype and the phase it belongs to. :func:`step_ops`
runs one DWML optimizer step that way on meta tensors -- each peer's encoder forward, the LM heads and the
loss over the vocabulary (``dwml.losses.fused_ce_kl``), the backward of the loss and then of each peer, and
the outer step (``dwml.bilevel.hypergradient``) -- at any shape, the paper's included, in seconds.
:func:`predict` turns the records into times on a :class:`Device`:

* a kernel takes max(FLOPs / (peak x ``gemm_eff``), bytes / (bandwidth x ``mem_eff``)), the peak by the
  matmul's input dtype (bf16, or float32 as TF32 where allowed, else plain float32);
* eager PyTorch launches one kernel an operation and the host needs ``launch_s`` to dispatch each, so a
  phase takes max(device time, kernels x launch_s) (a launch-bound step starves the GPU);
* compiled phases (inductor) fuse every run of operations between two matrix products into one kernel
  that reads the run's first inputs and writes its last outputs once (an assumption, stated as such: it
  is what inductor aims at, not a measurement).

Host work that runs in series (the old loop built batches between steps and synchronised every step) is
added; with batches built ahead (``dwml.prefetch``) it overlaps the device and only the longer one counts.
These are predictions; ``benchmarks/gpu_check.py`` measures.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MATMUL = {"aten.mm", "aten.bmm", "aten.addmm", "aten.baddbmm", "aten.matmul", "aten.mv", "aten.dot",
          "aten.convolution", "aten.linear"}
ATTENTION = {"aten._scaled_dot_product_flash_attention", "aten._scaled_dot_product_efficient_attention",
             "aten._scaled_dot_product_cudnn_attention", "aten._scaled_dot_product_flash_attention_for_cpu",
             "aten._scaled_dot_product_flash_attention_backward", "aten._scaled_dot_product_efficient_attention_backward",
             "aten._scaled_dot_product_cudnn_attention_backward",
             "aten._scaled_dot_product_flash_attention_for_cpu_backward"}
FREE = {"aten.detach", "aten.view", "aten._unsafe_view", "aten.t", "aten.transpose", "aten.expand", "aten.permute",
        "aten.unsqueeze", "aten.squeeze", "aten.slice", "aten.select", "aten.split", "aten.split_with_sizes",
        "aten.alias", "aten.as_strided", "aten.empty", "aten.empty_like", "aten.empty_strided", "aten.unbind",
        "aten.lift_fresh", "aten._reshape_alias", "aten.reshape", "aten.new_empty", "aten.new_empty_strided",
        "aten.set_", "aten.is_same_size", "aten.sym_size", "aten.sym_stride", "aten._has_same_storage_numel"}
"""Operations that move no data (views, allocations, metadata queries such as forward-mode AD's check of a
tangent's storage, ``_has_same_storage_numel``): no kernel, no bytes."""


@dataclass(frozen=True)
class Device:
    """A GPU's datasheet peaks (dense FLOP/s per precision, memory bytes/s) and the fractions of them that
    well-shaped kernels reach; ``launch_s``: host time to dispatch one eager PyTorch operation."""

    name: str
    bf16: float
    tf32: float
    fp32: float
    bandwidth: float
    gemm_eff: float = 0.7
    mem_eff: float = 0.8
    launch_s: float = 6e-6
    compiled_launch_s: float = 5e-6
    """Host time a kernel of a compiled graph costs (inductor's wrapper launches them without Python per op)."""


H100 = Device("NVIDIA H100 SXM (datasheet: 989 TFLOP/s bf16 dense, 3.35 TB/s)", bf16=989e12, tf32=494.5e12,
              fp32=66.9e12, bandwidth=3.35e12)


@dataclass
class Op:
    phase: str
    name: str
    flops: float
    bytes: float
    kind: str  # 'matmul' (matrix products and attention) or 'other'
    dtype: torch.dtype | None


class OpLog(TorchDispatchMode):
    """Records every operation (see the module docstring) in ``ops``, under the phase set with :meth:`at`."""

    def __init__(self):
        super().__init__()
        self.ops: list[Op] = []
        self.phase = "-"

    @contextlib.contextmanager
    def at(self, phase: str) -> Iterator[None]:
        before, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = before

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func.overloadpacket)
        if name in FREE or getattr(func, "is_view", False):
            return out
        flops = 0
        if func.overloadpacket in flop_registry:
            flops = flop_registry[func.overloadpacket](*args, **kwargs, out_val=out)

        tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
        kind = "matmul" if name in MATMUL or name in ATTENTION else "other"
        self.ops.append(Op(self.phase, name, float(flops), float(nbytes), kind, ins[0].dtype if ins else None))
        return out


def _register_cpu_flash_flops() -> None:
    """PyTorch counts the FLOPs of its GPU attention kernels, not of the CPU flash kernel that stands in for
    them here: the same formulas, registered once (so that FlopCounterMode counts them too)."""
    from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

    fwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    bwd = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    if fwd in flop_registry:
        return

    @register_flop_formula(fwd)
    def _fwd(q, k, v, *args, **kwargs) -> int:
        return sdpa_flop_count(q, k, v)

    @register_flop_formula(bwd)
    def _bwd(grad_out, q, k, v, *args, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, q, k, v)


@contextlib.contextmanager
def fused_attention() -> Iterator[None]:
    """Within the block, unmasked ``scaled_dot_product_attention`` runs as one fused kernel (the CPU flash
    kernel, which has meta shapes and a backward), as flash or memory-efficient attention runs on a GPU:
    the scores are never written out. Masked calls and forward-mode AD (the outer step) keep the math path."""
    import torch.nn.functional as F

    _register_cpu_flash_flops()
    plain = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kw):
        if attn_mask is not None or torch._C._are_functorch_transforms_active() or kw.get("enable_gqa"):
            return plain(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                         scale=scale, **kw)
        # (attention dropout left out: the CPU kernel has none; the peers train with dropout 0 anyway)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, is_causal,
                                                                          scale=scale)[0]

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = plain


# ----------------------------------------------------------------------------------------------------
# one step on meta tensors


def meta_batch(rows: int, width: int, n_pred: int, device: torch.device | str = "meta") -> dict:
    """A 'blocks' batch of ``rows`` x ``width`` tokens with ``n_pred`` predicted positions (on the meta device:
    shapes only; elsewhere token 5 everywhere, the first ``n_pred`` positions predicted)."""
    ids = torch.full((rows, width), 5, dtype=torch.long, device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "n_real": rows * width,
            "pred_index": torch.arange(n_pred, device=device),
            "targets": torch.full((n_pred,), 7, dtype=torch.long, device=device),
            "token_weight": torch.full((n_pred,), 1.0 / max(n_pred, 1), device=device)}


def step_ops(models: Sequence[torch.nn.Module], rows: int, width: int, n_pred: int, *, outer: bool = True,
             alpha: float = 0.5, loss_rows: int = 0, outer_rows: int = 3) -> list[Op]:
    """The operations of one forward and backward pass of DWML's loss over a chunk of ``rows`` x ``width``
    tokens with ``n_pred`` predicted positions (the models must live on the meta device), then, with
    ``outer``, one outer step on a micro-batch of ``outer_rows`` rows ('reuse': theta' from ``.grad``).
    Phases: 'peer i forward', 'LM heads + loss', 'loss backward', 'peer i backward', 'outer step'. (On a
    real device it runs the same computation on a batch of constant tokens: the tests compare the two.)"""
    from dwml.bilevel import hypergradient
    from dwml.losses import combine, fused_ce_kl
    from dwml.model import encoder_inputs

    device = next(models[0].parameters()).device
    batch = meta_batch(rows, width, n_pred, device)
    p = len(models)
    w = torch.full((p,), 1.0 / p, device=device)
    log = OpLog()
    with log, fused_attention():
        hidden = []
        for i, m in enumerate(models):
            with log.at(f"peer {i} forward"):
                h = m.roberta(**encoder_inputs(m, batch)).last_hidden_state
                hidden.append(h.detach().requires_grad_(True))
                keep = h
            m._dwml_keep = keep  # the encoder's graph, for its backward below
        with log.at("LM heads + loss"):
            logits = [m.lm_head(h.reshape(-1, h.shape[-1]).index_select(0, batch["pred_index"]))
                      for m, h in zip(models, hidden)]
            ce, K, _ = fused_ce_kl(logits, batch["targets"], batch["token_weight"], rows=loss_rows)
            total, _ = combine(ce, K, w, alpha)
        with log.at("loss backward"):
            total.backward()
        for i, (m, h) in enumerate(zip(models, hidden)):
            with log.at(f"peer {i} backward"):
                m._dwml_keep.backward(h.grad)
            del m._dwml_keep
        if outer:
            with log.at("outer step"):
                small = meta_batch(outer_rows, width, int(round(n_pred * outer_rows / rows)), device)
                hypergradient(models, small, small, w, alpha=alpha, gamma=1e-3, reuse_grad=True, validate=False)
    return log.ops


# ----------------------------------------------------------------------------------------------------
# predicted times


def fuse(ops: Sequence[Op]) -> list[Op]:
    """Inductor's fusion, as assumed here: every run of non-matmul operations between two matmuls becomes
    one kernel reading the run's first operation's inputs and writing its last one's outputs."""
    out: list[Op] = []
    run: list[Op] = []

    def flush():
        if run:
            first, last = run[0], run[-1]
            out.append(Op(first.phase, f"fused x{len(run)}", sum(o.flops for o in run),
                          first.bytes / 2 + last.bytes / 2, "other", first.dtype))
            run.clear()

    for op in ops:
        if op.kind == "matmul":
            flush()
            out.append(op)
        else:
            run.append(op)
    flush()
    return out


def kernel_time(op: Op, dev: Device, tf32: bool) -> float:
    """Roofline time of one kernel on ``dev``."""
    if op.kind == "matmul":
        peak = (dev.bf16 if op.dtype in (torch.bfloat16, torch.float16) else
                dev.tf32 if tf32 and op.dtype == torch.float32 else dev.fp32)
    else:
        peak = dev.fp32  # elementwise work runs on the CUDA cores
    return max(op.flops / (peak * dev.gemm_eff), op.bytes / (dev.bandwidth * dev.mem_eff))


@dataclass
class PhaseCost:
    phase: str
    flops: float
    bytes: float
    kernels: int
    device_s: float
    host_s: float

    @property
    def seconds(self) -> float:
        return max(self.device_s, self.host_s)


def phase_costs(ops: Sequence[Op], dev: Device = H100, *, tf32: bool = True, compiled: Sequence[str] = (),
                repeat: float = 1.0) -> list[PhaseCost]:
    """Per phase (in order of first appearance): FLOPs, bytes, kernels and times, each multiplied by
    ``repeat`` (passes of the same shape a step). Phases whose name starts with one of ``compiled`` are
    fused (:func:`fuse`) and launched at ``compiled_launch_s`` a kernel; the others launch one kernel an
    operation at ``launch_s``."""
    phases: dict[str, list[Op]] = {}
    for op in ops:
        phases.setdefault(op.phase, []).append(op)
    out = []
    for name, group in phases.items():
        fused = any(name.startswith(c) for c in compiled)
        kernels = fuse(group) if fused else list(group)
        dev_s = sum(kernel_time(k, dev, tf32) for k in kernels)
        launch = dev.compiled_launch_s if fused else dev.launch_s
        out.append(PhaseCost(name, repeat * sum(o.flops for o in group), repeat * sum(k.bytes for k in kernels),
                             int(repeat * len(kernels)), repeat * dev_s, repeat * len(kernels) * launch))
    return out


def launch_counts(ops: Sequence[Op]) -> dict[str, int]:
    """Kernels an eager run launches, per phase (every operation that is not a view or an allocation)."""
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.phase] = counts.get(op.phase, 0) + 1
    return counts
