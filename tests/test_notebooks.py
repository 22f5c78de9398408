"""Notebooks: paired, tagged, parameters in step with profiles/default.yaml, and each runs on `ci`."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from dwml import runner

NOTEBOOKS = runner.notebook_paths()


def test_there_are_notebooks():
    assert any(p.stem == "00_data" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_parameters_cell_matches_default_profile(path):
    params = runner.notebook_parameters(path)  # raises if the first code cell is not tagged 'parameters'
    default = runner.load_profile("default")
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
    with pytest.raises(runner.NotebookError, match="tagged 'parameters'"):
        runner.notebook_parameters(bad)


@pytest.fixture(scope="module")
def ci_root(tmp_path_factory):
    """One fresh run folder for the notebooks of this session (they share runs as under `make reproduce`):
    runs left in runs/ci by an earlier session must not stand in for what is tested now."""
    return tmp_path_factory.mktemp("ci")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_ci_profile(path, ci_root):
    params = {**runner.load_profile("ci"), "run_root": str(ci_root / "runs"), "figures_dir": str(ci_root / "figures")}
    out = runner.run_notebook(path, "ci", params)
    assert out.is_file()
    if path.stem == "03_baselines":  # ci runs Zorro's loader and table on the synthetic pairs in Zorro's format
        zorro = pd.read_csv(ci_root / "figures" / "table_zorro_paradigms.csv")
        assert len(zorro) == len(params["baseline_methods"]) and "Avg." in zorro.columns


def test_every_profile_key_is_a_declared_parameter():
    for path in sorted((ROOT / "profiles").glob("*.yaml")):
        runner.check_profile(runner.load_profile(str(path)), path)  # raises naming the key and the file


def test_misspelled_profile_key_is_an_error_before_anything_runs(tmp_path, capsys):
    prof = tmp_path / "typo.yaml"
    prof.write_text(f"profile: typo\nrun_root: {tmp_path / 'runs'}\nfigures_dir: {tmp_path / 'fig'}\nseedz: [0]\n")
    with pytest.raises(runner.NotebookError, match=r"typo\.yaml: unknown parameter\(s\) 'seedz' \(did you mean 'seeds'\?\)"):
        runner.check_profile(runner.load_profile(str(prof)), prof)
    assert runner.main(["--profile", str(prof), "00_data"]) == 2
    err = capsys.readouterr().err
    assert "'seedz'" in err and str(prof) in err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_each_notebook_gets_only_its_parameters_and_the_console_shows_progress(tmp_path, capfd):
    nb = tmp_path / "98_tiny.py"
    nb.write_text('# %% tags=["parameters"]\nprofile = "default"\nrun_root = "runs/default"\nfigures_dir = "figures"\n'
                  'seeds = [0]\n\n# %%\nimport time\ntime.sleep(1.5)\nprint("seeds", seeds)\n\n# %%\nassert "train" not in dir()\n')
    params = {**runner.load_profile("ci"), "run_root": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "fig"),
              "seeds": [7]}
    assert "train" in params  # declared by other notebooks, not by this one
    assert runner.parameters_for(nb, params) == {k: params[k] for k in ("profile", "run_root", "figures_dir", "seeds")}
    out = runner.run_notebook(nb, "ci", params, progress=True, heartbeat=0.5)
    import nbformat

    executed = nbformat.read(out, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "train" not in injected[0].source and "seeds = [7]" in injected[0].source
    assert any("seeds [7]" in o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    console = capfd.readouterr()
    assert "Passed unknown parameter" not in console.out + console.err
    assert "WARNING" not in console.out + console.err  # no kernel warnings
    assert "98_tiny" in console.out and "cell 3/4: import time" in console.out
    assert "still in cell 3/4" in console.out  # the heartbeat while the long cell runs


@pytest.mark.parametrize("module", ["dwml.runner", "dwml.notebooks"])
def test_the_runner_answers_to_its_name_and_its_former_one(module):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "--profile" in out.stdout, out.stderr


def test_profile_notebooks_key_chooses_what_runs_and_is_checked(tmp_path, monkeypatch):
    ran = []

    def fake_run(path, profile, params, **kw):
        assert "notebooks" not in runner.parameters_for(path, params)  # a runner key, never a notebook's
        ran.append(Path(path).stem)
        return tmp_path / f"{Path(path).stem}.ipynb"

    monkeypatch.setattr(runner, "run_notebook", fake_run)
    prof = tmp_path / "some.yaml"
    prof.write_text(f"profile: some\nrun_root: {tmp_path / 'runs'}\nfigures_dir: {tmp_path / 'fig'}\n"
                    "notebooks: [00_data, 03_baselines]\n")
    assert runner.main(["--profile", str(prof), "--quiet"]) == 0
    assert ran == ["00_data", "03_baselines"]
    ran.clear()
    assert runner.main(["--profile", str(prof), "--quiet", "01_peer_search"]) == 0  # the command line wins
    assert ran == ["01_peer_search"]
    for bad, message in (("[00_dta]", "no notebook .*00_dta"), ("00_data", "non-empty list"), ("[]", "non-empty list")):
        prof.write_text(f"profile: some\nnotebooks: {bad}\n")
        with pytest.raises(runner.NotebookError, match=f"some.yaml: 'notebooks'.*{message}"):
            runner.check_profile(runner.load_profile(str(prof)), prof)
