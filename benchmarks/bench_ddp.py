"""Tokens per second of one DWML run on 2 processes (torchrun, gloo, CPU) against 1 process.

The same run three ways, through the command line (``python -m dwml.train``, the ci profile's corpus and
peers, float32, 2 micro-batches a step, the outer step every 2 steps), the same global batch each time:

  1proc      one process, micro-batch 2B, torch's default threads (every core);
  1proc_1t   one process, micro-batch 2B, one thread;
  2proc      ``torchrun --nproc_per_node 2``, micro-batch B on each rank, one thread each (torchrun's default).

Rate: real tokens of the steps after ``--skip`` over their time, as rank 0 logs them (``metrics.jsonl``;
outer steps inside), median over ``--rounds`` interleaved rounds; also the wall time of the command
(start-up, corpus, evaluations included). On a 2-core CPU the 2 ranks share the cores one process already
uses, so ``2proc / 1proc`` measures DDP's overhead (the gradient all-reduce, the outer step's sums, the
duplicated host work of drawing the global batch), not scaling.

Run: ``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_ddp.py`` (a few minutes).
Writes ``benchmarks/results/ddp.md``.
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
RESULTS = ROOT / "benchmarks" / "results" / "ddp.md"


def run(setting: str, root: Path, steps: int, batch: int, seed: int) -> tuple[list[dict], float]:
    """Rank 0's metrics lines of the train steps, and the wall seconds of the command."""
    run_dir = root / f"{setting}_{seed}"
    common = ["--profile", "ci", "--method", "dwml", "--seed", str(seed), "--run-root", str(root / "runs"),
              "--run-dir", str(run_dir), "--no-progress", "--set", f"train.num_epochs={steps}",
              "--set", "train.num_batches=2", "--set", "train.mixed_precision=false",
              "--set", f"train.eval_interval={steps}", "--set", f"train.checkpoint_interval={steps}",
              "--set", "train.enable_early_stopping=false", "--set", "train.device=cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if setting == "2proc":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dwml.train",
               *common, "--set", f"train.batch_size={batch}"]
        env["OMP_NUM_THREADS"] = "1"
    else:
        cmd = [sys.executable, "-m", "dwml.train", *common, "--set", f"train.batch_size={2 * batch}"]
        if setting == "1proc_1t":
            env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{setting}: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    return train, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--skip", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32, help="each rank's micro-batch B (one process: 2B)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    settings = ["1proc", "1proc_1t", "2proc"]
    rates: dict[str, list[float]] = {s: [] for s in settings}
    walls: dict[str, list[float]] = {s: [] for s in settings}
    per_step: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for s in settings:
                train, wall = run(s, Path(tmp), args.steps, args.batch, seed=r)
                kept = train[args.skip:]
                tokens = sum(x["tokens_per_step"] for x in kept)
                secs = sum(x["tokens_per_step"] / x["tokens_per_s"] for x in kept)
                rates[s].append(tokens / secs)
                walls[s].append(wall)
                per_step[s] = round(statistics.mean(x["tokens_per_step"] for x in kept))
                print(f"round {r} {s}: {tokens / secs:.0f} tokens/s, wall {wall:.1f} s", flush=True)
    med = {s: statistics.median(v) for s, v in rates.items()}
    lines = ["# DDP on the CPU: 2 processes against 1", "",
             f"`{' '.join(['benchmarks/bench_ddp.py'] + sys.argv[1:])}` on {platform.machine()}, "
             f"{os.cpu_count()} cores, torch threads default; ci profile, DWML, float32, 2 micro-batches a step, "
             f"micro-batch {args.batch} a rank (2 x {args.batch} in one process), {args.steps} steps, the first "
             f"{args.skip} not timed, median of {args.rounds} rounds.", "",
             "| setting | real tokens/s | vs 1proc | tokens/step | wall s (whole command) |",
             "|---|---|---|---|---|"]
    for s in settings:
        lines.append(f"| {s} | {med[s]:.0f} | {med[s] / med['1proc']:.2f} | {per_step[s]} | "
                     f"{statistics.median(walls[s]):.1f} |")
    lines += ["", f"On {os.cpu_count()} cores the two ranks share the cores that one process already uses: "
              "2proc / 1proc is the overhead of data parallelism here (gradient all-reduce over gloo, the outer "
              "step's sums, each rank drawing the global batch), not its scaling, which needs one device a rank.",
              ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
