"""Runs: the folder a run of a method and seed lives in, training one run (in this process or under torchrun),
its learning curve, and training every method over seeds.

A run is one call of ``dwml.train.train`` in ``<run_root>/<method>[_<tag>]_seed<seed>`` (:func:`run_folder`,
parsed back by :func:`run_seed`); a finished run folder (``DONE``) is reused, so a notebook that is run again
only redraws, and the DWML run of ``02_bilevel_training`` is the same run that ``03_baselines`` scores. Every
method trains the peers of ``01_peer_search`` (``peers.json``, :func:`peers_for`), except a single-model
method (``mlm``), which trains the teacher-sized model alone: the paper's single-model baseline, and the
teacher that ``kd`` and ``kd_dwml`` learn from (never a downloaded checkpoint).
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

from dwml.config import Config, ConfigError
from dwml.distributed import env_ranks
from dwml.evaluate import evaluate_model
from dwml.io import atomic_write_json, atomic_write_text, project_path
from dwml.methods import method_class, teacher_method, training_order
from dwml.model import build_peers
from dwml.search import PeerArch, ensure_peers
from dwml.tokenizer import tokenizer_fingerprint
from dwml.runfolder import TrainResult, load_result, read_metrics
from dwml.train import total_steps, train

SCORES = "scores.csv"
"""A run's per-pair scores (:func:`dwml.scoring.score_run`), in its folder; :func:`learning_curve` reads them."""
CURVE = "curve.csv"
_SEED = re.compile(r"seed(-?\d+)$")


def run_name(method: str, seed: int, tag: str = "") -> str:
    """The folder name of a run: ``<method>[_<tag>]_seed<seed>`` (the tag tells an ablation's runs apart)."""
    return f"{method}{'_' + tag if tag else ''}_seed{seed}"


def run_folder(run_root: str | Path, method: str, seed: int, tag: str = "") -> Path:
    """The folder of the run of ``method``, ``seed`` and ``tag`` under ``run_root`` (:func:`run_name`)."""
    return Path(run_root) / run_name(method, seed, tag)


def run_seed(run_dir: str | Path) -> int:
    """The seed of a run folder named by :func:`run_name`; any other name raises, naming it."""
    m = _SEED.search(Path(run_dir).name)
    if m is None:
        raise ValueError(f"{run_dir}: not a run folder name (<method>[_<tag>]_seed<seed>)")
    return int(m[1])


def peers_for(cfg: Config, prep, run_root: str | Path) -> tuple[list, dict]:
    """The peers of ``01_peer_search`` for this config and corpus (``<run_root>/peers.json``, searched and saved
    there first when missing; a file searched under other settings raises): ``(archs, meta)``."""
    return ensure_peers(project_path(run_root) / "peers.json", cfg.search, len(prep.tokenizer),
                        cfg.data.block_size + 2, data_vocab_size=cfg.data.vocab_size,
                        tokenizer=tokenizer_fingerprint(prep.tokenizer))


@dataclass(frozen=True)
class StudySource:
    """What a study is set up from (:func:`dwml.studies.study.setup`'s arguments): the profile's sections, the
    run root and the suites. Plain data, so it pickles to any worker of ``dwml.executor``."""

    data: Mapping
    search: Mapping
    train: Mapping
    run_root: str
    suites: tuple = ()
    max_pairs_per_task: int = 0
    suite_dirs: Mapping | None = None
    skip_tasks: Mapping | None = None

    def __post_init__(self):
        object.__setattr__(self, "run_root", str(self.run_root))
        object.__setattr__(self, "suites", tuple(self.suites))

    def key(self) -> str:
        """A text that equal sources share (a worker builds each study once)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)


@dataclass
class Study:
    """What a study starts from (:func:`dwml.studies.study.setup`): the profile's sections, config, corpus,
    peers and pairs, the folder each suite was read from (``suite_dirs``), and the source it was built from."""

    sections: dict
    cfg: object
    prep: object
    archs: list
    meta: dict
    pairs: dict
    suite_dirs: dict | None = None
    source: StudySource | None = None


def teacher_arch(meta: Mapping):
    """The teacher of a saved search (``meta['teacher']``) as a ``PeerArch``: what ``mlm`` trains."""
    t = meta["teacher"]
    return PeerArch(num_layers=t["layers"], num_heads=t["heads"], hidden_size=t["hidden"],
                    intermediate_size=4 * t["hidden"], params=t["params"], target=t["params"], rel_error=0.0,
                    method="teacher")


def run_archs(method: str, archs: Sequence, meta: Mapping, num_peers: int | None = None) -> list:
    """The models a run of ``method`` trains: the teacher-sized one for a single-model method, else the first
    ``num_peers`` (all by default) of the searched peers."""
    return [teacher_arch(meta)] if method_class(method).single_model else list(archs)[: num_peers or len(archs)]


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
    if train_overrides and not tag:
        raise ValueError(f"train_overrides={dict(train_overrides)} need a tag, or the run folder would be shared "
                         "with the profile's run of the same method and seed")
    train_cfg = {**sections.get("train", {}), **(train_overrides or {}), "method": method, "seed": seed}
    if method_class(method).uses_teacher:
        if not teacher_dir:
            raise ValueError(f"method {method!r} needs teacher_dir (a finished 'mlm' run's peer_0)")
        train_cfg["teacher_dir"] = str(teacher_dir)
    cfg = Config.from_dict(data=sections.get("data", {}), search=sections.get("search", {}), train=train_cfg)
    run_dir = Path(run_dir) if run_dir is not None else run_folder(run_root, method, seed, tag)
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


def _curve(cfg, prep, models, run_dir: Path, steps: Sequence[int], pairs: Mapping, eval_cfg, progress: bool) -> None:
    """Train up to each of ``steps`` in turn, scoring every peer there; append the rows to ``curve.csv``."""
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
    frames = []
    for d in run_dirs:
        d = Path(d)
        seed = run_seed(d)
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


def train_methods(study: Study, methods: Sequence[str], seeds: Sequence[int], run_root: str | Path,
                  **train_kw) -> dict:
    """Train (or reuse) the run of every method of ``methods`` for every seed; (method, seed) -> ``TrainResult``.

    In each seed the teacher's run comes first (:func:`dwml.methods.training_order`: the single-model run,
    trained even when only the methods that learn from it are listed) and its first model is the teacher
    of the methods that use one. ``train_kw`` go to :func:`train_run` (``curve_steps``, ``curve_pairs``,
    ``eval_cfg``, ``progress``)."""
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


def model_params(methods: Sequence[str], archs: Sequence, meta: Mapping) -> dict[tuple[str, int], int]:
    """(method, model number from 1) -> parameter count, over the models each method trains (:func:`run_archs`)."""
    return {(m, i + 1): a.params for m in methods for i, a in enumerate(run_archs(m, archs, meta))}
