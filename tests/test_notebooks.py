"""Notebooks: paired, tagged, parameters in step with profiles/default.yaml, and each runs on `ci`."""
from __future__ import annotations

import time
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


BAR_TEXT = ("Loading weights", "Writing model shards", "Loading checkpoint shards")
"""What transformers' progress bars leave in an output (the project's own bars, e.g. the peer search's, may
show: one line per run, or a widget)."""
ANY_BAR = BAR_TEXT + ("it/s]", "s/it]")
"""... and any tqdm text bar (the tiny notebook below has none of its own)."""
MAX_PUBLISHED_BYTES = 2_000_000


def _output_text(nb) -> str:
    """Every output of a notebook as text: streams, errors, and the text of rich outputs (not images)."""
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", "") + "".join(o.get("traceback", [])))
            parts += [v if isinstance(v, str) else "".join(v) for k, v in o.get("data", {}).items()
                      if k.startswith("text/")]
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_executed_notebook_holds_its_source(path):
    """The executed notebook published beside the source (`make reproduce` on `default` writes it, and it is
    committed) has the source's cells exactly, and outputs; a notebook not yet published is skipped."""
    import nbformat

    ipynb = path.with_suffix(".ipynb")
    if not ipynb.exists():
        pytest.skip(f"{ipynb.name} not published yet (`make reproduce` on the default profile writes it)")
    problems = runner.pair_differences(path, ipynb)
    assert not problems, (f"{ipynb.name} does not hold {path.name}'s cells ({'; '.join(problems[:5])}): rerun "
                          f"`make reproduce`, or `make sync` to carry the edit over without outputs")
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any(c.outputs for c in code), f"{ipynb.name} holds no outputs: not an executed notebook"
    assert not any(runner.INJECTED_TAG in c.metadata.get("tags", []) for c in code)
    assert ipynb.stat().st_size < MAX_PUBLISHED_BYTES, f"{ipynb.name}: {ipynb.stat().st_size:,} bytes"
    text = _output_text(nb)
    assert not [b for b in BAR_TEXT if b in text], f"{ipynb.name} holds a library progress bar"


def test_every_committed_ipynb_has_its_source():
    orphans = [p.name for p in (ROOT / "notebooks").glob("*.ipynb") if not p.with_suffix(".py").is_file()]
    assert not orphans, f"notebooks/ holds .ipynb files without their .py source: {orphans}"
    # and git lets them be committed
    import subprocess

    ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/00_data.ipynb"], cwd=ROOT)
    assert ignored.returncode == 1, ".gitignore ignores notebooks/*.ipynb: the executed notebooks are committed"


def test_pair_check_on_a_pair_it_writes(tmp_path):
    """runner.pair_differences, the check of every committed pair, on a .py / .ipynb pair written here
    (jupytext, no kernel), so it is tested where no executed notebook is committed: in sync it passes; a
    changed cell on either side fails, the cell named; a cell more is counted."""
    import jupytext
    from nbformat.v4 import new_output

    src = tmp_path / "95_pair.py"
    src.write_text('# %% [markdown]\n# # A pair\n\n# %% tags=["parameters"]\nprofile = "default"\n\n'
                   "# %%\nfor i in range(3):\n    print(i)\n")
    ipynb = tmp_path / "95_pair.ipynb"
    nb = jupytext.read(src)
    nb.cells[2].outputs = [new_output("stream", name="stdout", text="0\n1\n2\n")]  # outputs are no cell
    jupytext.write(nb, ipynb)
    assert runner.pair_differences(src, ipynb) == []
    src.write_text(src.read_text().replace("range(3)", "range(4)"))
    assert runner.pair_differences(src, ipynb) == ["cell 3: -for i in range(4):"]
    nb.cells[0].source = "# A changed pair"
    jupytext.write(nb, ipynb)
    problems = runner.pair_differences(src, ipynb)
    assert problems == ["cell 1: -# A pair", "cell 3: -for i in range(4):"]
    src.write_text(src.read_text() + "\n# %%\nprint(1)\n")
    assert runner.pair_differences(src, ipynb)[0] == "95_pair.py has 4 cells, 95_pair.ipynb 3"


def _tiny_notebook(folder: Path, params: dict, name: str = "97_tiny") -> Path:
    """A notebook with a long log, a table, a figure and a transformers model saved and loaded (once before
    anything of dwml is imported), its parameters cell holding ``params``."""
    nb = folder / f"{name}.py"
    header = "".join(f"{k} = {v!r}\n" for k, v in params.items())
    nb.write_text(
        "# %% [markdown]\n# # A tiny notebook\n\n"
        f'# %% tags=["parameters"]\n{header}\n'
        "# %%\nfor i in range(3000):\n    print('step', i, 'loss', 1 / (i + 1))\n\n"
        "# %%\nimport tempfile\nfrom transformers import RobertaConfig, RobertaForMaskedLM, AutoModelForMaskedLM\n"
        "cfg = RobertaConfig(vocab_size=300, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,\n"
        "                    intermediate_size=16, max_position_embeddings=20)\n"
        "tmp = tempfile.mkdtemp()\nRobertaForMaskedLM(cfg).save_pretrained(tmp)\n"
        "AutoModelForMaskedLM.from_pretrained(tmp)\nprint('bare transformers: saved and loaded')\n\n"
        "# %%\nfrom dwml.evaluate import load_masked_lm\nfrom dwml.tokenizer import save_tokenizer_files, train_tokenizer\n"
        "save_tokenizer_files(train_tokenizer(['the dog is here', 'a cat was there'] * 50, 300), tmp)\n"
        "model, tok = load_masked_lm(tmp)\nmodel.save_pretrained(tmp)\nprint('dwml: saved and loaded')\n\n"
        "# %% [markdown]\n# A table and a figure.\n\n"
        "# %%\nimport pandas as pd\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\nplt.show()\npd.DataFrame({'method': ['mlm', 'dwml'], 'acc': [52.4, 55.0]})\n")
    return nb


def test_runner_publishes_the_executed_notebook_and_the_pair_check_holds_it_to_its_source(tmp_path, capsys):
    """The copy path, on the `ci` profile with a temporary target: the published notebook has its source's
    cells (no injected cell), its outputs (table, PNG figure), the long log shortened, no library bars; the
    pair check passes on it and fails once either side's cell changes; a run on other parameters is refused."""
    import nbformat

    ci = runner.load_profile("ci")
    prof = tmp_path / "ci_tmp.yaml"
    params = {"profile": "ci", "run_root": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "fig")}
    prof.write_text("".join(f"{k}: {v}\n" for k, v in params.items()))
    assert ci["profile"] == "ci"
    src = _tiny_notebook(tmp_path, params)
    pub = tmp_path / "published"
    assert runner.main(["--profile", str(prof), "--quiet", "--publish-dir", str(pub), str(src)]) == 0
    console = capsys.readouterr().out
    out = pub / "97_tiny.ipynb"
    assert out.is_file() and "published notebooks" in console and str(out) in console
    executed = nbformat.read(tmp_path / "runs" / "executed" / "97_tiny.ipynb", as_version=4)  # the full copy stays
    published = nbformat.read(out, as_version=4)
    # (a) the pair check: equal cells pass
    assert runner.pair_differences(src, out) == []
    assert not any(runner.INJECTED_TAG in c.metadata.get("tags", []) for c in published.cells)
    assert any(runner.INJECTED_TAG in c.metadata.get("tags", []) for c in executed.cells)
    assert runner.injected_parameters(executed) == params and runner.injected_parameters(published) == {}
    assert "papermill" not in published.metadata
    # outputs: the table and the PNG figure, the log shortened to its ends, no library bars anywhere
    rich = [o for c in published.cells for o in c.get("outputs", []) if "data" in o]
    assert any("text/html" in o.data and "dwml" in o.data["text/html"] for o in rich)
    assert any("image/png" in o.data for o in rich)
    log = "".join(o.text for o in published.cells[2].outputs if o.output_type == "stream")
    assert log.startswith("step 0 ") and "step 2999 " in log and "step 1500 " not in log and "left out" in log
    assert len(log) < runner.MAX_STREAM_CHARS
    assert "step 1500 " in _output_text(executed)
    for nb in (executed, published):
        text = _output_text(nb)
        assert "saved and loaded" in text  # the cells ran
        assert not [b for b in ANY_BAR if b in text], text[:2000]
    assert out.stat().st_size < 100_000
    # JupyterLab's jupytext contents manager opens the pair with the outputs, also when the .ipynb is the
    # newer file (as after every run): it then demands the same cells in both, by its own comparison
    import os
    import shutil

    from jupytext import TextFileContentsManager

    shutil.copy(src, pub / src.name)
    shutil.copy(ROOT / "jupytext.toml", pub / "jupytext.toml")
    os.utime(pub / src.name, (time.time() - 100, time.time() - 100))
    model = TextFileContentsManager(root_dir=str(pub)).get(src.name)
    assert model["type"] == "notebook"
    assert sum(len(c.get("outputs", [])) for c in model["content"]["cells"]) == sum(
        len(c.get("outputs", [])) for c in published.cells) > 0
    # a changed cell, on either side, fails the check and is named
    edited = tmp_path / "edited" / src.name
    edited.parent.mkdir()
    edited.write_text(src.read_text().replace("range(3000)", "range(30)"))
    problems = runner.pair_differences(edited, out)
    assert problems and problems[0].startswith("cell 3:") and "range(" in problems[0]
    changed = nbformat.read(out, as_version=4)
    changed.cells[0].source = changed.cells[0].source.replace("A tiny", "A small")
    nbformat.write(changed, tmp_path / "changed.ipynb")
    assert runner.pair_differences(src, tmp_path / "changed.ipynb")[0].startswith("cell 1:")
    extra = tmp_path / "extra.py"
    extra.write_text(src.read_text() + "\n# %%\nprint(1)\n")
    assert "8 cells" in runner.pair_differences(extra, out)[0]
    # outputs that belong to other parameters than the source's are not published
    other = tmp_path / "other" / src.name
    other.parent.mkdir()
    other.write_text(src.read_text().replace("profile = 'ci'", "profile = 'default'"))
    with pytest.raises(runner.NotebookError, match="profile='ci', source 'default'"):
        runner.publish_notebook(tmp_path / "runs" / "executed" / "97_tiny.ipynb", other, tmp_path / "x.ipynb")
    assert not (tmp_path / "x.ipynb").exists()


def test_publish_joins_a_log_printed_in_pieces_and_keeps_the_last_frame_of_a_redrawn_line(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    src = tmp_path / "96_log.py"
    src.write_text('# %% tags=["parameters"]\nprofile = "default"\n\n# %%\ntrain()\n')
    pieces = [new_output("stream", name="stdout", text=f"step {i} loss {1 / (i + 1):.6f}\n") for i in range(400)]
    bar = new_output("stream", name="stderr", text="run 1:  10%\r run 1:  50%\r run 1: 100%\n")
    nb = new_notebook(cells=[new_code_cell('profile = "default"', metadata={"tags": ["parameters"]}),
                             new_code_cell("train()", outputs=pieces + [bar]), new_markdown_cell("x")])
    nbformat.write(nb, tmp_path / "executed.ipynb")
    info = runner.publish_notebook(tmp_path / "executed.ipynb", src, tmp_path / "96_log.ipynb")
    assert info["shortened"] == 1 and info["bytes"] == (tmp_path / "96_log.ipynb").stat().st_size
    outs = nbformat.read(tmp_path / "96_log.ipynb", as_version=4).cells[1].outputs
    assert [o.name for o in outs] == ["stdout", "stderr"]  # 400 pieces joined, then shortened as one
    assert outs[0].text.startswith("step 0 ") and "step 399 " in outs[0].text and "step 200 " not in outs[0].text
    assert f"the whole output is in {tmp_path / 'executed.ipynb'}" in outs[0].text
    assert outs[1].text == " run 1: 100%\n"  # what a terminal shows of the redrawn line


def test_only_the_default_profile_publishes_by_default(tmp_path, monkeypatch):
    published = []
    monkeypatch.setattr(runner, "run_notebook", lambda path, *a, **k: tmp_path / f"{Path(path).stem}.ipynb")
    monkeypatch.setattr(runner, "publish_notebook", lambda out, src, dest: published.append(dest) or
                        {"path": dest, "bytes": 1, "shortened": 0, "dropped": 0})
    assert runner.main(["--profile", "ci", "--quiet", "00_data"]) == 0
    assert published == []
    assert runner.main(["--profile", "default", "--quiet", "00_data"]) == 0
    assert published == [ROOT / "notebooks" / "00_data.ipynb"]
    assert runner.main(["--profile", "default", "--quiet", "--no-publish", "00_data"]) == 0
    assert len(published) == 1


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
    figures = Path(params["figures_dir"])
    before = {p: p.stat().st_mtime_ns for p in figures.glob("*.csv")}
    out = runner.run_notebook(path, "ci", params)
    import nbformat

    nb = nbformat.read(out, as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{out}: no cell has an output"
    # every table the notebook wrote labels its rows as the committed (default profile's) table does
    written = [p for p in sorted(figures.glob("*.csv")) if before.get(p) != p.stat().st_mtime_ns]
    for table in written:
        committed = ROOT / "figures" / table.name
        if committed.is_file():
            first = pd.read_csv(table).columns[0]
            assert first == pd.read_csv(committed).columns[0], f"{table.name}: first column {first!r}"
    if path.stem == "00_data":  # on ci it writes the n-gram baselines' table only: every paradigm, in percent
        from dwml.synthetic_pairs import PARADIGMS

        ngram = pd.read_csv(figures / "table_ngram_baselines.csv")
        assert list(ngram.columns) == ["paradigm", "1-gram", "2-gram", "3-gram"]
        assert ngram["paradigm"].tolist() == sorted(PARADIGMS) + ["macro average"]
        assert ngram.iloc[:, 1:].stack().between(0, 100).all()
        assert ngram.iloc[-1, 1:].tolist() == pytest.approx(ngram.iloc[:-1, 1:].mean().tolist())
    text = _output_text(nb)  # the project's progress only, no library bars
    assert not [b for b in BAR_TEXT if b in text], [line for line in text.splitlines() if any(b in line for b in BAR_TEXT)][:5]
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


def test_the_runner_answers_to_its_name():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "dwml.runner", "--help"], cwd=ROOT, capture_output=True, text=True)
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


def test_progress_relays_the_lines_a_study_appends_whole_lines_only(tmp_path):
    import io

    follow = tmp_path / "progress.log"
    out = io.StringIO()
    progress = runner.Progress("03_baselines", 5, heartbeat=0, stream=out, follow=follow)
    progress.relay()  # no file yet: nothing
    follow.write_text("[1/3] mlm_seed0 done in 1.5 min; 2 left, ~3.0 min\n[2/3] kd_se")
    progress.relay()
    assert out.getvalue().count("\n") == 1 and "| [1/3] mlm_seed0 done in 1.5 min; 2 left, ~3.0 min" in out.getvalue()
    with open(follow, "a") as f:
        f.write("ed0 done in 2.0 min; 1 left, ~2.0 min\n")
    with progress:  # the thread polls; leaving the block relays what is left
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].endswith("| [2/3] kd_seed0 done in 2.0 min; 1 left, ~2.0 min")
    assert lines[1].startswith("[dwml.runner] 03_baselines")
