"""Figures and tables of a training run, from its metrics (``dwml.train.read_metrics``).

The history holds one row per logged step (``kind == 'train'``: per-peer lists ``ce``, ``kl``, ``w``) and
per evaluation (``kind == 'eval'``: ``dev_ce`` list, ``dev_ensemble``). These functions only reshape and
draw; they never train.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

from dwml.plots import PAPER_COLOR


def long_format(history: pd.DataFrame, kind: str, column: str, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows ``(step, tokens, peer, value)`` from a per-peer list column of the ``kind`` rows."""
    rows = history[(history["kind"] == kind) & history[column].notna()] if column in history else history.iloc[0:0]
    out = []
    for _, r in rows.iterrows():
        for i, v in enumerate(r[column]):
            out.append({"step": r["step"], "tokens": r["tokens"], "peer": names[i] if names else f"peer {i}",
                        "value": v})
    return pd.DataFrame(out, columns=["step", "tokens", "peer", "value"])


def plot_weights(history: pd.DataFrame, names: Sequence[str] | None = None,
                 published: Sequence[float] | None = None, ax=None):
    """The peer weights w over training (the paper's Figure 3); the published final weights, if given,
    as grey ticks at the right edge."""
    # The step-0 evaluation holds the initial w; the training rows hold w after each step.
    start = long_format(history[history["step"] == 0], "eval", "w", names)
    df = pd.concat([start, long_format(history, "train", "w", names)], ignore_index=True)
    fig, ax = _axes(ax)
    for peer, g in df.groupby("peer", sort=False):
        ax.plot(g["step"], g["value"], label=peer)
    p = df["peer"].nunique()
    if p:
        ax.axhline(1.0 / p, color="black", lw=0.6, ls=":", label=f"equal (1/{p})")
    if published is not None and len(df):
        x = df["step"].max()
        ax.scatter([x] * len(published), published, marker="_", s=300, color=PAPER_COLOR, zorder=3,
                   label="published final w")
    ax.set(xlabel="optimizer step", ylabel="peer weight w_i", title="Peer weights by mirror descent (eq. 4)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_dev_ce(history: pd.DataFrame, names: Sequence[str] | None = None, ax=None):
    """Each peer's dev cross-entropy over training, and the dev ensemble loss L2 (dashed)."""
    df = long_format(history, "eval", "dev_ce", names)
    fig, ax = _axes(ax)
    for peer, g in df.groupby("peer", sort=False):
        ax.plot(g["step"], g["value"], marker="o", ms=3, label=peer)
    ev = history[history["kind"] == "eval"]
    if "dev_ensemble" in ev:
        ax.plot(ev["step"], ev["dev_ensemble"], color="black", ls="--", label="ensemble (L2)")
    ax.set(xlabel="optimizer step", ylabel="dev cross-entropy (nats / masked token)",
           title="Dev masked-LM loss of each peer")
    ax.legend(fontsize="small")
    return fig


def plot_kl(history: pd.DataFrame, names: Sequence[str] | None = None):
    """Left: the KL term each peer receives from the others (eq. 2's second sum, per peer); right: its
    training CE, kept apart so that it compares with a plain masked LM's loss."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, column, label in ((axes[0], "kl", "KL term received (training)"),
                              (axes[1], "ce", "cross-entropy (training)")):
        df = long_format(history, "train", column, names)
        for peer, g in df.groupby("peer", sort=False):
            ax.plot(g["step"], g["value"], label=peer, lw=1)
        ax.set(xlabel="optimizer step", ylabel=label)
    axes[0].set_title("Peer supervision (KL)")
    axes[1].set_title("Label supervision (CE)")
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    return fig


def peer_dev_table(history: pd.DataFrame, names: Sequence[str] | None = None,
               extra: dict[str, Sequence] | None = None) -> pd.DataFrame:
    """One row a peer: dev CE at initialisation and at the end, perplexity exp(CE), and the final weight."""
    ev = history[history["kind"] == "eval"]
    first, last = ev.iloc[0], ev.iloc[-1]
    p = len(last["dev_ce"])
    w = last["w"] if isinstance(last.get("w"), list) else [float("nan")] * p
    rows = []
    for i in range(p):
        rows.append({"peer": names[i] if names else f"peer {i}", "initial_dev_ce": first["dev_ce"][i],
                     "final_dev_ce": last["dev_ce"][i], "final_dev_ppl": math.exp(last["dev_ce"][i]),
                     "final_weight": w[i], **{k: v[i] for k, v in (extra or {}).items()}})
    return pd.DataFrame(rows)


def _axes(ax):
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
        return fig, ax
    return ax.figure, ax
