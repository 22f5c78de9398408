"""Replay a notebook's study on a pool of N workers from the run durations a `make reproduce` console printed.

The console's progress lines (``[3/18] sd_seed0 done in 3.1 min``) give each trained run's minutes; the
study's specs are rebuilt as ``dwml.executor.baseline_specs`` lists them (``--methods``, seeds 0-2), and the
makespan is computed for the order ``dwml.executor.ordered`` gives them now and for the earlier layered order
(every run without a teacher before every run with one). Reused runs take no time. Used for the figure in
docs/decisions.md ("The default's recipe"):

    python benchmarks/replay_pool.py benchmarks/results/default_reproduce_console.log --notebook 03_baselines
"""
from __future__ import annotations

import argparse
import heapq
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dwml.executor import baseline_specs, ordered  # noqa: E402


def durations(console: str, notebook: str) -> dict[str, float]:
    """Run name -> minutes, from the progress lines of ``notebook`` in a runner's console."""
    pattern = rf"{re.escape(notebook)}.*?\] (\S+) done in ([\d.]+) min"
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, console)}


def layered(specs):
    """The order before: every spec whose teacher is placed, all of them, then the next layer."""
    out, placed = [], set()
    while len(out) < len(specs):
        ready = [s for s in specs if s.name not in placed and (not s.teacher or s.teacher in placed)]
        out += ready
        placed |= {s.name for s in ready}
    return out


def makespan(order, minutes: dict[str, float], workers: int) -> float:
    """Minutes until the last run ends when each free worker takes the first waiting spec whose teacher is done
    (``dwml.executor.run_study``'s rule)."""
    t, done, running, waiting = 0.0, set(), [], list(order)
    while waiting or running:
        for s in [s for s in waiting if not s.teacher or s.teacher in done]:
            if len(running) >= workers:
                break
            waiting.remove(s)
            heapq.heappush(running, (t + minutes.get(s.name, 0.0), s.name))
        t, name = heapq.heappop(running)
        done.add(name)
    return t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("console")
    ap.add_argument("--notebook", default="03_baselines")
    ap.add_argument("--methods", default="mlm,sd,kd,dml,kd_dwml,dwml")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    minutes = durations(Path(args.console).read_text(), args.notebook)
    specs = baseline_specs(args.methods.split(","), [int(s) for s in args.seeds.split(",")])
    print(f"{len(minutes)} trained runs, {sum(minutes.values()):.1f} one-worker minutes")
    print(f"layered order (before): {makespan(layered(specs), minutes, args.workers):.1f} min; "
          f"dwml.executor.ordered (now): {makespan(ordered(specs), minutes, args.workers):.1f} min")


if __name__ == "__main__":
    main()
