"""Attention forward + backward on the CPU at the default peers' shapes: why ``dwml.model.ATTENTION``
computes attention in float32 under bf16 autocast.

For each (rows, heads, width, head dim) of the default profile's packed batches (32 rows of 32 positions,
the Bayesian peers' heads), times ``scaled_dot_product_attention`` forward + backward with a block mask:
float32 and bfloat16 inputs, with PyTorch's default CPU kernel (flash) and with the math backend.
Median of ``--repeats``, one process.

Run: ``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_attention.py``; writes
``benchmarks/results/attention.md``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

RESULTS = Path(__file__).resolve().parent / "results" / "attention.md"
# (rows, heads, width, head dim): the default profile's peers (hidden 232/1, 168/7, 120/5, 120/1 heads)
SHAPES = [(32, 1, 32, 232), (32, 7, 32, 24), (32, 5, 32, 24), (32, 1, 32, 120)]


def fwd_bwd(B, H, T, D, dtype, backend, repeats):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g).to(dtype).requires_grad_(True) for _ in range(3))
    seg = torch.randint(1, 4, (B, T), generator=g).sort(1).values
    mask = seg[:, None, :, None] == seg[:, None, None, :]
    times = []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        with sdpa_kernel(backend):
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o.float().sum().backward()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[2:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    lines = ["# Attention forward + backward on the CPU (bench_attention.py)", "",
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
             f"block-diagonal mask; median of {args.repeats}, ms.", "",
             "| rows x heads x width x head dim | float32 flash | float32 math | bf16 flash | bf16 math | bf16 / float32 (flash) |",
             "|---|---:|---:|---:|---:|---:|"]
    for shape in SHAPES:
        r = {(dt, be): fwd_bwd(*shape, dt, be, args.repeats) for dt in (torch.float32, torch.bfloat16)
             for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH)}
        f32, f32m = r[(torch.float32, SDPBackend.FLASH_ATTENTION)], r[(torch.float32, SDPBackend.MATH)]
        b16, b16m = r[(torch.bfloat16, SDPBackend.FLASH_ATTENTION)], r[(torch.bfloat16, SDPBackend.MATH)]
        lines.append(f"| {' x '.join(map(str, shape))} | {f32:.2f} | {f32m:.2f} | {b16:.2f} | {b16m:.2f} | {b16 / f32:.1f}x |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
