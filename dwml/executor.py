"""A study as data, and the executors that run it: one after another, on a local process pool, or on Ray.

A study is a list of :class:`RunSpec` (method, seed, tag, train overrides, the spec it waits for, what to
score) and a :class:`dwml.runs.StudySource` (the profile's sections it is set up from). One spec's work is a
module-level function, so a worker process or a Ray task can run it from a pickle: the studies' is
:func:`dwml.studies.study.run_spec`, which trains the run through ``dwml.runs.train_run`` (a finished run is
reused, an interrupted one resumes from its checkpoint) and scores its peers. :func:`run_study` hands the
specs to an executor (:class:`ExecutorConfig`), in dependency order:

- ``serial``: one after another in this process (what the notebooks did before);
- ``local``: N worker processes (``spawn``), each with T CPU threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``
  set before torch is imported), or K runs per GPU on every visible GPU (each worker sees one through
  ``CUDA_VISIBLE_DEVICES``); a fresh process per run, so a run that dies takes no other with it;
- ``ray``: one Ray task per run with ``num_cpus`` / ``num_gpus`` resources (``ray.init()`` alone on one machine,
  ``RAY_ADDRESS`` for an existing cluster, whose nodes must share the run folder).

Each run's output goes to ``<run_root>/logs/<run name>.log`` (outside the run folder, whose files are then
the same whatever ran it). A run that fails is reported with the end of its log and the others go on; the
runs that wait for it are skipped; at the end one :class:`StudyError` lists them all.

Over the house's ~600 lines because the three executors share one scheduling loop (:func:`run_study`) and
one way of capturing a run's output, and the run-folder comparison that proves them equal belongs with them.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from dwml.config import ConfigError
from dwml.io import temporary_environ
from dwml.runs import StudySource, run_name, run_seed

KINDS = ("serial", "local", "ray")
PROGRESS_FILE_ENV = "DWML_PROGRESS_FILE"
"""Where :func:`run_study` also appends its progress lines, when set: the papermill runner sets it for the
notebook it runs and prints the lines in its console (``dwml.runner.Progress``)."""
LOG_DIR = "logs"
LOG_TAIL = 30  # lines of a failed run's log in its report

TIMING_FIELDS = {
    "metrics.jsonl": ("elapsed_s", "tokens_per_s"),
    "summary.json": ("elapsed_s",),
    # the trainer's state["elapsed"], and the length of metrics.jsonl (its times' digits) where it was saved
    "checkpoint.pt": ("elapsed", "metrics_bytes"),
    # bf16 autocast chosen by a timed probe (train.mixed_precision: auto): its timings, and the reason quoting them
    "precision.json": ("reason", "fp32_s", "bf16_s"),
}
"""The fields of a run folder's files that hold wall-clock times: all that may differ between executors."""


class StudyError(RuntimeError):
    """Some runs of a study failed (``failed``: name -> report with its log's end) or were skipped because a
    run they wait for failed (``skipped``: name -> reason); ``results`` holds the runs that finished."""

    def __init__(self, failed: Mapping[str, str], skipped: Mapping[str, str], results: Mapping):
        self.failed, self.skipped, self.results = dict(failed), dict(skipped), dict(results)
        lines = [f"{len(self.failed)} run(s) failed, {len(self.skipped)} skipped, {len(self.results)} finished"]
        lines += [f"--- {name} failed:\n{report}" for name, report in self.failed.items()]
        lines += [f"--- {name} skipped: {why}" for name, why in self.skipped.items()]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------------------------------
# The study as data
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    """One run of a study. ``teacher``: the name of the spec whose run teaches this one (its ``peer_0`` is
    passed as ``teacher_dir``; the run starts after it finished). ``train_overrides``: fields that differ
    from the profile (stored as sorted pairs; need a ``tag``). ``score``: score the peers on the study's
    pairs (``score_peers``: those peers only, numbered from 1). ``curve_steps`` / ``curve_pairs_per_task``:
    the learning curve of ``train_run``. ``max_steps``: stop after that many steps (a resumable run)."""

    method: str
    seed: int
    tag: str = ""
    train_overrides: Any = ()
    teacher: str = ""
    num_peers: int | None = None
    score: bool = True
    score_peers: tuple | None = None
    curve_steps: tuple = ()
    curve_pairs_per_task: int = 0
    max_steps: int | None = None

    def __post_init__(self):
        overrides = self.train_overrides
        items = overrides.items() if isinstance(overrides, Mapping) else overrides
        object.__setattr__(self, "train_overrides", tuple(sorted((str(k), v) for k, v in items)))
        object.__setattr__(self, "curve_steps", tuple(int(s) for s in self.curve_steps))
        if self.score_peers is not None:
            object.__setattr__(self, "score_peers", tuple(int(p) for p in self.score_peers))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"RunSpec.seed={self.seed!r}: an integer")
        if self.train_overrides and not self.tag:
            raise ConfigError(f"RunSpec({self.method!r}, seed {self.seed}): train_overrides="
                              f"{dict(self.train_overrides)} need a tag (the run folder's name)")

    @property
    def name(self) -> str:
        """The run's folder name under the run root (``dwml.runs.run_name``)."""
        return run_name(self.method, self.seed, self.tag)

    @property
    def overrides(self) -> dict:
        return dict(self.train_overrides)


def baseline_specs(methods: Sequence[str], seeds: Sequence[int], tag: str = "", **fields) -> list[RunSpec]:
    """The specs of ``dwml.runs.train_methods``: for every seed the teacher's run first (the
    single-model method, added when only its students are listed), then the others; the methods that use a
    teacher wait for that seed's teacher run. ``fields``: more :class:`RunSpec` fields for every spec."""
    from dwml.methods import method_class, teacher_method, training_order

    teacher = teacher_method(methods)
    specs = []
    for seed in seeds:
        for method in training_order(methods):
            needs = method_class(method).uses_teacher
            specs.append(RunSpec(method, int(seed), tag, teacher=RunSpec(teacher, int(seed), tag).name if needs else "",
                                 **fields))
    return specs


def ordered(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """``specs`` checked (names unique, teachers among them, no cycle, a teacher for every method that needs
    one) and put in dependency order, each as early as its teacher allows and in the given order otherwise."""
    from dwml.methods import method_class

    by_name: dict[str, RunSpec] = {}
    for i, s in enumerate(specs):
        if not isinstance(s, RunSpec):
            raise ConfigError(f"specs[{i}]={s!r}: not a RunSpec")
        if s.name in by_name:
            raise ConfigError(f"specs[{i}]: two specs name the run {s.name!r}")
        by_name[s.name] = s
    for s in specs:
        if s.teacher and s.teacher not in by_name:
            raise ConfigError(f"spec {s.name}: its teacher {s.teacher!r} is not a spec of the study")
        if method_class(s.method).uses_teacher and not s.teacher:
            raise ConfigError(f"spec {s.name}: method {s.method!r} learns from a teacher: set RunSpec.teacher "
                              "to the name of the single-model spec of its seed")
    # each time the first spec in the given order whose teacher is placed: a student stays beside its teacher
    # (a seed's KD runs start as soon as its single model is done, not after every other seed's runs, which
    # left the longest runs for the end of the pool)
    out, placed, rest = [], set(), list(specs)
    while rest:
        nxt = next((s for s in rest if not s.teacher or s.teacher in placed), None)
        if nxt is None:
            raise ConfigError(f"specs wait for each other in a cycle: {sorted(s.name for s in rest)}")
        out.append(nxt)
        placed.add(nxt.name)
        rest.remove(nxt)
    return out


# --------------------------------------------------------------------------------------------------
# One spec's work
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    """What one spec's work returns (small and picklable): the run folder, its summary and peer folders, the
    scores file (``""`` when not scored), the seconds it took and whether the run was finished before."""

    name: str
    run_dir: str
    summary: dict
    peer_dirs: tuple = ()
    scores: str = ""
    seconds: float = 0.0
    reused: bool = False
    done: bool = True


def log_path(run_root: str | Path, name: str) -> Path:
    """Where the output of run ``name`` goes: ``<run_root>/logs/<name>.log``."""
    from dwml.io import project_path

    return project_path(run_root) / LOG_DIR / f"{name}.log"


def log_tail(path: str | Path, lines: int = LOG_TAIL) -> str:
    """The last ``lines`` lines of a log (progress bars' carriage returns kept to their last state)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return f"(no log: {err})"
    rows = [row.rsplit("\r", 1)[-1] for row in text.splitlines()]
    return "\n".join(rows[-lines:])


class _Tee:
    """A text stream writing to several (the serial executor's log and the console)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


def _header(spec: RunSpec) -> str:
    return f"=== {spec.name}: started {time.strftime('%Y-%m-%d %H:%M:%S')} in process {os.getpid()}\n"


def _execute(work: Callable, source: StudySource, spec: RunSpec, teacher_dir: str, log: str,
             output: str = "worker") -> tuple[str, Any]:
    """Run ``work`` with this process's output appended to ``log``: ``("ok", result)`` or ``("error",
    traceback)``, the traceback also written to the log. ``output``: ``"worker"`` (the file descriptors too,
    so native libraries' output lands in the log), or, in this process, Python's streams only, to the log and
    the console (``"console"``) or to the log alone (``"log"``)."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8", buffering=1) as f:
        f.write(_header(spec))
        if output == "worker":
            redirect = _fd_redirect(f)
        else:
            to_out, to_err = (_Tee(f, sys.stdout), _Tee(f, sys.stderr)) if output == "console" else (f, f)
            redirect = contextlib.ExitStack()
            redirect.enter_context(contextlib.redirect_stdout(to_out))
            redirect.enter_context(contextlib.redirect_stderr(to_err))
        with redirect:
            try:
                return "ok", work(source, spec, teacher_dir)
            except BaseException as err:  # noqa: BLE001 (reported, and the study goes on)
                if isinstance(err, KeyboardInterrupt):
                    raise
                tb = traceback.format_exc()
                print(tb, file=sys.stderr, flush=True)
                return "error", tb


@contextlib.contextmanager
def _fd_redirect(f):
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = f
    try:
        yield
    finally:
        f.flush()
        sys.stdout, sys.stderr = old
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _child(conn, env: Mapping[str, str], work, source, spec, teacher_dir, log) -> None:
    """A local worker process: its threads and GPU set in the environment before torch is imported."""
    os.environ.update(env)
    conn.send(_execute(work, source, spec, teacher_dir, log))
    conn.close()


# --------------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The GPUs a worker may be given: ``CUDA_VISIBLE_DEVICES``'s entries when set (empty or ``-1``: none),
    else every CUDA device torch finds."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [d.strip() for d in env.split(",") if d.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def cpu_count() -> int:
    """The cores this process may run on (``os.sched_getaffinity``, where the OS has it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ExecutorConfig:
    """How a study's runs are executed (a profile's ``executor: {kind: local, workers: auto, threads: 1}``).

    ``kind``: ``serial``, ``local`` or ``ray``. ``workers``: runs at once (``auto``: cores // threads on a CPU,
    GPUs x ``runs_per_gpu`` with GPUs; ``serial`` runs one). ``threads``: CPU threads a run (``None``: torch's
    default for ``serial``, 1 for the others). ``runs_per_gpu``: runs sharing one GPU."""

    kind: str = "serial"
    workers: int | str = "auto"
    threads: int | None = None
    runs_per_gpu: int = 1

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"executor.kind={self.kind!r}: one of {list(KINDS)}")
        w = self.workers
        if not (w == "auto" or (isinstance(w, int) and not isinstance(w, bool) and w >= 1)):
            raise ConfigError(f"executor.workers={w!r}: 'auto' or an integer >= 1")
        t = self.threads
        if t is not None and not (isinstance(t, int) and not isinstance(t, bool) and t >= 1):
            raise ConfigError(f"executor.threads={t!r}: an integer >= 1 (or null: torch's default)")
        k = self.runs_per_gpu
        if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            raise ConfigError(f"executor.runs_per_gpu={k!r}: an integer >= 1")

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "ExecutorConfig":
        """From a profile's ``executor`` mapping; an unknown key is an error naming it."""
        d = dict(d or {})
        unknown = sorted(set(d) - {"kind", "workers", "threads", "runs_per_gpu"})
        if unknown:
            raise ConfigError(f"executor: unknown key(s) {unknown} (known: kind, workers, threads, runs_per_gpu)")
        return cls(**d)

    def run_threads(self) -> int | None:
        return self.threads if self.threads is not None or self.kind == "serial" else 1

    def slots(self, gpus: Sequence[str] | None = None, cores: int | None = None) -> list[dict[str, str]]:
        """One environment per run that may go at once (its threads; its GPU, when there are GPUs)."""
        if self.kind == "serial":
            return [{}]
        gpus = visible_gpus() if gpus is None else list(gpus)
        threads = self.run_threads()
        if gpus:
            n = len(gpus) * self.runs_per_gpu if self.workers == "auto" else self.workers
            gpu_of = [gpus[i % len(gpus)] for i in range(n)]
        else:
            n = max(1, (cores or cpu_count()) // threads) if self.workers == "auto" else self.workers
            gpu_of = [""] * n  # no GPU: each worker sees none
        env = {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "DWML_THREADS")}
        return [{**env, "CUDA_VISIBLE_DEVICES": g} for g in gpu_of]


class _Serial:
    """Runs each spec in this process when it is started (``threads``: torch's threads meanwhile)."""

    def __init__(self, config: ExecutorConfig, work: Callable):
        self.work, self.threads, self.done = work, config.run_threads(), []
        self.capacity = 1

    def start(self, source, spec, teacher_dir, log):
        saved = None
        if self.threads:
            import torch

            saved = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        try:
            self.done.append((spec.name, _execute(self.work, source, spec, teacher_dir, log, output="console")))
        finally:
            if saved is not None:
                import torch

                torch.set_num_threads(saved)

    def wait(self):
        out, self.done = self.done, []
        return out

    def close(self):
        pass


_DIED_AT_START = (
    ", without writing its log: it died while starting. Workers are spawned and import the script that started the "
    "study again, so a script must start it under `if __name__ == \"__main__\":` (multiprocessing's rule)")


class _Local:
    """A fresh ``spawn`` process per run, at most one per slot; a process that dies is a failed run."""

    def __init__(self, config: ExecutorConfig, work: Callable):
        import multiprocessing as mp

        self.ctx, self.work = mp.get_context("spawn"), work
        self.free = config.slots()
        self.capacity = len(self.free)
        self.running = {}  # name -> (process, reader, slot, log)

    def start(self, source, spec, teacher_dir, log):
        slot = self.free.pop()
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_child, args=(writer, slot, self.work, source, spec, teacher_dir, log),
                                name=f"dwml-{spec.name}", daemon=False)
        with temporary_environ(slot):  # inherited by the spawned interpreter: set before anything in it imports torch
            proc.start()
        writer.close()
        self.running[spec.name] = (proc, reader, slot, log)

    def wait(self):
        from multiprocessing.connection import wait

        ready = set(wait([r for _, r, _, _ in self.running.values()] + [p.sentinel for p, *_ in self.running.values()]))
        out = []
        for name, (proc, reader, slot, log) in list(self.running.items()):
            if reader not in ready and proc.sentinel not in ready:
                continue
            try:
                outcome = reader.recv()
            except (EOFError, OSError):
                proc.join()
                outcome = ("error", f"the worker process died (exit code {proc.exitcode}) before it reported"
                                    + ("" if Path(log).is_file() else _DIED_AT_START))
            proc.join()
            reader.close()
            del self.running[name]
            self.free.append(slot)
            out.append((name, outcome))
        return out

    def close(self):
        for proc, reader, *_ in self.running.values():
            proc.terminate()
            proc.join()
            reader.close()
        self.running = {}


def _ray_task(work, source, spec, teacher_dir, log):
    return _execute(work, source, spec, teacher_dir, log)


class _Ray:
    """One Ray task a run (``num_cpus`` = threads, ``num_gpus`` = 1 / runs_per_gpu where the cluster has GPUs);
    ``ray.init()`` when Ray is not started (``RAY_ADDRESS`` joins an existing cluster)."""

    def __init__(self, config: ExecutorConfig, work: Callable):
        try:
            import ray
        except ImportError as err:
            raise ConfigError("executor.kind='ray' needs Ray: pip install -e '.[ray]'") from err
        self.ray, self.work = ray, work
        if not ray.is_initialized():
            ray.init()
        resources = ray.cluster_resources()
        threads = config.run_threads()
        gpus = resources.get("GPU", 0)
        self.options = {"num_cpus": threads, "num_gpus": 1 / config.runs_per_gpu if gpus else 0, "max_retries": 0}
        if config.workers == "auto":
            self.capacity = (int(gpus * config.runs_per_gpu) if gpus
                             else max(1, int(resources.get("CPU", 1) // threads)))
        else:
            self.capacity = config.workers
        # the workers import this checkout's dwml first (and the driver's own folders, not its installed packages)
        root = str(Path(__file__).resolve().parents[1])
        prefixes = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
        paths = [root] + [p for p in sys.path if p and Path(p).is_dir() and not p.startswith(prefixes)
                          and "-packages" not in p]
        env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "DWML_THREADS": str(threads)}
        self.remote = ray.remote(_ray_task).options(**self.options, runtime_env={"env_vars": env})
        self.running = {}  # object ref -> name

    def start(self, source, spec, teacher_dir, log):
        self.running[self.remote.remote(self.work, source, spec, teacher_dir, log)] = spec.name

    def wait(self):
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        out = []
        for ref in ready:
            name = self.running.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except Exception as err:  # noqa: BLE001 (a worker that died: a failed run)
                outcome = ("error", f"the Ray task failed: {type(err).__name__}: {err}")
            out.append((name, outcome))
        return out

    def close(self):
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        self.running = {}


EXECUTORS = {"serial": _Serial, "local": _Local, "ray": _Ray}


# --------------------------------------------------------------------------------------------------
# Running a study
# --------------------------------------------------------------------------------------------------

def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def time_left(per_run: float, running: Sequence[float], waiting: int, capacity: int) -> float:
    """Seconds until a study ends if every run takes ``per_run``: the runs going now (``running``: the seconds
    each has gone) finish first, and each waiting run goes to the slot that frees first."""
    slots = sorted([max(per_run - elapsed, 0.0) for elapsed in running] + [0.0] * max(capacity - len(running), 0))
    for _ in range(waiting):
        slots[0] += per_run
        slots.sort()
    return max(slots)  # capacity >= 1: never empty


def finished_before(source: StudySource, spec: RunSpec) -> bool:
    """Whether the run of ``spec`` finished before (its folder has ``DONE``, ``dwml.runfolder``'s marker)."""
    from dwml.io import project_path
    from dwml.runfolder import DONE

    return (project_path(source.run_root) / spec.name / DONE).is_file()


def run_study(source: StudySource, specs: Sequence[RunSpec], config: ExecutorConfig | Mapping | None = None, *,
              work: Callable, progress: Callable[[str], Any] | None = print) -> dict[str, RunResult]:
    """Run every spec (``work(source, spec, teacher_dir)``: a module-level function, so that it pickles;
    :func:`dwml.studies.study.run_spec` trains and scores) on the executor of ``config``; name ->
    :class:`RunResult`, in the specs' order. ``source`` is passed to ``work`` as it is (its ``run_root``
    holds the logs).

    A spec starts when its teacher finished (the teacher's ``peer_0`` is its ``teacher_dir``). A run that
    fails is reported (``progress``) and the others go on; the specs that wait for it are skipped; at the end
    :class:`StudyError` lists the failed runs with the end of their logs. Rerun the same study to go on:
    finished runs are reused, interrupted ones resume from their checkpoints (``train_run``'s rules). A run
    finished before is looked up in this process (``work`` reuses it: its configuration checked, its scores
    read or, where the pairs changed, scored again), not in a worker that would first import torch and set
    the study up (~15 s a run here, spent for nothing).
    ``progress`` gets one line per finished run: ``[3/11] dwml_seed0 done in 2.1 min; 8 left, ~14 min``."""
    config = config if isinstance(config, ExecutorConfig) else ExecutorConfig.from_dict(config)
    given, specs = list(specs), ordered(specs)
    follow = os.environ.get(PROGRESS_FILE_ENV)

    def say(line: str) -> None:
        if progress:
            progress(line)
        if follow:  # the console of `make reproduce` (the runner follows this file)
            with open(follow, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    executor = EXECUTORS[config.kind](config, work)
    by_name = {s.name: s for s in specs}
    waiting = list(specs)
    results: dict[str, RunResult] = {}
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    started: dict[str, float] = {}
    durations: list[float] = []
    total, t0 = len(specs), time.perf_counter()

    def skip_dependents(name: str):
        for s in list(waiting):
            if s.teacher == name:
                waiting.remove(s)
                skipped[s.name] = f"its teacher {name} " + ("failed" if name in failed else "was skipped")
                say(f"[{len(results) + len(failed) + len(skipped)}/{total}] {s.name} skipped: {skipped[s.name]}")
                skip_dependents(s.name)

    try:
        while waiting or started:
            if not started and not any(not s.teacher or s.teacher in results for s in waiting):
                raise RuntimeError(f"no spec can start: {[s.name for s in waiting]}")  # ordered() rules it out
            here = []  # finished runs looked up in this process: (name, outcome)
            for s in [s for s in waiting if not s.teacher or s.teacher in results]:
                reuse_here = config.kind != "serial" and finished_before(source, s)
                if len(started) >= executor.capacity and not reuse_here:
                    continue
                waiting.remove(s)
                teacher_dir = results[s.teacher].peer_dirs[0] if s.teacher else ""
                started[s.name] = time.perf_counter()
                log = str(log_path(source.run_root, s.name))
                if reuse_here:  # reused (and its scores read, or rescored) here: no worker to start
                    here.append((s.name, _execute(work, source, s, teacher_dir, log, output="log")))
                else:
                    executor.start(source, s, teacher_dir, log)
            for name, (status, value) in here or executor.wait():
                took = time.perf_counter() - started.pop(name)
                if status == "ok":
                    results[name] = value
                    if not value.reused:
                        durations.append(took)
                    what = "reused" if value.reused else f"done in {_minutes(took)}"
                else:
                    log = log_path(source.run_root, name)
                    failed[name] = f"{value.strip().splitlines()[-1] if value.strip() else value}\n" \
                                   f"last lines of {log}:\n{log_tail(log)}"
                    what = f"FAILED after {_minutes(took)} (log: {log})"
                finished = len(results) + len(failed) + len(skipped)
                left = len(waiting) + len(started)
                line = f"[{finished}/{total}] {name} {what}; {left} left"
                if left and durations:
                    now = time.perf_counter()
                    eta = time_left(sum(durations) / len(durations), [now - t for t in started.values()],
                                    len(waiting), executor.capacity)
                    line += f", ~{_minutes(eta)}"
                say(line)
                if status != "ok":
                    skip_dependents(name)
    finally:
        executor.close()
    if failed or skipped:
        raise StudyError(failed, skipped, results)
    say(f"{total} runs in {_minutes(time.perf_counter() - t0)} ({config.kind}, {executor.capacity} at once)")
    return {s.name: results[s.name] for s in given}


def train_results(results: Mapping[str, RunResult]) -> dict:
    """(method, seed) -> ``dwml.train.TrainResult`` of finished runs (what ``runs.train_methods``
    returns; tagged runs under (method, seed, tag))."""
    from dwml.runfolder import load_result

    out = {}
    for r in results.values():
        tr = load_result(r.run_dir)
        method, seed = tr.summary["method"], run_seed(r.run_dir)
        tag = r.name[len(method) + 1: -len(f"_seed{seed}")] if r.name != f"{method}_seed{seed}" else ""
        out[(method, seed, tag) if tag else (method, seed)] = tr
    return out


def read_scores(results: Mapping[str, RunResult]):
    """The per-pair scores of every scored run, concatenated (``scoring.score_runs``' table)."""
    import pandas as pd

    frames = [pd.read_csv(r.scores) for r in results.values() if r.scores]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------------
# Comparing run folders (the executors' equality)
# --------------------------------------------------------------------------------------------------

def _drop_timing(obj, fields: Sequence[str]):
    if isinstance(obj, dict):
        return {k: _drop_timing(v, fields) for k, v in obj.items() if k not in fields}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_drop_timing(v, fields) for v in obj)
    return obj


def folder_differences(a: str | Path, b: str | Path, skip: Sequence[str] = (".dwml-lock",)) -> list[str]:
    """What differs between two run folders, file by file: every file's bytes, except the
    :data:`TIMING_FIELDS` of metrics, summary and checkpoint (compared without them); a folder's own path
    written inside a file is replaced by ``<root>`` first (two roots compare equal). [] when the same."""
    import torch

    a, b = Path(a), Path(b)
    roots = [(str(a.parent), "<root>"), (str(b.parent), "<root>")]

    def files(d):
        return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name not in skip}

    diffs = [f"only in {a}: {x}" for x in sorted(files(a) - files(b))]
    diffs += [f"only in {b}: {x}" for x in sorted(files(b) - files(a))]
    for rel in sorted(files(a) & files(b)):
        fa, fb = a / rel, b / rel
        timing = TIMING_FIELDS.get(Path(rel).name, ())
        if rel.endswith(".pt"):
            load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
            same = _same(_drop_timing(load(fa), timing),
                         _drop_timing(load(fb), timing), roots)
        elif timing:
            ta, tb = (_unroot(p.read_text(), roots) for p in (fa, fb))
            if rel.endswith(".jsonl"):
                ja = [_drop_timing(json.loads(x), timing) for x in ta.splitlines() if x.strip()]
                jb = [_drop_timing(json.loads(x), timing) for x in tb.splitlines() if x.strip()]
            else:
                ja, jb = _drop_timing(json.loads(ta), timing), _drop_timing(json.loads(tb), timing)
            same = ja == jb
        else:
            ba, bb = fa.read_bytes(), fb.read_bytes()
            try:
                same = ba == bb or _unroot(ba.decode(), roots) == _unroot(bb.decode(), roots)
            except UnicodeDecodeError:
                same = False
        if not same:
            diffs.append(f"differs: {rel}")
    return diffs


def _unroot(text: str, roots) -> str:
    for root, name in roots:
        text = text.replace(root, name)
    return text


def _same(x, y, roots) -> bool:
    import torch

    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == y.dtype
                and x.shape == y.shape and torch.equal(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k], roots) for k in x)
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_same(u, v, roots) for u, v in zip(x, y))
    if isinstance(x, str) and isinstance(y, str):
        return _unroot(x, roots) == _unroot(y, roots)
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y
