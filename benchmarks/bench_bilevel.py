"""Cost of DWML's bi-level step against equal-weight mutual learning (DML), on this machine.

Times, on the same small peers and batches, in one process, interleaved so that drift hits all alike:
  (a) a DML inner step: forward of p peers, eq. 2 loss, backward, per-peer clipping and AdamW;
  (b) a DWML inner step: the same with learned w (no outer step);
  (c) one outer step as the loop runs it by default (train.outer_grad='reuse'): between the inner step's
      backward and its clipping, the hypergradient (eq. 3) from that step's .grad and batch and a dev
      micro-batch, then mirror descent (eq. 4); timed on its own inside a full inner step;
  (d) one outer step with train.outer_grad='recompute': theta' from a fresh forward + backward on another
      training micro-batch, after the optimizer step.
DWML's amortised step is (5 (b) + (c)) / 5 with an outer step every 5 inner steps. One inner step is
``--num-batches`` micro-batches (train.num_batches; default 1, the hardest case for the ratios, and the
default profile's): the outer step costs the same whatever it is, so with the published 60 micro-batches
a step its share is 60 times smaller.

Goals: amortised DWML <= 1.25 x DML, outer step <= 2 x a plain inner step. Writes
benchmarks/results/bilevel.md.  Run: ``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_bilevel.py``
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dwml.config import TrainConfig
from dwml.data import MLMBatcher
from dwml.methods import make_method
from dwml.train import make_optimizer

RESULTS = Path(__file__).resolve().parent / "results" / "bilevel.md"


def build_peers(shapes, vocab, block, attn):
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(0)
    return [RobertaForMaskedLM(RobertaConfig(
        vocab_size=vocab, num_hidden_layers=l, hidden_size=h, num_attention_heads=a, intermediate_size=4 * h,
        max_position_embeddings=block + 2, pad_token_id=1, attn_implementation=attn)) for l, h, a in shapes]


def inner_step(method, optimizers, batch, outer=None, num_batches: int = 1) -> float:
    """One inner step of ``num_batches`` micro-batches (gradients accumulated, as the loop does); ``outer``
    (if given) runs between the last backward and clipping, like the loop's reuse mode. Returns the
    seconds ``outer`` took (0 without one)."""
    for o in optimizers:
        o.zero_grad(set_to_none=True)
    for _ in range(num_batches):
        loss, _ = method.loss(batch)
        (loss / num_batches).backward()
    t_outer = 0.0
    if outer is not None:
        t_outer = timed(outer)
    for o in optimizers:
        torch.nn.utils.clip_grad_norm_([q for g in o.param_groups for q in g["params"]], 1.0)
        o.step()
    return t_outer


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds (each: one step of every kind)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--num-batches", type=int, default=1, help="micro-batches per inner step (train.num_batches)")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--mode", default="jvp", choices=["jvp", "fd"], help="hypergradient mode")
    ap.add_argument("--attn", default="eager", help="attention implementation of the peers")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    shapes = [(4, 128, 4), (3, 128, 4), (2, 128, 2), (2, 64, 2)]  # (layers, hidden, heads), 4 small peers
    tokens = np.random.default_rng(0).integers(5, args.vocab, 200_000).astype(np.uint16)
    batcher = MLMBatcher(tokens, None, block_size=args.block_size, batch_size=args.batch_size, vocab_size=args.vocab)
    batches = [batcher.next_batch() for _ in range(3)]
    cfg = dict(loss_alpha=0.5, hypergrad_mode=args.mode)
    runs = {}
    for name in ("dml", "dwml"):
        models = build_peers(shapes, args.vocab, args.block_size, args.attn)
        method = make_method(TrainConfig(method=name, **cfg), models)
        opts = [make_optimizer(method.peer_modules(i), 1e-3, 0.1, (0.9, 0.95)) for i in range(method.p)]
        runs[name] = (method, opts)
    times = {"dml": [], "dwml": [], "outer": [], "recompute": []}
    dwml = runs["dwml"][0]
    k = args.num_batches
    for r in range(args.warmup + args.repeats):
        t_dml = timed(lambda: inner_step(*runs["dml"], batches[0], num_batches=k))
        t_dwml = timed(lambda: inner_step(*runs["dwml"], batches[0], num_batches=k))
        t_out = inner_step(*runs["dwml"], batches[0], num_batches=k,
                           outer=lambda: dwml.outer_step(batches[0], batches[2], lr=1e-3, eta=0.1, reuse_grad=True))
        t_rec = timed(lambda: dwml.outer_step(batches[1], batches[2], lr=1e-3, eta=0.1))
        if r >= args.warmup:
            for k, v in zip(times, (t_dml, t_dwml, t_out, t_rec)):
                times[k].append(v)
    med = {k: statistics.median(v) for k, v in times.items()}
    amortised = med["dwml"] + med["outer"] / 5
    r_amort, r_outer = amortised / med["dml"], med["outer"] / med["dwml"]
    amortised_rec = med["dwml"] + med["recompute"] / 5
    n_params = [sum(p.numel() for p in m.parameters()) / 1e6 for m in runs["dml"][0].models]
    lines = [
        "# Bi-level step cost (bench_bilevel.py)", "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU. Peers (layers, hidden, heads): {shapes} "
        f"({', '.join(f'{n:.2f}M' for n in n_params)} parameters), vocab {args.vocab}; micro-batch "
        f"{args.batch_size} x {args.block_size} tokens, {args.num_batches} a step; hypergradient mode '{args.mode}', attention '{args.attn}'. "
        f"Median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds.", "",
        "| step | median ms | min ms | max ms |", "|---|---:|---:|---:|",
        *[f"| {label} | {1e3 * med[k]:.1f} | {1e3 * min(times[k]):.1f} | {1e3 * max(times[k]):.1f} |"
          for k, label in (("dml", "(a) DML inner step (reference)"), ("dwml", "(b) DWML inner step"),
                           ("outer", "(c) DWML outer step, reusing the inner gradient (default)"),
                           ("recompute", "(d) DWML outer step, recomputing it (outer_grad='recompute')"))],
        f"| DWML amortised, outer every 5: (5 (b) + (c)) / 5 | {1e3 * amortised:.1f} | | |",
        f"| the same with (d): (5 (b) + (d)) / 5 | {1e3 * amortised_rec:.1f} | | |", "",
        "| ratio | value | goal | met |", "|---|---:|---:|---|",
        f"| DWML amortised / DML | {r_amort:.2f} | <= 1.25 | {'yes' if r_amort <= 1.25 else 'no'} |",
        f"| outer step (c) / plain inner step (b) | {r_outer:.2f} | <= 2.00 | {'yes' if r_outer <= 2.0 else 'no'} |",
        f"| with outer_grad='recompute': amortised / DML | {amortised_rec / med['dml']:.2f} | | |",
        f"| with outer_grad='recompute': (d) / (b) | {med['recompute'] / med['dwml']:.2f} | | |", "",
        f"One inner step is {args.num_batches} micro-batch(es) here (num_batches); the outer step costs the same "
        "whatever num_batches is (one dev micro-batch, the last training micro-batch), so its share of a step "
        "shrinks with it.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
