"""Run the paper's notebooks with papermill on a profile: ``python -m dwml.runner --profile default``.

The ``py:percent`` files in ``notebooks/`` are the source (reviewable diffs); this runner turns each into a
notebook with jupytext, injects the profile's parameters with papermill, and writes the executed copy to
``runs/<profile>/executed/`` (a build product, git-ignored). The notebooks write their figures and tables
themselves, to the profile's ``figures_dir``. On :data:`PUBLISHED_PROFILE` (``default``) each executed
notebook is also published beside its source as ``notebooks/NN_name.ipynb`` (committed, jupytext's paired
file, so JupyterLab shows the outputs in place): the parameters cell as in the source, figures as PNG, long
logs shortened, widget outputs and papermill's metadata dropped (:func:`publish_notebook`).

A profile is shared by all notebooks: before anything runs, its top-level keys are checked against the
parameters the notebooks declare (their ``parameters`` cells), and a key no notebook declares (a typo) is
an error naming the key and the profile file. Each notebook then gets only the parameters it declares.
While a notebook runs, the console gets a line as each cell starts (with the elapsed time) and a
heartbeat every ``--heartbeat`` seconds while a long cell runs, so a long run never looks hung; at the
end, a summary (notebooks, times, executed copies, where the figures went).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path


from dwml.io import atomic_write_text, project_path, project_root, read_yaml, temporary_environ

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"  # papermill's tag on the cell it adds after the parameters cell
PUBLISHED_PROFILE = "default"
"""The profile whose executed notebooks are committed as ``notebooks/NN_name.ipynb`` (as its figures are in
``figures/``); other profiles publish nowhere unless given ``--publish-dir``."""


class NotebookError(RuntimeError):
    pass


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The ``notebooks/NN_*.py`` files in order, or the named ones."""
    if names:
        paths = [project_path(n) if ("/" in n or n.endswith(".py")) else project_root() / "notebooks" / f"{n}.py"
                 for n in names]
    else:
        paths = sorted((project_root() / "notebooks").glob("[0-9][0-9]_*.py"))
    for p in paths:
        if not p.is_file():
            raise NotebookError(f"no notebook {p}")
    return paths


def load_profile(name_or_path: str) -> dict:
    """Read ``profiles/<name>.yaml`` (or a path); it must be a mapping of parameter names."""
    path = profile_file(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in (project_root() / "profiles").glob("*.yaml"))
        raise NotebookError(f"profile {name_or_path!r}: {path} not found (known profiles: {known})")
    params = read_yaml(path, NotebookError) or {}
    if not isinstance(params, dict):
        raise NotebookError(f"{path}: a profile must be a mapping of parameter names to values")
    return params


def profile_file(name_or_path: str) -> Path:
    """The file :func:`load_profile` reads for ``name_or_path``."""
    path = Path(name_or_path)
    if not path.suffix:
        path = project_root() / "profiles" / f"{name_or_path}.yaml"
    return project_path(path)


def declared_parameters(paths: list[Path] | None = None) -> dict[str, list[str]]:
    """parameter name -> the notebooks (stems) that declare it, over ``paths`` (default: all notebooks)."""
    declared: dict[str, list[str]] = {}
    for path in paths if paths is not None else notebook_paths():
        for key in notebook_parameters(path):
            declared.setdefault(key, []).append(path.stem)
    return declared


RUNNER_KEYS = ("notebooks",)
"""Profile keys the runner reads itself and passes to no notebook: ``notebooks``, the notebooks a profile is
for (run when none are named on the command line; default: all)."""


def profile_notebooks(params: dict, where: str | Path) -> list[str] | None:
    """The profile's ``notebooks`` list (names such as ``03_baselines``), checked; None when it has none."""
    names = params.get("notebooks")
    if names is None:
        return None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise NotebookError(f"{where}: 'notebooks' must be a non-empty list of notebook names, got {names!r}")
    try:
        notebook_paths(names)
    except NotebookError as err:
        raise NotebookError(f"{where}: 'notebooks': {err}") from None
    return names


def check_profile(params: dict, where: str | Path, paths: list[Path] | None = None) -> None:
    """Every top-level key of a profile must be a parameter some notebook declares (or one of
    :data:`RUNNER_KEYS`); an unknown one (a typo, which papermill would pass on silently, leaving the
    notebook's default in force) raises naming it."""
    declared = declared_parameters(paths)
    profile_notebooks(params, where)
    unknown = [k for k in params if k not in declared and k not in RUNNER_KEYS]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(declared), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise NotebookError(f"{where}: unknown parameter(s) {', '.join(hints)}: no notebook declares them "
                            f"(declared: {', '.join(sorted(declared))})")
    check_parameter_types(params, where, paths)


CONFIG_SECTIONS = ("data", "search", "train", "eval")


def check_parameter_types(params: dict, where: str | Path, paths: list[Path] | None = None) -> None:
    """Each profile value has the type of the notebooks' default for it (an integer is not a boolean, a
    list stays a list, a list of integers holds integers), ``seeds`` is a non-empty list of seeds, and the
    config sections pass ``Config.validate``: checked before the first cell runs, naming the profile file
    and the key, instead of a traceback inside a notebook minutes later."""
    from dwml.config import SEED_MAX, Config, ConfigError

    defaults: dict = {}
    for path in paths if paths is not None else notebook_paths():
        for key, value in notebook_parameters(path).items():
            defaults.setdefault(key, value)
    for key, value in params.items():
        if key in defaults:
            problem = _type_problem(value, defaults[key])
            if problem:
                raise NotebookError(f"{where}: parameter {key}={value!r}: {problem}")
    seeds = params.get("seeds")
    if "seeds" in params and (not isinstance(seeds, list) or not seeds
                              or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= SEED_MAX
                                         for x in seeds)):
        raise NotebookError(f"{where}: parameter seeds={seeds!r}: must be a non-empty list of integer seeds "
                            f"in [0, {SEED_MAX}], e.g. [0, 1, 2]")
    sections = {k: params[k] for k in CONFIG_SECTIONS if k in params and params[k] is not None}
    try:
        Config.from_dict(**sections)
    except ConfigError as err:
        raise NotebookError(f"{where}: {err}") from None


def _type_problem(value, default) -> str | None:
    """Why ``value`` cannot stand where a notebook's default is ``default`` (None: it can)."""
    def kind(v) -> str:
        if isinstance(v, bool):
            return "true or false"
        if isinstance(v, int):
            return "an integer"
        if isinstance(v, float):
            return "a number"
        return {str: "a string", list: "a list", dict: "a mapping"}.get(type(v), "")

    if default is None or not kind(default):
        return None
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    if kind(value) != kind(default):
        return f"must be {kind(default)} (the notebooks' default is {default!r}), got {kind(value) or type(value).__name__}"
    if isinstance(default, list) and default:
        want = {kind(x) for x in default}
        if len(want) == 1 and want <= {"an integer", "a string", "true or false"}:
            bad = [x for x in value if kind(x) not in want]
            if bad:
                return f"every item must be {next(iter(want))} (as in the default {default!r}); {bad[0]!r} is not"
    return None


def parameters_for(path: str | Path, params: dict) -> dict:
    """The part of ``params`` that the notebook at ``path`` declares in its parameters cell."""
    declared = notebook_parameters(path)
    return {k: v for k, v in params.items() if k in declared}


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


PROGRESS_FILE_ENV = "DWML_PROGRESS_FILE"
"""Set in the kernel's environment: the file a study's executor appends its lines to (one per finished run,
``dwml.executor``), which :class:`Progress` prints as they come."""


class Progress:
    """Console lines while a notebook runs: one as each code cell starts, one when a cell that took longer
    than ``report_after`` seconds ends, a heartbeat every ``heartbeat`` seconds while a cell runs, and each
    line the notebook's study executor appends to ``follow`` (checked every ``poll`` seconds)."""

    def __init__(self, name: str, n_cells: int, heartbeat: float = 60.0, report_after: float = 10.0, stream=None,
                 follow: str | Path | None = None, poll: float = 1.0):
        self.name, self.n_cells, self.heartbeat, self.report_after = name, n_cells, heartbeat, report_after
        self.stream = stream or sys.stdout
        self.t0 = time.perf_counter()
        self.cell_t0 = self.t0
        self.current = None
        self.follow, self.poll, self._read = (Path(follow) if follow else None), poll, 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = None

    def _print(self, text: str) -> None:
        with self._lock:
            print(f"[dwml.runner] {self.name} {_fmt(time.perf_counter() - self.t0):>6} | {text}",
                  file=self.stream, flush=True)

    def cell_start(self, number: int, source: str) -> None:
        self.current, self.cell_t0 = number, time.perf_counter()
        first = next((line.strip() for line in source.splitlines() if line.strip() and not line.strip().startswith("#")),
                     "")
        self._print(f"cell {number}/{self.n_cells}: {first[:70]}")

    def cell_end(self) -> None:
        took = time.perf_counter() - self.cell_t0
        if took >= self.report_after:
            self._print(f"cell {self.current}/{self.n_cells} done in {_fmt(took)}")
        self.current = None

    def relay(self) -> None:
        """Print the lines added to ``follow`` since the last call (whole lines only)."""
        if self.follow is None or not self.follow.is_file():
            return
        with open(self.follow, encoding="utf-8") as f:
            f.seek(self._read)
            text = f.read()
        end = text.rfind("\n") + 1
        self._read += len(text[:end].encode("utf-8"))
        for line in text[:end].splitlines():
            self._print(line)

    def _beat(self) -> None:
        last = time.perf_counter()
        tick = min(self.poll, self.heartbeat) if self.heartbeat > 0 else self.poll
        while not self._stop.wait(tick):
            self.relay()
            if self.heartbeat > 0 and time.perf_counter() - last >= self.heartbeat:
                last = time.perf_counter()
                if self.current is not None:
                    self._print(f"still in cell {self.current}/{self.n_cells} "
                                f"({_fmt(time.perf_counter() - self.cell_t0)} so far)")

    def __enter__(self):
        if self.heartbeat > 0 or self.follow is not None:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        self.relay()  # the lines written after the last poll
        return False


_ACTIVE: dict = {}  # the Progress of the notebook being run (papermill runs one at a time here)


def _engine():
    """A papermill engine (nbclient's) that reports each cell to the active :class:`Progress`."""
    from papermill.engines import NBClientEngine, papermill_engines

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            progress = _ACTIVE.get("progress")
            if progress is not None:
                start, complete = nb_man.cell_start, nb_man.cell_complete
                code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
                number = {i: k + 1 for k, i in enumerate(code)}

                def cell_start(cell, cell_index=None, **kw):
                    if cell.cell_type == "code":
                        progress.cell_start(number.get(cell_index, 0), cell.source)
                    return start(cell, cell_index, **kw)

                def cell_complete(cell, cell_index=None, **kw):
                    if cell.cell_type == "code":
                        progress.cell_end()
                    return complete(cell, cell_index, **kw)

                nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("dwml-progress", ProgressEngine)
    return "dwml-progress"


# The kernel's own console warnings (e.g. ipykernel's "Kernel is running over TCP without encryption",
# which nbclient's local kernels always are) say nothing about the notebook; errors still show.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
KERNEL_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}
"""Set in the kernel's environment: no huggingface_hub / transformers progress bars in executed notebooks
(``dwml.model.quiet_library_bars`` does the same for anything that imports the peers)."""


def read_notebook(path: str | Path):
    import jupytext

    return jupytext.read(str(path))


def parameters_cell(nb) -> str:
    """Source of the first code cell, which must be tagged ``parameters`` (papermill's convention)."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or PARAMETERS_TAG not in code[0].get("metadata", {}).get("tags", []):
        raise NotebookError("the first code cell is not tagged 'parameters'")
    return code[0].source


def notebook_parameters(path: str | Path) -> dict:
    """The default values of a notebook's parameters cell (a cell of plain assignments of literals)."""
    source = parameters_cell(read_notebook(path))
    values: dict = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            values[node.target.id] = ast.literal_eval(node.value)
    return values


def run_notebook(path: Path, profile: str, params: dict, log_output: bool = False,
                 progress: bool | Progress = False, heartbeat: float = 60.0) -> Path:
    """Execute one notebook with papermill; returns the executed copy's path. The notebook gets only the
    parameters it declares (no papermill "unknown parameter" warnings); ``progress`` prints a line per
    cell and a heartbeat (see :class:`Progress`)."""
    import nbformat
    import papermill as pm

    out_dir = project_path(params.get("run_root", f"runs/{profile}")) / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{path.stem}.ipynb"
    nb = read_notebook(path)
    parameters_cell(nb)  # fail early, with the notebook's name, if the tag is missing
    params = parameters_for(path, params)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    with tempfile.TemporaryDirectory() as tmp:
        follow = Path(tmp) / "progress.log"
        if progress is True:
            progress = Progress(path.stem, sum(c.cell_type == "code" for c in nb.cells) + 1, heartbeat=heartbeat,
                                follow=follow)
        src = Path(tmp) / f"{path.stem}.ipynb"
        nbformat.write(nb, src)
        _ACTIVE["progress"] = progress or None
        env = {**KERNEL_ENV, PROGRESS_FILE_ENV: str(follow)} if progress else KERNEL_ENV
        try:
            with (progress or _Null()), temporary_environ(env):
                pm.execute_notebook(str(src), str(out), parameters=params, cwd=str(project_root()),
                                    kernel_name="python3", log_output=log_output, progress_bar=False,
                                    engine_name=_engine(), extra_arguments=KERNEL_ARGUMENTS)
        finally:
            _ACTIVE.pop("progress", None)
    return out


MAX_STREAM_CHARS = 4000
"""A code cell's printed output (stdout and stderr) longer than this is shortened in a published notebook
to its first and last lines (training logs belong in the run folder, not in the committed notebook)."""
KEEP_LINES = 10
DROPPED_MIME = ("application/vnd.jupyter.widget-view+json", "image/svg+xml", "application/pdf")
"""Output types a published notebook leaves out: widgets (their state is not saved, so they would render as
an error; their text form stays) and vector copies of figures that also come as PNG."""


def _last_frame(line: str) -> str:
    """What a terminal shows of a line redrawn with carriage returns (a text progress bar): its last frame."""
    return line.rsplit("\r", 1)[-1]


def _shorten(text: str, where: str) -> tuple[str, bool]:
    lines = [_last_frame(line) for line in text.split("\n")]
    text = "\n".join(lines)
    if len(text) <= MAX_STREAM_CHARS:
        return text, False
    head, tail = lines[:KEEP_LINES], lines[-KEEP_LINES:]
    note = (f"... [{len(lines) - 2 * KEEP_LINES:,} lines ({len(text):,} characters) left out of the published "
            f"notebook; the whole output is in {where}] ...")
    return "\n".join(head + [note] + tail), True


def _merged_streams(outputs: list) -> list:
    """The outputs with each run of consecutive same-stream outputs joined into one (a log printed over
    minutes arrives in many pieces; it is shortened as a whole)."""
    merged: list = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (out.output_type == "stream" and prev is not None and prev.output_type == "stream"
                and prev.name == out.name):
            prev.text += out.text
        else:
            merged.append(out)
    return merged


def injected_parameters(nb) -> dict:
    """The values papermill injected into an executed notebook (its ``injected-parameters`` cell); {} if none."""
    values: dict = {}
    for cell in nb.cells:
        if INJECTED_TAG in cell.get("metadata", {}).get("tags", []):
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def publish_notebook(executed: str | Path, source: str | Path, dest: str | Path) -> dict:
    """Write the executed notebook ``executed`` of the source ``source`` (its ``.py``) to ``dest`` as the
    paired ``.ipynb`` a reader opens: cells as in the source (papermill's injected cell removed, which is
    why the run's parameters must be the source's own defaults, else a :class:`NotebookError` names them),
    outputs kept but long printed logs shortened (:data:`MAX_STREAM_CHARS`) and :data:`DROPPED_MIME`
    dropped, cell metadata reduced to tags, papermill's metadata removed. Atomic. Returns ``{"path",
    "bytes", "shortened", "dropped"}``."""
    import nbformat

    executed, source, dest = Path(executed), Path(source), Path(dest)
    nb = nbformat.read(executed, as_version=4)
    defaults = notebook_parameters(source)
    ran = injected_parameters(nb)
    differ = {k: (v, defaults.get(k)) for k, v in ran.items() if defaults.get(k, object()) != v}
    if differ:
        raise NotebookError(f"{executed}: ran with parameters other than {source.name}'s own ("
                            + ", ".join(f"{k}={v!r}, source {d!r}" for k, (v, d) in differ.items())
                            + "): its outputs would not belong to the source; publish a run of its defaults "
                              f"(the {PUBLISHED_PROFILE!r} profile)")
    try:  # the note in a shortened log names the full copy, relative to the project where it lies there
        where = str(executed.resolve().relative_to(project_root()))
    except ValueError:
        where = str(executed)
    shortened = dropped = 0
    cells = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if INJECTED_TAG in tags:
            continue
        cell.metadata = {"tags": tags} if tags else {}
        if cell.cell_type == "code":
            outputs = []
            for out in _merged_streams(cell.outputs):
                if out.output_type == "stream":
                    out.text, cut = _shorten(out.text, where)
                    shortened += cut
                elif "data" in out:
                    for mime in DROPPED_MIME:
                        # a vector figure only where a PNG of it stays
                        if mime in out.data and (mime.startswith("application/vnd") or "image/png" in out.data):
                            del out.data[mime]
                            dropped += 1
                    if not out.data:
                        continue
                outputs.append(out)
            cell.outputs = outputs
        cells.append(cell)
    nb.cells = cells
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    # jupytext's filters as the source is read (jupytext.toml): with them, jupytext's contents manager finds
    # the .ipynb's cells equal to the .py's even when the .ipynb is the newer file (it is, after a run)
    text_meta = dict(read_notebook(source).metadata.get("jupytext", {}))
    text_meta.pop("text_representation", None)
    if text_meta:
        nb.metadata["jupytext"] = text_meta
    text = nbformat.writes(nb)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, text)
    return {"path": dest, "bytes": len(text.encode()), "shortened": shortened, "dropped": dropped}


def pair_differences(source: str | Path, ipynb: str | Path) -> list[str]:
    """How the paired ``ipynb`` differs from its ``source`` (the ``.py``) in its cells (type and source, as
    jupytext reads both); [] when they agree."""
    import jupytext

    a = [(c.cell_type, c.source.strip()) for c in jupytext.read(str(source)).cells]
    b = [(c.cell_type, c.source.strip()) for c in jupytext.read(str(ipynb)).cells]
    if a == b:
        return []
    problems = [f"{Path(source).name} has {len(a)} cells, {Path(ipynb).name} {len(b)}"] if len(a) != len(b) else []
    for i, (x, y) in enumerate(zip(a, b), start=1):
        if x != y:
            first = next((line for line in difflib.unified_diff(x[1].splitlines(), y[1].splitlines(), lineterm="",
                                                                n=0) if line[:1] in "+-" and line[:3] not in ("+++", "---")),
                         f"{x[0]} / {y[0]}")
            problems.append(f"cell {i}: {first}")
    return problems


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _figure_files(folder: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def parse_executor(text: str) -> dict:
    """``--executor``'s value as a profile's ``executor`` section: ``KIND`` or ``KIND:WORKERSxTHREADS``
    (``local:2x1``; workers may be ``auto``); the notebooks check the values (``dwml.executor.ExecutorConfig``)."""
    kind, _, sizes = text.partition(":")
    out: dict = {"kind": kind}
    if sizes:
        workers, sep, threads = sizes.partition("x")
        try:
            out["workers"] = workers if workers == "auto" else int(workers)
            if sep:
                out["threads"] = int(threads)
        except ValueError:
            raise ValueError(f"--executor {text!r}: KIND or KIND:WORKERSxTHREADS, e.g. local:2x1 or local:autox1") from None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="notebook names (e.g. 00_data) or paths; default: all, in order")
    ap.add_argument("--profile", default="default", help="profiles/<name>.yaml (default: default)")
    ap.add_argument("--log-output", action="store_true", help="stream the notebooks' output to the terminal")
    ap.add_argument("--heartbeat", type=float, default=60.0,
                    help="seconds between 'still in cell' lines while a long cell runs (0: none)")
    ap.add_argument("--quiet", action="store_true", help="no per-cell lines, only one per notebook")
    ap.add_argument("--publish-dir", default=None,
                    help=f"also write each executed notebook, as readers get it, to DIR/NN_name.ipynb (default: "
                         f"notebooks/ on the {PUBLISHED_PROFILE!r} profile, nowhere on the others; see publish_notebook)")
    ap.add_argument("--no-publish", action="store_true", help="publish nothing, whatever the profile")
    ap.add_argument("--executor", default=None, metavar="KIND[:WORKERSxTHREADS]",
                    help="run the studies' runs with this executor instead of the profile's: serial, local, ray, "
                         "optionally with workers and threads a run, e.g. local:2x1, local:autox2, ray:8x1")
    args = ap.parse_args(argv)
    params = load_profile(args.profile)
    params.setdefault("profile", args.profile)
    if args.executor:
        try:
            params["executor"] = parse_executor(args.executor)
        except ValueError as err:
            print(f"[dwml.runner] {err}", file=sys.stderr)
            return 2
    try:  # a misspelled key is reported before anything runs
        check_profile(params, profile_file(args.profile))
    except NotebookError as err:
        print(f"[dwml.runner] {err}", file=sys.stderr)
        return 2
    paths = notebook_paths(args.notebooks or params.get("notebooks"))  # the list check_profile checked
    publish_dir = None
    if not args.no_publish:
        if args.publish_dir:
            publish_dir = project_path(args.publish_dir)
        elif profile_file(args.profile).resolve() == profile_file(PUBLISHED_PROFILE).resolve():
            publish_dir = project_root() / "notebooks"
    published = []
    figures = project_path(params.get("figures_dir", "figures"))
    before = _figure_files(figures)
    times = []
    t_all = time.perf_counter()
    print(f"[dwml.runner] {len(paths)} notebook(s) on profile {args.profile} "
          f"({profile_file(args.profile)}): {', '.join(p.stem for p in paths)}", flush=True)
    for k, path in enumerate(paths, start=1):
        t0 = time.perf_counter()
        print(f"[dwml.runner] [{k}/{len(paths)}] {path.name} ...", flush=True)
        try:
            out = run_notebook(path, args.profile, params, log_output=args.log_output,
                               progress=not args.quiet, heartbeat=args.heartbeat)
        except Exception as err:  # papermill's error names the cell; add the notebook
            print(f"[dwml.runner] FAILED: {path.name} after {_fmt(time.perf_counter() - t0)}: "
                  f"{type(err).__name__}: {err}", file=sys.stderr)
            return 1
        if publish_dir is not None:
            try:
                published.append(publish_notebook(out, path, publish_dir / f"{path.stem}.ipynb"))
            except NotebookError as err:
                print(f"[dwml.runner] FAILED to publish {path.name}: {err}", file=sys.stderr)
                return 1
        times.append((path.stem, time.perf_counter() - t0, out))
        print(f"[dwml.runner] [{k}/{len(paths)}] {path.name} done in {_fmt(times[-1][1])} "
              f"(total {_fmt(time.perf_counter() - t_all)})", flush=True)
    after = _figure_files(figures)
    written = sorted(p for p, m in after.items() if before.get(p) != m)
    width = max(len(n) for n, _, _ in times)
    lines = ["", f"[dwml.runner] summary: profile {args.profile}, {len(times)} notebook(s), "
                 f"{_fmt(time.perf_counter() - t_all)} in all"]
    lines += [f"  {n:<{width}}  {_fmt(t):>7}  {out}" for n, t, out in times]
    lines.append(f"  figures and tables: {len(written)} file(s) written under {figures}"
                 + (f" ({', '.join(sorted({p.suffix for p in written}))})" if written else ""))
    if published:
        lines.append(f"  published notebooks ({sum(p['bytes'] for p in published) / 1e3:,.0f} kB in all):")
        lines += [f"    {p['path']}  {p['bytes'] / 1e3:,.0f} kB" + (f", {p['shortened']} long output(s) shortened"
                                                                    if p["shortened"] else "") for p in published]
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
