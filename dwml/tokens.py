"""The token cache: a corpus split encoded once as a flat stream ``u1 </s> u2 </s> ...`` in a numpy memmap
(``.bin``) with a JSON sidecar (its sources' hashes, the tokenizer's fingerprint, the cache's sha256 and id
range), rebuilt when any of them changes; and the published code's reading of such a stream
(``data.published_token_file``: printed text read back as uint16).

The published code for this paper wrote its token file as printed text and read it back as binary
``uint16``, so its models trained on noise: the cache here decodes back to the normalised corpus, line for
line (:func:`decode_cache`, checked by tests)."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dwml.corpus import DataError, read_lines
from dwml.io import atomic_path, atomic_write_json, file_sha256
from dwml.tokenizer import EOS_ID, SPECIAL_TOKENS, encode_text, tokenizer_fingerprint

CACHE_FORMAT = 2  # 2: the sidecar records the cache's sha256 and its id range


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


def sources_meta(files: Sequence[Path]) -> list[dict]:
    """Path, sha256 and size of each file: what a cache (and the tokenizer's key) depends on."""
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
            "tokenizer": tokenizer_fingerprint(tokenizer), "sources": sources_meta(files),
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
