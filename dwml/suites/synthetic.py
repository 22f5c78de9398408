"""The synthetic corpus's minimal pairs (``dwml.synthetic.write_corpus`` puts them under ``<corpus>/pairs``
in BLiMP's schema); a table column per phenomenon."""
from __future__ import annotations

from pathlib import Path

from dwml.suites.blimp import load_blimp, phenomenon_groups
from dwml.suites.registry import MinimalPair, Suite, register


def load_synthetic(corpus_dir: str | Path) -> list[MinimalPair]:
    """The pairs of a synthetic corpus folder (its ``pairs/``), or of that ``pairs/`` folder itself."""
    path = Path(corpus_dir)
    return load_blimp(path / "pairs" if (path / "pairs").is_dir() else path, suite="synthetic")


SUITE = register(Suite(
    name="synthetic", title="Synthetic pairs per phenomenon (%)", folder="synthetic", load=load_synthetic,
    grouping="phenomenon", group=phenomenon_groups, table="table_synthetic_phenomena", from_corpus=True))
