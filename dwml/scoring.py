"""Scoring runs: where each minimal-pair suite is read from, the per-pair scores of a run's peers (cached in its
folder), the kept peers rescored on all the pairs, and the word n-gram rows scored on the same pairs.

Scores are per pair (``dwml.evaluate.score_pairs``), cached as ``scores.csv`` in the run folder with the
columns ``method``, ``seed``, ``peer`` and ``params`` added; :mod:`dwml.compare` summarises them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from dwml import suites as registry
from dwml.compare import best_peer_choice
from dwml.config import EvalConfig
from dwml.evaluate import EvalDataError, data_root as default_root, evaluate_model, subsample
from dwml.io import atomic_write_json, atomic_write_text, project_path
from dwml.ngrams import ngram_pair_scores
from dwml.runs import SCORES, run_seed


STAND_IN = "synthetic"
"""A ``suite_dirs`` value: the synthetic corpus's pairs written in the suite's own format (the ``ci`` profile)."""


def suite_folders(names: Sequence[str], corpus_dir: str | Path | None = None, data_root: str | Path | None = None,
                  suite_dirs: Mapping[str, str | Path] | None = None) -> dict[str, Path]:
    """Where each suite of ``names`` is read from: ``suite_dirs[name]`` when given (relative to the project
    root), else its registry folder under ``data_root`` (default ``dwml.evaluate.data_root()``); a suite
    read from the corpus (``from_corpus``: the synthetic pairs) is the prepared corpus ``corpus_dir``. ``suite_dirs[name] == 'synthetic'`` writes the
    synthetic corpus's pairs in the suite's own format under ``<corpus_dir>/as_<name>`` (a stand-in that
    runs the suite's loader and tables without its data). A missing root or folder raises, naming it."""
    suite_dirs = dict(suite_dirs or {})
    registry.check_known(list(names) + list(suite_dirs), "suite_folders")
    out = {}
    for name in names:
        spec, where = registry.get(name), suite_dirs.get(name)
        if where == STAND_IN or (spec.from_corpus and where is None):
            if corpus_dir is None:
                raise ValueError(f"suite {name!r} from the synthetic corpus needs corpus_dir (the prepared corpus)")
            if spec.from_corpus:
                out[name] = Path(corpus_dir)
                continue
            if spec.write is None:
                raise EvalDataError(f"suite_dirs: suite {name!r} cannot be written from the synthetic pairs "
                                    f"(its registry entry has no writer)")
            out[name] = spec.write(registry.load_synthetic(corpus_dir), Path(corpus_dir) / f"as_{name}")
        elif where is not None:
            out[name] = project_path(where)
        else:
            root = Path(data_root) if data_root is not None else default_root()
            if root is None:
                raise EvalDataError(f"suite {name!r}: no data folder: set DWML_DATA, place the data at "
                                    f"../shared/data, or give the suite's folder in suite_dirs")
            out[name] = spec.path(root)
    return out


def load_suites_for(names: Sequence[str], corpus_dir: str | Path | None = None, data_root: str | Path | None = None,
                    max_pairs_per_task: int = 0, seed: int = 0, suite_dirs: Mapping[str, str | Path] | None = None,
                    skip_tasks: Mapping[str, Sequence[str]] | None = None) -> dict:
    """The minimal-pair suites by name (any of ``dwml.suites.names()``), read from :func:`suite_folders`;
    each subsampled to ``max_pairs_per_task`` per task when > 0. ``skip_tasks``: suite -> tasks left out (a
    profile's ``skip_tasks``: paradigms a study does not score); a suite or task not read is an error."""
    dirs = suite_folders(names, corpus_dir, data_root, suite_dirs)
    loaded = {name: registry.load(name, dirs[name]) for name in names}
    for suite, tasks in (skip_tasks or {}).items():
        if suite not in loaded:
            raise ValueError(f"skip_tasks: suite {suite!r} is not among the suites scored ({list(names)})")
        known = sorted({p.task for p in loaded[suite]})
        unknown = sorted(set(tasks) - set(known))
        if unknown:
            raise ValueError(f"skip_tasks.{suite}: unknown task(s) {unknown}; the suite's tasks: {known}")
        loaded[suite] = [p for p in loaded[suite] if p.task not in set(tasks)]
    return subsample_suites(loaded, max_pairs_per_task, seed)


def subsample_suites(suites: Mapping, per_task: int | Mapping[str, int], seed: int = 0) -> dict:
    """Each suite cut to at most ``per_task`` pairs of each task, drawn with ``seed`` (0 keeps all the pairs);
    ``per_task`` may be a mapping suite -> number (a suite it does not name keeps all its pairs)."""
    if isinstance(per_task, Mapping):
        return {k: subsample(v, int(per_task.get(k, 0)), seed) for k, v in suites.items()}
    return {k: subsample(v, per_task, seed) for k, v in suites.items()}


def score_run(result, suites: Mapping, eval_cfg=None, progress: bool = False, peers: Sequence[int] | None = None,
              cache: str = SCORES) -> pd.DataFrame:
    """Per-pair scores of every peer of a finished run (or of ``peers``, numbered from 1), cached in its
    folder as ``cache`` (rescored when the suites or peers differ)."""
    path = Path(result.run_dir) / cache
    peers = list(range(1, len(result.peer_dirs) + 1)) if peers is None else [int(p) for p in peers]
    bad = [p for p in peers if not 1 <= p <= len(result.peer_dirs)]
    if bad:
        raise ValueError(f"peers={peers}: run {result.run_dir} has peers 1..{len(result.peer_dirs)}")
    want = {s: len(p) * len(peers) for s, p in suites.items()}
    made_for = scores_key(suites, eval_cfg, peers)
    side = path.with_name(path.name + ".json")
    if path.is_file():
        cached = pd.read_csv(path)
        if ({s: int(n) for s, n in cached.groupby("suite").size().items()} == want
                and sorted(cached["peer"].unique().tolist()) == sorted(peers)):
            recorded = _read_key(side)
            if recorded is None:  # written before the record existed: the counts are all there is to compare
                return cached
            was, now = recorded.get("eval") if isinstance(recorded.get("eval"), dict) else {}, made_for["eval"]
            diffs = [f"eval.{k}: cached {was.get(k)!r}, now {now.get(k)!r}" for k in sorted(set(was) | set(now))
                     if was.get(k) != now.get(k)]
            diffs += [f"{k} differ" for k in ("pairs", "peers") if recorded.get(k) != made_for[k]]
            if not diffs:
                return cached
            warnings.warn(f"{path} was scored under other settings ({'; '.join(diffs)}; recorded in {side.name}): "
                          "rescoring", stacklevel=2)
    frames = []
    for p in peers:
        df = evaluate_model(result.peer_dirs[p - 1], suites=suites, cfg=eval_cfg, progress=progress)
        df["peer"] = p
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["method"], out["seed"] = result.summary["method"], run_seed(result.run_dir)
    atomic_write_text(path, out.to_csv(index=False))
    atomic_write_json(side, made_for)
    return out


def scores_key(suites: Mapping, eval_cfg, peers: Sequence[int]) -> dict:
    """What a per-pair scores cache was made for: the eval settings, a fingerprint of the pairs (suite, task,
    id, texts) and the peers; recorded beside the cache (``<cache>.json``) and compared before it is reused."""
    h = hashlib.sha256()
    for name in sorted(suites):
        for p in suites[name]:
            h.update(json.dumps([name, p.task, p.pair_id, p.good, p.bad, p.prefix]).encode())
    cfg = eval_cfg or EvalConfig()
    settings = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    for name in ("batch_size", "bootstrap"):  # how fast, and the intervals: not what a pair scores
        settings.pop(name, None)
    return {"eval": settings, "pairs": h.hexdigest()[:16], "peers": sorted(int(p) for p in peers)}


def _read_key(path: Path) -> dict | None:
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None if not path.exists() else {}  # unreadable: compares unequal, so the scores are redone
    return out if isinstance(out, dict) else {}


FULL_SCORES = "scores_full.csv"


def rescore_best(results: Mapping, scores: pd.DataFrame, suites: Mapping, eval_cfg=None,
                 progress: bool = False) -> pd.DataFrame:
    """The peer that :func:`best_peer_choice` keeps in each run of ``results`` ((method, seed) -> run),
    chosen on ``scores`` (a subsample of the pairs, say), scored again on ``suites`` (all the pairs);
    cached in the run folder as ``scores_full.csv``. The rows have the columns of :func:`score_run`."""
    frames = []
    for method, seed, peer in best_peer_choice(scores).itertuples(index=False):
        if (method, seed) in results:
            frames.append(score_run(results[method, seed], suites, eval_cfg, progress, peers=[peer], cache=FULL_SCORES))
    return pd.concat(frames, ignore_index=True)


def score_runs(results: Mapping, suites: Mapping, eval_cfg=None) -> pd.DataFrame:
    """:func:`score_run` of every run of ``results`` (in its order), concatenated: the per-pair scores."""
    return pd.concat([score_run(r, suites, eval_cfg) for r in results.values()], ignore_index=True)


def ngram_rows(lines: Sequence[str], suites: Mapping, orders: Sequence[int] = (1, 2, 3)) -> pd.DataFrame:
    """Table 1 rows for the word n-gram models counted on ``lines`` (the training corpus): per order, each
    suite's macro accuracy (%) on ``suites``' pairs, a tie counting as wrong, as for the models."""
    pairs = [p for v in suites.values() for p in v]
    sc = ngram_pair_scores(lines, pairs, orders)
    task = sc.groupby(["order", "suite", "task"])["correct"].mean().reset_index()
    acc = task.groupby(["order", "suite"])["correct"].mean().mul(100).unstack("suite")
    acc.index = [f"word {n}-gram (same corpus)" for n in acc.index]
    return acc.rename_axis("model").reset_index()
