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
    from dwml.model import build_peers
    from dwml.train import train

    if train_overrides and not tag:
        raise ValueError(f"train_overrides={dict(train_overrides)} need a tag, or the run folder would be shared "
                         "with the profile's run of the same method and seed")
    train_cfg = {**sections.get("train", {}), **(train_overrides or {}), "method": method, "seed": seed}
    if method in ("kd", "kd_dwml"):
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
    chosen = [teacher_arch(meta)] if method == "mlm" else list(archs)[: num_peers or len(archs)]
    torch.manual_seed(seed)
    models = build_peers(chosen, meta)
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
    """What notebooks 03 and 04 start from: the profile's sections, config, corpus, peers and pairs."""

    sections: dict
    cfg: object
    prep: object
    archs: list
    meta: dict
    pairs: dict


def setup(data: Mapping, search: Mapping, train: Mapping, run_root: str | Path, suites: Sequence[str],
          max_pairs_per_task: int = 0) -> Study:
    """Config from the profile's sections, the prepared corpus, the peers of ``01_peer_search`` (searched
    here if it has not run) and the minimal-pair suites."""
    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.io import project_path
    from dwml.search import ensure_peers

    sections = {"data": dict(data), "search": dict(search), "train": dict(train)}
    cfg = Config.from_dict(**sections)
    prep = prepare_corpus(cfg.data)
    archs, meta = ensure_peers(project_path(run_root) / "peers.json", cfg.search, len(prep.tokenizer),
                               cfg.data.block_size + 2)
    pairs = load_suites_for(suites, corpus_dir=prep.corpus_dir, max_pairs_per_task=max_pairs_per_task)
    return Study(sections, cfg, prep, archs, meta, pairs)


def load_suites_for(names: Sequence[str], corpus_dir: str | Path | None = None, data_root: str | Path | None = None,
                    max_pairs_per_task: int = 0, seed: int = 0) -> dict:
    """The minimal-pair suites by name: 'synthetic' (the embedded corpus's pairs) or 'blimp', 'supplement',
    'ewok' (from ``data_root``); each subsampled to ``max_pairs_per_task`` per task when > 0."""
    from dwml.evaluate import load_suites, load_synthetic, subsample

    suites = {}
    real = [n for n in names if n != "synthetic"]
    if "synthetic" in names:
        if corpus_dir is None:
            raise ValueError("suite 'synthetic' needs corpus_dir (the prepared synthetic corpus)")
        suites["synthetic"] = load_synthetic(corpus_dir)
    if real:
        suites.update(load_suites(data_root, real))
    return {k: subsample(v, max_pairs_per_task, seed) if max_pairs_per_task else v for k, v in suites.items()}


def score_run(result, suites: Mapping, eval_cfg=None, progress: bool = False) -> pd.DataFrame:
    """Per-pair scores of every peer of a finished run, cached in its folder (rescored when the suites differ)."""
    from dwml.evaluate import evaluate_model
    from dwml.io import atomic_write_text

    path = Path(result.run_dir) / SCORES
    want = {s: len(p) * len(result.peer_dirs) for s, p in suites.items()}
    if path.is_file():
        cached = pd.read_csv(path)
        if {s: int(n) for s, n in cached.groupby("suite").size().items()} == want:
            return cached
    frames = []
    for i, d in enumerate(result.peer_dirs):
        df = evaluate_model(d, suites=suites, cfg=eval_cfg, progress=progress)
        df["peer"] = i + 1
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["method"], out["seed"] = result.summary["method"], int(Path(result.run_dir).name.rsplit("seed", 1)[1])
    atomic_write_text(path, out.to_csv(index=False))
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval over seeds; low = high = NaN for a single value."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if v.size < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


def r_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of correlation coefficients over seeds, through Fisher's z = atanh(r): the t-interval
    of the mean z, mapped back with tanh, so that the interval stays inside (-1, 1) (a t-interval on R
    itself does not: R's spread shrinks near +-1). |r| = 1 is clipped to 1 - 1e-12."""
    z = np.arctanh(np.clip(np.asarray(values, dtype=float), -1 + 1e-12, 1 - 1e-12))
    m, lo, hi = t_interval(z, level)
    return float(np.tanh(m)), float(np.tanh(lo)), float(np.tanh(hi))


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
    t = published("table2")
    suite = {"blimp_filtered": "blimp", "blimp_supplement": "supplement", "ewok_filtered": "ewok"}
    method = {"RoBERTa-base-125M": "mlm", "SD": "sd", "KD": "kd", "DML": "dml", "KD_DWML": "kd_dwml", "DWML": "dwml"}
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
