"""Reading a corpus in the BabyLM layout (``*.train`` / ``*.dev`` / ``*.test``, one utterance a line):
UTF-8 text, cleaned (whitespace collapsed, CHILDES markers optionally dropped), with errors that name the
file and line; and where a config's corpus folder is (the generated synthetic one, or a path)."""
from __future__ import annotations

import re
from pathlib import Path

from dwml.config import DataConfig
from dwml.io import project_path, read_text_lines

CHILDES_MARKERS = frozenset({"xxx", "yyy", "www"})
"""CHILDES transcription codes for unintelligible (xxx, yyy) or untranscribed (www) speech."""
SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """Bad corpus, tokenizer or batch parameters; the message names the file, line or parameter."""



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
