"""The fixed teacher of the methods that learn from one (KD, teacher-supervised DWML): loaded from a saved
model folder and checked to read the peers' token ids as the peers do. Errors name ``train.teacher_dir``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import AutoModelForMaskedLM

from dwml.config import ConfigError
from dwml.corpus import DataError
from dwml.io import project_path
from dwml.tokenizer import load_tokenizer


def load_teacher(teacher_dir: str, device: torch.device, corpus=None) -> nn.Module:
    """The fixed teacher saved in ``teacher_dir``; with ``corpus``, its tokenizer is first checked to be the
    peers' (:func:`check_teacher_tokenizer`). Errors name the setting and the folder."""
    path = project_path(teacher_dir) if teacher_dir else None
    if path is None or not (path / "config.json").is_file():
        raise ConfigError(f"train.teacher_dir={teacher_dir!r}: no saved model there (a folder written by "
                          "save_pretrained, e.g. the peer_0 of a finished 'mlm' run)")
    if corpus is not None:
        check_teacher_tokenizer(path, corpus)
    try:
        model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=True)
    except Exception as err:  # a truncated model.safetensors, a config of another model type, ...
        raise ConfigError(f"train.teacher_dir={teacher_dir!r}: the model in {path} cannot be loaded "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})") from None
    return model.to(device).eval().requires_grad_(False)


def check_teacher_tokenizer(teacher_path: Path, corpus) -> None:
    """A teacher must read the peers' ids as the peers do: its folder's tokenizer must map every token to the
    id the peers' tokenizer gives it (a tokenizer of the same size trained on other text shares the size,
    not the meaning of the ids). Raises :class:`ConfigError` naming both folders."""
    theirs_dir = getattr(corpus, "tokenizer_dir", "the corpus's tokenizer")
    if not (teacher_path / "tokenizer.json").is_file():
        raise ConfigError(f"train.teacher_dir={str(teacher_path)!r}: no tokenizer.json there, so nothing shows "
                          f"that the teacher shares the peers' tokenizer ({theirs_dir}); save that tokenizer "
                          "beside the teacher (a finished run's peer_<i> folder has it)")
    try:
        vocab = load_tokenizer(teacher_path).get_vocab()
    except DataError as err:
        raise ConfigError(f"train.teacher_dir={str(teacher_path)!r}: {err}") from None
    ours = corpus.tokenizer.get_vocab()
    if vocab != ours:
        same = sum(1 for tok, i in ours.items() if vocab.get(tok) == i)
        raise ConfigError(f"train.teacher_dir={str(teacher_path)!r}: the teacher's tokenizer is not the peers' "
                          f"({theirs_dir}): {len(vocab)} and {len(ours)} tokens, only {same} of the peers' ids "
                          "mean the same token in both; train the teacher on this corpus's tokenizer")


def check_teacher_vocab(teacher: nn.Module, models: Sequence[nn.Module], teacher_dir: str) -> None:
    """The teacher's output layer must have the peers' vocabulary size (the KL compares their
    distributions id by id); else :class:`ConfigError` naming the folder and both sizes."""
    t_vocab = getattr(getattr(teacher, "config", None), "vocab_size", None)
    p_vocab = models[0].config.vocab_size if models else None
    if t_vocab is not None and p_vocab is not None and t_vocab != p_vocab:
        where = f"train.teacher_dir={teacher_dir!r}" if teacher_dir else "the teacher given"
        raise ConfigError(f"{where}: the teacher has vocab_size {t_vocab}, the peers {p_vocab}; a teacher must "
                          "share the peers' tokenizer and vocabulary")
