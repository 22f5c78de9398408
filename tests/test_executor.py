"""dwml.executor: the study as data, dependency order, failures, a killed worker, and the same run folders
whatever runs them (serial, a local pool of 2 workers, Ray)."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from dwml.config import ConfigError
from dwml.executor import (ExecutorConfig, RunResult, RunSpec, StudyError, baseline_specs, cpu_count,
                           folder_differences, log_path, log_tail, ordered, read_scores, run_study, time_left,
                           train_results, visible_gpus)
from dwml.runs import StudySource
from dwml.studies.study import run_spec

ROOT = Path(__file__).resolve().parents[1]
LOCAL2 = ExecutorConfig(kind="local", workers=2, threads=1)


# --------------------------------------------------------------------------------------------------
# Fake work functions (module level: a spawned worker imports them by name)
# --------------------------------------------------------------------------------------------------

def _fake_result(source, spec, seconds=0.0) -> RunResult:
    run_dir = Path(source.run_root) / spec.name
    (run_dir / "peer_0").mkdir(parents=True, exist_ok=True)
    return RunResult(spec.name, str(run_dir), {"method": spec.method}, (str(run_dir / "peer_0"),), "", seconds)


def timed_work(source, spec, teacher_dir):
    """Records when it started and ended, and the teacher folder it was given, in <run_root>/times/."""
    times = Path(source.run_root) / "times"
    times.mkdir(parents=True, exist_ok=True)
    start = time.time()
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    time.sleep(1.0)
    (times / f"{spec.name}.json").write_text(json.dumps({"start": start, "end": time.time(), "teacher": teacher_dir,
                                                        "pid": os.getpid(), "env": env}))
    return _fake_result(source, spec)


def failing_work(source, spec, teacher_dir):
    """The mlm runs fail after printing a line; the others finish."""
    if spec.method == "mlm":
        print(f"step 3 of {spec.name}: about to fail", flush=True)
        raise ValueError(f"{spec.name} broke on purpose")
    return _fake_result(source, spec)


def dying_work(source, spec, teacher_dir):
    """The dwml run's worker dies mid-run the first time (os._exit, as a killed process would); then finishes."""
    marker = Path(source.run_root) / f"{spec.name}.started"
    if spec.method == "dwml" and not marker.exists():
        marker.write_text("1")
        print("half way", flush=True)
        os._exit(3)
    return _fake_result(source, spec)


def _source(tmp_path, **kw) -> StudySource:
    return StudySource({}, {}, {}, str(tmp_path), **kw)


# --------------------------------------------------------------------------------------------------
# The study as data
# --------------------------------------------------------------------------------------------------

def test_specs_name_their_runs_and_wait_for_their_teachers():
    specs = baseline_specs(["kd", "dwml", "kd_dwml"], [0, 1])
    assert [s.name for s in specs] == ["mlm_seed0", "kd_seed0", "dwml_seed0", "kd_dwml_seed0",
                                       "mlm_seed1", "kd_seed1", "dwml_seed1", "kd_dwml_seed1"]
    assert {s.name: s.teacher for s in specs if s.teacher} == {
        "kd_seed0": "mlm_seed0", "kd_dwml_seed0": "mlm_seed0", "kd_seed1": "mlm_seed1", "kd_dwml_seed1": "mlm_seed1"}
    tagged = RunSpec("dwml", 2, "alpha0.3", {"alpha": 0.3})
    assert tagged.name == "dwml_alpha0.3_seed2" and tagged.overrides == {"alpha": 0.3}
    assert RunSpec("dwml", 2, "t", {"b": 1, "a": 2}) == RunSpec("dwml", 2, "t", (("a", 2), ("b", 1)))
    # dependency order, whatever order they are given in, and the given order where it already is one (a
    # seed's students beside their teacher, not all students after every teacher: the pool's tail)
    assert [s.name for s in ordered(specs[::-1])].index("kd_seed0") > [s.name for s in ordered(specs[::-1])].index(
        "mlm_seed0")
    assert ordered(specs) == specs
    assert [s.name for s in ordered(specs[::-1])] == ["dwml_seed1", "mlm_seed1", "kd_dwml_seed1", "kd_seed1",
                                                      "dwml_seed0", "mlm_seed0", "kd_dwml_seed0", "kd_seed0"]


@pytest.mark.parametrize("specs, message", [
    ([RunSpec("mlm", 0), RunSpec("mlm", 0)], "two specs name the run 'mlm_seed0'"),
    ([RunSpec("kd", 0, teacher="mlm_seed0")], "teacher 'mlm_seed0' is not a spec"),
    ([RunSpec("kd", 0)], "learns from a teacher"),
    ([RunSpec("dwml", 0, "a", teacher="dwml_b_seed0"), RunSpec("dwml", 0, "b", teacher="dwml_a_seed0")], "cycle"),
])
def test_bad_studies_are_refused_naming_the_spec(specs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ordered(specs)


def test_spec_overrides_need_a_tag():
    with pytest.raises(ConfigError, match="need a tag"):
        RunSpec("dwml", 0, train_overrides={"alpha": 0.3})


@pytest.mark.parametrize("kw, param", [({"kind": "slurm"}, "executor.kind"), ({"workers": 0}, "executor.workers"),
                                       ({"workers": "many"}, "executor.workers"), ({"threads": 0}, "executor.threads"),
                                       ({"runs_per_gpu": 0}, "executor.runs_per_gpu"), ({"gpus": 1}, "unknown key")])
def test_executor_config_names_the_bad_parameter(kw, param):
    with pytest.raises(ConfigError, match=re.escape(param)):
        ExecutorConfig.from_dict(kw)


def test_auto_workers_from_cores_and_gpus(monkeypatch):
    cfg = ExecutorConfig.from_dict({"kind": "local", "workers": "auto", "threads": 2})
    slots = cfg.slots(gpus=[], cores=8)
    assert len(slots) == 4 and all(s["OMP_NUM_THREADS"] == "2" and s["CUDA_VISIBLE_DEVICES"] == "" for s in slots)
    assert len(ExecutorConfig(kind="local").slots(gpus=[], cores=3)) == 3  # one thread each by default
    gpu = ExecutorConfig(kind="local", runs_per_gpu=2).slots(gpus=["3", "5"])
    assert sorted(s["CUDA_VISIBLE_DEVICES"] for s in gpu) == ["3", "3", "5", "5"]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in ExecutorConfig(kind="local", workers=3).slots(gpus=["3", "5"])] == \
        ["3", "5", "3"]
    assert ExecutorConfig().slots() == [{}]  # serial: this process as it is
    assert cpu_count() == len(os.sched_getaffinity(0))
    assert len(ExecutorConfig(kind="local").slots(gpus=[])) == cpu_count()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    assert visible_gpus() == ["2", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


# --------------------------------------------------------------------------------------------------
# Scheduling: order, failures, a killed worker (fake work, two spawned workers)
# --------------------------------------------------------------------------------------------------

def test_a_dependent_starts_after_its_teacher_and_others_run_alongside(tmp_path):
    lines = []
    before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}
    specs = [RunSpec("mlm", 0), RunSpec("kd", 0, teacher="mlm_seed0"), RunSpec("dwml", 0),
             RunSpec("kd_dwml", 0, teacher="mlm_seed0")]
    out = run_study(_source(tmp_path), specs, LOCAL2, work=timed_work, progress=lines.append)
    assert list(out) == [s.name for s in specs]
    t = {n: json.loads((tmp_path / "times" / f"{n}.json").read_text()) for n in out}
    for student in ("kd_seed0", "kd_dwml_seed0"):
        assert t[student]["start"] >= t["mlm_seed0"]["end"]
        assert t[student]["teacher"] == str(tmp_path / "mlm_seed0" / "peer_0")
    assert t["mlm_seed0"]["teacher"] == "" and len({v["pid"] for v in t.values()}) == 4  # a process a run
    # each worker's share of the machine, in its environment from its start (before torch is imported)
    assert all(v["env"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
               for v in t.values())
    assert {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")} == before  # ours unchanged
    # two workers: the teacher and dwml (no teacher) ran at the same time
    assert t["dwml_seed0"]["start"] < t["mlm_seed0"]["end"] and t["mlm_seed0"]["start"] < t["dwml_seed0"]["end"]
    done = [l for l in lines if re.fullmatch(r"\[\d/4\] \S+ done in \d+\.\d min; \d left(, ~\d+\.\d min)?", l)]
    assert len(done) == 4 and done[-1].startswith("[4/4]") and "0 left" in done[-1]
    assert "~" in done[0]  # an estimate once one run has finished and some are left
    assert lines[-1].startswith("4 runs in") and "local, 2 at once" in lines[-1]


@pytest.mark.parametrize("config", [ExecutorConfig(), LOCAL2], ids=["serial", "local"])
def test_a_failed_run_is_reported_with_its_log_and_the_others_finish(tmp_path, config, capsys):
    specs = baseline_specs(["mlm", "kd", "dwml"], [0])
    lines = []
    with pytest.raises(StudyError) as err:
        run_study(_source(tmp_path), specs, config, work=failing_work, progress=lines.append)
    e = err.value
    assert list(e.failed) == ["mlm_seed0"] and list(e.skipped) == ["kd_seed0"] and list(e.results) == ["dwml_seed0"]
    assert "ValueError: mlm_seed0 broke on purpose" in e.failed["mlm_seed0"]
    assert "step 3 of mlm_seed0: about to fail" in e.failed["mlm_seed0"]  # the log's tail
    assert "mlm_seed0 failed" in str(e) and "kd_seed0 skipped: its teacher mlm_seed0 failed" in str(e)
    assert any("mlm_seed0 FAILED" in l for l in lines) and any("dwml_seed0 done" in l for l in lines)
    log = tmp_path / "logs" / "mlm_seed0.log"
    assert log_path(str(tmp_path), "mlm_seed0") == log
    assert "about to fail" in log.read_text() and "Traceback" in log.read_text()


def test_a_killed_worker_is_a_failed_run_and_a_rerun_completes(tmp_path):
    specs = [RunSpec("dwml", 0), RunSpec("mlm", 0), RunSpec("kd", 0, teacher="mlm_seed0")]
    with pytest.raises(StudyError) as err:
        run_study(_source(tmp_path), specs, LOCAL2, work=dying_work, progress=None)
    assert list(err.value.failed) == ["dwml_seed0"] and set(err.value.results) == {"mlm_seed0", "kd_seed0"}
    assert "exit code 3" in err.value.failed["dwml_seed0"] and "half way" in err.value.failed["dwml_seed0"]
    out = run_study(_source(tmp_path), specs, LOCAL2, work=dying_work, progress=None)
    assert list(out) == ["dwml_seed0", "mlm_seed0", "kd_seed0"]  # the specs' order


def test_a_run_finished_before_is_looked_up_here_not_in_a_worker(tmp_path):
    (tmp_path / "mlm_seed0").mkdir()
    (tmp_path / "mlm_seed0" / "DONE").write_text("")
    specs = [RunSpec("mlm", 0), RunSpec("kd", 0, teacher="mlm_seed0"), RunSpec("dwml", 0)]
    out = run_study(_source(tmp_path), specs, LOCAL2, work=timed_work, progress=None)
    assert list(out) == [s.name for s in specs]
    pid = {n: json.loads((tmp_path / "times" / f"{n}.json").read_text())["pid"] for n in out}
    assert pid["mlm_seed0"] == os.getpid()  # finished: no process started for it
    assert pid["kd_seed0"] != os.getpid() and pid["dwml_seed0"] != os.getpid()
    assert "=== mlm_seed0: started" in (tmp_path / "logs" / "mlm_seed0.log").read_text()  # its log as any run's


DIES_ON_IMPORT = """
import os
if os.environ.get("DWML_TEST_DIE_ON_IMPORT"):
    raise SystemExit(5)

def work(source, spec, teacher_dir):
    return None
"""


def test_a_worker_that_dies_while_starting_is_reported_with_the_likely_cause(tmp_path, monkeypatch):
    # what a script without `if __name__ == "__main__":` meets: the spawned worker dies importing it again
    (tmp_path / "dies_on_import.py").write_text(DIES_ON_IMPORT)
    monkeypatch.syspath_prepend(str(tmp_path))
    import dies_on_import

    monkeypatch.setenv("DWML_TEST_DIE_ON_IMPORT", "1")  # the worker inherits it; this process imported it already
    with pytest.raises(StudyError) as err:
        run_study(_source(tmp_path / "study"), [RunSpec("mlm", 0)], LOCAL2, work=dies_on_import.work, progress=None)
    message = err.value.failed["mlm_seed0"]
    assert "exit code 5" in message and "died while starting" in message and '__name__ == "__main__"' in message


def test_time_left_counts_what_the_running_runs_have_done():
    # two slots, 4 min a run: one run 3.9 min in, nothing waiting -> ~0.1 min (the old estimate said 4)
    assert time_left(240.0, [234.0], 0, 2) == pytest.approx(6.0)
    # one run half done, three waiting: the free slot takes two of them, the other slot the third
    assert time_left(240.0, [120.0], 3, 2) == pytest.approx(480.0)
    assert time_left(60.0, [], 4, 2) == pytest.approx(120.0)
    assert time_left(60.0, [90.0], 0, 1) == 0.0  # a run over the mean: no negative time


def test_log_tail_keeps_a_progress_bars_last_state(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("one\nbar 10%\rbar 50%\rbar 100%\nthree\n")
    assert log_tail(log, 2) == "bar 100%\nthree"
    assert log_tail(tmp_path / "missing.log").startswith("(no log:")


# --------------------------------------------------------------------------------------------------
# The same run folders whatever runs them (the ci profile, a few steps)
# --------------------------------------------------------------------------------------------------

TINY = {"num_epochs": 3, "lr_decay_iters": 3, "warmup_iters": 1, "eval_interval": 2, "eval_batches": 1,
        "checkpoint_interval": 2, "batch_size": 16,
        "mixed_precision": False}  # the precision fixed, so no choice of it (a timed probe) differs between runs


def ci_source(run_root) -> StudySource:
    prof = yaml.safe_load((ROOT / "profiles" / "ci.yaml").read_text())
    return StudySource(prof["data"], prof["search"], {**prof["train"], **TINY}, str(run_root), ("synthetic",), 2)


CI_SPECS = [RunSpec("mlm", 0), RunSpec("kd", 0, teacher="mlm_seed0")]


@pytest.fixture(scope="module")
def serial_ci(tmp_path_factory):
    root = tmp_path_factory.mktemp("serial")
    out = run_study(ci_source(root), CI_SPECS, ExecutorConfig(kind="serial", threads=1), work=run_spec, progress=None)
    return root, out


def test_serial_and_a_local_pool_give_the_same_run_folders(serial_ci, tmp_path):
    root, serial = serial_ci
    local = run_study(ci_source(tmp_path), CI_SPECS, LOCAL2, work=run_spec, progress=None)
    for name in ("mlm_seed0", "kd_seed0"):
        assert (root / name / "DONE").is_file() and Path(serial[name].scores).is_file()
        assert serial[name].summary["threads"] == local[name].summary["threads"] == 1
        assert folder_differences(root / name, tmp_path / name) == []
    assert json.loads((tmp_path / "kd_seed0" / "config.json").read_text())["train"]["teacher_dir"] == \
        str(tmp_path / "mlm_seed0" / "peer_0")
    # what the notebooks read: the runs as TrainResults, their per-pair scores in one table
    loaded = train_results(serial)
    assert sorted(loaded) == [("kd", 0), ("mlm", 0)] and all(r.done for r in loaded.values())
    assert loaded["kd", 0].summary == json.loads((root / "kd_seed0" / "summary.json").read_text())
    import pandas as pd

    scores = read_scores(serial)
    assert scores.equals(pd.concat([pd.read_csv(root / n / "scores.csv") for n in serial], ignore_index=True))
    assert sorted(scores["method"].unique()) == ["kd", "mlm"] and len(scores) > 0
    # a rerun reuses the finished runs
    again = run_study(ci_source(tmp_path), CI_SPECS, LOCAL2, work=run_spec, progress=None)
    assert all(r.reused for r in again.values())


def test_folder_comparison_sees_a_changed_weight_or_metric(serial_ci, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    root, _ = serial_ci
    copy = tmp_path / "mlm_seed0"
    shutil.copytree(root / "mlm_seed0", copy)
    assert folder_differences(root / "mlm_seed0", copy) == []
    rows = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    rows[-1]["elapsed_s"] = 1e9  # a timing field: ignored
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert folder_differences(root / "mlm_seed0", copy) == []
    rows[-1]["dev_ensemble"] = 0.0  # not a timing field
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert folder_differences(root / "mlm_seed0", copy) == ["differs: metrics.jsonl"]
    shutil.copy(root / "mlm_seed0" / "metrics.jsonl", copy / "metrics.jsonl")
    weights = copy / "peer_0" / "model.safetensors"
    tensors = load_file(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + torch.finfo(tensors[first].dtype).eps
    save_file(tensors, weights, metadata={"format": "pt"})
    assert folder_differences(root / "mlm_seed0", copy) == ["differs: peer_0/model.safetensors"]


def train_then_die(source, spec, teacher_dir):
    """The first time: 2 steps of the real run (a checkpoint), then the worker dies; then the whole run."""
    from dataclasses import replace

    marker = Path(source.run_root) / f"{spec.name}.started"
    if not marker.exists():
        marker.write_text("1")
        run_spec(source, replace(spec, max_steps=2), teacher_dir)
        os._exit(3)
    return run_spec(source, spec, teacher_dir)


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_runs_folder(serial_ci, tmp_path):
    root, _ = serial_ci
    specs = CI_SPECS[:1]
    with pytest.raises(StudyError, match="exit code 3"):
        run_study(ci_source(tmp_path), specs, LOCAL2, work=train_then_die, progress=None)
    assert (tmp_path / "mlm_seed0" / "checkpoint.pt").is_file() and not (tmp_path / "mlm_seed0" / "DONE").exists()
    out = run_study(ci_source(tmp_path), specs, LOCAL2, work=train_then_die, progress=None)
    assert out["mlm_seed0"].done and not out["mlm_seed0"].reused
    assert folder_differences(root / "mlm_seed0", tmp_path / "mlm_seed0") == []


def test_ray_gives_the_same_run_folders(serial_ci, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    root, _ = serial_ci
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = run_study(ci_source(tmp_path), CI_SPECS, ExecutorConfig(kind="ray", threads=1), work=run_spec, progress=None)
    finally:
        ray.shutdown()
    for name in ("mlm_seed0", "kd_seed0"):
        assert out[name].summary["threads"] == 1
        assert folder_differences(root / name, tmp_path / name) == []


def test_progress_lines_go_to_the_file_the_runner_follows(tmp_path, monkeypatch):
    follow = tmp_path / "progress.log"
    monkeypatch.setenv("DWML_PROGRESS_FILE", str(follow))
    lines = []
    run_study(_source(tmp_path), [RunSpec("dml", 0), RunSpec("dwml", 0)], ExecutorConfig(kind="serial"),
              work=failing_work, progress=lines.append)
    written = follow.read_text().splitlines()
    assert written == lines and len(written) == 3
    assert written[0].startswith("[1/2] dml_seed0 done in") and written[1].startswith("[2/2] dwml_seed0 done in")
