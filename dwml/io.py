"""Crash-safe file writing: everything the package persists goes through here.

A checkpoint, cache or table is first written to a temporary file in the same folder and then renamed
over its destination (``os.replace`` is atomic on POSIX and Windows), so a run killed mid-write never
leaves a half-written file where a good one stood.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``, on error delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; on success it replaces ``dest`` (a folder is never seen half
    written), on error it is deleted."""
    import shutil

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(dest: str | Path, obj: Any) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(dest: str | Path, obj: Any) -> None:
    import torch

    with atomic_path(dest) as tmp:
        torch.save(obj, tmp)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_utf8(path: str | Path, error: type[Exception] = ValueError) -> str:
    """The text of a UTF-8 file; one that is not UTF-8 raises ``error`` naming the file and the line (1-based)
    of the first bad byte, instead of a bare ``UnicodeDecodeError``."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = raw.count(b"\n", 0, err.start) + 1
        raise error(f"{path}:{line_no}: not UTF-8 ({err.reason} at byte {err.start}); "
                    "save the file as UTF-8") from None


class DuplicateKeyError(ValueError):
    """A YAML mapping names a key twice (PyYAML would keep the last value silently); ``line`` is 1-based."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


def _strict_loader():
    """PyYAML's SafeLoader, refusing a key written twice in one mapping (``train:`` twice would drop the
    first section's values without a word)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so
                    break
                if first is not None:
                    raise DuplicateKeyError(f"key {key!r} written twice in one mapping (first at line "
                                            f"{first}); YAML would keep only the last", key_node.start_mark.line + 1)
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def read_text_lines(path: str | Path, error: type[Exception] = ValueError) -> list[str]:
    """The lines of a UTF-8 text file, split at ``\n`` only (a ``\r`` before it dropped). ``str.splitlines``
    also splits at U+2028, U+2029, form feed, NEL and other separators, which can sit inside an utterance
    or a sentence; here they stay in the line, as the text they are."""
    text = read_utf8(path, error)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_yaml(path: str | Path, error: type[Exception] = ValueError) -> Any:
    """Parse a YAML file (a profile); invalid YAML raises ``error`` naming the file, line and column
    (1-based) and PyYAML's reason, instead of PyYAML's bare traceback; a key written twice in one mapping
    raises ``error`` naming the file and the line of the second."""
    import yaml

    path = Path(path)
    text = read_utf8(path, error)
    try:
        return yaml.load(text, Loader=_strict_loader())
    except DuplicateKeyError as err:
        raise error(f"{path}:{err.line}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        reason = " ".join(str(x) for x in (getattr(err, "context", None), getattr(err, "problem", None)) if x)
        raise error(f"{where}: not valid YAML ({reason or err})") from None


def project_root() -> Path:
    """The checkout's root (the folder holding ``pyproject.toml`` and ``dwml/``), else the working folder.

    Notebooks run with their own folder as the working folder in JupyterLab but from the root under
    papermill; resolving relative paths against the root makes both read and write the same files."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "dwml").is_dir():
        return here
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "pyproject.toml").is_file() and (folder / "dwml").is_dir():
            return folder
    return Path.cwd()


def project_path(path: str | Path) -> Path:
    """``path`` itself if absolute, else relative to :func:`project_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


@contextlib.contextmanager
def temporary_environ(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set while the block runs (child processes inherit it), then as it was."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
