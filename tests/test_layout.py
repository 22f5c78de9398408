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
    for name in ["ci", "default", "answer", "aochildes", "babylm10m", "gpu"]:
        prof = yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())
        assert {"profile", "run_root", "figures_dir", "seeds", "data"} <= set(prof), name
        assert prof["profile"] == name
    ci = yaml.safe_load((ROOT / "profiles" / "ci.yaml").read_text())
    assert ci["figures_dir"].startswith("runs/"), "the ci profile must not overwrite committed figures"


def _floors() -> dict[str, int]:
    """Module -> floor, as CONTRIBUTING.md's layout lists them: ``plots/``, ``suites/``, ``studies/``, ``train/``
    and ``evaluate/`` are packages (their modules on the package's floor), ``train/__main__`` a command module
    with a floor of its own."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    floors = {}
    for level, rest in re.findall(r"^\s+(\d)\. (.*)$", text, re.M):
        for name in re.findall(r"`([a-z_]+(?:/__main__)?)/?`", rest):
            floors[name.replace("/", ".")] = int(level)
    return floors


def _modules() -> dict[str, Path]:
    """Every module of the package by its name under ``dwml``: ``io``, ``suites`` (its ``__init__``),
    ``suites.zorro``, ``train.__main__``, ... (the package's own ``dwml/__init__.py`` imports nothing)."""
    out = {}
    for path in sorted((ROOT / "dwml").rglob("*.py")):
        parts = list(path.relative_to(ROOT / "dwml").with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def _floor_of(name: str, floors: dict[str, int]) -> int | None:
    """A module's floor: its own entry, else its package's; a command module (``__main__``) needs its own."""
    if name in floors:
        return floors[name]
    pkg, _, leaf = name.rpartition(".")
    return None if not pkg or leaf == "__main__" else _floor_of(pkg, floors)


def _imports(path: Path, modules) -> set[str]:
    """The ``dwml`` modules a file imports anywhere in it (function-level imports and ``__main__`` blocks
    included), each resolved to the most specific module that exists: ``from dwml.suites import zorro`` is
    ``suites.zorro``, ``from dwml.suites import SUITES`` is ``suites``."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module + ".").startswith("dwml."):
            base = node.module.split(".")[1:]
            for alias in node.names:
                cand = base + [alias.name]
                while cand and ".".join(cand) not in modules:
                    cand = cand[:-1]
                if cand:
                    out.add(".".join(cand))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                cand = alias.name.split(".")[1:] if alias.name.startswith("dwml.") else []
                while cand and ".".join(cand) not in modules:
                    cand = cand[:-1]
                if cand:
                    out.add(".".join(cand))
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``dwml`` modules it imports (itself left out)."""
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: each strongly connected component of more than one module (Tarjan's
    algorithm), as a sorted list of its modules; a module importing itself is not counted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_one_on_a_higher_floor():
    """CONTRIBUTING's floors, checked: every ``dwml`` module (function-level imports and ``__main__`` blocks
    included) imports only modules on its own floor or below, and every module is on a floor. The command
    modules (``train/__main__``, ``evaluate/__main__``) are modules like any other, on the top floor."""
    floors = _floors()
    modules = _modules()
    unplaced = sorted(n for n in modules if _floor_of(n, floors) is None)
    assert unplaced == [], f"modules missing from CONTRIBUTING.md's floors: {unplaced}"
    assert {n for n in floors if n not in modules} == set(), "CONTRIBUTING.md lists modules that do not exist"
    bad = []
    for name, targets in sorted(import_graph().items()):
        for t in sorted(targets):
            if _floor_of(t, floors) > _floor_of(name, floors):
                bad.append(f"{name} (floor {_floor_of(name, floors)}) imports {t} (floor {_floor_of(t, floors)})")
    assert bad == []


def test_the_command_modules_are_on_the_top_floor():
    floors = _floors()
    assert floors["train.__main__"] == floors["evaluate.__main__"] == max(floors.values())
    assert floors["train"] < floors["train.__main__"] and floors["evaluate"] < floors["evaluate.__main__"]


def test_no_import_circle_among_the_modules():
    graph = import_graph()
    assert "train.__main__" in graph and "suites.zorro" in graph and "device" in graph["train"]
    assert find_cycles(graph) == []


def test_the_circle_check_finds_a_planted_circle():
    """A circle planted in the real graph (a low module importing the loop, which imports it back through
    others) and one in a small graph are found, with exactly their modules; a self-import and a diamond
    (two paths, no circle) are not circles."""
    graph = import_graph()
    graph["io"] = graph["io"] | {"train"}  # train -> ... -> io and now io -> train
    cycles = find_cycles(graph)
    assert len(cycles) == 1 and {"io", "train"} <= set(cycles[0])
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a", "b"}, "b": {"c"}, "c": set(), "d": {"b", "c"}}) == []
    assert sorted(find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}})) == [["a", "b"], ["c", "d"]]
