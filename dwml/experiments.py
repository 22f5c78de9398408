"""Runs of many methods over seeds, and the scores of their peers: the driver behind notebooks 03 and 04.

A run is one call of ``dwml.train.train`` in ``<run_root>/<method>[_<tag>]_seed<seed>``; a finished run
folder (``DONE``) is reused, so a notebook that is run again only redraws, and the DWML run of
``02_bilevel_training`` (``dwml_seed<seed>``) is the same run that ``03_baselines`` scores. Every method
trains the peers of ``01_peer_search`` (``peers.json``), except ``mlm``, which trains the teacher-sized
model alone: the paper's single-model baseline, and the teacher that ``kd`` and ``kd_dwml`` learn from
(never a downloaded checkpoint).

Scores are per pair (``dwml.evaluate.score_pairs``), cached as ``scores.csv`` in the run folder, with
the columns ``method``, ``seed``, ``peer`` and ``params`` added; tables average a suite's tasks (macro, as
BabyLM does) per seed and then give the mean over seeds with a 95% t-interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from dwml.stats import r_interval, t_interval  # noqa: F401 (re-exported: one statistics module, dwml.stats)

PAPER_DIR = Path(__file__).resolve().parent / "paper"
SCORES = "scores.csv"


def published(name: str) -> pd.DataFrame:
    """A table of the paper's published numbers (``table1``, ``table2``, ``figure2``; see paper/SOURCE.md)."""
    path = PAPER_DIR / f"{name}.csv"
    if not path.is_file():
        known = sorted(p.stem for p in PAPER_DIR.glob("*.csv"))
        raise FileNotFoundError(f"{path}: no published table {name!r} (known: {known})")
    return pd.read_csv(path)


def teacher_arch(meta: Mapping):
    """The teacher of a saved search (``meta['teacher']``) as a ``PeerArch``: what ``mlm`` trains."""
    from dwml.search import PeerArch

    t = meta["teacher"]
    return PeerArch(num_layers=t["layers"], num_heads=t["heads"], hidden_size=t["hidden"],
                    intermediate_size=4 * t["hidden"], params=t["params"], target=t["params"], rel_error=0.0,
                    method="teacher")


def run_archs(method: str, archs: Sequence, meta: Mapping, num_peers: int | None = None) -> list:
    """The models a run of ``method`` trains: the teacher-sized one for a single-model method, else the first
    ``num_peers`` (all by default) of the searched peers."""
    from dwml.methods import method_class

    return [teacher_arch(meta)] if method_class(method).single_model else list(archs)[: num_peers or len(archs)]


def run_name(method: str, seed: int, tag: str = "") -> str:
    return f"{method}{'_' + tag if tag else ''}_seed{seed}"


def train_run(sections: Mapping, prep, archs: Sequence, meta: Mapping, method: str, seed: int, run_root: str | Path,
              *, teacher_dir: str | Path = "", tag: str = "", num_peers: int | None = None,
              train_overrides: Mapping | None = None, progress: bool = True, curve_steps: Sequence[int] = (),
              curve_pairs: Mapping | None = None, eval_cfg=None, run_dir: str | Path | None = None,
              max_steps: int | None = None):
    """Train (or reuse) one run; returns its ``TrainResult``.

    ``train.nproc`` > 1 in a single process: the run is started with torchrun on that many processes
    (``python -m dwml.train``, :func:`launch_run`) and its result read from the folder; under torchrun (every
    rank calls this) it trains in place. ``run_dir``: another folder than ``<run_root>/<run name>``;
    ``max_steps``: stop after that many steps in all, leaving a checkpoint.

    ``sections``: the profile's ``data``/``search``/``train`` dicts; ``archs``/``meta``: the saved search;
    ``num_peers``: train only the first (largest) peers; ``train_overrides``: fields that differ from the
    profile (an ablation's alpha, say), which must then also get their own ``tag``.

    ``curve_steps``: a learning curve for free: the run stops at each of these steps (a checkpoint, then a
    resume, which gives the same run as an uninterrupted one), its peers are scored on ``curve_pairs`` there,
    and the rows go to ``curve.csv`` in the run folder (see :func:`learning_curve`)."""
    import torch

    from dwml.config import Config, ConfigError
    from dwml.distributed import env_ranks
    from dwml.methods import method_class
    from dwml.model import build_peers
    from dwml.train import train

    if train_overrides and not tag:
        raise ValueError(f"train_overrides={dict(train_overrides)} need a tag, or the run folder would be shared "
                         "with the profile's run of the same method and seed")
    train_cfg = {**sections.get("train", {}), **(train_overrides or {}), "method": method, "seed": seed}
    if method_class(method).uses_teacher:
        if not teacher_dir:
            raise ValueError(f"method {method!r} needs teacher_dir (a finished 'mlm' run's peer_0)")
        train_cfg["teacher_dir"] = str(teacher_dir)
    cfg = Config.from_dict(data=sections.get("data", {}), search=sections.get("search", {}), train=train_cfg)
    run_dir = Path(run_dir) if run_dir is not None else Path(run_root) / run_name(method, seed, tag)
    if cfg.train.nproc > 1 and env_ranks().world == 1:
        if curve_steps:
            raise ConfigError(f"train.nproc={cfg.train.nproc} with curve_steps: learning curves of runs on several "
                              "processes are not supported; set curve_steps to [] or train.nproc to 1")
        return launch_run({**sections, "train": train_cfg}, method, seed, run_root, run_dir, cfg.train.nproc,
                          teacher_dir=str(teacher_dir), num_peers=num_peers, max_steps=max_steps, progress=progress)
    torch.manual_seed(seed)
    models = build_peers(run_archs(method, archs, meta, num_peers), meta)
    if curve_steps and not (run_dir / "DONE").is_file():
        if not curve_pairs:
            raise ValueError("curve_steps need curve_pairs (the suites to score along the way)")
        _curve(cfg, prep, models, run_dir, sorted(set(int(k) for k in curve_steps)), curve_pairs, eval_cfg, progress)
    # A finished run is reused only when its configuration, corpus and peers are these (train checks
    # them and names what differs); an interrupted one resumes from its checkpoint.
    return train(cfg, prep, models, run_dir, progress=progress, resume=True, max_steps=max_steps)


def launch_run(sections: Mapping, method: str, seed: int, run_root: str | Path, run_dir: str | Path, nproc: int, *,
               teacher_dir: str = "", num_peers: int | None = None, max_steps: int | None = None,
               progress: bool = True):
    """One run on ``nproc`` processes of this machine: ``torchrun --standalone --nproc_per_node nproc -m
    dwml.train`` with these sections (written to ``<run_dir>.launch.json``); returns the ``TrainResult`` read
    from the folder. A failed run raises ``RuntimeError`` with the end of its output (every rank's error)."""
    import json
    import subprocess
    import sys

    from dwml.io import atomic_write_json, project_path
    from dwml.train import TrainResult, load_result, read_metrics

    run_dir = project_path(run_dir)
    spec = run_dir.parent / f"{run_dir.name}.launch.json"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(spec, {k: dict(v) for k, v in sections.items() if k in ("data", "search", "train")})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "dwml.train", "--sections", str(spec), "--method", method, "--seed", str(seed),
           "--run-root", str(project_path(run_root)), "--run-dir", str(run_dir)]
    cmd += ["--teacher-dir", teacher_dir] if teacher_dir else []
    cmd += ["--num-peers", str(num_peers)] if num_peers else []
    cmd += ["--max-steps", str(max_steps)] if max_steps is not None else []
    cmd += [] if progress else ["--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the run in {run_dir} on {nproc} processes failed (exit {proc.returncode}): "
                           f"{' '.join(cmd)}\n{proc.stderr[-4000:]}")
    if (run_dir / "DONE").is_file():
        return load_result(run_dir)
    return TrainResult(run_dir, None, read_metrics(run_dir), done=False)


CURVE = "curve.csv"


def _curve(cfg, prep, models, run_dir: Path, steps: Sequence[int], pairs: Mapping, eval_cfg, progress: bool) -> None:
    """Train up to each of ``steps`` in turn, scoring every peer there; append the rows to ``curve.csv``."""
    import warnings

    from dwml.evaluate import evaluate_model
    from dwml.io import atomic_write_text
    from dwml.train import total_steps, train

    steps = [k for k in steps if 0 < k < total_steps(cfg)]  # the final point is the run's own scores.csv
    path = run_dir / CURVE
    done = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    have = set(done["step"]) if len(done) else set()
    frames = [done] if len(done) else []
    for k in steps:
        if k in have:
            continue
        history = train(cfg, prep, models, run_dir, progress=progress, resume=True, max_steps=k).history
        train_rows = history[history["kind"] == "train"] if len(history) else history
        at = int(train_rows["step"].iloc[-1]) if len(train_rows) else 0
        if at != k:  # resumed from a checkpoint beyond k (or the run stopped early): this point is gone
            warnings.warn(f"{run_dir}: learning-curve point {k} skipped (the run is at step {at})")
            continue
        tokens = int(train_rows["tokens"].iloc[-1])
        for i, m in enumerate(models):
            df = evaluate_model(m.eval(), prep.tokenizer, suites=pairs, cfg=eval_cfg, progress=False)
            m.train()
            df = df.groupby(["suite", "task"], sort=False)["correct"].mean().mul(100).rename("accuracy").reset_index()
            frames.append(df.assign(step=k, tokens=tokens, peer=i + 1))
        atomic_write_text(path, pd.concat(frames, ignore_index=True).to_csv(index=False))


def learning_curve(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """The ``curve.csv`` rows of finished runs, with the final point (from ``scores.csv``) appended:
    accuracy (%) per (seed, peer, step, tokens, suite, task)."""
    from dwml.train import load_result

    frames = []
    for d in run_dirs:
        d = Path(d)
        seed = int(d.name.rsplit("seed", 1)[1])
        if (d / CURVE).is_file():
            frames.append(pd.read_csv(d / CURVE).assign(seed=seed))
        if (d / SCORES).is_file():
            summary = load_result(d).summary
            final = pd.read_csv(d / SCORES).groupby(["peer", "suite", "task"], sort=False)["correct"].mean().mul(100)
            frames.append(final.rename("accuracy").reset_index().assign(step=summary["steps"], tokens=summary["tokens"],
                                                                        seed=seed))
    if not frames:
        raise FileNotFoundError(f"no {CURVE} or {SCORES} in {[str(d) for d in run_dirs]}")
    return pd.concat(frames, ignore_index=True)


@dataclass
class Study:
    """What notebooks 03 and 04 start from: the profile's sections, config, corpus, peers and pairs, and the
    folder each suite was read from (``suite_dirs``)."""

    sections: dict
    cfg: object
    prep: object
    archs: list
    meta: dict
    pairs: dict
    suite_dirs: dict | None = None


def setup(data: Mapping, search: Mapping, train: Mapping, run_root: str | Path, suites: Sequence[str],
          max_pairs_per_task: int = 0, suite_dirs: Mapping[str, str] | None = None) -> Study:
    """Config from the profile's sections, the prepared corpus, the peers of ``01_peer_search`` (searched
    here if it has not run) and the minimal-pair suites (``suite_dirs``: see :func:`suite_folders`)."""
    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.tokenizer import tokenizer_fingerprint
    from dwml.io import project_path
    from dwml.search import ensure_peers

    sections = {"data": dict(data), "search": dict(search), "train": dict(train)}
    cfg = Config.from_dict(**sections)
    prep = prepare_corpus(cfg.data)
    archs, meta = ensure_peers(project_path(run_root) / "peers.json", cfg.search, len(prep.tokenizer),
                               cfg.data.block_size + 2, data_vocab_size=cfg.data.vocab_size,
                               tokenizer=tokenizer_fingerprint(prep.tokenizer))
    dirs = suite_folders(suites, corpus_dir=prep.corpus_dir, suite_dirs=suite_dirs)
    pairs = load_suites_for(suites, corpus_dir=prep.corpus_dir, max_pairs_per_task=max_pairs_per_task, suite_dirs=dirs)
    return Study(sections, cfg, prep, archs, meta, pairs, dirs)


STAND_IN = "synthetic"
"""A ``suite_dirs`` value: the synthetic corpus's pairs written in the suite's own format (the ``ci`` profile)."""


def suite_folders(names: Sequence[str], corpus_dir: str | Path | None = None, data_root: str | Path | None = None,
                  suite_dirs: Mapping[str, str | Path] | None = None) -> dict[str, Path]:
    """Where each suite of ``names`` is read from: ``suite_dirs[name]`` when given (relative to the project
    root), else its registry folder under ``data_root`` (default ``dwml.evaluate.data_root()``); a suite
    read from the corpus (``from_corpus``: the synthetic pairs) is the prepared corpus ``corpus_dir``. ``suite_dirs[name] == 'synthetic'`` writes the
    synthetic corpus's pairs in the suite's own format under ``<corpus_dir>/as_<name>`` (a stand-in that
    runs the suite's loader and tables without its data). A missing root or folder raises, naming it."""
    from dwml import suites
    from dwml.evaluate import EvalDataError, data_root as default_root
    from dwml.io import project_path

    suite_dirs = dict(suite_dirs or {})
    unknown = [n for n in list(names) + list(suite_dirs) if n not in suites.SUITES]
    if unknown:
        raise EvalDataError(f"unknown suite(s) {unknown}; known: {suites.names()}")
    out = {}
    for name in names:
        spec, where = suites.get(name), suite_dirs.get(name)
        if where == STAND_IN or (spec.from_corpus and where is None):
            if corpus_dir is None:
                raise ValueError(f"suite {name!r} from the synthetic corpus needs corpus_dir (the prepared corpus)")
            if spec.from_corpus:
                out[name] = Path(corpus_dir)
                continue
            if spec.write is None:
                raise EvalDataError(f"suite_dirs: suite {name!r} cannot be written from the synthetic pairs "
                                    f"(its registry entry has no writer)")
            out[name] = spec.write(suites.load_synthetic(corpus_dir), Path(corpus_dir) / f"as_{name}")
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
                    max_pairs_per_task: int = 0, seed: int = 0,
                    suite_dirs: Mapping[str, str | Path] | None = None) -> dict:
    """The minimal-pair suites by name (any of ``dwml.suites.names()``), read from :func:`suite_folders`;
    each subsampled to ``max_pairs_per_task`` per task when > 0."""
    from dwml import suites

    dirs = suite_folders(names, corpus_dir, data_root, suite_dirs)
    return subsample_suites({name: suites.load(name, dirs[name]) for name in names}, max_pairs_per_task, seed)


def reference_rows(references: Mapping) -> pd.DataFrame:
    """Table 1 rows for published results (:func:`dwml.suites.references`): a ``model`` column ('reference: ...')
    and the suite's column (the published overall accuracy, %)."""
    rows = [{"model": f"reference: {model}", suite: float(row["Avg."])}
            for suite, table in references.items() for model, row in table.iterrows()]
    return pd.DataFrame(rows)


def score_run(result, suites: Mapping, eval_cfg=None, progress: bool = False, peers: Sequence[int] | None = None,
              cache: str = SCORES) -> pd.DataFrame:
    """Per-pair scores of every peer of a finished run (or of ``peers``, numbered from 1), cached in its
    folder as ``cache`` (rescored when the suites or peers differ)."""
    from dwml.evaluate import evaluate_model
    from dwml.io import atomic_write_text

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
            import warnings

            warnings.warn(f"{path} was scored under other settings ({'; '.join(diffs)}; recorded in {side.name}): "
                          "rescoring", stacklevel=2)
    frames = []
    for p in peers:
        df = evaluate_model(result.peer_dirs[p - 1], suites=suites, cfg=eval_cfg, progress=progress)
        df["peer"] = p
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["method"], out["seed"] = result.summary["method"], int(Path(result.run_dir).name.rsplit("seed", 1)[1])
    atomic_write_text(path, out.to_csv(index=False))
    from dwml.io import atomic_write_json

    atomic_write_json(side, made_for)
    return out


def scores_key(suites: Mapping, eval_cfg, peers: Sequence[int]) -> dict:
    """What a per-pair scores cache was made for: the eval settings, a fingerprint of the pairs (suite, task,
    id, texts) and the peers; recorded beside the cache (``<cache>.json``) and compared before it is reused."""
    import dataclasses
    import hashlib
    import json

    from dwml.config import EvalConfig

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
    import json

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


def ngram_rows(lines: Sequence[str], suites: Mapping, orders: Sequence[int] = (1, 2, 3)) -> pd.DataFrame:
    """Table 1 rows for the word n-gram models counted on ``lines`` (the training corpus): per order, each
    suite's macro accuracy (%) on ``suites``' pairs, a tie counting as wrong, as for the models."""
    from dwml.ngrams import ngram_pair_scores

    pairs = [p for v in suites.values() for p in v]
    sc = ngram_pair_scores(lines, pairs, orders)
    task = sc.groupby(["order", "suite", "task"])["correct"].mean().reset_index()
    acc = task.groupby(["order", "suite"])["correct"].mean().mul(100).unstack("suite")
    acc.index = [f"word {n}-gram (same corpus)" for n in acc.index]
    return acc.rename_axis("model").reset_index()


def per_seed(scores: pd.DataFrame, keys: Sequence[str] = ("method", "peer")) -> pd.DataFrame:
    """Macro accuracy (%) of each suite per (keys..., seed): the mean over a suite's tasks of the task's
    accuracy, a tie counting as wrong."""
    keys = list(keys)
    task = scores.groupby(keys + ["seed", "suite", "task"], sort=False)["correct"].mean().reset_index()
    return (task.groupby(keys + ["seed", "suite"], sort=False)["correct"].mean() * 100).rename("accuracy").reset_index()


def over_seeds(seeded: pd.DataFrame, keys: Sequence[str] = ("method", "peer")) -> pd.DataFrame:
    """Mean over seeds with its 95% t-interval, one row per (keys..., suite)."""
    rows = []
    for key, part in seeded.groupby(list(keys) + ["suite"], sort=False):
        m, lo, hi = t_interval(part["accuracy"])
        rows.append({**dict(zip(list(keys) + ["suite"], key)), "accuracy": m, "ci_low": lo, "ci_high": hi,
                     "seeds": part["seed"].nunique()})
    return pd.DataFrame(rows)


def best_peer(seeded: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Per (``by``..., seed, suite), the accuracy of the peer that is best on average over the suites: what a
    user who had to pick one peer of a run would keep (the paper's "Best" column picks per suite instead,
    which flatters a method by choosing after seeing each test)."""
    by = list(by)
    avg = seeded.groupby(by + ["seed", "peer"])["accuracy"].mean().rename("avg").reset_index()
    pick = avg.loc[avg.groupby(by + ["seed"])["avg"].idxmax(), by + ["seed", "peer"]]
    return seeded.merge(pick, on=by + ["seed", "peer"])


def best_peer_choice(scores: pd.DataFrame) -> pd.DataFrame:
    """Which peer :func:`best_peer` keeps for each (method, seed): the rows (method, seed, peer)."""
    return best_peer(per_seed(scores))[["method", "seed", "peer"]].drop_duplicates()


def table2(scores: pd.DataFrame, params: Mapping[tuple[str, int], int] | None = None) -> pd.DataFrame:
    """The paper's Table 2 layout: per method and peer, each suite's accuracy (mean over seeds, 95%
    interval), and a 'best' row per method (the peer best on average, chosen within each seed)."""
    seeded = per_seed(scores)
    rows = over_seeds(seeded)
    best = over_seeds(best_peer(seeded).assign(peer="best"))
    out = pd.concat([rows, best], ignore_index=True)
    if params:
        out["params"] = [params.get((m, p)) if p != "best" else None for m, p in zip(out["method"], out["peer"])]
    return out


def published_table2_long() -> pd.DataFrame:
    """The paper's Table 2 as rows (method, peer, suite, accuracy), peers 1..4 and 'best', suites named as
    ours ('blimp', 'supplement', 'ewok')."""
    from dwml import suites
    from dwml.methods import METHODS

    t = published("table2")
    suite = suites.paper_names()
    method = {cls.paper_name: name for name, cls in METHODS.items() if cls.paper_name}
    rows = []
    for _, r in t.iterrows():
        cols = [c for c in t.columns if c.startswith("peer")]
        for i, c in enumerate(cols, start=1):
            if not pd.isna(r[c]):
                rows.append({"method": method[r["method"]], "peer": i, "suite": suite[r["benchmark"]], "paper": r[c]})
        rows.append({"method": method[r["method"]], "peer": "best", "suite": suite[r["benchmark"]], "paper": r["best_reported"]})
    return pd.DataFrame(rows)


def pearson_by_seed(scores: pd.DataFrame, weights: Mapping[int, Sequence[float]], params: Mapping[int, int]) -> pd.DataFrame:
    """Per seed of one method's runs: Pearson R between peer size and accuracy (the mean over suites of the
    macro accuracy) and between learned weight and accuracy (the paper's Figure 2c reports R = 0.7).
    ``weights``: seed -> final w; ``params``: peer (1-based) -> parameter count."""
    from scipy import stats

    seeded = per_seed(scores, keys=("peer",))
    acc = seeded.groupby(["seed", "peer"])["accuracy"].mean().reset_index()
    rows = []
    for seed, part in acc.groupby("seed"):
        part = part.sort_values("peer")
        w = list(weights[seed])
        x_size = [params[p] for p in part["peer"]]
        x_w = [w[p - 1] for p in part["peer"]]
        ok = len(part) > 2
        rows.append({"seed": seed, "peers": len(part),
                     "r_size_accuracy": stats.pearsonr(x_size, part["accuracy"])[0] if ok else math.nan,
                     "r_weight_accuracy": stats.pearsonr(x_w, part["accuracy"])[0] if ok and len(set(x_w)) > 1 else math.nan})
    return pd.DataFrame(rows)


def ablation_table(scores: pd.DataFrame, setting: str) -> pd.DataFrame:
    """One row per (``setting`` value, suite): the best peer's accuracy, mean over seeds with its 95% interval;
    ``scores`` must carry a ``setting`` column (the number of peers, alpha, ...)."""
    best = best_peer(per_seed(scores, keys=(setting, "peer")), by=(setting,))
    return over_seeds(best, keys=(setting,))


def paired_differences(seeded: pd.DataFrame, reference: str, key: str = "method") -> pd.DataFrame:
    """Each ``key`` value against ``reference``, paired by seed: the mean over seeds of (its accuracy minus the
    reference's, in points) with a 95% t-interval, per suite. ``seeded``: one accuracy per (key, seed, suite),
    e.g. ``best_peer(per_seed(scores))``. An interval that excludes 0 is what "the methods differ" means
    here; pairing by seed removes what the seeds share (the corpus order, the initialisation).

    Only seeds that both have are used; ``differs`` is True when the interval excludes 0."""
    ref = seeded[seeded[key] == reference][["seed", "suite", "accuracy"]].rename(columns={"accuracy": "ref"})
    if ref.empty:
        raise ValueError(f"paired_differences: reference {reference!r} is not among {sorted(seeded[key].unique())}")
    both = seeded[seeded[key] != reference].merge(ref, on=["seed", "suite"])
    rows = []
    for (k, suite), part in both.groupby([key, "suite"], sort=False):
        m, lo, hi = t_interval(part["accuracy"] - part["ref"])
        rows.append({key: k, "reference": reference, "suite": suite, "difference": m, "ci_low": lo, "ci_high": hi,
                     "seeds": len(part), "differs": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows)


def ablation_differences(scores: pd.DataFrame, setting: str, reference) -> pd.DataFrame:
    """Each value of an ablated ``setting`` against ``reference`` (the profile's own value), paired by seed:
    the best peer per (setting, seed), as :func:`ablation_table` picks it, then :func:`paired_differences`.
    The setting's values are in a column named ``value`` (so that studies stack into one table)."""
    seeded = best_peer(per_seed(scores, keys=(setting, "peer")), by=(setting,))
    out = paired_differences(seeded, reference, key=setting)
    return out.rename(columns={setting: "value"}).assign(setting=setting)


def verdict(a: str, b: str, difference: float, low: float, high: float, suite: str = "") -> str:
    """One plain sentence for a paired difference ``a - b`` (points) with its 95% interval [low, high].

    An interval above 0: "a beats b by x points [lo, hi]"; below 0: "b beats a by ..." (the interval
    mirrored). One that contains 0: "no difference between a and b larger than h points", with h the
    largest |difference| the interval allows, max(|lo|, |hi|): the half-width alone would understate it
    whenever the estimate is not 0 (x = 1 [-2, 4] allows a difference of 4, not 3); the estimate and the
    half-width follow in brackets. A missing interval (one seed) says so instead of a verdict."""
    where = f" on {suite}" if suite else ""
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{a} - {b}{where}: {difference:+.1f} points (one seed: no interval, no verdict)"
    if low > 0:
        return f"{a} beats {b}{where} by {difference:.1f} points [{low:.1f}, {high:.1f}]"
    if high < 0:
        return f"{b} beats {a}{where} by {-difference:.1f} points [{-high:.1f}, {-low:.1f}]"
    bound = max(abs(low), abs(high))
    return (f"no difference between {a} and {b}{where} larger than {bound:.1f} points "
            f"({a} - {b} = {difference:+.1f} [{low:+.1f}, {high:+.1f}], half-width {(high - low) / 2:.1f})")


def verdicts(table: pd.DataFrame, a: str, b: str = "reference", label: str | None = None) -> list[str]:
    """:func:`verdict` for every row of a differences table (``paired_differences``, ``ablation_differences``):
    ``a``/``b`` name the columns that hold the two sides; ``label``, a column whose value prefixes the
    sentence (an ablation's claim). The suite is named when the table has more than one."""
    many = table["suite"].nunique() > 1 if "suite" in table else False
    out = []
    for _, r in table.iterrows():
        s = verdict(f"{r[a]}", f"{r[b]}", float(r["difference"]), float(r["ci_low"]), float(r["ci_high"]),
                    suite=str(r["suite"]) if many else "")
        out.append(f"{r[label]}: {s}" if label else s)
    return out


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

# --------------------------------------------------------------------------------------------------
# Notebook 03 (baselines): every method over seeds, and the tables that set them side by side
# --------------------------------------------------------------------------------------------------

def subsample_suites(suites: Mapping, per_task: int | Mapping[str, int], seed: int = 0) -> dict:
    """Each suite cut to at most ``per_task`` pairs of each task, drawn with ``seed`` (0 keeps all the pairs);
    ``per_task`` may be a mapping suite -> number (a suite it does not name keeps all its pairs)."""
    from dwml.evaluate import subsample

    if isinstance(per_task, Mapping):
        return {k: subsample(v, int(per_task.get(k, 0)), seed) for k, v in suites.items()}
    return {k: subsample(v, per_task, seed) for k, v in suites.items()}


def train_methods(study: Study, methods: Sequence[str], seeds: Sequence[int], run_root: str | Path,
                  **train_kw) -> dict:
    """Train (or reuse) the run of every method of ``methods`` for every seed; (method, seed) -> ``TrainResult``.

    In each seed the teacher's run comes first (:func:`dwml.methods.training_order`: the single-model run,
    trained even when only the methods that learn from it are listed) and its first model is the teacher
    of the methods that use one. ``train_kw`` go to :func:`train_run` (``curve_steps``, ``curve_pairs``,
    ``eval_cfg``, ``progress``)."""
    from dwml.methods import teacher_method, training_order

    teacher_name = teacher_method(methods)
    results = {}
    for seed in seeds:
        teacher = None
        for method in training_order(methods):
            res = train_run(study.sections, study.prep, study.archs, study.meta, method, seed, run_root,
                            teacher_dir=teacher.peer_dirs[0] if teacher else "", **train_kw)
            if method == teacher_name:
                teacher = res
            if method in methods:
                results[method, seed] = res
    return results


def runs_table(results: Mapping) -> pd.DataFrame:
    """One row per run of :func:`train_methods`: its steps, minutes, early stop, the ensemble's final dev
    loss and the final peer weights."""
    return pd.DataFrame([{"method": m, "seed": s, "steps": r.summary["steps"], "minutes": r.summary["elapsed_s"] / 60,
                          "stopped_early": r.summary["stopped_early"],
                          "final_dev_ensemble": r.summary["final_dev_ensemble"], "weights": r.weights}
                         for (m, s), r in results.items()])


def score_runs(results: Mapping, suites: Mapping, eval_cfg=None) -> pd.DataFrame:
    """:func:`score_run` of every run of ``results`` (in its order), concatenated: the per-pair scores."""
    return pd.concat([score_run(r, suites, eval_cfg) for r in results.values()], ignore_index=True)


def model_params(methods: Sequence[str], archs: Sequence, meta: Mapping) -> dict[tuple[str, int], int]:
    """(method, model number from 1) -> parameter count, over the models each method trains (:func:`run_archs`)."""
    return {(m, i + 1): a.params for m in methods for i, a in enumerate(run_archs(m, archs, meta))}


def method_learning_curves(results: Mapping, methods: Sequence[str]) -> dict[str, pd.DataFrame]:
    """method -> :func:`learning_curve` of its runs in ``results`` (seeds in the order they ran), for each of
    ``methods``."""
    return {m: learning_curve([r.run_dir for (name, _), r in results.items() if name == m]) for m in methods}


def method_curve_table(method_curve: pd.DataFrame) -> pd.DataFrame:
    """:func:`method_curves` as a table: one row per (suite, step), a column per method (its best peer's
    accuracy, mean over seeds)."""
    return method_curve.pivot_table(index=["suite", "step"], columns="method", values="accuracy").reset_index()


def paradigm_curve_table(curve: pd.DataFrame) -> pd.DataFrame:
    """One method's :func:`learning_curve` as a table: one row per (step, tokens, seed), a column per task
    (paradigm) and their mean, ``macro``."""
    table = curve.pivot_table(index=["step", "tokens", "seed"], columns="task", values="accuracy").reset_index()
    table["macro"] = table[sorted(curve["task"].unique())].mean(axis=1)
    return table


def table2_with_paper(scores: pd.DataFrame, params: Mapping[tuple[str, int], int] | None = None) -> pd.DataFrame:
    """:func:`table2` with the paper's value beside each row it has (column ``paper``; peers as strings)."""
    t2 = table2(scores, params)
    paper = published_table2_long()
    t2["peer"], paper["peer"] = t2["peer"].astype(str), paper["peer"].astype(str)
    return t2.merge(paper, how="left", on=["method", "suite", "peer"])


def weakest_peers(scores: pd.DataFrame) -> pd.DataFrame:
    """Each method's weakest peer per suite (lowest mean over seeds) with its 95% interval, the peer in
    ``weakest_peer``: an interval well above chance says every peer of the method learnt the suite."""
    return (over_seeds(per_seed(scores)).sort_values("accuracy").groupby(["method", "suite"], sort=False).head(1)
            .rename(columns={"peer": "weakest_peer"}).sort_values(["suite", "method"]))


def method_differences(seeded: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Every method against DWML and then against the single model (those of ``methods``:
    :func:`dwml.methods.dwml_method`, :func:`dwml.methods.single_model_method`), paired by seed
    (:func:`paired_differences` on ``seeded``, e.g. ``best_peer(per_seed(scores))``), each row with its
    ``verdict`` sentence (:func:`verdicts`)."""
    from dwml.methods import dwml_method, single_model_method

    references = [r for r in (dwml_method(methods), single_model_method(methods)) if r]
    if not references:
        raise ValueError(f"method_differences: no DWML and no single-model method among {list(methods)}")
    diffs = pd.concat([paired_differences(seeded, r) for r in references], ignore_index=True)
    diffs["verdict"] = verdicts(diffs, "method")
    return diffs


def _paired_on_pairs(mine: pd.DataFrame, other: pd.DataFrame, n_boot: int, seed: int, where: str
                     ) -> tuple[pd.DataFrame, float, float]:
    """Two kept peers' per-pair scores of one suite joined on (seed, suite, task, pair_id), with the 95%
    paired bootstrap interval of their macro difference in points (:func:`dwml.stats.paired_macro_bootstrap`,
    strata = each seed's task). ``where`` starts the error raised when they were not scored on the same pairs."""
    from dwml.reports import check_one_to_one
    from dwml.stats import paired_macro_bootstrap

    keys = ["seed", "suite", "task", "pair_id"]
    check_one_to_one(mine, keys, f"{where}: the first")
    check_one_to_one(other, keys, f"{where}: the reference")
    both = mine[keys + ["correct"]].merge(other[keys + ["correct"]], on=keys, suffixes=("", "_ref"))
    if len(both) != len(mine) or len(both) != len(other):
        suite = mine["suite"].iloc[0] if len(mine) else other["suite"].iloc[0]
        raise ValueError(f"{where} are not scored on the same pairs of suite {suite!r}")
    both["stratum"] = both["seed"].astype(str) + "/" + both["task"].astype(str)
    reps = paired_macro_bootstrap(both["correct"], both["correct_ref"], both["stratum"], n_boot, seed)
    lo, hi = np.quantile(reps, [0.025, 0.975]) * 100
    return both, float(lo), float(hi)


def pair_differences(scores: pd.DataFrame, reference: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each method's kept peer (:func:`best_peer_choice`) against ``reference``'s, paired by pair: per suite,
    the macro accuracy difference in points (seeds pooled) with a 95% paired bootstrap interval (the same
    pairs resampled for both within each seed's task: :func:`dwml.stats.paired_macro_bootstrap`). With one
    seed this is the interval a comparison of seeds cannot give; it holds the pairs' sampling error only,
    not the seeds'. ``seed_ci_low`` / ``seed_ci_high``: with two or more seeds, the paired t-interval over
    seeds of each seed's macro difference (:func:`dwml.stats.t_interval`; NaN with one seed), which holds
    the seeds' error too. Each row has its ``verdict`` (:func:`verdict`, on the interval over pairs)."""
    chosen = scores.merge(best_peer_choice(scores), on=["method", "seed", "peer"])
    ref = chosen[chosen["method"] == reference]
    if ref.empty:
        raise ValueError(f"pair_differences: reference {reference!r} is not among {sorted(scores['method'].unique())}")
    rows = []
    for (method, suite), mine in chosen[chosen["method"] != reference].groupby(["method", "suite"], sort=False):
        both, lo, hi = _paired_on_pairs(mine, ref[ref["suite"] == suite], n_boot, seed,
                                        f"pair_differences: {method!r} and {reference!r}")
        by = both.groupby("stratum")
        diff = 100 * (by["correct"].mean() - by["correct_ref"].mean()).mean()
        per_task = both.groupby(["seed", "task"])[["correct", "correct_ref"]].mean()
        per_seed_diff = 100 * (per_task["correct"] - per_task["correct_ref"]).groupby(level="seed").mean()
        _, s_lo, s_hi = t_interval(per_seed_diff)
        rows.append({"method": method, "reference": reference, "suite": suite, "difference": diff,
                     "ci_low": lo, "ci_high": hi, "seed_ci_low": s_lo, "seed_ci_high": s_hi,
                     "pairs": len(both), "seeds": both["seed"].nunique(),
                     "verdict": verdict(method, reference, diff, lo, hi, suite)})
    return pd.DataFrame(rows)


MAJORITY_ROW = "majority class (GLUE validation)"


def table1_labels(methods: Sequence[str]) -> dict[str, str]:
    """The rows of our runs in Table 1: the single-model method and DWML of ``methods`` -> their labels."""
    from dwml.methods import dwml_method, method_class, single_model_method

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
    from dwml.evaluate import data_root
    from dwml.glue import GlueConfig, finetune_all

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
    paper = published("table1")
    from dwml import suites

    paper = (paper[paper["dataset"] == "10M"].drop(columns="dataset").assign(model=lambda d: "paper: " + d["model"])
             .rename(columns=suites.paper_names()))
    extra = [extra_rows] if extra_rows is not None and len(extra_rows) else []
    return pd.concat([t1.reset_index().rename(columns={"method": "model"}), *extra, paper], ignore_index=True)



# --------------------------------------------------------------------------------------------------
# The paper's Tables 6, 7 and 8: per BLiMP phenomenon, supplement task and EWoK domain
# --------------------------------------------------------------------------------------------------

def _group_tables() -> dict:
    from dwml import suites

    return {s.name: (s.figure_table, s.paper_table) for s in suites.SUITES.values() if s.figure_table and s.paper_table}


GROUP_TABLES = _group_tables()
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
    from dwml import reports, suites
    from dwml.plots import save_table

    present = set(scores["suite"])
    wanted = [s for s in suites.SUITES.values() if s.figure_table and s.name in present]
    if not wanted:
        return {}
    pick = best_peer_choice(scores)
    chosen = scores.merge(pick, on=["method", "seed", "peer"])
    paper = published_table2_long()
    paper = paper[paper["peer"].astype(str) == "best"].set_index(["method", "suite"])["paper"]
    out = {}
    for spec in wanted:
        name, suite = spec.figure_table, spec.name
        part = chosen[chosen["suite"] == suite]
        long, wide = [], []
        for method, mpart in part.groupby("method", sort=False):
            groups = reports.accuracy_table(mpart, "group", n_boot, seed)
            total = reports.accuracy_table(mpart, "suite", n_boot, seed).assign(group="Avg.")
            cells = pd.concat([groups, total], ignore_index=True).assign(method=method, seeds=mpart["seed"].nunique())
            long.append(cells)
            row = {"method": method, **dict(zip(cells["group"], cells["accuracy"])),
                   "ties": 100 * mpart["tie"].mean(), "paper (Table 2)": paper.get((method, suite), math.nan)}
            wide.append(row)
        wide = pd.DataFrame(wide)
        ref = (references or {}).get(suite)
        if ref is not None:
            wide = pd.concat([wide, ref.rename_axis("method").reset_index()], ignore_index=True)
        fixed = ("method", "Avg.", "ties", "paper (Table 2)")
        cols = [c for c in spec.columns if c in wide.columns]
        ours = set(pd.concat(long)["group"])  # a published column for a group we did not score is left out
        cols += [c for c in wide.columns if c not in cols and c not in fixed and c in ours]
        wide = wide[["method"] + cols + ["Avg.", "ties", "paper (Table 2)"]]
        long = pd.concat(long, ignore_index=True)[["method", "group", "accuracy", "ci_low", "ci_high", "tie_rate",
                                                    "n_tasks", "n_pairs", "seeds"]]
        out[name], out[f"{name}_intervals"] = wide, long
        if figures_dir is not None:
            save_table(wide, figures_dir, name, floatfmt=".1f")
            save_table(long, figures_dir, f"{name}_intervals", floatfmt=".1f")
    return out


# --------------------------------------------------------------------------------------------------
# What each published bug costs
# --------------------------------------------------------------------------------------------------

PUBLISHED_BUGS = {
    "token_file": {"data": {"published_token_file": True, "packing": "blocks"}},
    "hypergradient": {"train": {"published_hypergradient": True}},
    "kl": {"train": {"published_kl": True, "chunk_size": 1}},
}
"""Each bug of the published code as the config fields that switch it on (``dwml.config``). The token
file's stream has no utterance boundaries left, so its runs cut random blocks (``packing='blocks'``); the
table then measures it against the corrected method on blocks too."""


def published_bug_settings(sections: Mapping, bugs: Sequence[str] = tuple(PUBLISHED_BUGS)) -> dict[str, dict]:
    """Setting name -> the profile's sections with those bugs on: 'corrected', each bug alone, 'all' (when
    more than one), and 'corrected_blocks' (the reference of the token-file bug) when the profile does not
    already cut blocks."""
    unknown = [b for b in bugs if b not in PUBLISHED_BUGS]
    if unknown:
        raise ValueError(f"unknown published bug(s) {unknown}; known: {sorted(PUBLISHED_BUGS)}")

    def with_bugs(names: Sequence[str]) -> dict:
        out = {k: dict(v) for k, v in sections.items()}
        for b in names:
            for section, fields in PUBLISHED_BUGS[b].items():
                out.setdefault(section, {}).update(fields)
        return out

    settings = {"corrected": with_bugs([])}
    if "token_file" in bugs and sections.get("data", {}).get("packing", "blocks") != "blocks":
        settings["corrected_blocks"] = with_bugs([])
        settings["corrected_blocks"].setdefault("data", {})["packing"] = "blocks"
    settings.update({b: with_bugs([b]) for b in bugs})
    if len(bugs) > 1:
        settings["all"] = with_bugs(bugs)
    return settings


def bug_reference(setting: str, settings: Sequence[str]) -> str:
    """The setting a bug's row is paired with: 'corrected_blocks' for runs that cut blocks (the token file,
    'all') when it exists, else 'corrected'."""
    if setting in ("token_file", "all") and "corrected_blocks" in settings:
        return "corrected_blocks"
    return "corrected"


def published_bug_runs(sections: Mapping, archs: Sequence, meta: Mapping, seeds: Sequence[int], run_root: str | Path,
                       pairs: Mapping, eval_cfg=None, method: str = "dwml", bugs: Sequence[str] = tuple(PUBLISHED_BUGS),
                       progress: bool = True, train_overrides: Mapping | None = None,
                       blocks_overrides: Mapping | None = None) -> pd.DataFrame:
    """Train ``method`` in every setting of :func:`published_bug_settings` on the same seeds and peers
    (run folders ``<method>_bug-<setting>_seed<seed>``, and the profile's own ``<method>_seed<seed>`` for
    'corrected'; reused when finished) and score every peer on
    ``pairs``; the per-pair scores with a ``setting`` column.

    ``train_overrides``: a budget of the table's own for every setting (fewer steps, say); 'corrected' is
    then trained under them too (``<method>_bug-corrected_seed<seed>``), not taken from the profile's run.
    ``blocks_overrides``: further overrides for the settings that cut random blocks (a batch of fewer
    rows, so that a step of blocks sees about as many tokens as a step of utterances)."""
    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.methods import method_class

    if method_class(method).uses_teacher:
        raise ValueError("published_bug_runs: methods with a teacher are not supported (no teacher run here)")
    frames = []
    for setting, secs in published_bug_settings(sections, bugs).items():
        prep = prepare_corpus(Config.from_dict(data=secs.get("data", {})).data, progress=progress)
        overrides = dict(train_overrides or {})
        if secs.get("data", {}).get("packing") == "blocks":
            overrides.update(blocks_overrides or {})
        for seed in seeds:
            # 'corrected' is the profile's own run of the method (the one 02 / 03 train), reused when finished,
            # unless the table has a budget of its own
            tag = "" if setting == "corrected" and not overrides else f"bug-{setting}"
            res = train_run(secs, prep, archs, meta, method, seed, run_root, tag=tag, progress=progress,
                            train_overrides=overrides or None)
            frames.append(score_run(res, pairs, eval_cfg).assign(setting=setting))
    return pd.concat(frames, ignore_index=True)


def published_bug_table(scores: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """"What each published bug costs": per setting and suite, the best peer's macro accuracy (best within
    each seed, seeds pooled), and its difference from its reference (:func:`bug_reference`) in points
    with a 95% paired bootstrap interval (the same pairs resampled for both, within each seed's task:
    ``dwml.stats.paired_macro_bootstrap``) and, with two or more seeds, a paired t-interval over seeds.
    ``scores``: :func:`published_bug_runs`'s frame."""
    pick = best_peer(per_seed(scores, keys=("setting", "peer")), by=("setting",))[["setting", "seed", "peer"]]
    chosen = scores.merge(pick.drop_duplicates(), on=["setting", "seed", "peer"])
    settings = list(dict.fromkeys(chosen["setting"]))
    if "corrected" not in settings:
        raise ValueError(f"published_bug_table: no 'corrected' runs among the settings {settings}")
    seeded = per_seed(chosen, keys=("setting",))
    rows = []
    for setting in settings:
        ref = bug_reference(setting, settings)
        for suite in chosen.loc[chosen["setting"] == setting, "suite"].unique():
            mine = chosen[(chosen["setting"] == setting) & (chosen["suite"] == suite)]
            acc = seeded[(seeded["setting"] == setting) & (seeded["suite"] == suite)]["accuracy"]
            row = {"setting": setting, "suite": suite, "accuracy": float(acc.mean()), "seeds": int(acc.size),
                   "reference": ref if setting != ref else ""}
            if setting not in ("corrected", ref):
                other = chosen[(chosen["setting"] == ref) & (chosen["suite"] == suite)]
                _, lo, hi = _paired_on_pairs(mine, other, n_boot, seed,
                                             f"published_bug_table: setting {setting!r} and {ref!r}")
                ref_acc = seeded[(seeded["setting"] == ref) & (seeded["suite"] == suite)].set_index("seed")["accuracy"]
                diffs = seeded[(seeded["setting"] == setting) & (seeded["suite"] == suite)].set_index("seed")["accuracy"] - ref_acc
                m, t_lo, t_hi = t_interval(diffs.dropna())
                row.update({"difference": m, "ci_low": lo, "ci_high": hi, "seed_ci_low": t_lo,
                            "seed_ci_high": t_hi, "differs": bool(lo > 0 or hi < 0)})
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Notebook 04 (ablations) and 05 (profiling): their runs
# --------------------------------------------------------------------------------------------------

def run_and_score(study: Study, method: str, seeds: Sequence[int], run_root: str | Path, tag: str = "",
                  **train_kw) -> tuple[pd.DataFrame, dict]:
    """Train (or reuse) the run of ``method`` for every seed and score it on the study's pairs: the per-pair
    scores of all seeds, and seed -> ``TrainResult``. ``train_kw`` go to :func:`train_run` (``num_peers``,
    ``train_overrides``, ``progress``)."""
    out, results = [], {}
    for seed in seeds:
        res = train_run(study.sections, study.prep, study.archs, study.meta, method, seed, run_root, tag=tag,
                        **train_kw)
        results[seed] = res
        out.append(score_run(res, study.pairs, study.cfg.eval))
    return pd.concat(out, ignore_index=True), results


def size_weight_points(scores: pd.DataFrame, weights: Mapping[int, Sequence[float]],
                       params: Mapping[int, int]) -> pd.DataFrame:
    """Per seed and peer: the accuracy (mean over suites of the macro accuracy), the peer's parameter count
    and its final learned weight: the points of Figure 2c. ``weights``: seed -> final w; ``params``: peer
    (1-based) -> parameter count."""
    seeded = per_seed(scores, keys=("peer",)).groupby(["seed", "peer"])["accuracy"].mean().reset_index()
    seeded["params"] = seeded["peer"].map(params)
    seeded["weight"] = [weights[s][p - 1] for s, p in zip(seeded["seed"], seeded["peer"])]
    return seeded


def _masked_lm_loss(model, batch):
    """The masked-LM cross-entropy at the predicted positions only (what every method computes per model)."""
    import torch.nn.functional as F

    from dwml.model import predicted_logits, prediction_targets

    logits, _ = predicted_logits(model, batch)
    return F.cross_entropy(logits, prediction_targets(batch))


def peer_flops(archs: Sequence, meta: Mapping, cfg, names: Sequence[str], device, seed: int = 0) -> pd.DataFrame:
    """FLOPs of one micro-batch (``cfg``'s batch size x block size at its mask rate) for each model of ``archs``,
    counted on the masked-LM loss at the predicted positions and set against the closed form with the head on
    the labelled positions (:func:`dwml.profiling.flops_per_peer`: columns ``counted_flops``, ``ratio``, ...)."""
    import torch

    from dwml.model import build_peers
    from dwml.profiling import flops_per_peer

    torch.manual_seed(seed)
    models = [m.to(device) for m in build_peers(archs, meta)]
    return flops_per_peer(models, cfg.train.batch_size, cfg.data.block_size, cfg.data.mlm_probability,
                          loss_fn=_masked_lm_loss, head="labels", names=list(names))


def profile_method(label: str, method: str, archs: Sequence, meta: Mapping, cfg, prep, out_dir: str | Path,
                   per_peer_flops: Sequence[float], *, teacher=None, interval_s: float = 0.25):
    """Train ``method`` on ``archs`` at ``cfg``'s budget under a utilisation sampler: its Table 9 record
    (:func:`dwml.profiling.table9`; ``method`` under the name ``label``) and the sampled trace.

    The method's FLOPs of one micro-batch (all its models, a teacher's forward, exit heads, KL terms) are
    counted on a random batch before training; they and ``per_peer_flops`` (one micro-batch per peer, from
    :func:`peer_flops`) are scaled to the tokens the run trained on (:func:`dwml.profiling.run_flops`).
    DWML's outer steps come on top. ``teacher`` goes to a method that uses one. The record, the trace
    (``utilisation.csv``) and the run folder live in ``out_dir``; a finished record is read back instead."""
    import json
    import shutil

    import torch

    from dwml import profiling
    from dwml.config import Config
    from dwml.io import atomic_write_json
    from dwml.methods import make_method, method_class
    from dwml.model import build_peers
    from dwml.train import resolve_device, train

    out = Path(out_dir)
    record_path = out / "record.json"
    if record_path.is_file():
        return json.loads(record_path.read_text()), pd.read_csv(out / "utilisation.csv")
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    sections = cfg.to_dict()
    run_cfg = Config.from_dict({**sections, "train": {**sections["train"], "method": method}})
    device = resolve_device(run_cfg.train.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    torch.manual_seed(run_cfg.train.seed)
    models = [m.to(device) for m in build_peers(archs, meta)]
    use_teacher = teacher if method_class(method).uses_teacher else None
    strategy = make_method(run_cfg.train, models, use_teacher)
    batch = profiling.random_mlm_batch(len(prep.tokenizer), run_cfg.train.batch_size, run_cfg.data.block_size,
                                       run_cfg.data.mlm_probability, device)
    method_flops, _ = profiling.count_flops(lambda: strategy.loss(batch)[0].backward())
    for m in models:
        m.zero_grad(set_to_none=True)
    with profiling.UtilizationSampler(interval_s, device) as sampler:
        result = train(run_cfg, prep, models, run_dir, teacher=use_teacher, resume=False)
    # Counted on a full batch_size x block_size batch, scaled to the real tokens the run trained on
    # (with 'lines' packing a batch is shorter and part padding: see dwml.profiling.run_flops).
    batch_tokens, run_tokens = batch["input_ids"].numel(), result.summary["tokens"]
    summary = sampler.summary()
    record = {"method": label, "peers": len(archs), "device": device_name,
              "avg_util_pct": summary["mean_utilization"], "utilisation": summary["utilization_column"],
              "flops_per_peer": [profiling.run_flops(float(f), batch_tokens, run_tokens) for f in per_peer_flops],
              "method_flops": profiling.run_flops(float(method_flops), batch_tokens, run_tokens),
              "train_time_s": result.summary["elapsed_s"], "wall_time_s": sampler.duration_s,
              "tokens": result.summary["tokens"], "samples": summary["samples"]}
    sampler.save_csv(out / "utilisation.csv")
    atomic_write_json(record_path, record)
    return record, sampler.to_frame()
