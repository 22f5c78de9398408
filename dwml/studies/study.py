"""What every study shares: its set-up from the profile (config, corpus, peers, pairs), its runs trained and
scored through an executor (``dwml.executor``: one after another, a local pool or Ray), and the paper's
published numbers (``dwml/paper/*.csv``, see its SOURCE.md)."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

from dwml import suites as registry
from dwml.config import Config
from dwml.data import prepare_corpus
from dwml.methods import METHODS
from dwml.executor import (ExecutorConfig, RunResult, RunSpec, baseline_specs, finished_before, run_study,
                           train_results)
from dwml.runs import SCORES, Study, StudySource, peers_for, train_run
from dwml.scoring import load_suites_for, score_run, subsample_suites, suite_folders

PAPER_DIR = Path(__file__).resolve().parent.parent / "paper"


def setup(data: Mapping, search: Mapping, train: Mapping, run_root: str | Path, suites: Sequence[str],
          max_pairs_per_task: int = 0, suite_dirs: Mapping[str, str] | None = None,
          skip_tasks: Mapping[str, Sequence[str]] | None = None) -> Study:
    """Config from the profile's sections, the prepared corpus, the peers of ``01_peer_search`` (searched
    here if it has not run: :func:`dwml.runs.peers_for`) and the minimal-pair suites (``suite_dirs``: see
    :func:`dwml.scoring.suite_folders`; ``skip_tasks``: suite -> tasks not scored)."""
    sections = {"data": dict(data), "search": dict(search), "train": dict(train)}
    cfg = Config.from_dict(**sections)
    prep = prepare_corpus(cfg.data)
    archs, meta = peers_for(cfg, prep, run_root)
    dirs = suite_folders(suites, corpus_dir=prep.corpus_dir, suite_dirs=suite_dirs)
    pairs = load_suites_for(suites, corpus_dir=prep.corpus_dir, max_pairs_per_task=max_pairs_per_task, suite_dirs=dirs,
                            skip_tasks=skip_tasks)
    source = StudySource(data, search, train, str(run_root), tuple(suites), max_pairs_per_task,
                         dict(suite_dirs) if suite_dirs else None,
                         {k: list(v) for k, v in skip_tasks.items()} if skip_tasks else None)
    study = _STUDIES[source.key()] = Study(sections, cfg, prep, archs, meta, pairs, dirs, source)
    return study


_STUDIES: dict[str, Study] = {}  # source key -> the study this process set up (a worker sets each up once)


def load(source: StudySource) -> Study:
    """The study of ``source``, set up once per process (the corpus and the peers from their caches)."""
    study = _STUDIES.get(source.key())
    if study is None:
        study = setup(source.data, source.search, source.train, source.run_root, list(source.suites),
                      source.max_pairs_per_task, dict(source.suite_dirs or {}) or None, source.skip_tasks)
    return study


def run_spec(source: StudySource, spec: RunSpec, teacher_dir: str = "") -> RunResult:
    """One run's work, in any process (``dwml.executor``): train (or reuse, or resume) the run of ``spec``,
    with its learning curve where it asks for one, and score its peers on the study's pairs."""
    threads = os.environ.get("DWML_THREADS")
    if threads:  # a worker's share of the CPU (its environment was set before torch was imported)
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    study = load(source)
    reused = finished_before(source, spec)
    curve_pairs = subsample_suites(study.pairs, spec.curve_pairs_per_task) if spec.curve_steps else None
    res = train_run(study.sections, study.prep, study.archs, study.meta, spec.method, spec.seed, source.run_root,
                    teacher_dir=teacher_dir, tag=spec.tag, num_peers=spec.num_peers,
                    train_overrides=spec.overrides or None, progress=True, curve_steps=spec.curve_steps,
                    curve_pairs=curve_pairs, eval_cfg=study.cfg.eval, max_steps=spec.max_steps)
    scores = ""
    if spec.score and res.done and study.pairs:
        score_run(res, study.pairs, study.cfg.eval, peers=spec.score_peers)
        scores = str(Path(res.run_dir) / SCORES)
    return RunResult(spec.name, str(res.run_dir), dict(res.summary), tuple(str(p) for p in res.peer_dirs), scores,
                     time.perf_counter() - t0, reused, bool(res.done))


def execute(study: Study, specs: Sequence[RunSpec], executor: ExecutorConfig | Mapping | None = None,
            progress=print) -> dict[str, RunResult]:
    """Train and score ``specs`` of ``study`` on ``executor`` (a profile's ``executor`` section; None: one
    after another here); name -> ``RunResult``. A rerun reuses finished runs and resumes interrupted ones."""
    return run_study(study.source, specs, executor, work=run_spec, progress=progress)


def at_once(executor: ExecutorConfig | Mapping | None = None) -> int:
    """How many runs ``executor`` (a profile's ``executor`` section; None: one after another) trains at once on
    this machine."""
    config = executor if isinstance(executor, ExecutorConfig) else ExecutorConfig.from_dict(executor)
    return len(config.slots())


def run_methods(study: Study, methods: Sequence[str], seeds: Sequence[int], executor=None, curve_steps=(),
                curve_pairs_per_task: int = 0) -> dict:
    """Every method of ``methods`` for every seed, trained and scored through :func:`execute` (the teacher's
    run first in each seed; the methods that learn from it wait for it); (method, seed) -> ``TrainResult``."""
    specs = baseline_specs(methods, seeds, curve_steps=tuple(curve_steps), curve_pairs_per_task=curve_pairs_per_task)
    results = train_results(execute(study, specs, executor))
    return {k: v for k, v in results.items() if k[0] in methods}


def run_and_score(study: Study, method: str, seeds: Sequence[int], tag: str = "", executor=None,
                  num_peers: int | None = None, train_overrides: Mapping | None = None) -> tuple[pd.DataFrame, dict]:
    """The run of ``method`` for every seed trained (or reused) and scored through :func:`execute`: the
    per-pair scores of all seeds, and seed -> ``TrainResult``."""
    specs = variant_specs(method, seeds, tag, num_peers, train_overrides)
    done = execute(study, specs, executor)
    results = {s.seed: r for s, r in zip(specs, train_results(done).values())}
    scores = pd.concat([pd.read_csv(done[s.name].scores) for s in specs], ignore_index=True)
    return scores, results


def variant_specs(method: str, seeds: Sequence[int], tag: str = "", num_peers: int | None = None,
                  train_overrides: Mapping | None = None) -> list[RunSpec]:
    """The specs of one method's variant (a tag, a number of peers, train overrides) over seeds."""
    return [RunSpec(method, int(seed), tag, train_overrides or (), num_peers=num_peers) for seed in seeds]


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
