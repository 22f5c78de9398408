"""Notebook 03's study: every method over seeds on the same peers and budget, and the tables that set them side
by side with the paper's (Tables 1, 2, 6-8), the learning curves, and the differences between methods."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from dwml import reports
from dwml import suites as registry
from dwml.compare import best_peer, best_peer_choice, bootstrap_over_pairs, over_seeds, per_seed
from dwml.evaluate import data_root
from dwml.glue import GlueConfig, finetune_all
from dwml.methods import dwml_method, method_class, single_model_method
from dwml.plots import save_figure, save_table
from dwml.plots.experiments import plot_learning_curve, plot_method_curves
from dwml.runs import learning_curve
from dwml.studies.study import paper_table, paper_table2_long


def table2(scores: pd.DataFrame, params: Mapping[tuple[str, int], int] | None = None) -> pd.DataFrame:
    """The paper's Table 2 layout: per method and peer, each suite's accuracy (mean over seeds, 95%
    interval), and a 'best' row per method (the peer best on average, chosen within each seed); the paper's
    value beside each row it has (column ``paper``; peers as strings). ``params``: (method, peer) -> its
    parameter count (:func:`dwml.runs.model_params`), a ``params`` column."""
    seeded = per_seed(scores)
    rows = over_seeds(seeded)
    best = over_seeds(best_peer(seeded).assign(peer="best"))
    out = pd.concat([rows, best], ignore_index=True)
    if params:
        out["params"] = [params.get((m, p)) if p != "best" else None for m, p in zip(out["method"], out["peer"])]
    paper = paper_table2_long()
    out["peer"], paper["peer"] = out["peer"].astype(str), paper["peer"].astype(str)
    return out.merge(paper, how="left", on=["method", "suite", "peer"])


def method_curves(curves: Mapping[str, pd.DataFrame], scores: pd.DataFrame) -> pd.DataFrame:
    """Each method's best peer along training: its macro accuracy (%) per (method, seed, suite, step).

    ``curves``: method -> :func:`learning_curve` rows of that method's runs (every peer, every step, the
    final point included); ``scores``: the final per-pair scores, from which :func:`best_peer` picks the
    peer of each (method, seed), the one a user would keep, so the curve ends at the tables' value."""
    pick = best_peer_choice(scores)
    frames = []
    for method, curve in curves.items():
        mine = pick[pick["method"] == method][["seed", "peer"]]
        part = curve.assign(peer=curve["peer"].astype(int)).merge(mine, on=["seed", "peer"])
        macro = (part.groupby(["seed", "peer", "suite", "step"], sort=True)
                 .agg(tokens=("tokens", "mean"), accuracy=("accuracy", "mean")).reset_index())
        frames.append(macro.assign(method=method))
    if not frames:
        raise ValueError("method_curves: no curves given")
    return pd.concat(frames, ignore_index=True)[["method", "seed", "peer", "suite", "step", "tokens", "accuracy"]]

def learning_curves(results: Mapping, scores: pd.DataFrame, methods: Sequence[str],
                    figures_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The learning curves of ``results`` ((method, seed) -> run, trained with ``curve_steps``): each method's
    best peer along training (:func:`method_curves`; ``method_curves`` and its wide table ``method_table``, a
    row per (suite, step) and a column per method, mean over seeds) and, when ``methods`` has a single-model
    method, its curve per paradigm (``paradigm_table``: a row per (step, tokens, seed), a column per task and
    their mean, ``macro``). Tables and figures are written under ``figures_dir`` when given."""
    curves = {m: learning_curve([r.run_dir for (name, _), r in results.items() if name == m]) for m in methods}
    out = {"method_curves": method_curves(curves, scores)}
    out["method_table"] = out["method_curves"].pivot_table(index=["suite", "step"], columns="method",
                                                           values="accuracy").reset_index()
    single = single_model_method(methods)
    if single:
        curve = curves[single]
        table = curve.pivot_table(index=["step", "tokens", "seed"], columns="task", values="accuracy").reset_index()
        table["macro"] = table[sorted(curve["task"].unique())].mean(axis=1)
        out["paradigm_table"] = table
    if figures_dir is not None:
        save_table(out["method_table"], figures_dir, "table_method_curves", floatfmt=".1f")
        save_figure(plot_method_curves(out["method_curves"], methods), figures_dir, "figure_method_curves")
        if single:
            save_table(out["paradigm_table"], figures_dir, "table_learning_curve", floatfmt=".1f")
            save_figure(plot_learning_curve(curves[single]), figures_dir, "figure_learning_curve")
    return out


def reference_rows(references: Mapping) -> pd.DataFrame:
    """Table 1 rows for published results (:func:`dwml.suites.references`): a ``model`` column ('reference: ...')
    and the suite's column (the published overall accuracy, %)."""
    rows = [{"model": f"reference: {model}", suite: float(row["Avg."])}
            for suite, table in references.items() for model, row in table.iterrows()]
    return pd.DataFrame(rows)


MAJORITY_ROW = "majority class (GLUE validation)"


def table1_labels(methods: Sequence[str]) -> dict[str, str]:
    """The rows of our runs in Table 1: the single-model method and DWML of ``methods`` -> their labels."""
    single, dwml = single_model_method(methods), dwml_method(methods)
    labels = {single: f"ours: RoBERTa ({single})"} if single else {}
    if dwml:
        labels[dwml] = f"ours: RoBERTa-{method_class(dwml).paper_name} (best peer)"
    return labels


def best_peer_glue(scores: pd.DataFrame, results: Mapping, methods: Sequence[str], seed: int, tasks: Sequence[str],
                   data_dir: str | Path | None = None, finetune=None) -> dict[str, pd.DataFrame]:
    """GLUE for Table 1: the best peer (:func:`best_peer_choice`) of seed ``seed``'s run of each method that
    :func:`table1_labels` keeps, fine-tuned on ``tasks``; method -> one row per task (``accuracy``,
    ``majority_accuracy``, ...). The fine-tuned models go to the run's folder (``glue/``).

    ``data_dir``: the GLUE files (default ``glue_filtered`` under ``dwml.evaluate.data_root()``);
    ``finetune``: what fine-tunes (default ``dwml.glue.finetune_all``; the tests pass a stand-in)."""
    if data_dir is None:
        root = data_root()
        if root is None:
            raise FileNotFoundError("GLUE: no data folder ($DWML_DATA, else ../shared/data next to the project) "
                                    "holding glue_filtered/; set glue_tasks to [] to leave GLUE out")
        data_dir = root / "glue_filtered"
    finetune = finetune or finetune_all
    cfg = GlueConfig(tasks=tuple(tasks))
    pick = best_peer_choice(scores).set_index(["method", "seed"])["peer"]
    out = {}
    for method in table1_labels(methods):
        res = results[method, seed]
        peer = int(pick[method, seed])
        out[method] = finetune(res.peer_dirs[peer - 1], data_dir, Path(res.run_dir) / "glue", cfg)
    return out


def table1(scores: pd.DataFrame, methods: Sequence[str], glue: Mapping[str, pd.DataFrame] | None = None,
           extra_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's Table 1 with our runs: the single-model baseline and DWML's best peer (:func:`table1_labels`),
    each suite's accuracy (mean over seeds, the best peer chosen within each seed), then the paper's 10M rows.

    ``glue`` (:func:`best_peer_glue`): a ``glue`` column, each model's mean accuracy over the tasks (%), and a
    row for always answering the validation set's most frequent label (the last frame's: the tasks are the
    same): a fine-tuned model at that number has learnt nothing the labels' balance does not give.
    ``extra_rows`` (a ``model`` column and suite columns, e.g. :func:`ngram_rows`) go between ours and the
    paper's."""
    labels = table1_labels(methods)
    best = over_seeds(best_peer(per_seed(scores[scores["method"].isin(list(labels))])).assign(peer="best"))
    t1 = best.pivot(index="method", columns="suite", values="accuracy").rename(index=labels)
    if glue:
        for method, frame in glue.items():
            t1.loc[labels[method], "glue"] = 100 * frame[["accuracy"]].mean().iloc[0]
        t1.loc[MAJORITY_ROW, "glue"] = 100 * frame["majority_accuracy"].mean()
    paper = paper_table("table1")
    paper = (paper[paper["dataset"] == "10M"].drop(columns="dataset").assign(model=lambda d: "paper: " + d["model"])
             .rename(columns=registry.paper_names()))
    extra = [extra_rows] if extra_rows is not None and len(extra_rows) else []
    return pd.concat([t1.reset_index().rename(columns={"method": "model"}), *extra, paper], ignore_index=True)


def table1_differences(scores: pd.DataFrame, methods: Sequence[str], n_boot: int = 1000) -> pd.DataFrame | None:
    """Table 1's two models (:func:`table1_labels`) paired pair by pair (:func:`dwml.compare.bootstrap_over_pairs`
    against the single model): an interval over pairs even with one seed (the pairs' sampling error only),
    and over seeds too with two or more; None without a single-model method among ``methods``."""
    single = single_model_method(methods)
    if not single:
        return None
    return bootstrap_over_pairs(scores[scores["method"].isin(table1_labels(methods))], single, n_boot)


GROUP_TABLES = {s.name: (s.figure_table, s.paper_table) for s in registry.SUITES.values()
                if s.figure_table and s.paper_table}
"""Suite -> (file name, the paper's table) of the paper's per-group tables (Tables 6-8), from ``dwml.suites``."""
PAPER_GROUPS_MISSING = ("The paper's per-phenomenon, per-task and per-domain values (its Tables 6-8) are not "
                        "available: our copy of its text has their captions and column names only. Its Table 2 "
                        "aggregate for the same method (its 'Best' column) stands beside ours.")


def per_group_tables(scores: pd.DataFrame, figures_dir: str | Path | None = None, n_boot: int = 1000,
                     seed: int = 0, references: Mapping | None = None) -> dict[str, pd.DataFrame]:
    """A per-group table for every suite of ``scores`` that has one in ``dwml.suites`` (``figure_table``):
    the paper's Tables 6 (BLiMP, per phenomenon), 7 (supplement, per task) and 8 (EWoK, per domain), and
    Zorro per paradigm; ``{}`` when ``scores`` holds none (the synthetic suite).

    Rows are methods; each method's peer is its best one in each seed (:func:`best_peer`, as in Table 1),
    the seeds' pairs pooled. Columns follow the suite's registry entry (the paper's acronyms); a group's
    accuracy is the macro average of its paradigms, ``Avg.`` the suite's (macro over tasks), ``ties`` the
    tie rate (%), and ``paper (Table 2)`` the paper's own aggregate for the method. ``references`` (suite ->
    published results, :func:`dwml.suites.references`) adds a row per published model below ours (e.g. Zorro's
    BabyBERTa mean, min and max over its seeds). For each table, a long table ``<name>_intervals`` gives
    every cell with its 95% bootstrap interval (pairs resampled within each paradigm), tie rate, paradigm
    and pair counts. Written under ``figures_dir`` when given."""
    present = set(scores["suite"])
    wanted = [s for s in registry.SUITES.values() if s.figure_table and s.name in present]
    if not wanted:
        return {}
    pick = best_peer_choice(scores)
    chosen = scores.merge(pick, on=["method", "seed", "peer"])
    paper = paper_table2_long()
    paper = paper[paper["peer"].astype(str) == "best"].set_index(["method", "suite"])["paper"]
    out = {}
    for spec in wanted:
        name = spec.figure_table
        out[name], out[f"{name}_intervals"] = _group_table(chosen[chosen["suite"] == spec.name], spec, paper, n_boot,
                                                           seed, (references or {}).get(spec.name))
        if figures_dir is not None:
            save_table(out[name], figures_dir, name, floatfmt=".1f")
            save_table(out[f"{name}_intervals"], figures_dir, f"{name}_intervals", floatfmt=".1f")
    return out


def _group_table(part: pd.DataFrame, spec, paper: pd.Series, n_boot: int, seed: int,
                 ref: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One suite's per-group table (wide: a row per method) and its cells with intervals (long), from the kept
    peers' scores ``part`` of that suite; ``ref``: the suite's published rows, below ours."""
    long, wide = [], []
    for method, mpart in part.groupby("method", sort=False):
        groups = reports.accuracy_table(mpart, "group", n_boot, seed)
        total = reports.accuracy_table(mpart, "suite", n_boot, seed).assign(group="Avg.")
        cells = pd.concat([groups, total], ignore_index=True).assign(method=method, seeds=mpart["seed"].nunique())
        long.append(cells)
        wide.append({"method": method, **dict(zip(cells["group"], cells["accuracy"])),
                     "ties": 100 * mpart["tie"].mean(), "paper (Table 2)": paper.get((method, spec.name), math.nan)})
    wide = pd.DataFrame(wide)
    if ref is not None:
        wide = pd.concat([wide, ref.rename_axis("method").reset_index()], ignore_index=True)
    fixed = ("method", "Avg.", "ties", "paper (Table 2)")
    cols = [c for c in spec.columns if c in wide.columns]
    ours = set(pd.concat(long)["group"])  # a published column for a group we did not score is left out
    cols += [c for c in wide.columns if c not in cols and c not in fixed and c in ours]
    wide = wide[["method"] + cols + ["Avg.", "ties", "paper (Table 2)"]]
    long = pd.concat(long, ignore_index=True)[["method", "group", "accuracy", "ci_low", "ci_high", "tie_rate",
                                                "n_tasks", "n_pairs", "seeds"]]
    return wide, long
