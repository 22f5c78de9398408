"""What every study shares: its set-up from the profile (config, corpus, peers, pairs), one method's runs over
seeds trained and scored, and the paper's published numbers (``dwml/paper/*.csv``, see its SOURCE.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from dwml import suites as registry
from dwml.config import Config
from dwml.data import prepare_corpus
from dwml.methods import METHODS
from dwml.runs import Study, peers_for, train_run
from dwml.scoring import load_suites_for, score_run, suite_folders

PAPER_DIR = Path(__file__).resolve().parent.parent / "paper"


def setup(data: Mapping, search: Mapping, train: Mapping, run_root: str | Path, suites: Sequence[str],
          max_pairs_per_task: int = 0, suite_dirs: Mapping[str, str] | None = None) -> Study:
    """Config from the profile's sections, the prepared corpus, the peers of ``01_peer_search`` (searched
    here if it has not run: :func:`dwml.runs.peers_for`) and the minimal-pair suites (``suite_dirs``: see
    :func:`dwml.scoring.suite_folders`)."""
    sections = {"data": dict(data), "search": dict(search), "train": dict(train)}
    cfg = Config.from_dict(**sections)
    prep = prepare_corpus(cfg.data)
    archs, meta = peers_for(cfg, prep, run_root)
    dirs = suite_folders(suites, corpus_dir=prep.corpus_dir, suite_dirs=suite_dirs)
    pairs = load_suites_for(suites, corpus_dir=prep.corpus_dir, max_pairs_per_task=max_pairs_per_task, suite_dirs=dirs)
    return Study(sections, cfg, prep, archs, meta, pairs, dirs)


def run_and_score(study: Study, method: str, seeds: Sequence[int], run_root: str | Path, tag: str = "",
                  **train_kw) -> tuple[pd.DataFrame, dict]:
    """Train (or reuse) the run of ``method`` for every seed and score it on the study's pairs: the per-pair
    scores of all seeds, and seed -> ``TrainResult``. ``train_kw`` go to :func:`dwml.runs.train_run` (``num_peers``,
    ``train_overrides``, ``progress``)."""
    out, results = [], {}
    for seed in seeds:
        res = train_run(study.sections, study.prep, study.archs, study.meta, method, seed, run_root, tag=tag,
                        **train_kw)
        results[seed] = res
        out.append(score_run(res, study.pairs, study.cfg.eval))
    return pd.concat(out, ignore_index=True), results


def paper_table(name: str) -> pd.DataFrame:
    """A table of the paper's published numbers (``table1``, ``table2``, ``figure2``; see paper/SOURCE.md)."""
    path = PAPER_DIR / f"{name}.csv"
    if not path.is_file():
        known = sorted(p.stem for p in PAPER_DIR.glob("*.csv"))
        raise FileNotFoundError(f"{path}: no table of the paper {name!r} (known: {known})")
    return pd.read_csv(path)


def paper_table2_long() -> pd.DataFrame:
    """The paper's Table 2 as rows (method, peer, suite, accuracy), peers 1..4 and 'best', suites named as
    ours ('blimp', 'supplement', 'ewok')."""
    t = paper_table("table2")
    suite = registry.paper_names()
    method = {cls.paper_name: name for name, cls in METHODS.items() if cls.paper_name}
    rows = []
    for _, r in t.iterrows():
        cols = [c for c in t.columns if c.startswith("peer")]
        for i, c in enumerate(cols, start=1):
            if not pd.isna(r[c]):
                rows.append({"method": method[r["method"]], "peer": i, "suite": suite[r["benchmark"]], "paper": r[c]})
        rows.append({"method": method[r["method"]], "peer": "best", "suite": suite[r["benchmark"]], "paper": r["best_reported"]})
    return pd.DataFrame(rows)
