"""Notebook 05's study: what each method costs at the same budget: FLOPs per peer (counted, against the closed
form), the device's utilisation sampled during training, and the training time (the paper's Table 9, Figure 4).
The measuring tools (the sampler, FLOP counting, peaks) are :mod:`dwml.profiling`'s."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from dwml import profiling
from dwml.config import Config
from dwml.data import prepare_corpus
from dwml.io import atomic_write_json, project_path
from dwml.methods import METHODS, make_method, method_class, single_model_method
from dwml.model import build_peers, predicted_logits, prediction_targets
from dwml.runs import peers_for, teacher_arch
from dwml.device import resolve_device
from dwml.teacher import load_teacher
from dwml.train import train
from dwml.utilization import UtilizationSampler


@dataclass
class CostStudy:
    """What notebook 05 measures with: the budget's config, the device, the corpus, the peers and the teacher's
    shape (the single-model baseline's)."""

    cfg: Config
    device: torch.device
    device_name: str
    prep: object
    archs: list
    meta: dict
    teacher_arch: object


def setup(data: Mapping, search: Mapping, train: Mapping, run_root: str | Path, steps: int, seed: int) -> CostStudy:
    """The same budget for every method: ``steps`` optimizer steps, one evaluation at the end, no early
    stopping (a method that stopped early would look cheap), no checkpoint until the end; the peers of
    ``01_peer_search`` (:func:`dwml.runs.peers_for`)."""
    budget = {**train, "num_epochs": steps, "max_tokens": 0, "eval_interval": steps, "checkpoint_interval": steps,
              "enable_early_stopping": False, "seed": seed}
    cfg = Config.from_dict(data=data, search=search, train=budget)
    device = resolve_device(cfg.train.device)
    prep = prepare_corpus(cfg.data)
    archs, meta = peers_for(cfg, prep, run_root)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return CostStudy(cfg, device, name, prep, archs, meta, teacher_arch(meta))


def make_teacher(study: CostStudy, methods: Sequence[str], teacher_dir: str = ""):
    """The teacher of the methods of ``methods`` that use one: ``teacher_dir``'s saved model if given, else a
    freshly initialised model of the teacher's shape (its weights do not change what a step costs); None
    when no method uses one."""
    if not any(method_class(m).uses_teacher for m in methods):
        return None
    torch.manual_seed(1)
    if teacher_dir:
        return load_teacher(teacher_dir, study.device)
    return build_peers([study.teacher_arch], study.meta)[0].to(study.device).eval().requires_grad_(False)


def measure_methods(study: CostStudy, methods: Sequence[str], peers_flops: pd.DataFrame, baseline_flops: pd.DataFrame,
                    out_root: str | Path, teacher=None, interval_s: float = 0.25) -> tuple[list[dict], dict]:
    """:func:`measure_cost` of the single-model baseline (label ``baseline``: the single-model method on the
    teacher's shape) and of every method of ``methods`` on the peers, each in ``<out_root>/<label>``; the
    records and label -> sampled trace. One line per method as it finishes."""
    single = single_model_method(list(METHODS))
    records, traces = [], {}
    for label in ["baseline"] + list(methods):
        method, models, flops = ((single, [study.teacher_arch], baseline_flops) if label == "baseline"
                                 else (label, study.archs, peers_flops))
        record, traces[label] = measure_cost(label, method, models, study.meta, study.cfg, study.prep,
                                             project_path(out_root) / label, flops["counted_flops"], teacher=teacher,
                                             interval_s=interval_s)
        records.append(record)
        print(f"{label:>8}: {record['train_time_s']:.1f} s, mean utilisation {record['avg_util_pct']:.1f}% "
              f"({record['utilisation']}, {record['samples']} samples)")
    return records, traces


def _masked_lm_loss(model, batch):
    """The masked-LM cross-entropy at the predicted positions only (what every method computes per model)."""
    logits, _ = predicted_logits(model, batch)
    return F.cross_entropy(logits, prediction_targets(batch))


def peer_flops(archs: Sequence, meta: Mapping, cfg, names: Sequence[str], device, seed: int = 0) -> pd.DataFrame:
    """FLOPs of one micro-batch (``cfg``'s batch size x block size at its mask rate) for each model of ``archs``,
    counted on the masked-LM loss at the predicted positions and set against the closed form with the head on
    the labelled positions (:func:`dwml.profiling.flops_per_peer`: columns ``counted_flops``, ``ratio``, ...)."""
    torch.manual_seed(seed)
    models = [m.to(device) for m in build_peers(archs, meta)]
    return profiling.flops_per_peer(models, cfg.train.batch_size, cfg.data.block_size, cfg.data.mlm_probability,
                          loss_fn=_masked_lm_loss, head="labels", names=list(names))


def measure_cost(label: str, method: str, archs: Sequence, meta: Mapping, cfg, prep, out_dir: str | Path,
                   per_peer_flops: Sequence[float], *, teacher=None, interval_s: float = 0.25):
    """Train ``method`` on ``archs`` at ``cfg``'s budget under a utilisation sampler: its Table 9 record
    (:func:`dwml.profiling.table9`; ``method`` under the name ``label``) and the sampled trace.

    The method's FLOPs of one micro-batch (all its models, a teacher's forward, exit heads, KL terms) are
    counted on a random batch before training; they and ``per_peer_flops`` (one micro-batch per peer, from
    :func:`peer_flops`) are scaled to the tokens the run trained on (:func:`dwml.profiling.run_flops`).
    DWML's outer steps come on top. ``teacher`` goes to a method that uses one. The record, the trace
    (``utilisation.csv``) and the run folder live in ``out_dir``; a finished record is read back instead."""
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
    with UtilizationSampler(interval_s, device) as sampler:
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
