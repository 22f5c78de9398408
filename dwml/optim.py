"""Each peer's optimiser and the schedule all peers share.

AdamW decaying matrices only (:func:`make_optimizer`), PyTorch's fused kernel where the device has one
(:func:`use_fused`), and nanoGPT's schedule shape, linear warm-up then cosine decay
(:func:`cosine_schedule`), for both the learning rate and the mirror-descent step eta of eq. 4.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


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


def use_fused(device: torch.device) -> bool:
    """Whether AdamW takes PyTorch's fused kernel on ``device``: on CUDA (one launch for all parameters);
    the CPU keeps the default (foreach) implementation, whose steps the CPU tests pin bit for bit."""
    return torch.device(device).type == "cuda"


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
