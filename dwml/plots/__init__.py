"""Figure and table helpers shared by the figure modules (``dwml.plots.<topic>``).

Figure functions take data and return a matplotlib Figure; they never train or score anything. The
notebooks save what they return with :func:`save_figure` and :func:`save_table`, which write atomically
(a reader never sees half a PNG) and return the written paths.
"""
from __future__ import annotations

from pathlib import Path


from dwml.io import atomic_path, atomic_write_text, project_path


PAPER_COLOR = "#7f7f7f"
"""Grey for the paper's published values drawn beside ours."""


def set_style() -> None:
    """One look for every figure: seaborn's whitegrid at a size that reads in a notebook and a paper."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")


def save_figure(fig, figures_dir: str | Path, name: str, dpi: int = 150) -> Path:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` atomically; returns the path."""
    dest = project_path(figures_dir) / f"{name}.png"
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png", metadata={"Software": None})
    return dest


def save_table(df, figures_dir: str | Path, name: str, floatfmt: str = ".2f", index: bool = False) -> tuple[Path, Path]:
    """Write ``df`` as ``<name>.csv`` and ``<name>.md`` (a Markdown table) beside the figures."""
    folder = project_path(figures_dir)
    csv, md = folder / f"{name}.csv", folder / f"{name}.md"
    atomic_write_text(csv, df.to_csv(index=index))
    atomic_write_text(md, df.to_markdown(index=index, floatfmt=floatfmt) + "\n")
    return csv, md
