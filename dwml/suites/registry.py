"""The one map of minimal-pair suites: name -> :class:`Suite` (its loader, its folder under the data root,
its title, how its tasks group into table columns, its tables), and what every suite's loader shares.

Each suite is one module of this package that calls :func:`register` once; ``dwml/suites/__init__.py``
imports the modules, so a new suite is one file and one line there. Everything that lists suites (the
command line ``python -m dwml.evaluate``, the notebooks' ``suites`` key, the group tables of
``dwml.reports`` and ``dwml.studies``) reads this map.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence


class EvalDataError(ValueError):
    """A minimal-pair file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class MinimalPair:
    """One item: ``good`` should score higher than ``bad``, each after ``prefix`` when it is given."""

    suite: str          # 'blimp', 'supplement', 'ewok', 'zorro', 'synthetic', ...
    task: str           # BLiMP paradigm (UID), supplement file stem, EWoK domain, Zorro paradigm
    pair_id: int
    good: str
    bad: str
    prefix: str | None = None   # visible context, never scored (EWoK's Context1)
    phenomenon: str = ""        # BLiMP linguistics_term; the task for the other suites
    field: str = ""


@dataclass(frozen=True)
class Suite:
    """A minimal-pair suite as the rest of the package sees it.

    ``load(path)`` reads the pairs from ``path``; ``folder`` is its default place under the data root
    (``locate`` overrides how that place is found); ``grouping`` names what a table column is
    ('phenomenon', 'task', 'domain'), ``group(frame)`` maps a frame's rows (``task``, ``phenomenon``) to
    their column and ``columns`` orders them; ``table`` is the command line's per-group table (a file stem),
    ``title`` its heading; ``figure_table`` the notebooks' per-group table and ``paper_table`` the paper's
    table it reproduces ('' when the paper has none); ``paper_benchmark`` its name in the paper's csvs;
    ``reference(path)`` published results to stand beside ours (rows: models; columns: groups and
    ``Avg.``), or None; ``write(pairs, folder)`` writes pairs in the suite's own format (a stand-in folder
    for tests and the ``ci`` profile); ``from_corpus``: the notebooks read it from the prepared corpus's
    folder, not the data root (the synthetic pairs)."""

    name: str
    title: str
    folder: str
    load: Callable[[Path], list]
    grouping: str
    group: Callable | None = None
    columns: tuple[str, ...] = ()
    table: str = ""
    figure_table: str = ""
    paper_table: str = ""
    paper_benchmark: str = ""
    reference: Callable[[Path], object] | None = None
    locate: Callable[[Path], Path] | None = None
    write: Callable[[Sequence[MinimalPair], Path], Path] | None = None
    from_corpus: bool = False

    def path(self, root: str | Path) -> Path:
        """Where the suite is read from under the data root ``root``."""
        root = Path(root)
        return self.locate(root) if self.locate else root / self.folder

    def groups(self, frame):
        """The table column of each row of ``frame`` (a pandas Series aligned with it)."""
        return self.group(frame) if self.group else frame["task"]


SUITES: dict[str, Suite] = {}
"""name -> Suite, in registration order: the only list of suite names."""


def register(suite: Suite) -> Suite:
    """Add ``suite`` to :data:`SUITES`; a name registered twice is an error (two modules claiming one name)."""
    if suite.name in SUITES and SUITES[suite.name] != suite:
        raise ValueError(f"suite {suite.name!r} is registered twice")
    SUITES[suite.name] = suite
    return suite


def names() -> list[str]:
    """Every registered suite's name, in registration order."""
    return list(SUITES)


def check_known(names: Sequence[str], where: str = "") -> None:
    """Raise :class:`EvalDataError` naming every name of ``names`` that is not a registered suite, and the known
    ones; ``where`` (a parameter, a file) starts the message. The one check of suite names."""
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        what = f"suite {unknown[0]!r}" if len(unknown) == 1 else f"suites {unknown}"
        raise EvalDataError(f"{where + ': ' if where else ''}unknown {what}; known: {', '.join(SUITES)}")


def get(name: str) -> Suite:
    """The suite called ``name``; an unknown name raises :class:`EvalDataError` listing the known ones."""
    check_known([name])
    return SUITES[name]


def references(folders: Mapping[str, str | Path] | None) -> dict:
    """suite -> its published results (its ``reference`` reader: rows models, columns groups and ``Avg.``),
    read from the folder each suite was read from, for the suites that have them there."""
    out = {}
    for name, folder in (folders or {}).items():
        ref = SUITES[name].reference if name in SUITES else None
        table = ref(folder) if ref else None
        if table is not None:
            out[name] = table
    return out


def paper_names() -> dict[str, str]:
    """The paper's benchmark name (its csvs' column) -> our suite name, for the suites the paper reports."""
    return {s.paper_benchmark: s.name for s in SUITES.values() if s.paper_benchmark}


def load(name: str, path: str | Path) -> list[MinimalPair]:
    """The pairs of suite ``name`` read from ``path`` (its file or folder); a missing path raises, naming it."""
    path = Path(path)
    if not path.exists():
        raise EvalDataError(f"suite {name!r}: {path} does not exist")
    return get(name).load(path)


# --------------------------------------------------------------------------------------------------
# What the loaders share
# --------------------------------------------------------------------------------------------------

def read_jsonl(lines: Iterable[str], where: str, error: type[Exception] | None = None) -> list[tuple[int, dict]]:
    """(line number, record) for every non-blank line; a bad line raises ``error`` (default
    :class:`EvalDataError`) naming ``where:line``."""
    error = error or EvalDataError
    out = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{where}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise error(f"{where}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        out.append((lineno, rec))
    return out


def records(text: str, where: str) -> list[tuple[int, dict]]:
    """:func:`read_jsonl` of a suite file's text; a file with no records is an error naming it."""
    out = read_jsonl(text.split("\n"), where)
    if not out:
        raise EvalDataError(f"{where}: empty: the file holds no pairs")
    return out


def text_field(rec: dict, key: str, where: str, lineno: int) -> str:
    """``rec[key]`` as a non-empty string, else an error naming ``where:lineno`` and the field."""
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise EvalDataError(f"{where}:{lineno}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def read_utf8(path: Path) -> str:
    """A data file's text; one that is not UTF-8 raises :class:`EvalDataError` naming the file and line."""
    from dwml.io import read_utf8 as _read

    return _read(path, EvalDataError)


def files(folder: str | Path, what: str, pattern: str = "*.jsonl") -> list[Path]:
    """The suite's files in ``folder`` (sorted); a missing folder or none there is an error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalDataError(f"{what} folder {folder} does not exist")
    found = sorted(folder.glob(pattern))
    if not found:
        raise EvalDataError(f"{what} folder {folder} holds no {pattern} files")
    return found


class UniqueIds:
    """Refuses a (task, pair_id) seen before in a suite, naming both places: a join on pairs needs
    one row per key."""

    def __init__(self, what: str):
        self.what, self.seen = what, {}

    def check(self, task: str, pair_id: int, where: str, lineno: int) -> None:
        key = (task, pair_id)
        if key in self.seen:
            raise EvalDataError(f"{where}:{lineno}: {self.what} pair_id {pair_id} of task {task!r} repeats "
                                f"(first at {self.seen[key]}): pair ids must be unique within a task")
        self.seen[key] = f"{where}:{lineno}"
