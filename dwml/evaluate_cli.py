"""The evaluator as a command: ``python -m dwml.evaluate MODEL_DIR [MODEL_DIR ...] --suites blimp,supplement,ewok``.

Any saved Hugging Face masked LM (RoBERTa, BERT, DeBERTa-v2, ... : ``AutoModelForMaskedLM``) is scored on
the minimal pairs with :func:`dwml.evaluate.pll_scores`, and for each model the output folder gets

    <out>/<model>/pairs.csv          one row per pair (scores, correct, tie), the convention in each row
    <out>/<model>/summary.json       per suite: accuracy (macro over tasks), 95% interval, tie rate, time
    <out>/<model>/table_suites.*     the headline numbers
    <out>/<model>/table_paradigms.*  per BLiMP paradigm / supplement task / EWoK domain
    <out>/<model>/table_blimp_phenomena.*   the paper's Table 6 columns (paradigms macro-averaged)
    <out>/<model>/table_supplement_tasks.*  Table 7
    <out>/<model>/table_ewok_domains.*      Table 8

(``*`` = ``.csv`` and ``.md``), and with several models ``<out>/compare_<suite>.*`` (models as rows).
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

SUITES = ("blimp", "supplement", "ewok", "synthetic")
TABLE_OF_SUITE = {"blimp": "table_blimp_phenomena", "supplement": "table_supplement_tasks",
                  "ewok": "table_ewok_domains", "synthetic": "table_synthetic_phenomena"}


def suite_paths(data: Path | None, synthetic: str | None) -> dict[str, Path | None]:
    """Where each suite is read from; ``None`` where no folder is known."""
    paths: dict[str, Path | None] = {"blimp": None, "supplement": None, "ewok": None, "synthetic": None}
    if data is not None:
        ewok = data / "ewok_filtered.zip"
        paths.update(blimp=data / "blimp_filtered", supplement=data / "supplement_filtered",
                     ewok=ewok if ewok.exists() or not (data / "ewok_filtered").is_dir() else data / "ewok_filtered",
                     synthetic=data / "synthetic")
    if synthetic is not None:
        paths["synthetic"] = Path(synthetic)
    return paths


def load_suite(name: str, path: Path | None):
    from dwml import evaluate

    if path is None:
        raise evaluate.EvalDataError(f"suite {name!r}: no data folder (give --data DIR, or set DWML_DATA)")
    if not path.exists():
        raise evaluate.EvalDataError(f"suite {name!r}: {path} does not exist")
    if name == "blimp":
        return evaluate.load_blimp(path)
    if name == "supplement":
        return evaluate.load_supplement(path)
    if name == "ewok":
        return evaluate.load_ewok(path)
    # synthetic: a corpus folder written by dwml.synthetic.write_corpus (pairs/ inside), or that pairs folder
    return evaluate.load_blimp(path / "pairs" if (path / "pairs").is_dir() else path, suite="synthetic")


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


def model_tables(results, n_boot: int, seed: int) -> dict[str, tuple[str, object]]:
    """name -> (title, table) for one model's per-pair results."""
    from dwml import reports

    tables = {"table_suites": ("Accuracy per suite (macro over tasks, %)", reports.accuracy_table(results, "suite", n_boot, seed)),
              "table_paradigms": ("Accuracy per paradigm / task / domain (%)", reports.accuracy_table(results, "task", n_boot, seed))}
    titles = {"blimp": "BLiMP per phenomenon (Table 6 columns, %)", "supplement": "BLiMP supplement per task (Table 7, %)",
              "ewok": "EWoK per domain (Table 8, %)", "synthetic": "Synthetic pairs per phenomenon (%)"}
    order = {"blimp": reports.PHENOMENON_COLUMNS, "supplement": reports.SUPPLEMENT_COLUMNS, "ewok": reports.EWOK_COLUMNS}
    for suite in results["suite"].unique():
        part = results[results["suite"] == suite]
        table = reports.accuracy_table(part, "group", n_boot, seed)
        cols = order.get(suite, [])  # the paper's column order; groups it does not name after them
        rank = {g: i for i, g in enumerate(cols)}
        table = table.iloc[sorted(range(len(table)), key=lambda i: (rank.get(table["group"].iloc[i], len(cols)),
                                                                      str(table["group"].iloc[i])))]
        tables[TABLE_OF_SUITE.get(suite, f"table_{suite}")] = (titles.get(suite, suite), table.reset_index(drop=True))
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
    ap.add_argument("--suites", default="blimp,supplement,ewok", help=f"comma-separated, of {','.join(SUITES)}")
    ap.add_argument("--data", default=None, help="the BabyLM data folder (default: $DWML_DATA or ../shared/data)")
    ap.add_argument("--synthetic", default=None, help="synthetic suite: a dwml.synthetic corpus folder or its pairs/ "
                                                      "(default: DATA/synthetic)")
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
    from dwml.train import resolve_device

    t_start = time.perf_counter()
    names = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise evaluate.EvalDataError(f"--suites {args.suites!r}: unknown {unknown}; known: {','.join(SUITES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    conv = evaluate.resolve_convention(args.convention, args.ties, args.reduction)
    data = Path(args.data) if args.data else evaluate.data_root()
    if args.data and not data.is_dir():
        raise evaluate.EvalDataError(f"--data {data} does not exist")
    paths = suite_paths(data, args.synthetic)
    model_dirs = [Path(m) for m in args.models]
    for d in model_dirs:  # every bad input is reported before minutes of scoring
        if not d.is_dir():
            raise evaluate.EvalDataError(f"model folder {d} does not exist")
    suites = {}
    for name in names:
        t0 = time.perf_counter()
        pairs = evaluate.subsample(load_suite(name, paths[name]), args.max_pairs_per_task, args.seed)
        suites[name] = pairs
        print(f"[dwml.evaluate] {name}: {len(pairs):,} pairs, {len({p.task for p in pairs})} tasks from "
              f"{paths[name]} ({time.perf_counter() - t0:.1f} s)", flush=True)
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
        for suite, pairs in suites.items():
            t0 = time.perf_counter()
            df = evaluate.score_pairs(model, tok, pairs, cfg, device=device, progress=not args.no_progress,
                                      convention=args.convention, ties=args.ties, reduction=args.reduction,
                                      pll_metric=args.pll_metric, desc=f"{name} {suite}")
            df["suite"] = suite
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
        for tname, (title, table) in model_tables(results, args.bootstrap, args.seed).items():
            write_table(table, folder, tname, label, f"{name}: {title}")
        summary = {"model": name, "model_dir": str(d.resolve()), "architecture": type(model).__name__,
                   "parameters": n_params, "convention": {"name": conv.name, "ties": conv.ties,
                                                          "reduction": conv.reduction, "prefixing": conv.prefixing},
                   "pll_metric": args.pll_metric, "dtype": args.dtype, "device": str(device),
                   "batch_size": args.batch_size, "max_pairs_per_task": args.max_pairs_per_task, "seed": args.seed,
                   "bootstrap": args.bootstrap, "suites": per_suite,
                   "data": {s: str(paths[s]) for s in suites},
                   "versions": {"torch": torch.__version__, "python": platform.python_version()}}
        atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
        all_results[name] = results
        model.to("cpu")
    if len(all_results) > 1:
        for suite in suites:
            write_table(reports.wide_table(all_results, suite), out, f"compare_{suite}", label,
                        f"{suite}: models compared (accuracy, %)")
        write_table(reports.summary_table(all_results, args.bootstrap, args.seed), out, "compare_suites", label,
                    "Suites: models compared (accuracy, %, with 95% intervals and tie rates)")
    print(f"[dwml.evaluate] done in {time.perf_counter() - t_start:.1f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
