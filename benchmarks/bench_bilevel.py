"""Cost of DWML's bi-level step against equal-weight mutual learning (DML), on this machine.

Times the training loop's own phases (``dwml.train.Trainer``: nothing here copies the loop), on the
same peers and corpus, in one process, interleaved so that drift hits all alike:
  (a) a DML inner step: ``Trainer.train_step`` (forward of p peers, eq. 2 loss, backward, per-peer
      clipping and AdamW);
  (b) a DWML inner step: the same with learned w, at a step without an outer step;
  (c) one outer step as the loop runs it by default (train.outer_grad='reuse'): ``Trainer.outer_step``
      between the phases ``check`` and ``clip_and_step`` of a step, from that step's .grad and last
      micro-batch and a dev micro-batch, then mirror descent (eq. 4);
  (d) one outer step with train.outer_grad='recompute': theta' from a fresh forward + backward on another
      training micro-batch.
DWML's amortised step is (5 (b) + (c)) / 5 with an outer step every 5 inner steps. One inner step is
``--num-batches`` micro-batches (train.num_batches; default 1, the hardest case for the ratios, and the
default profile's): the outer step costs the same whatever it is, so with the published 60 micro-batches
a step its share is 60 times smaller.

The corpus is the default profile's synthetic one (``--packing``, ``--bf16`` as the loop takes them).
Goals: amortised DWML <= 1.25 x DML, outer step <= 2 x a plain inner step. Writes
benchmarks/results/bilevel.md.  Run: ``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_bilevel.py``
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

from dwml.config import Config
from dwml.data import prepare_corpus
from dwml.model import build_peer
from dwml.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bilevel.md"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step_with_outer(tr: Trainer) -> float:
    """One step with the default outer step between ``check`` and ``clip_and_step``; returns the outer
    step's seconds."""
    chunks, last, _, _ = tr.next_batches()
    grads, norms, _ = tr.check(*tr.accumulate(chunks))
    t = timed(lambda: tr.outer_step(last, 1e-3, 0.1))
    tr.clip_and_step(grads, norms)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds (each: one step of every kind)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--num-batches", type=int, default=1, help="micro-batches per inner step (train.num_batches)")
    ap.add_argument("--packing", default="packed", choices=["lines", "packed"])
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast of the inner step (train.mixed_precision)")
    ap.add_argument("--mode", default="jvp", choices=["jvp", "fd"], help="hypergradient mode")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    prof = yaml.safe_load(open(ROOT / "profiles" / "default.yaml"))
    # The default profile's Bayesian peers at vocab 2,048 (figures/table_peer_search.md): layers, heads, hidden.
    shapes = [(1, 1, 232), (1, 7, 168), (2, 5, 120), (1, 1, 120)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-bilevel-"))
    trainers = {}
    for name, method, outer_grad in (("dml", "dml", "reuse"), ("dwml", "dwml", "reuse"), ("recompute", "dwml", "recompute")):
        cfg = Config.from_dict(
            data={**prof["data"], "packing": args.packing, "cache_dir": str(ROOT / ".cache" / "dwml")},
            train={**prof["train"], "method": method, "device": "cpu",
                   "batch_size": args.batch_size, "num_batches": args.num_batches, "mixed_precision": args.bf16,
                   "hypergrad_mode": args.mode, "outer_grad": outer_grad, "weight_update_frequency": 10 ** 9})
        prep = prepare_corpus(cfg.data, progress=False)
        torch.manual_seed(0)
        models = [build_peer(SimpleNamespace(num_layers=l, num_heads=a, hidden_size=h, intermediate_size=4 * h),
                             len(prep.tokenizer), cfg.data.block_size + 2) for l, a, h in shapes]
        trainers[name] = Trainer(cfg, prep, models, tmp / name, progress=False, resume=False)
    times = {"dml": [], "dwml": [], "outer": [], "recompute": []}
    rec = trainers["recompute"]
    for r in range(args.warmup + args.repeats):
        t_dml = timed(trainers["dml"].train_step)  # (weight_update_frequency is out of reach: no outer step)
        t_dwml = timed(trainers["dwml"].train_step)
        t_out = step_with_outer(trainers["dwml"])
        t_rec = timed(lambda: rec.outer_step(rec.to_device(rec.batchers["outer_train"].next_batch()), 1e-3, 0.1))
        if r >= args.warmup:
            for key, v in zip(times, (t_dml, t_dwml, t_out, t_rec)):
                times[key].append(v)
    med = {k: statistics.median(v) for k, v in times.items()}
    amortised = med["dwml"] + med["outer"] / 5
    r_amort, r_outer = amortised / med["dml"], med["outer"] / med["dwml"]
    amortised_rec = med["dwml"] + med["recompute"] / 5
    n_params = [sum(p.numel() for p in m.parameters()) / 1e6 for m in trainers["dml"].models]
    lines = [
        "# Bi-level step cost (bench_bilevel.py)", "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CPU. The default profile's peers (layers, heads, hidden): {shapes} "
        f"({', '.join(f'{n:.2f}M' for n in n_params)} parameters) on its corpus; micro-batches of "
        f"{args.batch_size} utterances ('{args.packing}'), {args.num_batches} a step; inner step "
        f"{'bf16 autocast' if args.bf16 else 'float32'}, outer step float32; hypergradient mode '{args.mode}'. "
        f"Median of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds. "
        f"Command: `python benchmarks/bench_bilevel.py {' '.join(__import__('sys').argv[1:])}`", "",
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
