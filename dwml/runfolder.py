"""A run folder's format: the files the loop writes, the result it returns, and reading both back.

A run folder holds ``config.json``, ``metrics.jsonl`` (one line per logged step and per evaluation),
``checkpoint.pt`` (``dwml.checkpoint``), and at the end ``peer_<i>/`` (``save_pretrained`` beside the
tokenizer), ``summary.json`` and ``DONE``: :func:`write_finished_run` writes those three,
:func:`load_result` reads a finished folder back as the :class:`TrainResult` the loop returned;
:class:`MetricsLog` writes the metrics and :func:`read_metrics` reads them. This is all that code outside the loop needs of a run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from dwml.checkpoint import CheckpointError, read_json_file
from dwml.tokenizer import save_tokenizer_files
from dwml.io import atomic_write_json, project_path

CHECKPOINT, METRICS, CONFIG, SUMMARY, DONE = "checkpoint.pt", "metrics.jsonl", "config.json", "summary.json", "DONE"
PRECISION = "precision.json"  # train.mixed_precision as the run resolved it, and why (dwml.precision)


@dataclass
class TrainResult:
    run_dir: Path
    weights: list[float] | None
    history: "object"  # pandas.DataFrame of metrics.jsonl
    peer_dirs: list[Path] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    done: bool = False


def read_metrics(run_dir: str | Path):
    """metrics.jsonl as a DataFrame (one row a line; ``kind`` is 'train' or 'eval')."""
    import pandas as pd

    path = Path(run_dir) / METRICS
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for k, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as err:
                raise ValueError(f"{path}:{k}: not a JSON line ({err}); the file was damaged after it was "
                                 "written") from None
    return pd.DataFrame(rows)


class MetricsLog:
    """``metrics.jsonl`` as the loop writes it: append-only JSON lines, flushed one by one; the checkpoint records
    its length (:meth:`size`) so that a resumed run drops the lines after it."""

    def __init__(self, path: Path, write: bool = True):
        self.path = path
        self.fh = open(path, "a", encoding="utf-8") if write else None  # ranks other than 0 write nothing

    def write(self, row: dict) -> None:
        if self.fh is not None:
            self.fh.write(json.dumps(row) + "\n")
            self.fh.flush()

    def size(self) -> int:
        if self.fh is None:
            return 0
        self.fh.flush()
        return self.path.stat().st_size

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def weights_list(weights) -> list[float] | None:
    """A method's peer weights w (a tensor, or None for methods without them) as a list of floats."""
    return None if weights is None else weights.detach().cpu().tolist()


def write_finished_run(run_dir: Path, models: Sequence, tokenizer, method_name: str, weights: list[float] | None,
                       state: dict) -> TrainResult:
    """Write a run's final files: each peer in ``peer_<i>/`` beside the tokenizer, ``summary.json`` (from the
    loop's ``state`` and the metrics' evaluations), then ``DONE`` last; returns the finished result."""
    import torch

    peer_dirs = []
    for i, m in enumerate(models):
        out = run_dir / f"peer_{i}"
        m.save_pretrained(out)
        save_tokenizer_files(tokenizer, out)  # a config that transformers 4.x loads too (dwml.data)
        peer_dirs.append(out)
    history = read_metrics(run_dir)
    evals = history[history["kind"] == "eval"]
    summary = {"method": method_name, "steps": state["step"], "tokens": state["tokens"],
               "stopped_early": state["stopped_early"], "elapsed_s": state["elapsed"], "weights": weights,
               "final_dev_ce": evals["dev_ce"].iloc[-1], "final_dev_ensemble": evals["dev_ensemble"].iloc[-1],
               "initial_dev_ce": evals["dev_ce"].iloc[0], "best_dev_ensemble": state["best"],
               "threads": torch.get_num_threads(),
               "peer_dirs": [str(d) for d in peer_dirs]}
    atomic_write_json(run_dir / SUMMARY, summary)
    (run_dir / DONE).write_text("done\n")
    return TrainResult(run_dir, summary["weights"], history, peer_dirs, summary, done=True)


def load_result(run_dir: str | Path) -> TrainResult:
    """The result of a finished run folder (DONE), without training."""
    run_dir = project_path(run_dir)
    if not (run_dir / DONE).is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no {DONE} marker)")
    summary = read_json_file(run_dir / SUMMARY, "the finished run's summary")
    if not isinstance(summary, dict) or not {"weights", "peer_dirs"} <= set(summary):
        raise CheckpointError(f"{run_dir / SUMMARY}: not a run summary (a JSON object with 'weights' and 'peer_dirs')")
    return TrainResult(run_dir, summary["weights"], read_metrics(run_dir),
                       [Path(d) for d in summary["peer_dirs"]], summary, done=True)
