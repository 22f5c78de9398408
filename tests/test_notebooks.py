"""Notebooks: paired, tagged, parameters in step with profiles/default.yaml, and each runs on `ci`."""
from __future__ import annotations

import pytest

from conftest import ROOT
from dwml import notebooks as N

NOTEBOOKS = N.notebook_paths()


def test_there_are_notebooks():
    assert any(p.stem == "00_data" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_parameters_cell_matches_default_profile(path):
    params = N.notebook_parameters(path)  # raises if the first code cell is not tagged 'parameters'
    default = N.load_profile("default")
    for key in ("profile", "run_root", "figures_dir"):
        assert key in params, f"{path.name}: parameter {key!r} missing"
    for key, value in params.items():
        if key in default:
            assert value == default[key], f"{path.name}: {key}={value!r} but profiles/default.yaml has {default[key]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_pair_in_sync(path):
    """Where a paired .ipynb exists (after `make sync` or editing in JupyterLab), it holds the same cells."""
    import jupytext

    ipynb = path.with_suffix(".ipynb")
    if not ipynb.exists():
        pytest.skip(f"{ipynb.name} not generated (only the .py is committed)")
    a, b = jupytext.read(str(path)), jupytext.read(str(ipynb))
    assert [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells], (
        f"{path.name} and {ipynb.name} differ: run `make sync`")


def test_missing_parameters_tag_is_reported(tmp_path):
    bad = tmp_path / "99_bad.py"
    bad.write_text("# %%\nx = 1\n")
    with pytest.raises(N.NotebookError, match="tagged 'parameters'"):
        N.notebook_parameters(bad)


@pytest.fixture(scope="module")
def ci_root(tmp_path_factory):
    """One fresh run folder for the notebooks of this session (they share runs as under `make reproduce`):
    runs left in runs/ci by an earlier session must not stand in for what is tested now."""
    return tmp_path_factory.mktemp("ci")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_ci_profile(path, ci_root):
    params = {**N.load_profile("ci"), "run_root": str(ci_root / "runs"), "figures_dir": str(ci_root / "figures")}
    out = N.run_notebook(path, "ci", params)
    assert out.is_file()
