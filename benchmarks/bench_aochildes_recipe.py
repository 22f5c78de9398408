"""An AO-CHILDES recipe that leaves the unigram plateau: dev cross-entropy, BLiMP and minutes per recipe.

Trains the teacher-sized single model (``mlm``, the ``aochildes`` profile's corpus and peers) once per
named recipe below, each a set of overrides of the profile, and reports per recipe:

- dev cross-entropy at each evaluation, against the plateau a model without context sits on (the
  cross-entropy of the training corpus's token unigram distribution on the dev tokens, computed here);
- tokens seen, passes over the corpus and training minutes;
- BLiMP macro accuracy on a seeded subsample (``--pairs`` per paradigm, all 67 paradigms) with a 95%
  bootstrap interval, beside the word n-gram models counted on the same AO-CHILDES text.

Runs go to ``--run-root`` (reused when finished). Run:
``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_aochildes_recipe.py --recipes base,long
--out benchmarks/results/aochildes_recipe.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dwml import runs, scoring, stats  # noqa: E402
from dwml.studies import study as studies  # noqa: E402
from dwml.config import EvalConfig  # noqa: E402
from dwml.corpus import read_corpus  # noqa: E402
from dwml.ngrams import ngram_pair_scores  # noqa: E402
from dwml.precision import recorded_choice  # noqa: E402
from dwml.runfolder import PRECISION  # noqa: E402

# name -> ({train overrides}, {data overrides}); every recipe is a single model at batch 128 utterances
# unless it says otherwise (one pass over AO-CHILDES is ~1,525 steps of 128).
RECIPES = {
    "base": ({"num_epochs": 300, "lr_decay_iters": 300}, {}),  # the profile as it stood
    "s600": ({"num_epochs": 600, "lr_decay_iters": 600}, {}),
    "s600_lr2e-3_wu300": ({"num_epochs": 600, "lr_decay_iters": 600, "learning_rate": 2e-3, "warmup_iters": 300}, {}),
    "s600_nounmask": ({"num_epochs": 600, "lr_decay_iters": 600}, {"mask_replace_prob": 1.0, "random_replace_prob": 0.0}),
    "s600_mask30": ({"num_epochs": 600, "lr_decay_iters": 600}, {"mlm_probability": 0.3}),
    "b256_s300_lr1.5e-3": ({"num_epochs": 300, "lr_decay_iters": 300, "batch_size": 256, "learning_rate": 1.5e-3}, {}),
    "pass1": ({"num_epochs": 1500, "lr_decay_iters": 1500}, {}),
    "pass3": ({"num_epochs": 4500, "lr_decay_iters": 4500}, {}),
    "b256_pass3": ({"num_epochs": 2300, "lr_decay_iters": 2300, "batch_size": 256, "learning_rate": 1.5e-3,
                    "warmup_iters": 200}, {}),
    # one pass (the profile's 1,525 steps) at higher peak rates: what the rate buys on Zorro at the profile's budget
    "pass1_lr2e-3": ({"num_epochs": 1525, "lr_decay_iters": 1525, "learning_rate": 2e-3, "min_lr": 2e-4}, {}),
    "pass1_lr3e-3": ({"num_epochs": 1525, "lr_decay_iters": 1525, "learning_rate": 3e-3, "min_lr": 3e-4}, {}),
    "pass2": ({"num_epochs": 3050, "lr_decay_iters": 3050}, {}),
}


def words_tokens(prep, split: str) -> np.ndarray:
    """The split's token ids without the special tokens (``<s>``, ``</s>``, ...)."""
    tokens = np.asarray({"train": prep.train, "dev": prep.dev}[split].tokens, dtype=np.int64)
    return tokens[~np.isin(tokens, prep.tokenizer.all_special_ids)]


def unigram_plateau(prep) -> float:
    """Cross-entropy (nats) of the training tokens' unigram distribution (add-one) on the dev tokens:
    what a model that ignores context reaches at best."""
    counts = np.bincount(np.asarray(prep.train.tokens, dtype=np.int64), minlength=len(prep.tokenizer)) + 1.0
    return float(-np.log(counts / counts.sum())[words_tokens(prep, "dev")].mean())


def dev_curve(run_dir: Path) -> pd.DataFrame:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return pd.DataFrame([{"step": r["step"], "tokens": r["tokens"], "dev_ce": r["dev_ce"][0]}
                         for r in rows if r["kind"] == "eval"])


def macro_with_ci(correct: np.ndarray, tasks: np.ndarray) -> tuple[float, float, float]:
    boot = 100 * stats.macro_bootstrap(correct, tasks, n=1000, seed=0)
    point = pd.Series(correct).groupby(tasks).mean().mean() * 100
    return point, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="base,s600", help=f"comma-separated, from {', '.join(RECIPES)}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pairs", type=int, default=50, help="pairs per paradigm (seeded subsample)")
    ap.add_argument("--suite", default="blimp", help="the suite scored: blimp or zorro (dwml.suites)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--run-root", default="runs/aochildes_recipe")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "aochildes_recipe.md"))
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    suite = args.suite
    prof = yaml.safe_load((ROOT / "profiles" / "aochildes.yaml").read_text())
    study = studies.setup(prof["data"], prof["search"], prof["train"], ROOT / args.run_root, [suite],
                          args.pairs)
    pairs = study.pairs[suite]
    plateau = unigram_plateau(study.prep)
    n_train = len(words_tokens(study.prep, "train"))
    n_pass = len(study.prep.train.tokens)  # one pass: every training token, <s> and </s> included
    lines_train = read_corpus(study.prep.corpus_dir, "train", drop_markers=study.cfg.data.drop_markers)
    ngram = ngram_pair_scores(lines_train, pairs)
    out = [f"# AO-CHILDES recipe probe: {platform.node()}, {time.strftime('%Y-%m-%d %H:%M')}", "",
           f"`{' '.join(['benchmarks/bench_aochildes_recipe.py'] + (argv or sys.argv[1:]))}`", "",
           f"Single model (`mlm`, teacher-sized: {study.meta.get('teacher', '')}), seed {args.seed}; "
           f"train.mixed_precision: {study.cfg.train.mixed_precision} (each run's choice: the bf16 column). "
           f"Training corpus: {n_train:,} tokens (no specials), {len(lines_train):,} utterances. "
           f"Unigram plateau (train unigram on dev tokens): dev CE {plateau:.3f} nats. "
           f"{suite}: {len(pairs):,} pairs ({args.pairs} per paradigm, seeded).", "",
           "Word n-gram models counted on the same AO-CHILDES training text, same pairs:", ""]
    for order, g in ngram.groupby("order"):
        p, lo, hi = macro_with_ci(g["correct"].to_numpy(), g["task"].to_numpy())
        out.append(f"- {order}-gram: {p:.1f}% [{lo:.1f}, {hi:.1f}], ties {100 * g['tie'].mean():.1f}%")
    out += ["", "| recipe | overrides | steps | tokens | passes | train min | dev CE (min) | dev CE by step | "
            f"{suite} % [95% CI] | ties % | score min | bf16 |", "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for name in args.recipes.split(","):
        train_o, data_o = RECIPES[name]
        sections = {**study.sections, "data": {**study.sections["data"], **data_o}}
        res = runs.train_run(sections, study.prep, study.archs, study.meta, "mlm", args.seed,
                                    ROOT / args.run_root, tag=name, train_overrides=train_o, progress=True)
        curve = dev_curve(Path(res.run_dir))
        t0 = time.perf_counter()
        cached = (Path(res.run_dir) / runs.SCORES).is_file()
        df = scoring.score_run(res, {suite: pairs}, EvalConfig(dtype="float32"))  # cached in the run folder
        score_min = math.nan if cached else (time.perf_counter() - t0) / 60
        p, lo, hi = macro_with_ci(df["correct"].to_numpy(), df["task"].to_numpy())
        tie = 100 * float(df["tie"].mean())
        marks = curve.iloc[np.unique(np.linspace(0, len(curve) - 1, 7).round().astype(int))]
        by_step = ", ".join(f"{int(s)}: {c:.2f}" for s, c in zip(marks["step"], marks["dev_ce"]))
        tokens = int(res.summary.get("tokens", curve["tokens"].iloc[-1]))
        kept = recorded_choice(Path(res.run_dir) / PRECISION)  # what the run trained in, as it recorded it
        bf16 = kept.bf16 if kept else "?"
        row = (f"| {name} | {json.dumps({**train_o, **data_o})} | {int(curve['step'].iloc[-1])} | {tokens:,} | "
               f"{tokens / n_pass:.2f}{' (stopped early)' if res.summary.get('stopped_early') else ''} | "
               f"{res.summary['elapsed_s'] / 60:.1f} | {curve['dev_ce'].min():.3f} | {by_step} | "
               f"{p:.1f} [{lo:.1f}, {hi:.1f}] | {tie:.1f} | {score_min:.1f} | {bf16} |")
        out.append(row)
        print(row, flush=True)
        Path(args.out).write_text("\n".join(out) + "\n")  # partial results survive an interrupted probe
    print("\n".join(out))


if __name__ == "__main__":
    main()
