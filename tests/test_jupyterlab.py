"""JupyterLab opens the paired py:percent notebooks as notebooks, as `make lab` starts it: jupytext's contents
manager serves them, and the project's settings (`.jupyter/labconfig/default_setting_overrides.json`, found
through JUPYTER_CONFIG_PATH) make jupytext's notebook the default viewer of a .py file, so a double-click
opens it as a notebook. A server on a free local port with a token, asked through its APIs, then stopped.
(`benchmarks/lab_check.py` checks the same in a headless browser.)"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

CONTENTS_MANAGER = "jupytext.TextFileContentsManager"
LAB_OVERRIDES = ROOT / ".jupyter" / "labconfig" / "default_setting_overrides.json"
DOCMANAGER = "@jupyterlab/docmanager-extension:plugin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str, timeout: float = 5.0):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _make_lab_command(extra: str = "") -> str:
    """The shell line `make lab` runs (make -n, the install stamp taken as up to date)."""
    out = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "lab", f"LAB_ARGS={extra}"], cwd=ROOT,
                         capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                               if k != "JUPYTER_CONFIG_PATH"})
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "jupyter lab" in line]
    assert len(lines) == 1, out.stdout
    return lines[0]


def test_make_lab_uses_jupytexts_contents_manager_and_the_projects_settings():
    line = _make_lab_command()
    assert "jupyter lab" in line and f"--ServerApp.contents_manager_class={CONTENTS_MANAGER}" in line
    assert "--ServerApp.root_dir=notebooks" in line  # the notebooks' folder: /lab/tree/03_baselines.py
    # the settings are the project's, given by environment to this process only: nothing in the user's home
    assert line.startswith(f"JUPYTER_CONFIG_PATH={ROOT}/.jupyter "), line
    assert "JUPYTERLAB_SETTINGS_DIR" not in line and "JUPYTER_CONFIG_DIR" not in line
    assert "--my-flag" in _make_lab_command("--my-flag")  # LAB_ARGS reach the command (port, token, ...)


def test_lab_settings_make_jupytexts_notebook_the_default_viewer(tmp_path):
    settings = json.loads(LAB_OVERRIDES.read_text())  # valid JSON
    viewers = settings[DOCMANAGER]["defaultViewers"]
    assert viewers["python"] == "Jupytext Notebook" and viewers["markdown"] == "Jupytext Notebook"
    # the factory name is the one jupytext's JupyterLab extension registers (read from its installed bundle)
    bundle = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "jupyterlab-jupytext" / "static"
    assert any('FACTORY="Jupytext Notebook"' in js.read_text(errors="replace") for js in bundle.glob("*.js")), bundle
    # and the file is what jupytext's own `jupytext-config set-default-viewer python markdown` writes
    from jupytext_config.labconfig import LabConfig

    theirs = tmp_path / "default_setting_overrides.json"
    LabConfig(settings_file=theirs).read().set_default_viewers(["python", "markdown"]).write()
    assert json.loads(theirs.read_text()) == settings


def test_jupyterlab_serves_the_py_notebook_as_a_notebook(tmp_path):
    lab = Path(sys.executable).with_name("jupyter-lab")
    if not lab.exists():
        pytest.fail(f"{lab} missing: jupyterlab is a dependency (pip install -e '.[dev]')")
    port, token = _free_port(), secrets.token_hex(16)
    # `make lab`'s own command line, with this interpreter's jupyter, a free port and a token
    command = _make_lab_command(f"--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
                                f"--IdentityProvider.token={token}" + (" --allow-root" if os.geteuid() == 0 else ""))
    command = command.replace(".venv/bin/jupyter lab", f"{lab}", 1)
    # a clean user config, runtime and data dir: the user's own settings must not be what makes this pass
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    env.pop("JUPYTER_CONFIG_PATH", None)
    proc = subprocess.Popen(command, shell=True, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/status", token, timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.communicate(timeout=5)[0] if proc.poll() is not None else ""
                    pytest.fail(f"JupyterLab did not start on port {port}: {out[-2000:]}")
                time.sleep(0.3)
        model = _get(f"{base}/api/contents/02_bilevel_training.py?content=1", token, timeout=30)
        assert model["type"] == "notebook", model["type"]
        cells = model["content"]["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells if c["cell_type"] == "code")
        # the project's settings are in force: a double-click on a .py opens jupytext's notebook
        settings = _get(f"{base}/lab/api/settings/{DOCMANAGER}", token, timeout=30)
        # (overrides set the schema's defaults, which the page merges with the user's own settings)
        default = settings["schema"]["properties"]["defaultViewers"]["default"]
        assert default["python"] == "Jupytext Notebook", default
        assert "defaultViewers" not in settings.get("settings", {})  # the user's own settings: untouched
        assert not (tmp_path / "settings").exists() or not any((tmp_path / "settings").rglob("*.jupyterlab-settings"))
        # and the token is required: without it the API refuses
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/api/contents/", timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
