"""The method registry (``dwml.methods.METHODS``) is the one list of method names.

Two checks: no code outside ``dwml/methods.py`` (in the package, the notebooks and the benchmarks; tests may
name the methods they test) compares a value with a method's name (callers read the class's traits instead),
and a method registered here, in a test file, is taken up by the config check, ``make_method`` and the
runs and studies without a line changed anywhere else.
"""
from __future__ import annotations

import ast

import pytest

from conftest import ROOT
from dwml import runs
from dwml.studies import study
from dwml import methods
from dwml.config import METHODS, Config, ConfigError, TrainConfig

BUILT_IN = {"mlm", "sd", "kd", "dml", "dwml", "kd_dwml"}


def _name_tests(path) -> list[str]:
    """Each place in ``path`` that compares something with a method's name (==, !=, in, not in, .isin).

    The evaluation conventions share the name 'dwml' (``prefixing``, ``convention``): not methods."""
    names = set(METHODS)
    tree = ast.parse(path.read_text())
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    hits = []

    def named(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(named(e) for e in node.elts)
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(named(s) for s in sides) and not any(w in ast.unparse(s) for s in sides
                                                        for w in ("prefix", "convention")):
                hits.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "isin":
            if any(named(a) for a in node.args):
                hits.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return hits


def _sources():
    files = (sorted((ROOT / "dwml").rglob("*.py")) + sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
             + sorted((ROOT / "benchmarks").glob("*.py")))
    return [p for p in files if p.name != "methods.py" or p.parent.name != "dwml"]


def test_the_registry_holds_the_six_methods_with_their_traits():
    assert BUILT_IN <= set(METHODS)
    assert {n for n in BUILT_IN if METHODS[n].uses_teacher} == {"kd", "kd_dwml"}
    assert {n for n in BUILT_IN if METHODS[n].single_model} == {"mlm"}
    assert {n for n in BUILT_IN if METHODS[n].learns_weights} == {"dwml", "kd_dwml"}
    assert all(METHODS[n].name == n for n in METHODS)


def test_no_code_outside_methods_compares_method_names():
    hits = [h for p in _sources() for h in _name_tests(p)]
    assert hits == [], "read the method's traits (dwml.methods.method_class) instead:\n" + "\n".join(hits)


def test_the_check_finds_a_comparison(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('if method in ("kd", "kd_dwml") or m == "mlm" or df["method"].isin(["dwml"]):\n    pass\n'
                   'if prefixing == "dwml" or search_method == "bayes":\n    pass\n')
    found = [h.split(": ", 1)[1] for h in _name_tests(bad)]
    assert found == ["method in ('kd', 'kd_dwml')", "m == 'mlm'", "df['method'].isin(['dwml'])"]


@pytest.fixture
def seventh():
    """Two methods defined and registered here only: one like mlm but with a teacher, one single-model."""

    @methods.register
    class Tutored(methods.TeacherKD):
        name = "tutored_test"
        paper_name = ""

    @methods.register
    class Solo(methods.MLM):
        name = "solo_test"
        paper_name = ""

    yield Tutored, Solo
    del METHODS["tutored_test"], METHODS["solo_test"]


def test_the_roles_and_the_training_order_follow_the_traits():
    order = ["sd", "kd", "dml", "kd_dwml", "dwml", "mlm"]
    assert methods.with_traits(order, uses_teacher=True) == ["kd", "kd_dwml"]
    assert methods.with_traits(order, learns_weights=True, uses_teacher=False) == ["dwml"]
    assert (methods.single_model_method(order), methods.dwml_method(order)) == ("mlm", "dwml")
    assert (methods.single_model_method(["sd", "kd_dwml"]), methods.dwml_method(["sd", "kd_dwml"])) == (None, None)
    # the teacher first, the others in their order; added when only its pupils are listed
    assert methods.training_order(order) == ["mlm", "sd", "kd", "dml", "kd_dwml", "dwml"]
    assert methods.training_order(["kd_dwml", "sd"]) == ["mlm", "kd_dwml", "sd"]
    assert methods.training_order(["dml", "dwml"]) == ["dml", "dwml"] and methods.teacher_method(["dml"]) is None
    with pytest.raises(AttributeError, match="no trait 'teacher'"):
        methods.with_traits(order, teacher=True)
    with pytest.raises(ConfigError, match="train.method='mlmm'"):
        methods.with_traits(["mlmm"], single_model=True)


def test_a_seventh_method_registered_in_a_test_file_is_taken_up_everywhere(seventh, tmp_path):
    Tutored, Solo = seventh
    # Config's check reads the registry: the new names pass, an unknown one is still refused.
    assert Config.from_dict(train={"method": "solo_test"}).train.method == "solo_test"
    with pytest.raises(ConfigError, match="train.method"):
        Config.from_dict(train={"method": "solo_tset"})
    # make_method builds it, and its traits come with it (a teacher is required).
    assert methods.method_class("tutored_test") is Tutored and methods.method_class("solo_test") is Solo
    with pytest.raises(ConfigError, match="teacher_dir"):
        methods.make_method(TrainConfig(method="tutored_test"), [object()])
    # The runs: the teacher check and the choice of models follow the traits.
    with pytest.raises(ValueError, match="teacher_dir"):
        runs.train_run({}, None, [], {}, "tutored_test", 0, tmp_path)
    meta = {"teacher": {"layers": 4, "hidden": 192, "heads": 4, "params": 2237696}}
    archs = ["peer 1", "peer 2", "peer 3"]
    assert [a.params for a in runs.run_archs("solo_test", archs, meta)] == [2237696]
    assert runs.run_archs("tutored_test", archs, meta, num_peers=2) == ["peer 1", "peer 2"]
    # The roles and the order of runs read the traits: a listed single model teaches, else the first registered.
    assert methods.single_model_method(["sd", "solo_test", "mlm"]) == "solo_test"
    assert methods.training_order(["tutored_test", "solo_test"]) == ["solo_test", "tutored_test"]
    assert methods.training_order(["tutored_test"]) == ["mlm", "tutored_test"]
    # A paper_name is what puts a method in the published table's mapping: these have none.
    assert set(study.paper_table2_long()["method"]) == BUILT_IN


def test_a_name_and_a_paper_name_can_be_registered_once():
    with pytest.raises(ValueError, match="'dml' is taken"):
        @methods.register
        class Again(methods.MLM):
            name = "dml"
    with pytest.raises(ValueError, match="paper_name 'KD' is taken"):
        @methods.register
        class Inherited(methods.TeacherKD):
            name = "inherited_test"
    assert "inherited_test" not in METHODS
