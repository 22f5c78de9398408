"""Accuracy tables with 95% intervals, and a paired test between two models, from per-pair results.

Input is the DataFrame of :func:`dwml.evaluate.score_pairs` / :func:`dwml.evaluate.evaluate_model`: one
row per pair with ``suite``, ``task`` (BLiMP paradigm, supplement file, EWoK domain), ``phenomenon``,
``pair_id``, ``correct`` and ``tie``. A tie is never right (see ``dwml.evaluate``); every table shows the
tie rate so that a model that scores everything equal is seen for what it is.

Averages follow BabyLM: a suite's score is the *macro* average over its tasks (each paradigm counts
once, whatever its size), and the paper's Table 6 phenomenon columns average the paradigms of each
phenomenon the same way. Intervals are percentile bootstraps that resample pairs *within* each task,
which keeps every task's weight fixed, as the macro average does. For a mean of 0/1 values, resampling
n pairs with replacement gives a Binomial(n, p_hat)/n mean exactly, so the macro bootstrap draws those
binomials instead of index arrays (the test checks it against explicit resampling).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from dwml import suites
from dwml.plots import save_table
from dwml.stats import bootstrap_ci, macro_bootstrap, mcnemar_exact
from dwml.suites import PHENOMENA


def _require(results: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in results.columns]
    if missing:
        raise ValueError(f"results lack column(s) {missing}; expected the output of dwml.evaluate.score_pairs "
                         f"(columns: {list(results.columns)})")


def with_groups(results: pd.DataFrame) -> pd.DataFrame:
    """Add ``group``: each row's table column as its suite's registry entry says (``dwml.suites``: the
    Table 6 phenomenon for BLiMP and the synthetic pairs, the Table 8 acronym for EWoK, the task for the
    supplement, the paradigm for Zorro); a suite not in the registry groups by BLiMP's phenomena, an
    unknown term keeping its own name."""
    _require(results, ["suite", "task", "phenomenon"])
    df = results.copy()
    df["group"] = df["phenomenon"].map(PHENOMENA).fillna(df["phenomenon"])
    for name in df["suite"].unique():
        if name in suites.SUITES:
            rows = df["suite"] == name
            df.loc[rows, "group"] = suites.get(name).groups(df[rows]).to_numpy()
    return df


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------

def _row(df: pd.DataFrame, task_col: str, n_boot: int, seed: int) -> dict:
    per_task = df.groupby(task_col)["correct"].mean()
    reps = macro_bootstrap(df["correct"].to_numpy(), df[task_col].to_numpy(), n_boot, seed) if n_boot else None
    lo, hi = (np.quantile(reps, [0.025, 0.975]) if reps is not None else (math.nan, math.nan))
    return {"n_tasks": len(per_task), "n_pairs": len(df), "accuracy": 100 * per_task.mean(),
            "ci_low": 100 * lo, "ci_high": 100 * hi, "tie_rate": 100 * df["tie"].mean()}


def accuracy_table(results: pd.DataFrame, by: str = "task", n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Accuracy (%) per ``by`` value with its 95% bootstrap interval and tie rate (%).

    ``by``: 'task' (per paradigm / supplement file / EWoK domain), 'group' (the paper's Table 6 / 7 / 8
    columns: paradigms of a phenomenon macro-averaged), 'suite' (the headline numbers: macro over tasks),
    or any other column. Rows keep the suite so suites never mix."""
    _require(results, ["suite", "task", "correct", "tie"])
    df = with_groups(results) if by == "group" else results
    if by not in df.columns:
        raise ValueError(f"by={by!r}: no such column; use 'task', 'group', 'suite' or one of {list(df.columns)}")
    rows = []
    keys = ["suite"] if by == "suite" else ["suite", by]
    for key, part in df.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(keys, key)), **_row(part, "task", n_boot, seed)})
    return pd.DataFrame(rows)


def summary_table(results_by_model: Mapping[str, pd.DataFrame], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The paper's Table 2 layout: one row per model, one column per suite (macro accuracy, %), each with
    its interval as ``<suite> lo`` / ``<suite> hi``, and the tie rate."""
    rows = []
    for model, res in results_by_model.items():
        row: dict = {"model": model}
        for _, r in accuracy_table(res, "suite", n_boot, seed).iterrows():
            s = r["suite"]
            row.update({s: r["accuracy"], f"{s} lo": r["ci_low"], f"{s} hi": r["ci_high"], f"{s} ties": r["tie_rate"]})
        rows.append(row)
    return pd.DataFrame(rows)


def wide_table(results_by_model: Mapping[str, pd.DataFrame], suite: str = "blimp", by: str = "group",
               columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Models as rows and the groups of one suite as columns (accuracy, %), plus ``Avg.`` (macro over the
    suite's tasks): the layout of the paper's Tables 6 (BLiMP phenomena), 7 (supplement) and 8 (EWoK)."""
    default = list(suites.get(suite).columns) if suite in suites.SUITES else []
    rows = []
    for model, res in results_by_model.items():
        part = res[res["suite"] == suite]
        if part.empty:
            raise ValueError(f"model {model!r} has no results for suite {suite!r}")
        table = accuracy_table(part, by, n_boot=0).set_index(by)["accuracy"]
        rows.append({"model": model, **table.to_dict(), "Avg.": 100 * part.groupby("task")["correct"].mean().mean()})
    df = pd.DataFrame(rows).set_index("model")
    cols = list(columns) if columns is not None else [c for c in default if c in df.columns]
    cols += [c for c in df.columns if c not in cols and c != "Avg."]
    return df[cols + ["Avg."]].reset_index()


# --------------------------------------------------------------------------------------------------
# Two models on the same pairs
# --------------------------------------------------------------------------------------------------

def paired_test(correct_a, correct_b, n_boot: int = 1000, seed: int = 0) -> dict:
    """Compare two models on the *same* pairs (aligned arrays of right / wrong).

    Returns the accuracies (%), their difference a - b with a paired bootstrap 95% interval (pairs
    resampled together, so what both models find hard cancels), the discordant counts ``a_only`` (a
    right, b wrong) and ``b_only``, and the exact McNemar p-value, which uses only those counts."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a {a.shape} and correct_b {b.shape} must be 1-D arrays over the same pairs")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    lo, hi = bootstrap_ci(a.astype(float) - b.astype(float), n=n_boot, seed=seed)
    return {"n_pairs": int(a.size), "acc_a": 100 * a.mean(), "acc_b": 100 * b.mean(),
            "diff": 100 * (a.mean() - b.mean()), "diff_lo": 100 * lo, "diff_hi": 100 * hi,
            "a_only": a_only, "b_only": b_only, "p_value": mcnemar_exact(a_only, b_only)}


def check_one_to_one(frame: pd.DataFrame, keys: Sequence[str], where: str) -> None:
    """Raise ``ValueError`` when a value of ``keys`` (the columns a join on pairs matches) is on more than
    one row of ``frame``, naming the first such key and its count: a join on it would pair rows many to
    many and count a pair several times."""
    _require(frame, list(keys))
    dup = frame.duplicated(list(keys), keep=False)
    if dup.any():
        first = frame.loc[dup, list(keys)].iloc[0]
        n = int((frame[list(keys)] == first.to_numpy()).all(axis=1).sum())
        key = ", ".join(f"{k}={getattr(v, 'item', lambda: v)()!r}" for k, v in first.items())
        raise ValueError(f"{where}: the key ({key}) is on {n} rows ({int(dup.sum())} rows share a repeated key); "
                         f"a join on pairs needs one row per ({', '.join(keys)})")


def compare_models(results_a: pd.DataFrame, results_b: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """:func:`paired_test` per suite, pairs matched on (suite, task, pair_id); unmatched pairs raise, and so
    does a key on two rows of either frame (:func:`check_one_to_one`), naming it."""
    keys = ["suite", "task", "pair_id"]
    _require(results_a, keys + ["correct"])
    _require(results_b, keys + ["correct"])
    check_one_to_one(results_a, keys, "compare_models: results_a")
    check_one_to_one(results_b, keys, "compare_models: results_b")
    merged = results_a[keys + ["correct"]].merge(results_b[keys + ["correct"]], on=keys, how="outer",
                                                 suffixes=("_a", "_b"), indicator=True)
    if (merged["_merge"] != "both").any():
        n = int((merged["_merge"] != "both").sum())
        raise ValueError(f"{n} pairs are scored by only one of the two models; compare results on the same pairs")
    rows = [{"suite": s, **paired_test(p["correct_a"], p["correct_b"], n_boot, seed)}
            for s, p in merged.groupby("suite", sort=False)]
    return pd.DataFrame(rows)


def save_tables(tables: Mapping[str, pd.DataFrame], figures_dir: str | Path) -> list[Path]:
    """Write each table as ``<name>.csv`` and ``<name>.md`` under ``figures_dir`` (atomically)."""
    paths = []
    for name, df in tables.items():
        paths.extend(save_table(df, figures_dir, name))
    return paths
