"""The evaluator as a command: ``python -m dwml.evaluate MODEL_DIR [MODEL_DIR ...] --suites blimp,supplement,ewok``.

Any saved Hugging Face masked LM (RoBERTa, BERT, DeBERTa-v2, ... : ``AutoModelForMaskedLM``) is scored on
the minimal pairs with :func:`dwml.evaluate.pll_scores`, and for each model the output folder gets

    <out>/<model>/pairs.csv          one row per pair (its sentences: good, bad, prefix; scores, correct, tie),
                                     the convention in each row
    <out>/<model>/summary.json       per suite: accuracy (macro over tasks), 95% interval, tie rate, time
    <out>/<model>/table_suites.*     the headline numbers
    <out>/<model>/table_paradigms.*  per BLiMP paradigm / supplement task / EWoK domain / Zorro paradigm
    <out>/<model>/table_blimp_phenomena.*   the paper's Table 6 columns (paradigms macro-averaged)
    <out>/<model>/table_supplement_tasks.*  Table 7
    <out>/<model>/table_ewok_domains.*      Table 8
    <out>/<model>/table_zorro_paradigms.*   Zorro per paradigm, beside the published results read from
                                            reference_results.csv next to its sentences (when there)

(``*`` = ``.csv`` and ``.md``; each suite's table as its ``dwml.suites`` entry names it; ``--suite-dir
NAME=PATH`` reads a suite from any folder), and with several models ``<out>/compare_<suite>.*`` (models as rows).
Every table carries the convention that made it (``--convention`` dwml / babylm2024 / babylm2025, or the
single settings ``--ties`` / ``--reduction`` that override it) and the PLL metric, so that a number
from here can be put beside a leaderboard's. Intervals and tie rates come from :mod:`dwml.reports`.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from dwml import suites


def parse_suite_dirs(items: list[str] | None, synthetic: str | None = None) -> dict[str, Path]:
    """``--suite-dir NAME=PATH`` (repeatable) as name -> folder, with ``--synthetic PATH`` as
    ``synthetic=PATH``. An unknown NAME or a PATH that does not exist is an error naming the option."""
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = (x.strip() for x in item.partition("="))
        if not sep or not name or not path:
            raise suites.EvalDataError(f"--suite-dir {item!r}: expected NAME=PATH, e.g. zorro=../shared/data/zorro")
        if name not in suites.SUITES:
            raise suites.EvalDataError(f"--suite-dir {item!r}: unknown suite {name!r}; known: {','.join(suites.names())}")
        out[name] = Path(path).expanduser()
        if not out[name].exists():
            raise suites.EvalDataError(f"--suite-dir {item!r}: {out[name]} does not exist")
    if synthetic is not None:
        out["synthetic"] = Path(synthetic).expanduser()
    return out


def suite_dir(name: str, data: Path | None, dirs: dict[str, Path]) -> Path:
    """Where suite ``name`` is read from: its ``--suite-dir``, else its registry folder under ``data``."""
    if name in dirs:
        return dirs[name]
    if data is None:
        raise suites.EvalDataError(f"suite {name!r}: no data folder (give --data DIR, --suite-dir {name}=PATH, "
                                   f"or set DWML_DATA)")
    return suites.get(name).path(data)


def _label(conv, pll_metric: str, dtype: str) -> str:
    return (f"convention {conv['name']} (ties {conv['ties']}, reduction {conv['reduction']}, prefixing "
            f"{conv['prefixing']}), PLL {pll_metric}, {dtype}")


def write_table(df, folder: Path, name: str, label: str, title: str) -> list[Path]:
    """``<name>.csv`` (a ``convention`` column first) and ``<name>.md`` (a heading naming the convention)."""
    from dwml.io import atomic_write_text

    df = df.copy()
    df.insert(0, "convention", label.split(" (")[0].removeprefix("convention "))
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    atomic_write_text(csv, df.to_csv(index=False))
    atomic_write_text(md, f"# {title}\n\nScored with {label}.\n\n"
                      + df.drop(columns=["convention"]).to_markdown(index=False, floatfmt=".2f") + "\n")
    return [csv, md]


def model_tables(results, n_boot: int, seed: int, references: dict | None = None) -> dict[str, tuple[str, object]]:
    """name -> (title, table) for one model's per-pair results: the suites, the tasks, and per suite its
    group table (``dwml.suites``: name, title, column order). ``references`` (suite -> the suite's
    published results, rows models, columns groups and ``Avg.``) adds an ``Avg.`` row and a column per
    published model to that suite's table."""
    import pandas as pd

    from dwml import reports

    tables = {"table_suites": ("Accuracy per suite (macro over tasks, %)", reports.accuracy_table(results, "suite", n_boot, seed)),
              "table_paradigms": ("Accuracy per paradigm / task / domain (%)", reports.accuracy_table(results, "task", n_boot, seed))}
    for name in results["suite"].unique():
        spec = suites.SUITES.get(name)
        part = results[results["suite"] == name]
        table = reports.accuracy_table(part, "group", n_boot, seed)
        cols = list(spec.columns) if spec else []  # the paper's column order; groups it does not name after them
        rank = {g: i for i, g in enumerate(cols)}
        table = table.iloc[sorted(range(len(table)), key=lambda i: (rank.get(table["group"].iloc[i], len(cols)),
                                                                      str(table["group"].iloc[i])))]
        table = table.reset_index(drop=True)
        ref = (references or {}).get(name)
        if ref is not None:
            total = reports.accuracy_table(part, "suite", n_boot, seed).assign(group="Avg.")
            table = pd.concat([table, total[table.columns]], ignore_index=True)
            for model, row in ref.iterrows():
                table[model] = table["group"].map(row)
        tables[spec.table if spec and spec.table else f"table_{name}"] = (spec.title if spec else name, table)
    return tables


def _model_names(dirs: list[Path]) -> list[str]:
    names, seen = [], {}
    for d in dirs:
        base = d.resolve().name or "model"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names


def build_parser() -> argparse.ArgumentParser:
    from dwml.config import nonnegative_int, positive_int, seed_int  # range-checked options, named by argparse

    ap = argparse.ArgumentParser(prog="python -m dwml.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", metavar="MODEL_DIR", help="saved Hugging Face masked LM folders")
    ap.add_argument("--suites", default="blimp,supplement,ewok", help=f"comma-separated, of {','.join(suites.names())}")
    ap.add_argument("--data", default=None, help="the BabyLM data folder (default: $DWML_DATA or ../shared/data)")
    ap.add_argument("--synthetic", default=None, help="synthetic suite: a dwml.synthetic corpus folder or its pairs/ "
                                                      "(default: DATA/synthetic)")
    ap.add_argument("--suite-dir", action="append", default=None, metavar="NAME=PATH",
                    help="read suite NAME from PATH instead of its folder under --data (repeatable)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    ap.add_argument("--convention", default="dwml", choices=["dwml", "babylm2024", "babylm2025"],
                    help="preset of ties, reduction and prefixing (default: dwml = ties wrong, sum)")
    ap.add_argument("--ties", default=None, choices=["wrong", "correct"], help="override the preset's ties")
    ap.add_argument("--reduction", default=None, choices=["sum", "mean"], help="override the preset's reduction")
    ap.add_argument("--pll-metric", default="original", choices=["original", "within_word_l2r"],
                    help="original PLL (Salazar et al. 2020) or within-word left-to-right (Kauf & Ivanova 2023)")
    ap.add_argument("--batch-size", type=positive_int, default=256, help="masked copies per forward pass")
    ap.add_argument("--max-pairs-per-task", type=nonnegative_int, default=0, help="seeded subsample per task (0: all)")
    ap.add_argument("--seed", type=seed_int, default=0, help="seed of the subsample and the bootstrap")
    ap.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples for the 95%% intervals")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dwml import evaluate
    from dwml.config import ConfigError

    try:
        return run(args)
    except (evaluate.EvalDataError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(args) -> int:
    import pandas as pd
    import torch

    from dwml import evaluate
    from dwml import reports
    from dwml.config import EvalConfig
    from dwml.io import atomic_write_text
    from dwml.device import resolve_device

    t_start = time.perf_counter()
    names = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in names if s not in suites.SUITES]
    if unknown or not names:
        raise evaluate.EvalDataError(f"--suites {args.suites!r}: unknown {unknown}; known: {','.join(suites.names())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    conv = evaluate.resolve_convention(args.convention, args.ties, args.reduction)
    data = Path(args.data) if args.data else evaluate.data_root()
    if args.data and not data.is_dir():
        raise evaluate.EvalDataError(f"--data {data} does not exist")
    dirs = parse_suite_dirs(args.suite_dir, args.synthetic)
    model_dirs = [Path(m) for m in args.models]
    for d in model_dirs:  # every bad input is reported before minutes of scoring
        if not d.is_dir():
            raise evaluate.EvalDataError(f"model folder {d} does not exist")
    chosen, paths = {}, {}
    for name in names:
        t0 = time.perf_counter()
        paths[name] = suite_dir(name, data, dirs)
        pairs = evaluate.subsample(suites.load(name, paths[name]), args.max_pairs_per_task, args.seed)
        chosen[name] = pairs
        print(f"[dwml.evaluate] {name}: {len(pairs):,} pairs, {len({p.task for p in pairs})} tasks from "
              f"{paths[name]} ({time.perf_counter() - t0:.1f} s)", flush=True)
    # published results to stand beside ours (Zorro's), read from beside the suite's files at run time
    references = suites.references({n: paths[n] for n in chosen})
    device = resolve_device(args.device, "--device")
    cfg = EvalConfig(batch_size=args.batch_size, dtype=args.dtype, reduction=conv.reduction, bootstrap=args.bootstrap)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label = _label({"name": conv.name, "ties": conv.ties, "reduction": conv.reduction, "prefixing": conv.prefixing},
                   args.pll_metric, args.dtype)
    loaded = [evaluate.load_masked_lm(d) for d in model_dirs]  # all folders checked before any scoring
    all_results = {}
    for d, name, (model, tok) in zip(model_dirs, _model_names(model_dirs), loaded):
        model.to(device)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"[dwml.evaluate] {name}: {type(model).__name__}, {n_params / 1e6:.2f}M parameters, on {device}, "
              f"{label}", flush=True)
        frames, per_suite = [], {}
        for suite, pairs in chosen.items():
            t0 = time.perf_counter()
            df = evaluate.score_pairs(model, tok, pairs, cfg, device=device, progress=not args.no_progress,
                                      convention=args.convention, ties=args.ties, reduction=args.reduction,
                                      pll_metric=args.pll_metric, desc=f"{name} {suite}")
            df["suite"] = suite
            # the sentences beside their scores (score_pairs keeps the pairs' order)
            df["good"], df["bad"] = [p.good for p in pairs], [p.bad for p in pairs]
            df["prefix"] = [p.prefix or "" for p in pairs]
            seconds = time.perf_counter() - t0
            frames.append(df)
            row = reports.accuracy_table(df, "suite", args.bootstrap, args.seed).iloc[0]
            per_suite[suite] = {"accuracy": float(row["accuracy"]), "ci_low": float(row["ci_low"]),
                                "ci_high": float(row["ci_high"]), "tie_rate": float(row["tie_rate"]),
                                "n_pairs": int(row["n_pairs"]), "n_tasks": int(row["n_tasks"]), "seconds": seconds}
            print(f"[dwml.evaluate] {name} {suite}: {row['accuracy']:.2f}% [{row['ci_low']:.2f}, {row['ci_high']:.2f}], "
                  f"ties {row['tie_rate']:.2f}%, {len(df):,} pairs in {seconds:.1f} s", flush=True)
        results = pd.concat(frames, ignore_index=True)
        pairs_csv = results.assign(model=name, convention=conv.name, pll_metric=args.pll_metric, dtype=args.dtype)
        pairs_csv.to_csv(folder / "pairs.csv", index=False)
        for tname, (title, table) in model_tables(results, args.bootstrap, args.seed, references).items():
            write_table(table, folder, tname, label, f"{name}: {title}")
        summary = {"model": name, "model_dir": str(d.resolve()), "architecture": type(model).__name__,
                   "parameters": n_params, "convention": {"name": conv.name, "ties": conv.ties,
                                                          "reduction": conv.reduction, "prefixing": conv.prefixing},
                   "pll_metric": args.pll_metric, "dtype": args.dtype, "device": str(device),
                   "batch_size": args.batch_size, "max_pairs_per_task": args.max_pairs_per_task, "seed": args.seed,
                   "bootstrap": args.bootstrap, "suites": per_suite,
                   "data": {s: str(paths[s]) for s in chosen},
                   "versions": {"torch": torch.__version__, "python": platform.python_version()}}
        atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
        all_results[name] = results
        model.to("cpu")
    if len(all_results) > 1:
        for suite in chosen:
            write_table(reports.wide_table(all_results, suite), out, f"compare_{suite}", label,
                        f"{suite}: models compared (accuracy, %)")
        write_table(reports.summary_table(all_results, args.bootstrap, args.seed), out, "compare_suites", label,
                    "Suites: models compared (accuracy, %, with 95% intervals and tie rates)")
    print(f"[dwml.evaluate] done in {time.perf_counter() - t_start:.1f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
