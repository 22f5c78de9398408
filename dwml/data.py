"""Corpus -> tokenizer -> token cache -> masked-LM batches.

The published code for this paper wrote its token file as printed text and read it back as binary
``uint16``, so its models trained on noise. Every step here is therefore checked by a test that decodes
what was stored: the cache decodes back to the normalised corpus, line for line.

Flow::

    corpus folder (BabyLM layout: *.train / *.dev / *.test, one utterance a line)
      -> read_corpus_files (UTF-8, cleaned)  -> train_tokenizer (byte-level BPE, saved for AutoTokenizer)
      -> build_token_cache (numpy memmap + JSON sidecar, atomic) -> MLMBatcher (random blocks, 15% masked)

``prepare_corpus(DataConfig)`` runs the whole chain with caching keyed on content hashes.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from dwml.config import DataConfig
from dwml.io import atomic_dir, atomic_path, atomic_write_json, file_sha256, project_path, read_text_lines
from dwml.losses import IGNORE_INDEX

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BOS_ID, PAD_ID, EOS_ID, UNK_ID, MASK_ID = range(5)
CHILDES_MARKERS = frozenset({"xxx", "yyy", "www"})
"""CHILDES transcription codes for unintelligible (xxx, yyy) or untranscribed (www) speech."""
SPLITS = ("train", "dev", "test")
PACKINGS = ("blocks", "lines", "packed")
CACHE_FORMAT = 2  # 2: the sidecar records the cache's sha256 and its id range


class DataError(ValueError):
    """Bad corpus, tokenizer or batch parameters; the message names the file, line or parameter."""


# --------------------------------------------------------------------------------------------------
# Reading a corpus
# --------------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def clean_line(line: str, drop_markers: bool = False) -> str:
    """Collapse whitespace; optionally drop CHILDES markers. Returns '' for a line with nothing left."""
    words = _WS.split(line.strip())
    if drop_markers:
        words = [w for w in words if w.lower() not in CHILDES_MARKERS]
    return " ".join(w for w in words if w)


def read_lines(path: str | Path, drop_markers: bool = False) -> list[str]:
    """The cleaned, non-blank lines of one UTF-8 text file.

    A file that is not UTF-8 raises :class:`DataError` naming the file and the line of the first bad byte.
    """
    # split at "\n" only: U+2028, form feed or NEL inside an utterance are text (clean_line makes them a space)
    cleaned = (clean_line(line, drop_markers) for line in read_text_lines(path, DataError))
    return [line for line in cleaned if line]


def corpus_files(folder: str | Path, split: str = "train") -> list[Path]:
    """The ``*.<split>`` files below ``folder`` (any depth), sorted; errors name the folder."""
    if split not in SPLITS:
        raise DataError(f"split={split!r}: expected one of {SPLITS}")
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"corpus folder {folder} does not exist (expected the BabyLM layout: *.train, *.dev files)")
    files = sorted(p for p in folder.rglob(f"*.{split}") if p.is_file())
    if not files:
        raise DataError(f"corpus folder {folder} has no *.{split} files (BabyLM layout: one utterance a line)")
    return files


def read_corpus_files(folder: str | Path, split: str = "train", drop_markers: bool = False) -> dict[Path, list[str]]:
    """Cleaned lines per source file. An empty corpus raises :class:`DataError` naming the folder."""
    out = {path: read_lines(path, drop_markers) for path in corpus_files(folder, split)}
    if not any(out.values()):
        raise DataError(f"corpus folder {folder}: every *.{split} file is empty after cleaning")
    return out


def read_corpus(folder: str | Path, split: str = "train", drop_markers: bool = False) -> list[str]:
    """All cleaned lines of a split, files in sorted order."""
    return [line for lines in read_corpus_files(folder, split, drop_markers).values() for line in lines]


def corpus_stats(folder: str | Path, split: str = "train", drop_markers: bool = False):
    """Lines, words and word types per source file (and a total row), as a pandas DataFrame."""
    import pandas as pd

    rows, all_types, total_lines, total_words = [], set(), 0, 0
    for path, lines in read_corpus_files(folder, split, drop_markers).items():
        words = [w for line in lines for w in line.lower().split()]
        types = set(words)
        all_types |= types
        total_lines += len(lines)
        total_words += len(words)
        rows.append({"file": path.name, "lines": len(lines), "words": len(words), "types": len(types)})
    rows.append({"file": "total", "lines": total_lines, "words": total_words, "types": len(all_types)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------

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
        raise DataError(f"{path} holds no tokenizer.json (train one with dwml.data.train_tokenizer)")
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


# --------------------------------------------------------------------------------------------------
# Token cache: a flat stream  u1 </s> u2 </s> ...  as a numpy memmap, with a JSON sidecar
# --------------------------------------------------------------------------------------------------

def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id (uint16 up to 65,536 ids)."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class TokenCache:
    """A token stream on disk: ``tokens`` is a read-only memmap; ``meta`` the sidecar's content."""

    path: Path
    meta: dict

    @property
    def tokens(self) -> np.ndarray:
        return np.memmap(self.path, dtype=np.dtype(self.meta["dtype"]), mode="r", shape=(self.meta["n_tokens"],))

    def __len__(self) -> int:
        return int(self.meta["n_tokens"])

    def check_ids(self, vocab_size: int) -> None:
        """Raise :class:`DataError` naming the file if any stored id is outside ``[0, vocab_size)`` (a cache
        changed after it was built, or peers built with a smaller vocabulary): caught here, before
        training, instead of an ``IndexError`` deep in an embedding. Reads the file (fast: one pass)."""
        tokens = self.tokens
        if len(tokens) == 0:
            return
        hi = int(tokens.max())
        if hi >= vocab_size:
            at = int(np.argmax(np.asarray(tokens) >= vocab_size))
            raise DataError(f"token cache {self.path}: id {int(tokens[at])} at token {at} (max id {hi}) is outside "
                            f"the vocabulary of {vocab_size} ids; delete the cache to rebuild it, or build the "
                            "peers with the tokenizer's vocabulary (data.vocab_size)")


def _sources_meta(files: Sequence[Path]) -> list[dict]:
    return [{"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size} for p in files]


def build_token_cache(files: Sequence[str | Path], tokenizer, cache_path: str | Path,
                      drop_markers: bool = False, chunk_lines: int = 20_000, progress: bool = False) -> TokenCache:
    """Encode ``files`` once into ``cache_path`` (+ ``.json`` sidecar); reuse it while nothing changed.

    The cache is rebuilt when a source file's hash, the tokenizer, or the cleaning option changed, and
    (with a warning naming the file) when the data file's size or content (its sha256, recorded in the
    sidecar with the ids' range) disagrees with its sidecar, or the sidecar is not a well-formed JSON
    object with every field. Ids outside the tokenizer's vocabulary raise :class:`DataError`. The data are written to a
    temporary file and renamed, then the sidecar likewise, so an interrupted build leaves no valid-looking
    cache behind.
    """
    files = [Path(f) for f in files]
    cache_path = Path(cache_path)
    sidecar = cache_path.with_suffix(cache_path.suffix + ".json")
    vocab = len(tokenizer)
    dtype = token_dtype(vocab)
    want = {"format": CACHE_FORMAT, "dtype": dtype.name, "vocab_size": vocab, "drop_markers": drop_markers,
            "tokenizer": tokenizer_fingerprint(tokenizer), "sources": _sources_meta(files),
            "special_tokens": "text"}  # absent in older caches (they turned '</s>' in the text into the id): rebuilt
    if sidecar.is_file() and cache_path.is_file():
        meta, problem = _read_sidecar(sidecar)
        if meta is not None and all(meta.get(k) == v for k, v in want.items()):
            problem = _cache_problem(cache_path, meta, dtype, vocab)
            if problem is None:
                return TokenCache(cache_path, meta)
        if problem is not None:
            warnings.warn(f"token cache {cache_path}: {problem}: rebuilding it", stacklevel=2)

    from tqdm.auto import tqdm

    n_tokens = n_lines = 0
    lo, hi = None, None
    with atomic_path(cache_path) as tmp, open(tmp, "wb") as out:
        for path in tqdm(files, desc=f"encoding {cache_path.name}", disable=not progress):
            lines = read_lines(path, drop_markers)
            for i in range(0, len(lines), chunk_lines):
                chunk = lines[i:i + chunk_lines]
                ids = encode_text(tokenizer, chunk)
                flat = np.fromiter((t for seq in ids for t in (*seq, EOS_ID)), dtype=dtype,
                                   count=sum(len(s) + 1 for s in ids))
                if flat.size:
                    lo = int(flat.min()) if lo is None else min(lo, int(flat.min()))
                    hi = int(flat.max()) if hi is None else max(hi, int(flat.max()))
                flat.tofile(out)
                n_tokens += flat.size
                n_lines += len(chunk)
        out.flush()
        if hi is not None and hi >= vocab:
            raise DataError(f"{path}: the tokenizer gave id {hi}, outside its vocabulary of {vocab} ids")
        checksum = file_sha256(tmp)
    meta = {**want, "n_tokens": n_tokens, "n_lines": n_lines, "sha256": checksum,
            "min_id": lo, "max_id": hi}
    atomic_write_json(sidecar, meta)
    return TokenCache(cache_path, meta)


SIDECAR_FIELDS = {"format": int, "dtype": str, "vocab_size": int, "drop_markers": bool, "tokenizer": str,
                  "sources": list, "n_tokens": int, "n_lines": int, "sha256": str,
                  "min_id": (int, type(None)), "max_id": (int, type(None))}
"""What a token cache's sidecar holds (format 2): a sidecar that lacks one, or holds another type, is rebuilt."""


def _read_sidecar(sidecar: Path) -> tuple[dict | None, str | None]:
    """(meta, None) for a well-formed sidecar of this format; (None, None) for an older format (rebuilt
    silently: a new version of the package, not damage); (None, what is wrong) otherwise."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"its sidecar {sidecar} is not valid JSON ({err})"
    if not isinstance(meta, dict):
        return None, f"its sidecar {sidecar} holds a JSON {type(meta).__name__}, not an object"
    if isinstance(meta.get("format"), int) and meta["format"] != CACHE_FORMAT:
        return None, None
    bad = [k for k, kind in SIDECAR_FIELDS.items()
           if k not in meta or not isinstance(meta[k], kind) or (kind is int and isinstance(meta[k], bool))]
    if bad:
        return None, f"its sidecar {sidecar} lacks or mistypes field(s) {bad}"
    return meta, None


def _cache_problem(cache_path: Path, meta: dict, dtype: np.dtype, vocab: int) -> str | None:
    """Why a cache whose sidecar matches cannot be used (size, content checksum, id range), or None."""
    expected = meta["n_tokens"] * dtype.itemsize
    size = cache_path.stat().st_size
    if size != expected:
        return f"{size} bytes, but its sidecar says {meta['n_tokens']} tokens ({expected} bytes)"
    if file_sha256(cache_path) != meta["sha256"]:
        return "its content does not match the checksum in its sidecar (the file was changed after it was built)"
    if meta["max_id"] is not None and not 0 <= meta["min_id"] <= meta["max_id"] < vocab:
        return (f"its sidecar {cache_path}.json gives ids {meta['min_id']}..{meta['max_id']}, outside the "
                f"vocabulary of {vocab}")
    return None


# --------------------------------------------------------------------------------------------------
# The published code's token file (data.published_token_file): printed text read back as uint16
# --------------------------------------------------------------------------------------------------

PUBLISHED_CHARS = "0123456789, []"
"""Every character ``str`` prints for a list of ints: all the published token file can hold."""


def published_token_stream(ids: Sequence[int]) -> np.ndarray:
    """The ids the published loader reads from a token file written by the published tokenizer script.

    That script writes ``str(ids)`` (the printed Python list) as UTF-8 text; the loader maps the file as
    ``uint16`` in the machine's byte order (little-endian on x86 and ARM), dropping an odd last byte.
    Each id read is therefore two characters of the printed list, e.g. ``'[0'`` -> 0x305B = 12379."""
    text = str([int(i) for i in ids]).encode("utf-8")
    return np.frombuffer(text[: len(text) // 2 * 2], dtype="<u2").copy()


def published_pair_values() -> np.ndarray:
    """The sorted uint16 values of every pair of :data:`PUBLISHED_CHARS` (196 values)."""
    b = [ord(c) for c in PUBLISHED_CHARS]
    return np.unique(np.array([lo + 256 * hi for lo in b for hi in b], dtype=np.int64))


def published_ids_in_vocab(raw: np.ndarray) -> np.ndarray:
    """:func:`published_token_stream`'s values relabelled densely to ``5 + rank`` among
    :func:`published_pair_values` (ids 5..200), so that any vocabulary of the project holds them.

    The published models had 50,265 embedding rows and these values all lie in 8,224..23,901; a
    one-to-one relabelling of ids changes nothing a model can learn (its embedding rows are drawn
    independently), only the rows' names."""
    values = published_pair_values()
    raw = np.asarray(raw, dtype=np.int64)
    at = np.searchsorted(values, raw)
    bad = (at >= values.size) | (values[np.minimum(at, values.size - 1)] != raw)
    if bad.any():
        raise DataError(f"published token stream: value {int(raw[np.argmax(bad)])} is not a pair of the "
                        f"characters {PUBLISHED_CHARS!r} that a printed list of ids holds")
    return (at + len(SPECIAL_TOKENS)).astype(np.uint16)


def build_published_cache(cache: TokenCache, cache_path: str | Path) -> TokenCache:
    """The published code's reading of ``cache``'s token stream, stored as a token cache (reused while its
    source cache's checksum is the same). Ids as :func:`published_ids_in_vocab` gives them."""
    cache_path = Path(cache_path)
    sidecar = cache_path.with_suffix(cache_path.suffix + ".json")
    if sidecar.is_file() and cache_path.is_file():
        meta, _ = _read_sidecar(sidecar)
        if (meta is not None and meta.get("source_sha256") == cache.meta["sha256"]
                and _cache_problem(cache_path, meta, np.dtype(np.uint16), 2**16) is None):
            return TokenCache(cache_path, meta)
    ids = published_ids_in_vocab(published_token_stream(np.asarray(cache.tokens)))
    with atomic_path(cache_path) as tmp:
        ids.tofile(tmp)
        checksum = file_sha256(tmp)
    meta = {**cache.meta, "dtype": "uint16", "n_tokens": int(ids.size), "sha256": checksum,
            "min_id": int(ids.min()) if ids.size else None, "max_id": int(ids.max()) if ids.size else None,
            "source_sha256": cache.meta["sha256"], "published_token_file": True}
    atomic_write_json(sidecar, meta)
    return TokenCache(cache_path, meta)


def decode_cache(cache: TokenCache, tokenizer) -> list[str]:
    """The lines stored in a cache, decoded (the inverse of :func:`build_token_cache`, for tests and notebooks)."""
    tokens = np.asarray(cache.tokens, dtype=np.int64)
    ends = np.flatnonzero(tokens == EOS_ID)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokenizer.decode(tokens[s:e].tolist()).strip() for s, e in zip(starts, ends)]


# --------------------------------------------------------------------------------------------------
# Masked-LM batches
# --------------------------------------------------------------------------------------------------

def mask_tokens(input_ids: torch.Tensor, vocab_size: int, generator: torch.Generator | None = None,
                mlm_probability: float = 0.15, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                mask_id: int = MASK_ID, num_special: int = len(SPECIAL_TOKENS)) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (Devlin et al. 2019, sec. 3.1): select ``mlm_probability`` of the ordinary tokens;
    of those, ``mask_replace_prob`` become ``<mask>``, ``random_replace_prob`` a random token, the rest
    stay. Special tokens (ids below ``num_special``) are never selected, and random replacements are
    drawn from ordinary tokens only (Hugging Face's collator may draw ``<s>`` or ``<pad>``; we do not).

    Returns ``(masked_ids, labels)`` with ``labels = -100`` at positions not selected.
    """
    if not 0.0 < mlm_probability < 1.0:
        raise DataError(f"mlm_probability={mlm_probability}: must be in (0, 1)")
    if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1:
        raise DataError(f"mask_replace_prob={mask_replace_prob}, random_replace_prob={random_replace_prob}: "
                        "must be >= 0 and sum to <= 1")
    ordinary = input_ids >= num_special
    selected = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & ordinary
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < mask_replace_prob)
    to_random = selected & (action >= mask_replace_prob) & (action < mask_replace_prob + random_replace_prob)
    random_ids = torch.randint(num_special, vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def add_targets(batch: dict) -> dict:
    """``batch`` with what the forward pass and the loop need, computed here on the host (numpy), so that
    the device is never asked for a count: ``pred_index`` [n] (flat ``row * width + col`` of the predicted
    positions), ``targets`` [n] (their labels), ``token_weight`` [n] (1/n: a per-token mean) and the
    Python ints ``n_pred`` and ``n_real`` (tokens that are not padding)."""
    labels = batch["labels"].numpy().reshape(-1)
    idx = np.flatnonzero(labels != IGNORE_INDEX)
    n = int(idx.size)
    if "segment_ids" in batch:
        n_real = int(np.count_nonzero(batch["segment_ids"].numpy()))
    else:
        n_real = int(batch["attention_mask"].numpy().sum())
    return {**batch, "pred_index": torch.from_numpy(idx.astype(np.int64)), "targets": torch.from_numpy(labels[idx]),
            "token_weight": torch.full((n,), 1.0 / max(n, 1)), "n_pred": n, "n_real": n_real}


def pack_lines(batch: dict, width: int) -> dict:
    """A 'lines' batch (one padded utterance a row) repacked with several whole utterances a row of
    ``width`` positions ('packed'): first-fit decreasing by length, each utterance kept whole and in
    order, with ``segment_ids`` (1, 2, ... within a row; 0 for the padded tail), ``positions`` (0 at
    each utterance's ``<s>``; -1 in the tail) and ``source_rows`` (the row of ``batch`` each token came
    from; -1 in the tail). The same tokens, masks and labels: a model that lets a
    token attend only to its own segment, and numbers positions per segment (``dwml.model``), computes
    exactly what it computes on the 'lines' batch, on fewer padded positions."""
    mask = batch["attention_mask"].numpy().astype(bool)
    lengths = mask.sum(1)
    if lengths.size and lengths.max() > width:
        raise DataError(f"an utterance of {int(lengths.max())} tokens does not fit a packed row of {width} "
                        "(data.block_size)")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in np.argsort(-lengths, kind="stable"):  # first fit, longest first: rows end ~95% full
        n = int(lengths[i])
        for r, free in enumerate(room):
            if free >= n:
                rows[r].append(int(i))
                room[r] -= n
                break
        else:
            rows.append([int(i)])
            room.append(width - n)
    ids_in, lab_in = batch["input_ids"].numpy(), batch["labels"].numpy()
    shape = (len(rows), width)
    ids = np.full(shape, PAD_ID, dtype=np.int64)
    labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    seg = np.zeros(shape, dtype=np.int64)
    pos = np.full(shape, -1, dtype=np.int64)
    src = np.full(shape, -1, dtype=np.int64)
    for r, members in enumerate(rows):
        col = 0
        for k, i in enumerate(sorted(members)):  # in the order the batch drew them
            n = int(lengths[i])
            ids[r, col:col + n] = ids_in[i, :n]
            labels[r, col:col + n] = lab_in[i, :n]
            seg[r, col:col + n] = k + 1
            pos[r, col:col + n] = np.arange(n)
            src[r, col:col + n] = i
            col += n
    return add_targets({"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
                        "segment_ids": torch.from_numpy(seg), "positions": torch.from_numpy(pos),
                        "source_rows": torch.from_numpy(src)})


def merge_batches(batches: Sequence[dict]) -> dict:
    """Micro-batches as one chunk: rows stacked (padded on the right to the widest), ``pred_index`` moved
    to the new rows, and each token weighted 1/n_m of its own micro-batch m, so that a loss summed with
    ``token_weight`` over the chunk is the sum of the micro-batches' own per-token means: exactly what
    ``len(batches)`` separate passes accumulate (``train.chunk_size``)."""
    if len(batches) == 1:
        return batches[0]
    packed = "segment_ids" in batches[0]
    if any(("segment_ids" in b) != packed for b in batches):
        raise DataError("merge_batches: micro-batches of different packings")
    width = max(b["input_ids"].shape[1] for b in batches)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    keys = {"input_ids": PAD_ID, "labels": IGNORE_INDEX}
    keys.update({"segment_ids": 0, "positions": -1} if packed else {"attention_mask": 0})
    out = {k: torch.cat([pad(b[k], v) for b in batches]) for k, v in keys.items()}
    index, row0 = [], 0
    for b in batches:  # flat row * width + col, re-based on the merged rows and width
        w = b["input_ids"].shape[1]
        index.append((b["pred_index"] // w + row0) * width + b["pred_index"] % w)
        row0 += b["input_ids"].shape[0]
    out["pred_index"] = torch.cat(index)
    out["targets"] = torch.cat([b["targets"] for b in batches])
    out["token_weight"] = torch.cat([b["token_weight"] for b in batches])
    out["n_pred"] = sum(b["n_pred"] for b in batches)
    out["n_real"] = sum(b["n_real"] for b in batches)
    return out


class MLMBatcher:
    """Masked-LM batches from the token stream, in one of three packings:

    * ``'blocks'``: random contiguous blocks wrapped as ``<s> ... </s>``, each ``block_size - 2`` stream
      tokens (utterances separated by ``</s>``), so no padding is ever needed;
    * ``'lines'``: one utterance per sequence, ``<s> utterance </s>``, drawn uniformly, cut to
      ``block_size`` and right-padded with ``<pad>`` (attention mask 0) to the longest in the batch.
      With ``length_grouping = k > 1``, k batches' worth of utterances are drawn at once, sorted by
      length and served as k batches in random order (uniform random utterances padded to the longest
      of 64 were half padding on the synthetic corpus).
    * ``'packed'``: exactly the utterances, masks and labels of a 'lines' batch (the same draws from the
      same generator), repacked several whole utterances to a row of ``block_size`` (:func:`pack_lines`),
      so that a batch is ~95% real tokens instead of ~50%, and a run trains as its 'lines' twin would.

    Every batch carries its predicted positions, computed on the host (:func:`add_targets`).
    The generator's state and the batches drawn but not yet served are all the state there is:
    ``state_dict`` / ``load_state_dict`` make a resumed run draw exactly the batches it would have drawn.

    ``shard=(rank, world)``: rank ``rank``'s part of a run on ``world`` processes (``dwml.distributed``):
    the global batch of ``world * batch_size`` rows is drawn and masked as one process would draw it, and
    this rank keeps its ``batch_size`` rows (before 'packed' repacks them), each predicted token weighted
    1/n with n the global batch's count, so the ranks' weighted sums add up to the global per-token mean.
    """

    def __init__(self, tokens: np.ndarray, tokenizer=None, block_size: int = 512, batch_size: int = 3,
                 mlm_probability: float = 0.15, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 seed: int = 0, vocab_size: int | None = None, packing: str = "blocks", length_grouping: int = 1,
                 shard: tuple[int, int] = (0, 1)):
        rank, world = int(shard[0]), int(shard[1])
        if not 0 <= rank < world:
            raise DataError(f"shard={shard!r}: must be (rank, world) with 0 <= rank < world")
        self.rank, self.world = rank, world
        batch_size = batch_size * world  # the global batch; next_batch keeps this rank's rows
        if packing not in PACKINGS:
            raise DataError(f"packing={packing!r}: must be one of {', '.join(PACKINGS)} (data.packing)")
        if length_grouping < 1:
            raise DataError(f"length_grouping={length_grouping}: must be >= 1 (data.length_grouping)")
        self.packing, self.length_grouping = packing, int(length_grouping)
        self._pending: list[np.ndarray] = []  # picks of batches drawn but not yet served (length grouping)
        if block_size < 3:
            raise DataError(f"block_size={block_size}: must be >= 3 (<s>, one token, </s>)")
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}: must be >= 1")
        self.body = block_size - 2
        if len(tokens) < self.body:
            raise DataError(f"block_size={block_size} is larger than the corpus ({len(tokens)} tokens): "
                            f"lower block_size or use a larger corpus")
        if vocab_size is None:
            if tokenizer is None:
                raise DataError("MLMBatcher needs a tokenizer or vocab_size")
            vocab_size = len(tokenizer)
        self.tokens, self.vocab_size = tokens, int(vocab_size)
        self.block_size, self.batch_size = block_size, batch_size
        self.probs = dict(mlm_probability=mlm_probability, mask_replace_prob=mask_replace_prob,
                          random_replace_prob=random_replace_prob)
        self.generator = torch.Generator().manual_seed(seed)
        if packing in ("lines", "packed"):
            # Utterance i spans tokens[starts[i]:ends[i]] (its </s> excluded): the stream is
            # utterance </s> utterance </s> ..., so an utterance starts after each </s>.
            ends = np.flatnonzero(np.asarray(tokens) == EOS_ID)
            starts = np.concatenate([[0], ends[:-1] + 1])
            keep = ends > starts  # no empty utterances
            self.line_starts, self.line_ends = starts[keep], ends[keep]
            if len(self.line_starts) == 0:
                raise DataError("packing='lines' found no utterance (no </s> in the token stream)")

    def _draw_lines(self) -> np.ndarray:
        """The utterance indices of the next batch."""
        k = self.length_grouping
        if k == 1:
            return torch.randint(0, len(self.line_starts), (self.batch_size,), generator=self.generator).numpy()
        if not self._pending:
            pool = torch.randint(0, len(self.line_starts), (self.batch_size * k,), generator=self.generator).numpy()
            lengths = self.line_ends[pool] - self.line_starts[pool]
            pool = pool[np.argsort(lengths, kind="stable")]
            order = torch.randperm(k, generator=self.generator).tolist()
            self._pending = [pool[i * self.batch_size:(i + 1) * self.batch_size] for i in order]
        return self._pending.pop(0)

    def _lines_batch(self) -> torch.Tensor:
        pick = self._draw_lines()
        rows = [np.asarray(self.tokens[s:min(e, s + self.body)], dtype=np.int64)
                for s, e in zip(self.line_starts[pick], self.line_ends[pick])]
        width = max(len(r) for r in rows) + 2
        ids = torch.full((self.batch_size, width), PAD_ID, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, 0], ids[i, len(r) + 1] = BOS_ID, EOS_ID
            ids[i, 1:len(r) + 1] = torch.from_numpy(r)
        return ids

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.packing in ("lines", "packed"):
            ids = self._lines_batch()
            masked, labels = mask_tokens(ids, self.vocab_size, self.generator, **self.probs)
            batch = {"input_ids": masked, "attention_mask": (ids != PAD_ID).long(), "labels": labels}
            if self.world > 1:
                return self._shard(batch)
            return pack_lines(batch, self.block_size) if self.packing == "packed" else add_targets(batch)
        starts = torch.randint(0, len(self.tokens) - self.body + 1, (self.batch_size,), generator=self.generator)
        body = np.stack([np.asarray(self.tokens[s:s + self.body], dtype=np.int64) for s in starts.tolist()])
        ids = torch.from_numpy(body)
        ids = torch.cat([torch.full((self.batch_size, 1), BOS_ID), ids, torch.full((self.batch_size, 1), EOS_ID)], 1)
        masked, labels = mask_tokens(ids, self.vocab_size, self.generator, **self.probs)
        batch = {"input_ids": masked, "attention_mask": torch.ones_like(masked), "labels": labels}
        return self._shard(batch) if self.world > 1 else add_targets(batch)

    def _shard(self, batch: dict) -> dict:
        """This rank's rows of a global batch, weighted by the global count of predicted tokens."""
        n_global = int((batch["labels"] != IGNORE_INDEX).sum())
        b = self.batch_size // self.world
        part = {k: v[self.rank * b:(self.rank + 1) * b] for k, v in batch.items()}
        part = pack_lines(part, self.block_size) if self.packing == "packed" else add_targets(part)
        part["token_weight"] = torch.full((part["n_pred"],), 1.0 / max(n_global, 1))
        part["n_pred_global"] = n_global
        return part

    def fixed_batches(self, n: int, seed: int = 1234) -> list[dict[str, torch.Tensor]]:
        """``n`` batches from a fresh generator: the same every call, for comparable dev losses."""
        saved, pending = self.generator.get_state(), self._pending
        self.generator.manual_seed(seed)
        self._pending = []
        try:
            return [self.next_batch() for _ in range(n)]
        finally:
            self.generator.set_state(saved)
            self._pending = pending

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "pending": [p.tolist() for p in self._pending]}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._pending = [np.asarray(p, dtype=np.int64) for p in state.get("pending", [])]


# --------------------------------------------------------------------------------------------------
# The whole chain, cached
# --------------------------------------------------------------------------------------------------

@dataclass
class PreparedCorpus:
    corpus_dir: Path
    tokenizer_dir: Path
    tokenizer: object
    train: TokenCache
    dev: TokenCache

    def batcher(self, split: str, cfg: DataConfig, batch_size: int, seed: int,
                shard: tuple[int, int] = (0, 1)) -> MLMBatcher:
        cache = {"train": self.train, "dev": self.dev}[split]
        return MLMBatcher(cache.tokens, self.tokenizer, block_size=cfg.block_size, batch_size=batch_size,
                          mlm_probability=cfg.mlm_probability, mask_replace_prob=cfg.mask_replace_prob,
                          random_replace_prob=cfg.random_replace_prob, seed=seed, packing=cfg.packing,
                          length_grouping=cfg.length_grouping, shard=shard)


def resolve_corpus_dir(cfg: DataConfig) -> Path:
    """The corpus folder of a config: the generated synthetic corpus, or the given path."""
    if cfg.corpus == "synthetic":
        from dwml.synthetic import ensure_corpus

        return ensure_corpus(project_path(cfg.cache_dir) / "synthetic", words=cfg.synthetic_words, seed=cfg.synthetic_seed,
                             lexicon=cfg.synthetic_lexicon or None)
    path = project_path(cfg.corpus)
    if not path.is_dir():
        raise DataError(f"data.corpus={cfg.corpus!r}: folder {path} does not exist "
                        "(give 'synthetic' or a folder in the BabyLM layout)")
    return path


def prepare_corpus(cfg: DataConfig, progress: bool = True) -> PreparedCorpus:
    """Corpus folder -> trained (or cached) tokenizer -> train/dev token caches.

    The tokenizer is keyed on the train files' hashes and the tokenizer settings, the caches on the
    tokenizer and the files, so changing any input rebuilds exactly what depends on it.
    """
    corpus_dir = resolve_corpus_dir(cfg)
    train_files, dev_files = corpus_files(corpus_dir, "train"), corpus_files(corpus_dir, "dev")
    key = json.dumps({"sources": [s["sha256"] for s in _sources_meta(train_files)], "vocab": cfg.vocab_size,
                      "lower": cfg.lowercase, "minf": cfg.min_frequency, "drop": cfg.drop_markers}, sort_keys=True)
    fp = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = project_path(cfg.cache_dir) / f"{corpus_dir.name}-{fp}"
    tok_dir = root / "tokenizer"
    tokenizer = None
    if (tok_dir / "tokenizer.json").is_file():
        try:
            tokenizer = load_tokenizer(tok_dir)
        except DataError as err:  # a build product: retrain it (same lines and settings, same tokenizer)
            warnings.warn(f"cached tokenizer unusable, retraining it: {err}", stacklevel=2)
    if tokenizer is None:
        lines = read_corpus(corpus_dir, "train", cfg.drop_markers)
        tokenizer = train_tokenizer(lines, cfg.vocab_size, tok_dir, lowercase=cfg.lowercase,
                                    min_frequency=cfg.min_frequency, model_max_length=max(cfg.block_size, 512))
        tokenizer = load_tokenizer(tok_dir)
    train = build_token_cache(train_files, tokenizer, root / "train.bin", cfg.drop_markers, progress=progress)
    dev = build_token_cache(dev_files, tokenizer, root / "dev.bin", cfg.drop_markers, progress=progress)
    if cfg.published_token_file:  # the stream as the published code reads it (data.published_token_file)
        train = build_published_cache(train, root / "train.published.bin")
        dev = build_published_cache(dev, root / "dev.published.bin")
    for name, cache, files in (("train", train, train_files), ("dev", dev, dev_files)):
        if cache.meta["n_lines"] == 0:
            raise DataError(f"the {name} split of {corpus_dir} is empty: its file(s) "
                            f"{', '.join(str(f) for f in files)} hold no text after cleaning")
        if len(cache) < cfg.block_size - 2:
            raise DataError(f"data.block_size={cfg.block_size} is larger than the {name} split of {corpus_dir} "
                            f"({len(cache)} tokens)")
    return PreparedCorpus(corpus_dir, tok_dir, tokenizer, train, dev)


def tokenizer_stats(prep: PreparedCorpus, cfg: DataConfig):
    """Per split: lines, words, tokens (separators excluded), tokens per word, vocabulary used."""
    import pandas as pd

    rows = []
    for split, cache in (("train", prep.train), ("dev", prep.dev)):
        words = sum(len(line.split()) for line in read_corpus(prep.corpus_dir, split, cfg.drop_markers))
        tokens = np.asarray(cache.tokens)
        n_tok = int(len(tokens) - cache.meta["n_lines"])
        rows.append({"split": split, "lines": cache.meta["n_lines"], "words": words, "tokens": n_tok,
                     "tokens_per_word": n_tok / max(words, 1), "vocab_size": len(prep.tokenizer),
                     "vocab_used": int(np.unique(tokens).size), "dtype": cache.meta["dtype"]})
    return pd.DataFrame(rows)


def describe_batch(batch: dict, tokenizer, max_tokens: int = 64) -> list[str]:
    """Each row of a masked batch as text: ``[label→input]`` where a token was selected for prediction."""
    out = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        parts = []
        for i, y in list(zip(ids, labels))[:max_tokens]:
            shown = tokenizer.convert_ids_to_tokens(i).replace("Ġ", "_")
            if y != IGNORE_INDEX:
                shown = f"[{tokenizer.convert_ids_to_tokens(y).replace('Ġ', '_')}→{shown}]"
            parts.append(shown)
        out.append(" ".join(parts))
    return out
