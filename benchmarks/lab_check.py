"""Browser-level check of `make lab`: the notebooks open as notebooks, with their executed outputs.

    .venv/bin/python benchmarks/lab_check.py      # writes benchmarks/results/lab_check.md and lab_check.png

JupyterLab is started by `make lab`'s own command line (read with `make -n`), on a free localhost port with
a token, under a clean user configuration (temporary JUPYTER_CONFIG_DIR, JUPYTERLAB_SETTINGS_DIR, ...), so
only the project's settings count. Headless Chromium (the system's, driven by playwright from PyPI, which
is installed into `.cache/playwright-venv` on first use; no browser download) then
1. opens `/lab/tree/03_baselines.py` by its URL and reads the page: a notebook panel with cells, no text
   editor, and in the executed outputs a table (Table 2) and a PNG figure (the methods figure);
2. opens `/lab`, double-clicks `03_baselines.py` in the file browser and reads what opened;
3. does the same double-click on a server started without the project's settings (the control: the text
   editor, as a fresh clone showed before).
The executed notebook is the committed `notebooks/03_baselines.ipynb` when there is one; otherwise a
temporary folder holds a copy of the source whose parameters cell has the `ci` profile's values and the
notebook the runner executed and published from it (`--publish-dir`), and the report says so.
Only localhost is contacted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "03_baselines"
PW_VENV = ROOT / ".cache" / "playwright-venv"

BROWSER = r'''
import json, sys
from playwright.sync_api import sync_playwright

chromium, base, token, name, shot, mode = sys.argv[1:7]
out = {}
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    main = "#jp-main-dock-panel"

    def opened():
        """What the main area shows: the notebook panels, cells, file editors."""
        page.wait_for_timeout(1500)
        return {"notebook_panels": page.locator(f"{main} .jp-NotebookPanel").count(),
                "cells": page.locator(f"{main} .jp-Notebook .jp-Cell").count(),
                "file_editors": page.locator(f"{main} .jp-FileEditor").count()}

    if mode == "url":
        page.goto(f"{base}/lab/tree/{name}?token={token}")
        page.wait_for_selector(f"{main} .jp-Notebook .jp-Cell, {main} .jp-FileEditor", timeout=90000)
        page.wait_for_timeout(3000)
        out["url"] = opened()
        outputs = f"{main} .jp-Notebook .jp-OutputArea-output"
        out["url"]["output_tables"] = page.locator(f"{outputs} table").count()
        out["url"]["output_png_images"] = page.locator(f"{outputs} img[src^='data:image/png']").count()
        # Table 2: the output of the cell that computes it; the methods figure: that of the cell that draws it
        table2 = page.locator(f"{main} .jp-Notebook .jp-CodeCell").filter(has_text="baselines.table2(").first
        figure = page.locator(f"{main} .jp-Notebook .jp-CodeCell").filter(has_text="plot_methods(seeded").first
        out["url"]["table2_tables"] = table2.locator(".jp-OutputArea-output table").count()
        out["url"]["table2_kd_dwml_rows"] = table2.locator(".jp-OutputArea-output table").filter(has_text="kd_dwml").count()
        out["url"]["methods_figure_pngs"] = figure.locator(".jp-OutputArea-output img[src^='data:image/png']").count()
        # the screenshot: the notebook scrolled to Table 2's cell
        if table2.count():
            table2.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(1500)
        page.screenshot(path=shot)
    else:
        page.goto(f"{base}/lab?token={token}")
        item = page.locator(".jp-DirListing-item", has_text=name).first
        item.wait_for(timeout=90000)
        item.dblclick()
        page.wait_for_selector(f"{main} .jp-Notebook .jp-Cell, {main} .jp-FileEditor", timeout=90000)
        out["double_click"] = opened()
    browser.close()
print(json.dumps(out))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_lab_command(extra: str, root_dir: Path | None = None) -> str:
    """The shell line `make lab` runs, with ``extra`` as LAB_ARGS and ``root_dir`` as LAB_ROOT (the install
    stamp taken as up to date)."""
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_CONFIG_PATH"}
    make = ["make", "-s", "-n", "-o", ".venv/.installed", "lab", f"LAB_ARGS={extra}"]
    out = subprocess.run(make + ([f"LAB_ROOT={root_dir}"] if root_dir else []), cwd=ROOT, capture_output=True,
                         text=True, env=env, check=True)
    (line,) = [line for line in out.stdout.splitlines() if "jupyter lab" in line]
    return line.replace(".venv/bin/jupyter lab", str(Path(sys.executable).with_name("jupyter-lab")), 1)


class Lab:
    """`make lab`'s command on a free port with a token and a clean user configuration; ``settings=False``
    drops the project's JUPYTER_CONFIG_PATH (the control)."""

    def __init__(self, tmp: Path, root_dir: Path | None, settings: bool = True):
        self.port, self.token = free_port(), secrets.token_hex(16)
        extra = (f"--no-browser --ip=127.0.0.1 --port={self.port} --ServerApp.port_retries=0 "
                 f"--IdentityProvider.token={self.token}" + (" --allow-root" if os.geteuid() == 0 else ""))
        self.command = make_lab_command(extra, root_dir)
        if not settings:
            self.command = re.sub(r"^JUPYTER_CONFIG_PATH=\S+ ", "", self.command)
        user = tmp / f"user-{self.port}"
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(user / "config"), "JUPYTER_RUNTIME_DIR": str(user / "rt"),
               "JUPYTER_DATA_DIR": str(user / "data"), "JUPYTERLAB_SETTINGS_DIR": str(user / "settings"),
               "JUPYTERLAB_WORKSPACES_DIR": str(user / "workspaces")}
        env.pop("JUPYTER_CONFIG_PATH", None)
        # this check's own (temporary) user settings: no "Jupyter news?" pop-up over the screenshot
        news = user / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True)
        news.write_text('{"fetchNews": "false"}')
        self.proc = subprocess.Popen(self.command, shell=True, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                req = urllib.request.Request(f"{self.base}/api/status", headers={"Authorization": f"token {self.token}"})
                urllib.request.urlopen(req, timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"JupyterLab did not start: {self.command}")
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def playwright_python() -> Path:
    python = PW_VENV / "bin" / "python"
    if not (python.exists() and subprocess.run([str(python), "-c", "import playwright.sync_api"]).returncode == 0):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PW_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "playwright"], check=True)
    return python


def executed_folder() -> tuple[Path | None, str]:
    """(folder to serve, None for `make lab`'s own; how the executed notebook came about). The `ci` stand-in
    is kept in `.cache/lab-check/<hash of the source and the profile>/` (03 on `ci` takes minutes here)."""
    if (ROOT / "notebooks" / f"{NOTEBOOK}.ipynb").is_file():
        return None, f"the committed `notebooks/{NOTEBOOK}.ipynb` (default profile), served from `notebooks/`"
    sys.path.insert(0, str(ROOT))
    import hashlib

    import yaml

    from dwml import runner

    src = ROOT / "notebooks" / f"{NOTEBOOK}.py"
    key = hashlib.sha256(src.read_bytes() + (ROOT / "profiles" / "ci.yaml").read_bytes()).hexdigest()[:16]
    tmp = ROOT / ".cache" / "lab-check" / key
    folder = tmp / "notebooks"
    executed = tmp / "runs" / "executed" / f"{NOTEBOOK}.ipynb"
    if executed.is_file() and (folder / src.name).is_file():
        runner.publish_notebook(executed, folder / src.name, folder / f"{NOTEBOOK}.ipynb")  # as the runner now would
        return folder, (f"no committed `notebooks/{NOTEBOOK}.ipynb` yet: a copy of `{src.name}` with the `ci` "
                        f"profile's parameters, executed and published by the runner (`--publish-dir`; cached in "
                        f"`.cache/lab-check/{key}/`)")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    params = {**runner.load_profile("ci"), "run_root": str(tmp / "runs"), "figures_dir": str(tmp / "figures")}
    values = {**runner.notebook_parameters(src), **runner.parameters_for(src, params)}
    text = src.read_text()
    start = text.index('# %% tags=["parameters"]\n')
    end = text.index("\n# %%", start + 1)
    body = "".join(f"{k} = {v!r}\n" for k, v in values.items())
    folder.mkdir()
    (folder / src.name).write_text(text[:start] + '# %% tags=["parameters"]\n' + body + text[end:])
    shutil.copy(ROOT / "jupytext.toml", folder / "jupytext.toml")  # the pairing (ipynb,py:percent)
    prof = tmp / "ci.yaml"
    prof.write_text(yaml.safe_dump(params))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dwml.runner", "--profile", str(prof), "--quiet", "--publish-dir",
                    str(folder), str(folder / src.name)], cwd=ROOT, check=True)
    return folder, (f"no committed `notebooks/{NOTEBOOK}.ipynb` yet: a temporary copy of `{src.name}` with the "
                    f"`ci` profile's parameters, executed and published by the runner "
                    f"(`--publish-dir`, {time.perf_counter() - t0:.0f} s)")


def browse(python: Path, lab: Lab, mode: str, shot: Path) -> dict:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium: apt-get install -y chromium")
    r = subprocess.run([str(python), "-c", BROWSER, chromium, lab.base, lab.token, f"{NOTEBOOK}.py", str(shot), mode],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"browser ({mode}) failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder of lab_check.md / .png")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    python = playwright_python()
    folder, how = executed_folder()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results = {}
        lab = Lab(tmp, folder)
        try:
            results.update(browse(python, lab, "url", out / "lab_check.png"))
            results.update(browse(python, lab, "dblclick", tmp / "unused.png"))
            command = lab.command
        finally:
            lab.stop()
        control = Lab(tmp, folder, settings=False)
        try:
            results["control_double_click"] = browse(python, control, "dblclick", tmp / "unused.png")["double_click"]
        finally:
            control.stop()
    url, dbl, ctl = results["url"], results["double_click"], results["control_double_click"]
    checks = {
        "URL: a notebook with cells, no text editor": url["notebook_panels"] >= 1 and url["cells"] > 0
        and url["file_editors"] == 0,
        "URL: Table 2 (a table naming kd_dwml) in the output of the cell that computes it": url["table2_tables"] > 0
        and url["table2_kd_dwml_rows"] > 0,
        "URL: the methods figure (a PNG) in the output of the cell that draws it": url["methods_figure_pngs"] > 0,
        "double-click: a notebook with cells, no text editor": dbl["notebook_panels"] >= 1 and dbl["cells"] > 0
        and dbl["file_editors"] == 0,
    }
    ok = all(checks.values())
    chromium = subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True,
                              text=True).stdout.strip()
    lines = [
        "# Browser-level check of `make lab`", "",
        f"Command: `.venv/bin/python benchmarks/lab_check.py` ({time.perf_counter() - t0:.0f} s), "
        f"{time.strftime('%Y-%m-%d')}, this machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {chromium} headless, driven by playwright.", "",
        f"Executed notebook: {how}.", "",
        f"Server: `{re.sub(r'token=[0-9a-f]+', 'token=...', command.replace(str(ROOT) + '/', ''))}`", "",
        "| what was opened | notebook panels | cells | text editors | tables / PNG figures in outputs | "
        "Table 2's cell: tables | methods figure's cell: PNGs |",
        "|---|---|---|---|---|---|---|",
        f"| `/lab/tree/{NOTEBOOK}.py` (its URL) | {url['notebook_panels']} | {url['cells']} | {url['file_editors']} | "
        f"{url['output_tables']} / {url['output_png_images']} | {url['table2_tables']} | {url['methods_figure_pngs']} |",
        f"| double-click on `{NOTEBOOK}.py` in the file browser | {dbl['notebook_panels']} | {dbl['cells']} | "
        f"{dbl['file_editors']} | | | |",
        f"| the same double-click, server without the project's settings (control) | {ctl['notebook_panels']} | "
        f"{ctl['cells']} | {ctl['file_editors']} | | | |", "",
        *[f"- [{'x' if v else ' '}] {k}" for k, v in checks.items()], "",
        "Screenshot (`lab_check.png`): the notebook opened by its URL, scrolled to Table 2.",
        f"Result: {'PASS' if ok else 'FAIL'}.", ""]
    (out / "lab_check.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
