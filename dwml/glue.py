"""GLUE / SuperGLUE fine-tuning as the BabyLM 2024 pipeline does it: a saved peer gets a classification head
(``RobertaForSequenceClassification``), is fine-tuned on ``<task>.train.jsonl`` with the Hugging Face
``Trainer`` and scored on ``<task>.valid.jsonl``.

The data are BabyLM's ``glue_filtered`` files (``../shared/data/glue_filtered``; see its SOURCE.md for the
fields and label meanings), read by path. SST-2 has no BabyLM train file: it trains on the original GLUE
``glue_original/SST-2/train.tsv`` and is scored on ``sst2.valid.jsonl``.

Metrics, as BabyLM reports them: accuracy for every task, F1 of the positive class for MRPC and QQP, and
Matthews' correlation for CoLA. The majority-class accuracy of the validation set is reported beside
them: a model that learned nothing gets that, not 50%.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

# task -> (text fields in order, number of labels, metrics)
TASKS: dict[str, tuple[tuple[str, ...], int, tuple[str, ...]]] = {
    "cola": (("sentence",), 2, ("accuracy", "mcc")),
    "sst2": (("sentence",), 2, ("accuracy",)),
    "mrpc": (("sentence1", "sentence2"), 2, ("accuracy", "f1")),
    "qqp": (("question1", "question2"), 2, ("accuracy", "f1")),
    "mnli": (("premise", "hypothesis"), 3, ("accuracy",)),
    "qnli": (("question", "sentence"), 2, ("accuracy",)),
    "rte": (("sentence1", "sentence2"), 2, ("accuracy",)),
    "boolq": (("question", "passage"), 2, ("accuracy",)),
    "multirc": (("paragraph", "question", "answer"), 2, ("accuracy",)),
    "wsc": (("text", "span1_text", "span2_text"), 2, ("accuracy",)),
}
SMALL_TASKS = ("cola", "sst2", "mrpc", "rte", "wsc")
"""The CPU default: the tasks whose train files are small (BabyLM's full set adds mnli, qqp, boolq, multirc)."""


class GlueDataError(ValueError):
    """A GLUE file is missing or holds a malformed record (the message names the file and line)."""


@dataclass
class GlueConfig:
    """Fine-tuning hyperparameters (BabyLM 2024's ``finetune_model.sh`` uses lr 5e-5, batch 64, 10 epochs,
    max length 128; the defaults here are the same except the epochs, sized for a CPU)."""

    tasks: tuple[str, ...] = SMALL_TASKS
    """Tasks to fine-tune on, from :data:`TASKS`."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate (linear decay after ``warmup_ratio`` of the steps)."""
    batch_size: int = 64
    """Training examples per step (and per evaluation batch)."""
    num_epochs: float = 3.0
    """Passes over the training file."""
    max_length: int = 128
    """Tokens per example after truncation (pairs are truncated longest-first)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Fraction of the steps spent warming up."""
    max_train_examples: int = 0
    """Use a seeded subsample of this many training examples (0: all); for quick CPU runs and tests."""
    seed: int = 0
    """Seed of the classification head's initialisation, the data order and the subsample."""

    def __post_init__(self):
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"glue.tasks: unknown task(s) {unknown}; known: {sorted(TASKS)}")
        for name in ("learning_rate", "num_epochs", "batch_size", "max_length"):
            if not getattr(self, name) > 0:
                raise ValueError(f"glue.{name}={getattr(self, name)!r}: must be > 0")


# ----------------------------------------------------------------------------------------------------
# data


def task_files(root: str | Path, task: str) -> tuple[Path, Path]:
    """(train file, valid file) of a task under ``root`` (the ``glue_filtered`` folder)."""
    if task not in TASKS:
        raise GlueDataError(f"unknown GLUE task {task!r}; known: {sorted(TASKS)}")
    root = Path(root)
    train = root / "glue_original" / "SST-2" / "train.tsv" if task == "sst2" else root / f"{task}.train.jsonl"
    return train, root / f"{task}.valid.jsonl"


def load_examples(path: str | Path, task: str) -> list[tuple[tuple[str, ...], int]]:
    """``[(texts, label)]`` from a BabyLM ``.jsonl`` file or GLUE's SST-2 ``.tsv``; a malformed record raises
    :class:`GlueDataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise GlueDataError(f"{path}: GLUE file not found (task {task!r})")
    fields, num_labels, _ = TASKS[task]
    out = []
    with open(path, encoding="utf-8") as fh:
        lines = list(fh)
    if path.suffix == ".tsv":  # GLUE SST-2: a header "sentence<TAB>label"
        if not lines or lines[0].rstrip("\n").split("\t") != ["sentence", "label"]:
            raise GlueDataError(f"{path}:1: expected the header 'sentence<TAB>label'")
        for n, line in enumerate(lines[1:], start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or parts[1] not in ("0", "1"):
                raise GlueDataError(f"{path}:{n}: expected '<sentence><TAB><0|1>', got {line[:80]!r}")
            out.append(((parts[0],), int(parts[1])))
        return out
    from dwml.suites import read_jsonl

    for n, rec in read_jsonl(lines, str(path), GlueDataError):
        missing = [f for f in fields + ("label",) if f not in rec]
        if missing:
            raise GlueDataError(f"{path}:{n}: record lacks field(s) {missing} (task {task!r} needs {list(fields)})")
        label = rec["label"]
        if not isinstance(label, int) or not 0 <= label < num_labels:
            raise GlueDataError(f"{path}:{n}: label {label!r} is not an int in [0, {num_labels})")
        out.append((tuple(str(rec[f]) for f in fields), label))
    if not out:
        raise GlueDataError(f"{path}: no records")
    return out


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path if it holds a saved model with its tokenizer (``config.json`` and a
    ``tokenizer.json``); else :class:`GlueDataError` naming the folder and what it lacks (instead of
    transformers' "Repo id must be in the form ..." for a path that does not exist)."""
    path = Path(model_dir)
    if not path.is_dir():
        raise GlueDataError(f"model_dir {path}: no such folder (give a saved peer, e.g. a run's peer_0/)")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        missing.append("tokenizer.json")
    if missing:
        raise GlueDataError(f"model_dir {path}: lacks {missing}; not a folder written by save_pretrained "
                            "with its tokenizer (e.g. a run's peer_0/)")
    return path


def check_task_files(data_root: str | Path, tasks: Sequence[str]) -> None:
    """Raise :class:`GlueDataError` listing every missing train or validation file of ``tasks`` (with its
    path), before anything is fine-tuned."""
    missing = [f"{task}: {path}" for task in tasks for path in task_files(data_root, task) if not path.is_file()]
    if missing:
        raise GlueDataError(f"GLUE data under {data_root}: {len(missing)} file(s) missing: " + "; ".join(missing))


def _pair(texts: tuple[str, ...]) -> tuple[str, str | None]:
    """Up to two segments for the tokenizer: a third field (MultiRC's answer, WSC's second span) joins the
    second segment, as the BabyLM pipeline concatenates them."""
    if len(texts) == 1:
        return texts[0], None
    return texts[0], " ".join(texts[1:])


# ----------------------------------------------------------------------------------------------------
# metrics


def compute_metrics(task: str, predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """The task's BabyLM metrics (accuracy; F1 for MRPC/QQP; Matthews' correlation for CoLA), in [0, 1]."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    out = {"accuracy": float(accuracy_score(labels, predictions))}
    metrics = TASKS[task][2]
    if "f1" in metrics:
        out["f1"] = float(f1_score(labels, predictions))
    if "mcc" in metrics:
        out["mcc"] = float(matthews_corrcoef(labels, predictions))
    return out


def majority_accuracy(labels: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent label."""
    labels = list(labels)
    return max(labels.count(v) for v in set(labels)) / len(labels)


# ----------------------------------------------------------------------------------------------------
# fine-tuning


class _Encoded:
    """A list of tokenised examples as a torch-style dataset for the Trainer."""

    def __init__(self, tokenizer, examples, max_length: int):
        firsts, seconds = zip(*(_pair(t) for t, _ in examples))
        kwargs = dict(truncation=True, max_length=max_length, split_special_tokens=True)  # '</s>' in a text is text
        if any(s is not None for s in seconds):
            enc = tokenizer(list(firsts), [s or "" for s in seconds], **kwargs)
        else:
            enc = tokenizer(list(firsts), **kwargs)
        self.items = [{"input_ids": ids, "attention_mask": am, "labels": lab}
                      for ids, am, (_, lab) in zip(enc["input_ids"], enc["attention_mask"], examples)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def finetune(model_dir: str | Path, task: str, data_root: str | Path, output_dir: str | Path,
             cfg: GlueConfig | None = None, progress: bool = True) -> dict:
    """Fine-tune the masked LM saved in ``model_dir`` (``save_pretrained`` with its tokenizer) on ``task``;
    returns its validation metrics, the majority-class accuracy, sizes and the time taken.

    The encoder's weights come from the saved model; the classification head is new (seeded by
    ``cfg.seed``). Nothing is saved but the metrics (``output_dir/<task>.json``, written atomically)."""
    import random
    import time

    import numpy as np
    import torch
    from transformers import (AutoTokenizer, DataCollatorWithPadding, RobertaForSequenceClassification, Trainer,
                              TrainingArguments)
    from transformers.utils import logging as hf_logging

    from dwml.io import atomic_write_json
    from dwml.model import quiet_library_bars

    cfg = cfg or GlueConfig()
    model_dir = check_model_dir(model_dir)
    train_file, valid_file = task_files(data_root, task)
    train_ex, valid_ex = load_examples(train_file, task), load_examples(valid_file, task)
    if cfg.max_train_examples and len(train_ex) > cfg.max_train_examples:
        train_ex = random.Random(cfg.seed).sample(train_ex, cfg.max_train_examples)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    max_len = cfg.max_length
    positions = getattr(__import__("transformers").AutoConfig.from_pretrained(str(model_dir)), "max_position_embeddings", 514)
    max_len = min(max_len, positions - 2)  # RoBERTa's positions start after the padding index
    torch.manual_seed(cfg.seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights newly initialised" is the point here, not a warning
    quiet_library_bars()  # and no "Loading weights" bar
    try:
        model = RobertaForSequenceClassification.from_pretrained(str(model_dir), num_labels=TASKS[task][1])
    finally:
        hf_logging.set_verbosity(verbosity)
    args = TrainingArguments(
        output_dir=str(Path(output_dir) / f"{task}_trainer"), learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        num_train_epochs=cfg.num_epochs, weight_decay=cfg.weight_decay, warmup_steps=float(cfg.warmup_ratio),  # a float < 1 is a ratio (transformers 5)
        lr_scheduler_type="linear", seed=cfg.seed, data_seed=cfg.seed, save_strategy="no", eval_strategy="no",
        logging_strategy="epoch", report_to=[], disable_tqdm=not progress, use_cpu=not torch.cuda.is_available())
    trainer = Trainer(model=model, args=args, train_dataset=_Encoded(tokenizer, train_ex, max_len),
                      data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.perf_counter()
    trainer.train()
    pred = trainer.predict(_Encoded(tokenizer, valid_ex, max_len))
    elapsed = time.perf_counter() - t0
    labels = [lab for _, lab in valid_ex]
    result = {"task": task, "model_dir": str(model_dir), **compute_metrics(task, np.argmax(pred.predictions, -1), labels),
              "majority_accuracy": majority_accuracy(labels), "n_train": len(train_ex), "n_valid": len(valid_ex),
              "seconds": elapsed, "config": asdict(cfg)}
    atomic_write_json(Path(output_dir) / f"{task}.json", result)
    return result


def finetune_all(model_dir: str | Path, data_root: str | Path, output_dir: str | Path, cfg: GlueConfig | None = None,
                 progress: bool = True):
    """:func:`finetune` on each of ``cfg.tasks``; one row per task as a DataFrame. The model folder and
    every task's files are checked first: a missing one stops the call before any fine-tuning."""
    import pandas as pd

    cfg = cfg or GlueConfig()
    check_model_dir(model_dir)
    check_task_files(data_root, cfg.tasks)
    return pd.DataFrame([finetune(model_dir, t, data_root, output_dir, cfg, progress) for t in cfg.tasks])
