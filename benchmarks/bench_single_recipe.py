"""The default profile's single model (mlm) under other training settings: what the recipe buys at a budget.

Each variant (a tag and its ``train`` overrides, as JSON) is trained for seeds 0-2 through the profile's study and
executor (``dwml.studies.study.execute``: a local pool, one thread a run) and scored on the profile's pairs; the
table gives per run the training seconds, the best dev cross-entropy and the macro accuracy (%), and a CSV of
it goes to ``<run-root>/probe_<tags>.csv``. The single model alone decides the default's recipe (issue 31's
rule: never the methods' differences). Run:

    flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_single_recipe.py --run-root /tmp/recipe \\
        --variants '{"lr2s550": {"learning_rate": 0.002, "min_lr": 0.0002, "num_epochs": 550, "lr_decay_iters": 550}}'
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dwml.compare import per_seed  # noqa: E402
from dwml.executor import RunSpec  # noqa: E402
from dwml.studies import study as studies  # noqa: E402


def main(argv=None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-root", required=True)
    ap.add_argument("--variants", required=True, help='JSON: tag -> train overrides, e.g. {"lr2": {"learning_rate": 0.002}}')
    ap.add_argument("--profile", default="default")
    ap.add_argument("--methods", default="mlm")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args(argv)
    prof = yaml.safe_load((ROOT / "profiles" / f"{args.profile}.yaml").read_text())
    variants = json.loads(args.variants)
    seeds = [int(s) for s in args.seeds.split(",")]
    study = studies.setup(prof["data"], prof["search"], prof["train"], args.run_root, prof["suites"],
                          prof["max_pairs_per_task"], prof.get("suite_dirs"), prof.get("skip_tasks"))
    specs = [RunSpec(m, s, tag=t, train_overrides=o) for t, o in variants.items() for m in args.methods.split(",")
             for s in seeds]
    done = studies.execute(study, specs, prof.get("executor"))
    rows = []
    for name, r in done.items():
        acc = per_seed(pd.read_csv(r.scores), keys=("peer",)).groupby("peer")["accuracy"].mean()  # over suites
        rows.append({"run": name, "train_s": round(r.summary["elapsed_s"], 1),
                     "best_dev": round(r.summary["best_dev_ensemble"], 4),
                     **{f"peer{p}": round(a, 1) for p, a in acc.items()}})
    table = pd.DataFrame(rows).sort_values("run")
    print(table.to_string(index=False))
    table.to_csv(Path(args.run_root) / f"probe_{'_'.join(variants)}.csv", index=False)
    return table


if __name__ == "__main__":  # the pool's workers are spawned and import this file again
    main()
