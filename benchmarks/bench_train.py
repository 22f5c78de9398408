"""Real tokens per second of the training loop: DWML on the default profile's four peers and batch.

Each setting trains the same DWML run (the default profile's corpus, peers, 128 utterances a step, the
outer step every 5 steps) for ``--steps`` optimizer steps through ``dwml.train.train`` in a fresh
process, and the rate is the real (non-padding) tokens of the steps after ``--skip`` divided by their
time, as the loop logs them (``metrics.jsonl``; the outer steps are inside). Settings, interleaved in
rounds so that the machine's drift hits all alike, medians over rounds:

  old      the commit before the fast step (``--old-commit``, checked out with ``git worktree``), with
           today's defaults: ``data.packing='lines'``, float32;
  lines    this code, the same settings;
  packed   this code, ``data.packing='packed'``, float32;
  bf16     this code, 'lines' under bf16 autocast (``train.mixed_precision``);
  new      this code, 'packed' under bf16 autocast: the new default.

Also reported: the real-token fraction of the positions, the FLOPs of one step (counted with
``FlopCounterMode`` on the packed step: every matrix product, the loss's included) and the MFU against
this CPU's measured float32 and bf16 matmul peaks (``dwml.profiling.peak_flops``: a 2048^3 GEMM, best
of 10).

Run: ``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_train.py`` (about 10 minutes).
Writes ``benchmarks/results/train.md``. On a GPU, ``--shape paper`` times the paper's peers (vocab 50,265)
on the published step of 60 x 3 x 512 tokens: the commit before the fast step, this code eager with one
pass a micro-batch, with micro-batches merged in chunks of 20, and chunked + ``torch.compile`` (the new
path), with MFU against the GPU's bf16 dense peak; ``--rounds 1 --steps 6 --skip 2`` should fit ~5 minutes on an H100/H200 (estimated from the old path's 1.4 s per 10
micro-batches measured there; compilation comes on top)
(writes ``benchmarks/results/train_paper.md``; ``--device cpu --num-batches 2 --steps 3 --skip 1 --rounds 1
--settings eager,chunked --out /tmp/x.md`` tries it on a CPU).

``--shape paper --plan`` needs no GPU: it runs the paper-shaped step on meta tensors (``dwml.gpuplan``) and
prints, per phase, FLOPs, bytes moved, kernels and the predicted time on an H100 for the old step and the new
one, hence a predicted MFU; it writes ``benchmarks/results/gpu_plan.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "train.md"
# The default profile's Bayesian peers at vocab 2,048 (figures/table_peer_search.md): layers, heads, hidden.
PEERS = [(1, 1, 232), (1, 7, 168), (2, 5, 120), (1, 1, 120)]
# --shape paper: the paper's peers (the Bayesian search for a RoBERTa-base teacher at vocab 50,265, same
# table), 60 micro-batches of 3 x 512-token blocks a step (the published recipe), on the GPU profile's corpus.
PAPER_PEERS = [(2, 3, 840), (1, 1, 688), (7, 12, 384), (9, 12, 288)]
PAPER_VOCAB = 50265

# One run, in its own process: works with this code and with the commit before the fast step.
RUNNER = r'''
import json, sys, yaml, torch
from types import SimpleNamespace
from dwml.config import Config
from dwml.data import prepare_corpus
try:
    from dwml.model import build_peer
except ImportError:  # before the fast step
    from dwml.search import build_peer
from dwml.runfolder import read_metrics
from dwml.train import train
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
prof = yaml.safe_load(open(args["profile"]))
tr = {**prof["train"], "method": "dwml", "num_epochs": args["steps"], "eval_interval": 10_000,
      "checkpoint_interval": 10_000, "mixed_precision": args["bf16"], "device": args["device"],
      "enable_early_stopping": False, "seed": args.get("seed", 0), **args.get("train", {})}
data = {**prof["data"], "packing": args["packing"], "cache_dir": args["cache"]}
cfg = Config.from_dict(data=data, train=tr)
prep = prepare_corpus(cfg.data, progress=False)
torch.manual_seed(args.get("seed", 0))
vocab = args.get("model_vocab") or len(prep.tokenizer)
models = [build_peer(SimpleNamespace(num_layers=l, num_heads=a, hidden_size=h, intermediate_size=4 * h),
                     vocab, cfg.data.block_size + 2, attn_implementation="sdpa") for l, a, h in args["peers"]]
train(cfg, prep, models, args["run_dir"], progress=False, resume=False)
m = read_metrics(args["run_dir"])
ev = m[m["kind"] == "eval"]
m = m[m["kind"] == "train"]
m = m[m["step"] > args["skip"]]
tokens = float(m["tokens"].iloc[-1] - m["tokens"].iloc[0])  # the steps after the first kept one
elapsed = float(m["elapsed_s"].iloc[-1] - m["elapsed_s"].iloc[0])
step_s = m["elapsed_s"].diff().dropna()
out = {"tokens_per_s": tokens / elapsed, "step_ms": 1000 * float(step_s.median()),
       "tokens_per_step": tokens / max(len(m) - 1, 1), "dev_ce": list(ev["dev_ce"].iloc[-1]),
       "dev_ensemble": float(ev["dev_ensemble"].iloc[-1])}
if "real_fraction" in m:
    out["real_fraction"] = float(m["real_fraction"].mean())
print("RESULT " + json.dumps(out))
'''


def run_setting(python: str, pythonpath: Path, args: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        args = {**args, "run_dir": str(Path(tmp) / "run")}
        proc = subprocess.run([python, "-c", RUNNER, json.dumps(args)], env=env, cwd=str(pythonpath),
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"setting {args} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def step_flops(profile: Path, cache: str, peers, model_vocab, device: str, packing: str, train: dict
               ) -> tuple[float, float]:
    """FLOPs of one optimizer step (every peer's forward and backward and the loss; counted by
    FlopCounterMode on this code's step) and of one outer step."""
    import torch
    import yaml
    from types import SimpleNamespace
    from torch.utils.flop_counter import FlopCounterMode

    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.model import build_peer
    from dwml.train import Trainer

    prof = yaml.safe_load(open(profile))
    cfg = Config.from_dict(data={**prof["data"], "packing": packing, "cache_dir": cache},
                           train={**prof["train"], "method": "dwml", "device": device, **train})
    prep = prepare_corpus(cfg.data, progress=False)
    torch.manual_seed(0)
    models = [build_peer(SimpleNamespace(num_layers=l, num_heads=a, hidden_size=h, intermediate_size=4 * h),
                         model_vocab or len(prep.tokenizer), cfg.data.block_size + 2) for l, a, h in peers]
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, prep, models, Path(tmp) / "run", progress=False, resume=False)
        chunks, last, _, _ = tr.next_batches()
        with FlopCounterMode(display=False) as fc:
            loss, parts = tr.accumulate(chunks)
        inner = fc.get_total_flops()
        tr.check(loss, parts)
        lr, eta = tr.schedule(10)
        with FlopCounterMode(display=False) as fc:
            tr.outer_step(last, lr, eta)
        outer = fc.get_total_flops()
    return float(inner), float(outer)


SHAPES = {
    # name: (profile, peers, model vocab (None: the tokenizer's), device, {setting: (packing, train overrides)})
    "default": ("default.yaml", PEERS, None, "cpu", {
        "old": ("lines", {"mixed_precision": False}), "lines": ("lines", {"mixed_precision": False}),
        "packed": ("packed", {"mixed_precision": False}), "bf16": ("lines", {"mixed_precision": True}),
        "new": ("packed", {"mixed_precision": True})}),
    "paper": ("gpu.yaml", PAPER_PEERS, PAPER_VOCAB, "cuda", {
        "old": ("blocks", {"num_batches": 60, "batch_size": 3}),
        "eager": ("blocks", {"num_batches": 60, "batch_size": 3, "chunk_size": 1}),
        "chunked": ("blocks", {"num_batches": 60, "batch_size": 3, "chunk_size": 20}),
        "new": ("blocks", {"num_batches": 60, "batch_size": 3, "chunk_size": 20, "compile": True})}),
}


def host_batch_seconds(vocab: int, width: int, batch_size: int, num_batches: int, chunk: int, repeats: int = 3) -> float:
    """Seconds this CPU takes to draw, mask and merge one step's micro-batches ('blocks', random tokens)."""
    import numpy as np

    from dwml.batches import MLMBatcher, merge_batches

    tokens = np.random.default_rng(0).integers(5, vocab, 2_000_000).astype(np.int32)
    b = MLMBatcher(tokens, block_size=width, batch_size=batch_size, vocab_size=vocab, mlm_probability=0.15)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        micro = [b.next_batch() for _ in range(num_batches)]
        [merge_batches(micro[i:i + chunk]) for i in range(0, num_batches, chunk)]
        best = min(best, time.perf_counter() - t0)
    return best


def plan(out: Path) -> None:
    """The cost model of the paper-shaped step, old against new (see the module docstring)."""
    import torch
    from types import SimpleNamespace

    from dwml import gpuplan
    from dwml.model import build_peer

    width, bs, nb, chunk, every = 512, 3, 60, 20, 5
    n_micro = round(0.15 * bs * width)  # predicted positions of a micro-batch

    def models(peers, dtype, vocab=PAPER_VOCAB):
        with torch.device("meta"):
            return [build_peer(SimpleNamespace(num_layers=l, num_heads=a, hidden_size=h, intermediate_size=4 * h),
                               vocab, width + 2, attn_implementation="sdpa").to(dtype) for l, a, h in peers]

    # Host dispatch per eager operation, calibrated on the H200 run (README, "Measured on one GPU"): ~20-35 ms
    # of Python and dispatch for a 12-layer RoBERTa-base forward + backward at 3 x 512 tokens.
    base = models([(12, 12, 768)], torch.bfloat16)
    n_base = len(gpuplan.step_ops(base, bs, width, n_micro, outer=False))
    dev = gpuplan.Device(**{**gpuplan.H100.__dict__, "launch_s": 0.0275 / n_base})
    t0 = time.perf_counter()
    old_ops = gpuplan.step_ops(models(PAPER_PEERS, torch.bfloat16), bs, width, n_micro, outer=False)
    new_ops = gpuplan.step_ops(models(PAPER_PEERS, torch.bfloat16), bs * chunk, width, n_micro * chunk, outer=False)
    outer = [o for o in gpuplan.step_ops(models(PAPER_PEERS, torch.float32), bs, width, n_micro, outer=True)
             if o.phase == "outer step"]
    traced = time.perf_counter() - t0
    host_old = host_batch_seconds(PAPER_VOCAB, width, bs, nb, 1)
    host_new = host_batch_seconds(PAPER_VOCAB, width, bs, nb, chunk)
    steps = {
        "old": dict(ops=old_ops, repeat=nb, compiled=(), outer_tf32=True, host=host_old, overlap=False,
                    what="one pass a micro-batch (60), eager, loss in one piece, TF32 process-wide (the outer step "
                         "too), batches built in series, a synchronize every step"),
        "new": dict(ops=new_ops, repeat=nb // chunk, compiled=("peer", "LM heads", "loss"), outer_tf32=False,
                    host=host_new, overlap=True,
                    what="chunks of 20 micro-batches (3 passes), peers and loss compiled (inductor), TF32 in the inner "
                         "step only, the outer step in IEEE float32, batches built ahead"),
    }
    model_flops = sum(o.flops for o in old_ops) * nb + sum(o.flops for o in outer) / every
    lines = ["# The paper-shaped DWML step on one H100: predicted, not measured", "",
             f"`python benchmarks/bench_train.py --shape paper --plan` (on the CPU; meta tensors, {traced:.0f} s to trace; "
             f"torch {torch.__version__}). The paper's four peers {PAPER_PEERS} (layers, heads, hidden; FFN 4 x hidden), "
             f"vocabulary {PAPER_VOCAB:,}, one optimizer step of {nb} micro-batches of {bs} x {width} tokens "
             f"({nb * bs * width:,} tokens, {nb * n_micro:,} predicted), bf16 autocast, the outer step every {every} "
             "steps (its cost divided by 5).", "",
             f"Device: {dev.name}; kernels reach {dev.gemm_eff:.0%} of the matmul peak and {dev.mem_eff:.0%} of the "
             f"bandwidth; eager dispatch {1e6 * dev.launch_s:.1f} us an operation (the H200 run's 20-35 ms of host time for "
             f"a RoBERTa-base forward + backward at 3 x 512, {n_base} operations), {1e6 * dev.compiled_launch_s:.0f} us a kernel of "
             "a compiled graph (assumed). Each kernel: max(FLOPs / peak, bytes / "
             "bandwidth); a phase: max(device time, dispatch time); compiled phases: every run of operations between "
             "two matmuls fused into one kernel (an assumption: what inductor aims at). Bytes: every operation's "
             "inputs and outputs, as eager PyTorch moves them (dwml.gpuplan). Attention: one fused kernel (flash / "
             "memory-efficient; the scores never written), except in the outer step, whose forward-mode AD runs the "
             "math backend.", ""]
    results = {}
    for name, st in steps.items():
        costs = gpuplan.phase_costs(st["ops"], dev, tf32=True, compiled=st["compiled"], repeat=st["repeat"])
        oc = gpuplan.phase_costs(outer, dev, tf32=st["outer_tf32"], repeat=1.0 / every)
        costs += oc
        device_s = sum(c.seconds for c in costs)
        total = max(device_s, st["host"]) if st["overlap"] else device_s + st["host"]
        results[name] = (total, model_flops / total / dev.bf16)
        lines += [f"## {name}: {st['what']}", "",
                  "| phase | TFLOP | GB moved | kernels | device ms | dispatch ms | predicted ms |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for c in costs:
            lines.append(f"| {c.phase} | {c.flops / 1e12:.2f} | {c.bytes / 1e9:.1f} | {c.kernels:,} | "
                         f"{1e3 * c.device_s:.1f} | {1e3 * c.host_s:.1f} | {1e3 * c.seconds:.1f} |")
        lines += [f"| host: batches ({'ahead, overlapped' if st['overlap'] else 'in series'}; measured on this CPU) "
                  f"| | | | | {1e3 * st['host']:.1f} | {1e3 * (0 if st['overlap'] else st['host']):.1f} |",
                  f"| **step** | {sum(c.flops for c in costs) / 1e12:.1f} | {sum(c.bytes for c in costs) / 1e9:.0f} | "
                  f"{sum(c.kernels for c in costs):,} | | | **{1e3 * total:.0f}** |", "",
                  f"Predicted MFU ({model_flops / 1e12:.1f} TFLOP of the step, recomputation not counted): "
                  f"**{100 * results[name][1]:.1f}%**.", ""]
    lines += [f"Old {1e3 * results['old'][0]:.0f} ms ({100 * results['old'][1]:.1f}% MFU) -> new "
              f"{1e3 * results['new'][0]:.0f} ms ({100 * results['new'][1]:.1f}% MFU), "
              f"{results['old'][0] / results['new'][0]:.1f}x. The earlier H200 run measured 0.85% MFU for DWML at the gpu "
              "profile's 10 micro-batches of 3 x 512 (vocab 2,048)."]
    lines += ["", *small_models_plan(dev)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def small_models_plan(dev) -> list[str]:
    """Kernels a step launches for the CPU profiles' small models, and what removing the dispatch buys."""
    import torch
    from types import SimpleNamespace

    from dwml import gpuplan
    from dwml.model import build_peer

    cases = [  # label, peers (layers, heads, hidden), vocab, rows x width, predicted (30% of ~97% real tokens)
        ("default: DWML, 4 peers", PEERS, 2048, (40, 32), 370),
        ("aochildes: single model 4 x 192", [(4, 4, 192)], 8192, (40, 64), 740),
        ("aochildes: DWML, 4 peers", PEERS, 8192, (40, 64), 740)]
    lines = ["## Small models: a step is launch-bound", "",
             "The CPU profiles' models on a GPU, one micro-batch of 128 utterances packed (rows x width below), bf16, "
             "the outer step left out. Eager: one kernel an operation, each dispatched by the host. CUDA graphs replay "
             "the step's kernels without the host (capture needs static shapes: fixed rows and predicted counts, "
             "i.e. padding the packed batch to a fixed size); `torch.compile(mode=\"reduce-overhead\")` is inductor's "
             "fusion plus CUDA graphs.", "",
             "| model | kernels a step (eager) | device ms (roofline) | dispatch ms (eager) | eager ms | fused kernels | "
             "graphs ms (fused, ~2 us a kernel) | eager / graphs |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, peers, vocab, (rows, width), n_pred in cases:
        with torch.device("meta"):
            models = [build_peer(SimpleNamespace(num_layers=l, num_heads=a, hidden_size=h, intermediate_size=4 * h),
                                 vocab, width + 2, attn_implementation="sdpa").to(torch.bfloat16) for l, a, h in peers]
        ops = gpuplan.step_ops(models, rows, width, n_pred, outer=False)
        eager = gpuplan.phase_costs(ops, dev)
        comp = gpuplan.phase_costs(ops, dev, compiled=("peer", "LM", "loss"))
        e_ms = 1e3 * sum(c.seconds for c in eager)
        dev_ms = 1e3 * sum(c.device_s for c in eager)
        k_fused = sum(c.kernels for c in comp)
        g_ms = 1e3 * sum(max(c.device_s, c.kernels * 2e-6) for c in comp)
        lines.append(f"| {label} | {len(ops):,} | {dev_ms:.2f} | {1e3 * len(ops) * dev.launch_s:.1f} | {e_ms:.1f} | "
                     f"{k_fused:,} | {g_ms:.2f} | {e_ms / g_ms:.0f}x |")
    lines += ["", "Several runs on one device (seeds, methods) add up while each one is launch-bound: each needs its "
              "own host process (a core) and the device is shared; at the device times above, one H100 holds "
              "as many launch-bound runs as there are host cores to dispatch them (16 on the lent machine)."]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="default", choices=list(SHAPES),
                    help="'default': the default profile on this CPU; 'paper': the paper's peers and step, on a GPU")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--skip", type=int, default=5, help="steps left out of the rate (warm-up)")
    ap.add_argument("--old-commit", default="d175dfe", help="the commit before the fast step")
    ap.add_argument("--settings", default="", help="comma-separated subset of the shape's settings")
    ap.add_argument("--device", default="", help="override the shape's device (e.g. cpu, to try --shape paper)")
    ap.add_argument("--num-batches", type=int, default=0,
                    help="override the shape's micro-batches a step (chunks capped at it), to try --shape paper on a CPU")
    ap.add_argument("--vary-seed", action="store_true",
                    help="round r trains with seed r (the dev CE at the end is then compared over seeds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--plan", action="store_true", help="--shape paper: the cost model on the CPU, no GPU needed")
    args = ap.parse_args()
    if args.plan:
        if args.shape != "paper":
            ap.error("--plan is for --shape paper")
        return plan(args.out or RESULTS.with_name("gpu_plan.md"))
    import torch

    from dwml.profiling import peak_flops

    profile_name, peers, model_vocab, device, settings = SHAPES[args.shape]
    device = args.device or device
    if args.num_batches:
        nb = args.num_batches
        settings = {k: (pk, {**tr, **({"num_batches": nb} if "num_batches" in tr else {}),
                             **({"chunk_size": min(tr["chunk_size"], nb)} if "chunk_size" in tr else {})})
                    for k, (pk, tr) in settings.items()}
    out = args.out or (RESULTS if args.shape == "default" else RESULTS.with_name(f"train_{args.shape}.md"))
    profile = ROOT / "profiles" / profile_name
    cache = str(ROOT / ".cache" / "dwml")
    chosen = [s for s in (args.settings.split(",") if args.settings else settings) if s]
    old_tree = None
    if "old" in chosen:
        old_tree = Path(tempfile.mkdtemp(prefix="dwml-old-"))
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old_commit],
                       check=True, capture_output=True)
    results: dict[str, list[dict]] = {s: [] for s in chosen}
    try:
        for r in range(args.rounds):
            for s in chosen:
                packing, train = settings[s]
                bf16 = train.get("mixed_precision", args.shape == "paper")
                train = {k: v for k, v in train.items() if k != "mixed_precision"}
                tree = old_tree if s == "old" else ROOT
                res = run_setting(sys.executable, tree, {
                    "profile": str(profile), "cache": cache, "steps": args.steps, "skip": args.skip,
                    "packing": packing, "bf16": bf16, "peers": peers, "threads": args.threads, "device": device,
                    "model_vocab": model_vocab, "train": train, "seed": r if args.vary_seed else 0})
                results[s].append(res)
                print(f"round {r + 1}/{args.rounds} {s:>7}: {res['tokens_per_s']:9.0f} real tokens/s, "
                      f"step {res['step_ms']:.0f} ms", flush=True)
    finally:
        if old_tree is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)

    med = {s: statistics.median(x["tokens_per_s"] for x in v) for s, v in results.items()}
    step_ms = {s: statistics.median(x["step_ms"] for x in v) for s, v in results.items()}
    frac = {s: statistics.median(x["real_fraction"] for x in v) for s, v in results.items() if "real_fraction" in v[0]}
    torch.set_num_threads(args.threads)
    (peak32, _), (peak16, src16) = peak_flops(device, torch.float32), peak_flops(device, torch.bfloat16)
    new_packing, new_train = settings["new"]
    inner, outer = step_flops(profile, cache, peers, model_vocab, device, new_packing,
                              {k: v for k, v in new_train.items() if k != "compile"})
    ref = med.get("old", med[chosen[0]])
    where = (f"{torch.cuda.get_device_name()} " if device.startswith("cuda") else
             f"{platform.processor() or platform.machine()}, {args.threads} threads, ")
    lines = [
        f"# Training loop throughput: DWML, {'the default profile' if args.shape == 'default' else 'the paper'}'s "
        "four peers and step",
        "",
        f"`{' '.join(['python', 'benchmarks/bench_train.py'] + sys.argv[1:])}` on {where}torch {torch.__version__}; "
        f"{args.rounds} interleaved rounds of {args.steps} steps (the first {args.skip} left out), medians. "
        "The outer step (every 5 steps) is inside the rates.",
        "",
        "| setting | packing | precision | other | real tokens/s | step (median, ms) | real-token fraction | vs old |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for s in chosen:
        packing, train = settings[s]
        bf16 = train.get("mixed_precision", args.shape == "paper")
        other = ", ".join(f"{k}={v}" for k, v in train.items() if k not in ("mixed_precision",)) or "-"
        code = f"commit {args.old_commit}" if s == "old" else "this code"
        lines.append(f"| {s} ({code}) | {packing} | {'bf16 autocast' if bf16 else 'float32'} | {other} | {med[s]:,.0f} | "
                     f"{step_ms[s]:.0f} | {frac.get(s, float('nan')):.3f} | {med[s] / ref:.2f}x |")
    per_step = inner + outer / 5  # the outer step every 5 steps, amortised
    lines += ["",
              f"Peaks: float32 {peak32 / 1e12:.3f} TFLOP/s, bf16 {peak16 / 1e12:.3f} TFLOP/s ({src16}).",
              f"FLOPs of one step (counted on this code's step): inner {inner / 1e9:.2f} GFLOP (4 peers' forward + "
              f"backward and the loss), outer step {outer / 1e9:.2f} GFLOP (every 5 steps).", "",
              "| setting | achieved TFLOP/s | MFU vs bf16 peak | MFU vs float32 peak |", "|---|---:|---:|---:|"]
    for s in chosen:  # the same computation in every setting: the counted FLOPs a step, times steps per second
        tokens_per_step = statistics.median(x["tokens_per_step"] for x in results[s])
        achieved = per_step * med[s] / tokens_per_step
        lines.append(f"| {s} | {achieved / 1e12:.4f} | {100 * achieved / peak16:.2f}% | {100 * achieved / peak32:.2f}% |")
    lines += ["", f"Dev CE per peer after {args.steps} steps (the loop's own final evaluation; "
              f"{'seed = round' if args.vary_seed else 'seed 0 every round'}):", "",
              "| setting | round | dev CE per peer | dev ensemble |", "|---|---:|---|---:|"]
    for s in chosen:
        for r, x in enumerate(results[s]):
            lines.append(f"| {s} | {r} | {', '.join(f'{v:.3f}' for v in x['dev_ce'])} | {x['dev_ensemble']:.3f} |")
    lines += ["", "Per round (real tokens/s): " + "; ".join(
        f"{s} " + ", ".join(f"{x['tokens_per_s']:.0f}" for x in v) for s, v in results.items())]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
