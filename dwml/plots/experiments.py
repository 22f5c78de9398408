"""Figures of notebooks 03 (methods) and 04 (ablations): means over seeds with their 95% intervals."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd


def plot_methods(seeded_best: pd.DataFrame, over_seeds: pd.DataFrame, methods: Sequence[str],
                 paper_best: pd.DataFrame | None = None):
    """One panel per suite: each method's mean (bar) with its interval, the seeds' values (dots) and the
    paper's 'Best' (x) where it has one. ``seeded_best``: method, seed, suite, accuracy; ``over_seeds``:
    method, suite, accuracy, ci_low, ci_high; ``paper_best``: method, suite, paper."""
    suites = list(dict.fromkeys(over_seeds["suite"]))
    # about an inch a method, so that level names side by side (kd_dwml beside dwml) keep apart
    width = max(4.5, 0.95 * len(methods))
    fig, axes = plt.subplots(1, len(suites), figsize=(width * len(suites), 3.6), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        part = seeded_best[seeded_best["suite"] == suite]
        summary = over_seeds[over_seeds["suite"] == suite].set_index("method")
        order = [m for m in methods if m in summary.index]
        summary = summary.loc[order]
        x = list(range(len(order)))
        ax.bar(x, summary["accuracy"], color="#9ecae1", edgecolor="#3182bd")
        ax.errorbar(x, summary["accuracy"], yerr=[summary["accuracy"] - summary["ci_low"],
                                                  summary["ci_high"] - summary["accuracy"]],
                    fmt="none", ecolor="black", capsize=4)
        for i, m in enumerate(order):
            values = part.loc[part["method"] == m, "accuracy"]
            ax.scatter([i] * len(values), values, s=12, color="black", zorder=3)
        if paper_best is not None:
            ref = paper_best[paper_best["suite"] == suite].set_index("method")["paper"]
            shown = [(i, ref[m]) for i, m in enumerate(order) if m in ref.index]
            if shown:
                ax.scatter(*zip(*shown), marker="x", color="#de2d26", s=40, zorder=4, label="paper (best)")
                ax.legend(loc="lower right")
        ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.set_xticks(x, order)
        ax.set_title(suite)
        ax.set_ylabel("accuracy (%)")
    fig.tight_layout()
    return fig


def plot_study(table: pd.DataFrame, setting: str, title: str, paper: pd.DataFrame | None = None):
    """Accuracy against one ablated ``setting`` (``dwml.studies.ablations.ablation_table``), a line per suite with
    its intervals; ``paper``: rows of the paper's figure2.csv for this panel (setting, metric, value)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for suite, part in table.groupby("suite"):
        part = part.sort_values(setting)
        ax.errorbar(part[setting].astype(str), part["accuracy"],
                    yerr=[part["accuracy"] - part["ci_low"], part["ci_high"] - part["accuracy"]],
                    marker="o", capsize=4, label=f"ours: {suite}")
    if paper is not None:
        for metric, part in paper.groupby("metric"):
            ax.plot(part["setting"].astype(str), part["value"], ls="--", marker="x", label=f"paper: {metric}")
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(setting)
    ax.set_ylabel("best peer accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def plot_learning_curve(curve: pd.DataFrame, title: str = "single model (mlm)"):
    """Accuracy per paradigm (thin lines) and their macro average (thick, with the seeds' range as a band)
    against tokens seen; ``curve``: ``dwml.runs.learning_curve`` rows of one peer (seed, step,
    tokens, task, accuracy)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    # tokens differ slightly between seeds at the same step: plot against the seeds' mean per step
    x_of = curve.groupby("step")["tokens"].mean() / 1e3
    task = curve.groupby(["task", "step"])["accuracy"].mean().reset_index()
    for name, part in task.groupby("task"):
        part = part.sort_values("step")
        ax.plot(x_of[part["step"]].values, part["accuracy"], lw=0.9, alpha=0.8, label=name)
    macro = curve.groupby(["seed", "step"])["accuracy"].mean().unstack("seed")
    ax.fill_between(x_of[macro.index].values, macro.min(axis=1), macro.max(axis=1), color="black", alpha=0.15)
    ax.plot(x_of[macro.index].values, macro.mean(axis=1), color="black", lw=2.5, label="macro average")
    ax.axhline(50, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training tokens seen (thousands)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Learning curve, {title}: {curve['seed'].nunique()} seed(s)")
    ax.legend(fontsize=6, ncol=2, loc="lower right")
    return fig


def plot_method_curves(curves: pd.DataFrame, methods: Sequence[str] | None = None):
    """Macro accuracy of each method's best peer against tokens seen, one panel per suite: the mean over
    seeds (line) and the seeds' range (band); ``curves``: ``dwml.studies.baselines.method_curves`` rows."""
    suites = list(dict.fromkeys(curves["suite"]))
    methods = [m for m in (methods or dict.fromkeys(curves["method"])) if m in set(curves["method"])]
    fig, axes = plt.subplots(1, len(suites), figsize=(6.5 * len(suites), 4), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        for method in methods:
            part = curves[(curves["suite"] == suite) & (curves["method"] == method)]
            by = part.groupby("step").agg(tokens=("tokens", "mean"), mean=("accuracy", "mean"),
                                          low=("accuracy", "min"), high=("accuracy", "max"))
            line, = ax.plot(by["tokens"] / 1e3, by["mean"], marker="o", ms=3, label=method)
            ax.fill_between(by["tokens"] / 1e3, by["low"], by["high"], color=line.get_color(), alpha=0.12)
        ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("training tokens seen (thousands)")
        ax.set_ylabel("best peer, macro accuracy (%)")
        ax.set_title(f"{suite}: {curves['seed'].nunique()} seed(s), band = seeds' range")
        ax.legend(fontsize=7)
    return fig


def plot_size_weight(points: pd.DataFrame, paper: pd.DataFrame | None = None):
    """Figure 2c: accuracy against peer size and against the learned weight, a line per seed
    (``points``: :func:`dwml.studies.ablations.size_weight_points`; ``paper``: the published rows of panel
    ``c_size``, whose settings name the paper's peers in the title)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, x, label in ((axes[0], "params", "parameters"), (axes[1], "weight", "learned weight w")):
        for seed, part in points.groupby("seed"):
            ax.plot(part[x], part["accuracy"], marker="o", label=f"seed {seed}")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    if paper is not None:
        sizes = ", ".join(paper[paper["metric"] == "average_accuracy"]["setting"])
        axes[0].set_title(f"size (paper: {sizes} peers)")
    axes[1].set_title("weight (paper: R = 0.7, weights 0.2484-0.2511)")
    return fig
