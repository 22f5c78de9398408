"""What the default profile's budget buys: accuracy, seed spread and paired-interval width against minutes.

Trains the default profile's runs (its corpus, peers, batch and schedule; ``--steps`` optimizer steps, the
learning-rate decay stretched to match) for each method and seed through ``dwml.runs``, scores every
peer on the synthetic pairs (``max_pairs_per_task`` of the profile) and reports, per number of steps:

- the minutes of training and of scoring per run (the notebooks' hour is spent on these);
- the single model's macro accuracy (mean over seeds) and each paradigm's standard deviation over seeds;
- each method's best peer against DWML's, paired by seed: the difference and the half-width of its 95%
  t-interval, and, by subsampling seeds, the half-width that 3, 4, ... seeds would give (the mean over
  the subsets of that size), so that seeds and steps can be traded at equal minutes;
- with ``--eval-dtypes float32,bfloat16``: the share of pair decisions that bfloat16 scoring keeps.

Runs go to ``--run-root`` (reused when finished, as the notebooks reuse theirs). Run:
``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_default_budget.py --steps 250 --seeds 0,1,2
--methods mlm,dml,dwml --out benchmarks/results/default_budget.md``.
"""
from __future__ import annotations

import argparse
import itertools
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dwml import compare, runs  # noqa: E402
from dwml.studies import study as studies  # noqa: E402
from dwml.config import EvalConfig  # noqa: E402
from dwml.evaluate import evaluate_model  # noqa: E402
from dwml.methods import dwml_method, single_model_method, teacher_method, training_order, with_traits  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="250", help="comma-separated optimizer steps per run")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default="mlm,dml,dwml", help="the teacher (mlm) is trained first when a method needs it")
    ap.add_argument("--run-root", default="runs/budget")
    ap.add_argument("--peers", default="runs/default/peers.json",
                    help="the notebooks' peer search to train (copied into --run-root; '' searches anew at the "
                         "tokenizer's size, not data.vocab_size as 01 does)")
    ap.add_argument("--eval-dtypes", default="bfloat16", help="first one gives the tables; a second is compared")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "default_budget.md"))
    args = ap.parse_args(argv)
    prof = yaml.safe_load((ROOT / "profiles" / "default.yaml").read_text())
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    dtypes = args.eval_dtypes.split(",")
    if args.peers and (ROOT / args.peers).is_file() and not (ROOT / args.run_root / "peers.json").is_file():
        (ROOT / args.run_root).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / args.peers, ROOT / args.run_root / "peers.json")
    study = studies.setup(prof["data"], prof["search"], prof["train"], ROOT / args.run_root, prof["suites"],
                          prof["max_pairs_per_task"], skip_tasks=prof.get("skip_tasks"))
    lines = [f"# Default budget: {platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"`{' '.join(['benchmarks/bench_default_budget.py'] + (argv or sys.argv[1:]))}`", "",
             f"methods {methods}, seeds {seeds}, {sum(len(v) for v in study.pairs.values())} pairs a peer "
             f"(scored in {dtypes[0]})", ""]
    for steps in [int(s) for s in args.steps.split(",")]:
        overrides = {"num_epochs": steps, "lr_decay_iters": steps}
        frames, minutes = [], []
        for seed in seeds:
            teacher = None
            for method in training_order(methods):
                res = runs.train_run(study.sections, study.prep, study.archs, study.meta, method, seed,
                                            ROOT / args.run_root, tag=f"s{steps}", train_overrides=overrides,
                                            teacher_dir=teacher.peer_dirs[0] if teacher else "", progress=False)
                if method == teacher_method(methods):
                    teacher = res
                scored = {}
                for dt in dtypes:
                    t0 = time.perf_counter()
                    df = pd.concat([evaluate_model(d, suites=study.pairs, cfg=EvalConfig(dtype=dt), progress=False).assign(peer=i + 1)
                                    for i, d in enumerate(res.peer_dirs)], ignore_index=True)
                    scored[dt] = (df.assign(method=method, seed=seed), time.perf_counter() - t0)
                frames.append(scored[dtypes[0]][0])
                row = {"method": method, "seed": seed, "train_min": res.summary["elapsed_s"] / 60,
                       "score_min": scored[dtypes[0]][1] / 60}
                if len(dtypes) > 1:
                    a, b = scored[dtypes[0]][0], scored[dtypes[1]][0]
                    row["same_decisions"] = float((a["correct"].values == b["correct"].values).mean())
                    row["score_min_" + dtypes[1]] = scored[dtypes[1]][1] / 60
                minutes.append(row)
                print(row, flush=True)
        scores = pd.concat(frames, ignore_index=True)
        scores.to_csv(Path(args.out).with_suffix(f".{steps}.csv"), index=False)  # every pair's decision, to reread
        lines += report(steps, scores, pd.DataFrame(minutes), methods)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def report(steps: int, scores: pd.DataFrame, minutes: pd.DataFrame, methods) -> list[str]:
    out = [f"## {steps} steps", "", "Minutes per run (median over seeds):", "",
           minutes.groupby("method").median(numeric_only=True).drop(columns="seed").to_markdown(floatfmt=".3f"), ""]
    seeded = compare.per_seed(scores)
    single = single_model_method(methods)
    if single:
        task = (scores[scores["method"] == single].groupby(["seed", "task"])["correct"].mean().mul(100).unstack("task"))
        out += [f"Single model, macro accuracy per seed: {task.mean(axis=1).round(1).to_dict()}", "",
                "Per paradigm, mean and standard deviation over seeds (points):", "",
                pd.DataFrame({"mean": task.mean(), "sd": task.std(ddof=1)}).to_markdown(floatfmt=".1f"), ""]
    best = compare.best_peer(seeded)
    means = best.groupby("method")["accuracy"].mean()
    peers = seeded[~seeded["method"].isin(with_traits(methods, single_model=True))]["peer"].max()
    smallest = seeded[seeded["peer"] == peers].groupby("method")["accuracy"].mean()
    out += [f"Best peer, mean over seeds: {means.round(1).to_dict()}; smallest peer: {smallest.round(1).to_dict()}", ""]
    reference = dwml_method(methods)
    if reference:
        rows = []
        seeds = sorted(best["seed"].unique())
        for k in range(3, len(seeds) + 1):
            for subset in itertools.combinations(seeds, k):
                d = compare.t_over_seeds(best[best["seed"].isin(subset)], reference)
                for _, r in d.iterrows():
                    rows.append({"method": r["method"], "seeds": k, "half_width": (r["ci_high"] - r["ci_low"]) / 2,
                                 "difference": r["difference"]})
        if rows:
            hw = pd.DataFrame(rows).groupby(["method", "seeds"]).agg(half_width=("half_width", "mean"),
                                                                     difference=("difference", "mean"))
            out += ["Against DWML's best peer, paired by seed: mean half-width of the 95% t-interval over all "
                    "subsets of that many seeds (points):", "", hw.reset_index().to_markdown(index=False, floatfmt=".2f"), ""]
    return out


if __name__ == "__main__":
    main()
