"""JupyterLab opens the paired py:percent notebooks as notebooks (jupytext's contents manager), as `make lab`
starts it: a server on a free local port with a token, asked through its contents API, then stopped."""
from __future__ import annotations

import json
import os
import re
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str, timeout: float = 5.0):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def test_make_lab_uses_jupytexts_contents_manager():
    make = (ROOT / "Makefile").read_text()
    lab = re.search(r"^lab:.*?\n((?:\t.*\n)+)", make, re.M)
    assert lab, "Makefile has no `lab` target"
    assert "jupyter lab" in lab.group(1) and CONTENTS_MANAGER in lab.group(1)


def test_jupyterlab_serves_the_py_notebook_as_a_notebook(tmp_path):
    lab = Path(sys.executable).with_name("jupyter-lab")
    if not lab.exists():
        pytest.fail(f"{lab} missing: jupyterlab is a dependency (pip install -e '.[dev]')")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([str(lab), "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
                             f"--ServerApp.contents_manager_class={CONTENTS_MANAGER}"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),  # containers and CI run as root
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
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
        model = _get(f"{base}/api/contents/notebooks/02_bilevel_training.py?content=1", token, timeout=30)
        assert model["type"] == "notebook", model["type"]
        cells = model["content"]["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells if c["cell_type"] == "code")
        # and the token is required: without it the API refuses
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/api/contents/notebooks", timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
