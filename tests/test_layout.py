"""The project's set-up: the two README commands, CI, environment.yml in step with pyproject."""
from __future__ import annotations

import re
import tomllib

import yaml

from conftest import ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_layout_exists():
    for rel in ["dwml", "notebooks", "figures", "tests", "benchmarks", "profiles", "environment.yml",
                "pyproject.toml", "README.md", ".ci/run", "jupytext.toml", "Makefile"]:
        assert (ROOT / rel).exists(), rel


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    have = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            have |= {_name(d) for d in dep["pip"]}
        elif not dep.startswith(("python=", "pip")):
            have.add(_name(dep))
    assert wanted == have
    assert "torch==2.13.0" in project["dependencies"]
    assert "torch==2.13.0" in env["dependencies"][-1]["pip"]


def test_readme_starts_with_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_code = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1).split("\n")
    commands = [line.split("#")[0].strip() for line in first_code if line.split("#")[0].strip()]
    assert commands == ["make reproduce", "make test"]
    ci = [l.strip() for l in (ROOT / ".ci/run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert ci[-1] == "make test"


def test_profiles_are_mappings_with_the_shared_keys():
    for name in ["ci", "default", "aochildes", "babylm10m", "gpu"]:
        prof = yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())
        assert {"profile", "run_root", "figures_dir", "seeds", "data"} <= set(prof), name
        assert prof["profile"] == name
    ci = yaml.safe_load((ROOT / "profiles" / "ci.yaml").read_text())
    assert ci["figures_dir"].startswith("runs/"), "the ci profile must not overwrite committed figures"


def _floors() -> dict[str, int]:
    """Module -> floor, as CONTRIBUTING.md's layout lists them (``plots/``, ``suites/`` and ``studies/`` are packages)."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    floors = {}
    for level, rest in re.findall(r"^\s+(\d)\. (.*)$", text, re.M):
        for name in re.findall(r"`([a-z_]+)/?`", rest):
            floors[name] = int(level)
    return floors


def test_no_module_imports_one_on_a_higher_floor():
    """CONTRIBUTING's floors, checked: every ``dwml`` module (function-level imports included) imports
    only modules on its own floor or below, and every module is on a floor. A module's
    ``if __name__ == "__main__":`` block (its command-line entry point) is outside the rule."""
    import ast

    floors = _floors()
    modules = {p.stem: p for p in (ROOT / "dwml").glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert set(modules) - set(floors) == set(), "modules missing from CONTRIBUTING.md's floors"
    bad = []
    packages = [(pkg, p) for pkg in ("plots", "suites", "studies") for p in sorted((ROOT / "dwml" / pkg).glob("*.py"))]
    for name, path in sorted(modules.items()) + packages:
        tree = ast.parse(path.read_text())
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))]
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dwml"):
                parts = node.module.split(".")
                targets = [parts[1]] if len(parts) > 1 else [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("dwml.")]
            for t in targets:
                if t in floors and floors[t] > floors[name]:
                    bad.append(f"{path.relative_to(ROOT)} (floor {floors[name]}) imports {t} (floor {floors[t]})")
    assert bad == []
