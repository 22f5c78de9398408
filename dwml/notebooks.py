"""Run the paper's notebooks with papermill on a profile: ``python -m dwml.notebooks --profile default``.

Only the ``py:percent`` files in ``notebooks/`` are committed (reviewable diffs); this runner turns each
into a notebook with jupytext, injects the profile's parameters with papermill, and writes the executed
copy to ``runs/<profile>/executed/`` (a build product, git-ignored). The notebooks write their figures and
tables themselves, to the profile's ``figures_dir``.
"""
from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import time
from pathlib import Path

import yaml

from dwml.io import project_path, project_root

PARAMETERS_TAG = "parameters"


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
    path = Path(name_or_path)
    if not path.suffix:
        path = project_root() / "profiles" / f"{name_or_path}.yaml"
    path = project_path(path)
    if not path.is_file():
        known = sorted(p.stem for p in (project_root() / "profiles").glob("*.yaml"))
        raise NotebookError(f"profile {name_or_path!r}: {path} not found (known profiles: {known})")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise NotebookError(f"{path}: a profile must be a mapping of parameter names to values")
    return params


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


def run_notebook(path: Path, profile: str, params: dict, log_output: bool = False) -> Path:
    """Execute one notebook with papermill; returns the executed copy's path."""
    import nbformat
    import papermill as pm

    out_dir = project_path(params.get("run_root", f"runs/{profile}")) / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{path.stem}.ipynb"
    nb = read_notebook(path)
    parameters_cell(nb)  # fail early, with the notebook's name, if the tag is missing
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{path.stem}.ipynb"
        nbformat.write(nb, src)
        pm.execute_notebook(str(src), str(out), parameters=params, cwd=str(project_root()),
                            kernel_name="python3", log_output=log_output, progress_bar=False)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="notebook names (e.g. 00_data) or paths; default: all, in order")
    ap.add_argument("--profile", default="default", help="profiles/<name>.yaml (default: default)")
    ap.add_argument("--log-output", action="store_true", help="stream the notebooks' output to the terminal")
    args = ap.parse_args(argv)
    params = load_profile(args.profile)
    params.setdefault("profile", args.profile)
    times = []
    for path in notebook_paths(args.notebooks):
        t0 = time.time()
        print(f"[dwml.notebooks] {path.name} on profile {args.profile} ...", flush=True)
        try:
            out = run_notebook(path, args.profile, params, log_output=args.log_output)
        except Exception as err:  # papermill's error names the cell; add the notebook
            print(f"[dwml.notebooks] FAILED: {path.name}: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        times.append((path.name, time.time() - t0))
        print(f"[dwml.notebooks] {path.name} done in {times[-1][1]:.0f} s -> {out}", flush=True)
    print("[dwml.notebooks] total " + ", ".join(f"{n} {t:.0f} s" for n, t in times)
          + f"; {sum(t for _, t in times) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
