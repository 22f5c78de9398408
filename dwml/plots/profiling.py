"""Figures of what each method costs (``dwml.profiling``): utilisation over time (the paper's Figure 4).

Traces are the tables of ``dwml.utilization.UtilizationSampler.to_frame()``, one per method. On a CUDA run
the utilisation is NVML's ``gpu_util``, the quantity of the paper's figure; on a CPU run it is the training
process's share of the CPU cores, a different quantity, and the figure says so in its title.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import pandas as pd

from dwml.plots import PAPER_COLOR
from dwml.utilization import utilization_column

LABELS = {"gpu_util": "GPU utilisation (%, NVML)", "cpu_percent": "CPU utilisation (% of the process's cores)",
          "mem_util": "GPU memory-controller utilisation (%)", "power_w": "GPU power (W)"}


def plot_utilisation(traces: Mapping[str, pd.DataFrame], column: str | None = None,
                     paper: Mapping[str, float] | None = None, device: str = "", ax=None):
    """Utilisation over time per method (Figure 4): one line per method, its mean as a dashed line of the
    same colour (and in the legend); the paper's published means (``paper``, e.g. DWML's 43.2%), if
    given and the traces are GPU traces, as grey dotted lines."""
    if not traces:
        raise ValueError("plot_utilisation: no traces given (a mapping of method -> sampler table)")
    column = column or utilization_column(df.columns for df in traces.values())
    for method, df in traces.items():
        if column not in df.columns or "t" not in df.columns:
            raise KeyError(f"plot_utilisation: the trace of {method!r} lacks 't' or {column!r} "
                           f"(columns: {list(df.columns)})")
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4))
    else:
        fig = ax.figure
    longest = max((df["t"].max() for df in traces.values() if len(df)), default=0.0)
    minutes = longest > 180  # minutes read better than thousands of seconds
    scale = 60.0 if minutes else 1.0
    for method, df in traces.items():
        mean = df[column].mean()
        (line,) = ax.plot(df["t"] / scale, df[column], lw=1.2, label=f"{method} (mean {mean:.1f})")
        ax.axhline(mean, color=line.get_color(), ls="--", lw=0.8)
    if paper and column == "gpu_util":
        for method, value in paper.items():
            ax.axhline(value, color=PAPER_COLOR, ls=":", lw=1.2, label=f"paper: {method} mean {value:.1f} (H100)")
    gpu = column in ("gpu_util", "mem_util", "power_w")
    where = f" on {device}" if device else ""
    title = (f"GPU utilisation per method{where}" if gpu else
             f"CPU figures{where}: the training process's share of the cores (not the paper's GPU utilisation)")
    ax.set(xlabel="time (min)" if minutes else "time (s)", ylabel=LABELS.get(column, column), title=title)
    if column in ("gpu_util", "cpu_percent", "mem_util"):
        ax.set_ylim(0, 105)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_cost(table: pd.DataFrame, ax=None):
    """Table 9 as two bar panels: average utilisation and training time per method, with the paper's
    average utilisation (``paper_avg_util_pct``) as grey marks where it is known."""
    for col in ("method", "avg_util_pct", "train_time_min"):
        if col not in table.columns:
            raise KeyError(f"plot_cost: the table lacks {col!r} (build it with dwml.profiling.table9)")
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    else:
        axes, fig = ax, ax[0].figure
    x = range(len(table))
    axes[0].bar(x, table["avg_util_pct"], label="measured")
    if "paper_avg_util_pct" in table and table["paper_avg_util_pct"].notna().any():
        axes[0].scatter(x, table["paper_avg_util_pct"], marker="_", s=400, color=PAPER_COLOR, zorder=3,
                        label="paper (H100)")
    axes[0].set(ylabel="average utilisation (%)", title="Average utilisation")
    axes[0].legend(fontsize="small")
    axes[1].bar(x, table["train_time_min"])
    axes[1].set(ylabel="training time (min)", title="Training time")
    for a in axes:
        a.set_xticks(list(x), table["method"], rotation=30)
    fig.tight_layout()
    return fig
