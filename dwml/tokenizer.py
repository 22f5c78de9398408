"""The tokenizer: byte-level BPE with RoBERTa's special tokens, trained on a corpus's lines, saved so that
``AutoTokenizer`` under transformers 4.x and 5.x rebuilds the same pipeline, loaded with errors that name
the folder, and encoding that never makes a special token out of text."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

from dwml.corpus import DataError
from dwml.io import atomic_dir, atomic_write_json

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BOS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = range(5)


def train_tokenizer(lines: Iterable[str], vocab_size: int, out_dir: str | Path | None = None,
                    lowercase: bool = True, min_frequency: int = 2, model_max_length: int = 512):
    """Train a byte-level BPE tokenizer with RoBERTa's special tokens and save it to ``out_dir``.

    Design choices, each for a reason:
    - byte-level BPE as RoBERTa: no unknown characters, ever;
    - ``add_prefix_space=True``: an utterance's first word gets the same token as the word elsewhere
      (corpora of short utterances make the difference large);
    - the normaliser (lower-casing) and the ``<s> ... </s>`` post-processor live in ``tokenizer.json``,
      and the wrapper class is the generic fast tokenizer, so ``AutoTokenizer.from_pretrained(out_dir)``
      rebuilds exactly this pipeline (building ``RobertaTokenizerFast`` from vocab and merges files in
      transformers 5 silently drops pieces of it).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise DataError(f"vocab_size={vocab_size}: must hold the {len(SPECIAL_TOKENS)} special tokens and the "
                        f"256 byte-level symbols, i.e. be >= {len(SPECIAL_TOKENS) + 256}")
    tok = Tokenizer(models.BPE())
    norms = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", EOS_ID), ("<s>", BOS_ID),
                                                      trim_offsets=True, add_prefix_space=True)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>", model_max_length=model_max_length,
        clean_up_tokenization_spaces=False)
    if out_dir is not None:
        save_tokenizer(wrapped, out_dir)
    return wrapped


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    """``save_pretrained`` into a temporary folder, then rename it into place (never half a tokenizer); the
    config is the portable one of :func:`write_portable_tokenizer_config`."""
    with atomic_dir(out_dir) as tmp:
        save_tokenizer_files(tokenizer, tmp)


def save_tokenizer_files(tokenizer, folder: str | Path) -> None:
    """``save_pretrained`` into ``folder`` (beside a saved model, say), then make its config portable."""
    tokenizer.save_pretrained(str(folder))
    write_portable_tokenizer_config(folder)


PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
"""The class a saved ``tokenizer_config.json`` names. transformers 5 writes ``TokenizersBackend``, which 4.x
(the BabyLM 2025 pipeline pins 4.51.3) does not know; both know ``PreTrainedTokenizerFast`` (5.x maps it to
its backend) and build it from ``tokenizer.json`` as it is. ``RobertaTokenizerFast`` is no choice: 5.x
rebuilds it from the vocabulary and merges alone, without the lower-casing normaliser."""


LOAD_TIME_KEYS = ("is_local", "local_files_only")
"""Keys transformers 5 copies from ``from_pretrained``'s arguments into a saved config; left out."""


def byte_level_prefix_space(tokenizer_json: dict) -> bool | None:
    """The ``add_prefix_space`` of the byte-level pre-tokenizer in a parsed ``tokenizer.json`` (also inside a
    ``Sequence``); None when there is none."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    for p in [pre] + list(pre.get("pretokenizers") or []):
        if p.get("type") == "ByteLevel":
            return bool(p.get("add_prefix_space", True))
    return None


def write_portable_tokenizer_config(folder: str | Path) -> dict:
    """Rewrite ``folder/tokenizer_config.json`` (as ``save_pretrained`` left it) so that ``AutoTokenizer``
    under transformers 4.x and 5.x builds the same pipeline from ``tokenizer.json``: it names
    :data:`PORTABLE_TOKENIZER_CLASS`, and states the byte-level pre-tokenizer's ``add_prefix_space``, which
    4.x's fast tokenizer otherwise resets to its own default, False (``Rebecca was`` would become ``re becca
    Ġwas`` instead of ``Ġrebecca Ġwas``). Returns the config written (atomically)."""
    folder = Path(folder)
    cfg_file, tok_file = folder / "tokenizer_config.json", folder / "tokenizer.json"
    for f in (cfg_file, tok_file):
        if not f.is_file():
            raise DataError(f"{folder} holds no {f.name}: not a folder written by a fast tokenizer's save_pretrained")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        prefix_space = byte_level_prefix_space(json.loads(tok_file.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{folder}: tokenizer files not readable as JSON ({err})") from None
    cfg["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    for key in LOAD_TIME_KEYS:  # how the tokenizer was loaded here, not what it is
        cfg.pop(key, None)
    if prefix_space is not None:
        cfg["add_prefix_space"] = prefix_space
    atomic_write_json(cfg_file, cfg)
    return cfg


def load_tokenizer(path: str | Path):
    """Load a saved tokenizer folder with ``AutoTokenizer`` (no network: a local path only)."""
    from transformers import AutoTokenizer

    path = Path(path)
    file = path / "tokenizer.json"
    if not file.is_file():
        raise DataError(f"{path} holds no tokenizer.json (train one with dwml.tokenizer.train_tokenizer)")
    try:  # a truncated file fails deep in transformers ("Repo id must be in the form ..."): check it here
        json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        where = f"{file}:{err.lineno}:{err.colno}" if isinstance(err, json.JSONDecodeError) else str(file)
        raise DataError(f"{where}: not a valid tokenizer file (truncated or corrupt: {err}); delete the folder "
                        f"{path} to retrain the tokenizer") from None
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:
        raise DataError(f"{path}: the saved tokenizer cannot be loaded ({type(err).__name__}: {err}); delete "
                        "the folder to retrain it") from err


def normalize(tokenizer, text: str) -> str:
    """The tokenizer's own normalisation of ``text`` (what decoding the cache gives back)."""
    norm = tokenizer.backend_tokenizer.normalizer
    return norm.normalize_str(text) if norm is not None else text


def encode_text(tokenizer, lines: Sequence[str]) -> list[list[int]]:
    """The ids of each line with no special tokens added, and none made from the text either: the strings
    ``<s>``, ``</s>``, ``<pad>``, ``<mask>`` in a line are encoded as the characters they are
    (``split_special_tokens``), so an utterance never splits at a ``</s>`` someone typed, nor gets a
    ``<pad>`` the model cannot see."""
    return tokenizer(list(lines), add_special_tokens=False, split_special_tokens=True)["input_ids"]


def tokenizer_fingerprint(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]
