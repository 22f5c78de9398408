"""Figures of the peer-search notebook (``notebooks/01_peer_search``)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from dwml.search import PeerArch, best_so_far


def _millions(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def plot_search_convergence(bayes: Mapping[str, Sequence[PeerArch]], exact: Mapping[str, Sequence[PeerArch]],
                            init_points: int | None = None):
    """Best |relative error| against the number of evaluations, one panel per key, one line per target.

    The dashed line of the same colour is the exhaustive optimum: the floor no search can go below."""
    import matplotlib.pyplot as plt

    keys = list(bayes)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 3.8), squeeze=False, sharey=True)
    floor = 1e-6  # an exact hit (error 0) would vanish from a log axis; draw it at 1e-4 %
    for ax, key in zip(axes[0], keys):
        for i, (arch, ref) in enumerate(zip(bayes[key], exact[key])):
            color = f"C{i}"
            curve = 100 * np.maximum(best_so_far(arch.trace), floor)
            ax.plot(np.arange(1, len(curve) + 1), curve, color=color, label=f"N/{i + 2} = {_millions(arch.target)}")
            ax.axhline(100 * max(abs(ref.rel_error), floor), color=color, ls="--", lw=1)
        if init_points:
            ax.axvline(init_points, color="grey", lw=0.8, ls=":")
            ax.text(init_points, 1.0, " random | GP", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        ax.set(yscale="log", xlabel="evaluations", title=key)
        ax.legend(fontsize=8, title="target (dashed: exhaustive)", title_fontsize=8)
    axes[0][0].set_ylabel("best |params - target| / target (%)")
    fig.tight_layout()
    return fig


def plot_peer_shapes(table, teachers: Mapping[str, tuple[int, int]] | None = None):
    """Depth against width of the searched peers, one panel per ``table['vocab']`` value.

    ``table`` is :func:`dwml.search.peer_table` output with a ``vocab`` column; marker area follows the
    parameter count, circles are the Bayesian peers and crosses the exhaustive ones. ``teachers`` maps a
    vocab value to the teacher's (hidden, layers), drawn as a star."""
    import matplotlib.pyplot as plt

    vocabs = list(dict.fromkeys(table["vocab"]))
    fig, axes = plt.subplots(1, len(vocabs), figsize=(5.5 * len(vocabs), 4), squeeze=False)
    for ax, vocab in zip(axes[0], vocabs):
        sub = table[table["vocab"] == vocab]
        scale = 400 / sub["params"].max()  # per panel: the settings differ in size by orders of magnitude
        for method, marker in (("bayes", "o"), ("exhaustive", "X")):
            rows = sub[sub["method"] == method]
            ax.scatter(rows["hidden"], rows["layers"], s=20 + rows["params"] * scale, marker=marker,
                       c=[f"C{p - 1}" for p in rows["peer"]], alpha=0.7, label=method)
            for _, r in rows.iterrows():
                ax.annotate(_millions(r["params"]), (r["hidden"], r["layers"]), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
        if teachers and vocab in teachers:
            hidden, layers = teachers[vocab]
            ax.scatter([hidden], [layers], marker="*", s=250, c="k", label="teacher")
        ax.set(xlabel="hidden size", ylabel="layers", title=f"vocab {vocab:,}" if isinstance(vocab, (int, np.integer)) else str(vocab))
        ax.legend(fontsize=8, markerscale=0.5)
    fig.tight_layout()
    return fig
