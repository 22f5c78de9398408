"""A run folder's ``checkpoint.pt``: writing it, restoring from it, and deciding whether a configuration may reuse it.

:func:`write_checkpoint` saves everything a run needs to continue bit for bit (models, optimisers, the
method's state, batchers, the RNG states of :func:`rng_state`, the loop's state and the metrics file's
length); :func:`restore_checkpoint` puts it back. The loop (``dwml.train``) decides when; this module
also decides what a second call on the same folder does, so that a finished run is never returned under
a configuration that would compute something else:

* the same computation (only :data:`HARMLESS` fields differ, e.g. the device or the logging interval):
  ``'same'``, the finished result is reused or the interrupted run continues;
* exactly an extension of a finished run: only the run's length grew (``train.num_epochs`` /
  ``train.max_tokens``, giving more optimizer steps than the run took) and nothing else that changes the
  computation differs: ``'extend'``, the run continues from its final checkpoint and says so. The
  learning-rate and mirror-descent schedules end at ``train.lr_decay_iters``, not at ``num_epochs``, so the
  steps added are the steps a longer run would have taken. One difference remains and is documented in
  the note :func:`extension_note` returns: the run evaluated (and logged) at its old last step, which the
  longer run does only where that step is a multiple of ``eval_interval`` (``log_interval``); early
  stopping counts that evaluation;
* anything else (another learning rate, a shorter run than the one finished, a run that stopped early
  and would now go on under other settings, another corpus, other peers): :class:`CheckpointMismatchError`
  naming every differing field.

A checkpoint that cannot be read (0 bytes, truncated, not a checkpoint) raises :class:`CheckpointError`
naming its path, instead of torch's ``PytorchStreamReader failed`` or an empty ``EOFError``.

A run folder is owned state. The loop writes a marker (:data:`RUN_MARKER`) when it creates one and deletes or
replaces files only in a folder that holds it (or an older run folder it adopts: a ``config.json`` of the
loop's sections beside metrics or a checkpoint); any other non-empty folder is refused before anything is
written (:func:`check_run_folder`). While a run writes, its process holds an ``fcntl.flock`` on
:data:`LOCK_FILE` (:class:`RunLock`, taken by ``dwml.train.train``): a second process is refused naming the
holder's pid and start time, and a killed holder's lock is released by the kernel, so the next call takes
the folder over. A finished run whose checkpoint is gone is still compared, through its ``config.json`` and
``summary.json`` (:func:`finished_without_checkpoint`).
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from dwml.config import ConfigError

# Fields that may differ between a checkpoint and the run that resumes it: where it runs and how often it
# writes. The run's length (num_epochs, max_tokens) is not here: it is compared by resume_decision, which
# allows only an exact extension. The eval and search sections are not read by training (the peers'
# shapes are compared separately, by check_architecture).
HARMLESS = frozenset({"train.device", "train.compile", "train.log_interval", "train.checkpoint_interval",
                      "data.cache_dir", "train.tf32", "train.loss_rows", "train.prefetch"})
LENGTH_FIELDS = ("train.num_epochs", "train.max_tokens")
COMPARED_SECTIONS = ("data", "train")
REQUIRED_KEYS = ("config", "architecture", "models", "optimizers", "method", "batchers", "rng", "state",
                 "metrics_bytes")
"""What :func:`write_checkpoint` puts into a checkpoint; one that lacks any of them is not a checkpoint of it."""


class CheckpointError(ConfigError):
    """A checkpoint file cannot be read (empty, truncated, corrupt or not a dwml checkpoint); names the path."""


class CheckpointMismatchError(ConfigError):
    """The checkpoint in a run folder was written under another configuration or other peers."""


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load`` of a checkpoint on the CPU (``weights_only=True``), with an error naming ``path``.

    A 0-byte, truncated or otherwise unreadable file, or one without the keys :func:`write_checkpoint` writes,
    raises :class:`CheckpointError` saying what is wrong and what to do; the file is left as it was."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint there")
    size = path.stat().st_size
    advice = ("delete it (the run restarts from step 0) or call train(..., resume=False); "
              "a checkpoint is written atomically, so this one was damaged after it was written")
    if size == 0:
        raise CheckpointError(f"{path}: the checkpoint is empty (0 bytes); {advice}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... with no path
        reason = f"{type(err).__name__}: {err}".strip().rstrip(":")
        raise CheckpointError(f"{path}: the checkpoint ({size} bytes) cannot be read, truncated or corrupt "
                              f"({reason.splitlines()[0][:200]}); {advice}") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: holds a {type(ck).__name__}, not a dwml checkpoint; {advice}")
    missing = [k for k in REQUIRED_KEYS if k not in ck]
    if missing:
        raise CheckpointError(f"{path}: not a dwml checkpoint (no {missing}); {advice}")
    return ck


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       ignore: frozenset[str] | set[str] = HARMLESS) -> list[str]:
    """``'section.field: checkpoint X, now Y'`` for every compared field that differs, the corpus identity
    (``current['corpus']``, if given) included; fields in ``ignore`` are skipped."""
    diffs = []
    if "corpus" in current and saved.get("corpus") != current["corpus"]:
        diffs.append(f"corpus: checkpoint {saved.get('corpus')!r}, now {current['corpus']!r}")
    for section in COMPARED_SECTIONS:
        a, b = saved.get(section, {}) or {}, current.get(section, {}) or {}
        for key in sorted(set(a) | set(b)):
            name = f"{section}.{key}"
            if name not in ignore and a.get(key) != b.get(key):
                diffs.append(f"{name}: checkpoint {a.get(key)!r}, now {b.get(key)!r}")
    return diffs


def planned_steps(cfg: Mapping[str, Any]) -> int:
    """Optimizer steps a configuration (``Config.to_dict()``) runs: ``num_epochs``, cut by ``max_tokens``
    where that is smaller (the rule of ``dwml.train.total_steps``)."""
    t, d = cfg["train"], cfg["data"]
    if t.get("max_tokens", 0) > 0:
        per_step = t["num_batches"] * t["batch_size"] * t.get("nproc", 1) * d["block_size"]
        return min(t["num_epochs"], math.ceil(t["max_tokens"] / per_step))
    return t["num_epochs"]


def resume_decision(saved_cfg: Mapping[str, Any], current_cfg: Mapping[str, Any], done: bool,
                    state: Mapping[str, Any] | None = None, path: str | Path = "checkpoint.pt") -> str:
    """What a call of ``train`` with ``current_cfg`` may do with a checkpoint written under ``saved_cfg``.

    ``done``: the folder holds a finished run (DONE); ``state``: the checkpoint's ``state`` (``step``,
    ``stopped_early``), if at hand. Returns

    * ``'same'``: nothing that changes the computation differs; reuse the finished result, or continue the
      interrupted run (whose new length may be shorter or longer, as long as it has not passed it);
    * ``'extend'``: a finished run, and the only difference is a longer run (more optimizer steps than it
      took, neither stopped early): continue from its final checkpoint (see :func:`extension_note`).

    Raises :class:`CheckpointMismatchError` naming every differing field otherwise: a finished run under
    a shorter or otherwise different configuration, or an interrupted one already past its new length."""
    diffs = config_differences(saved_cfg, current_cfg, HARMLESS | set(LENGTH_FIELDS))
    if diffs:
        raise CheckpointMismatchError(f"{path} was written under another configuration: " + "; ".join(diffs)
                                      + ". Use another run folder, or resume=False to start over.")
    length = config_differences(saved_cfg, current_cfg, (HARMLESS | _all_fields(saved_cfg, current_cfg))
                                - set(LENGTH_FIELDS))
    old, new = planned_steps(saved_cfg), planned_steps(current_cfg)
    state = state or {}
    taken = int(state.get("step", old))
    stopped_early = bool(state.get("stopped_early", False))
    if not done:
        if taken > new:
            raise CheckpointMismatchError(
                f"{path} is at step {taken}, past the {new} steps now asked for ({'; '.join(length)}). "
                "Use another run folder, or resume=False to start over.")
        return "same"
    if new == taken:
        return "same"
    if new < taken:
        raise CheckpointMismatchError(
            f"{path} holds a finished run of {taken} steps, longer than the {new} steps now asked for "
            f"({'; '.join(length)}): its result is not that of the shorter run. Use another run folder, "
            "or resume=False to start over.")
    if not stopped_early:
        return "extend"
    every = int(current_cfg["train"]["eval_interval"])
    if taken % every == 0:
        # it stopped early at a scheduled evaluation, which the longer run makes too: it stops there as well
        return "same"
    raise CheckpointMismatchError(
        f"{path} holds a run that stopped early at its last step {taken}, on an evaluation a run of {new} "
        f"steps would not make (eval_interval={every}); ({'; '.join(length)}). Use another run folder, "
        "or resume=False to start over.")


def extension_note(path: str | Path, saved_cfg: Mapping[str, Any], current_cfg: Mapping[str, Any],
                   state: Mapping[str, Any] | None = None) -> str:
    """The message ``train`` prints (or warns) when it extends a finished run."""
    taken = int((state or {}).get("step", planned_steps(saved_cfg)))
    t = current_cfg["train"]
    note = (f"extending the finished run in {Path(path).parent}: it took {taken} steps, the configuration "
            f"now asks for {planned_steps(current_cfg)} (train.num_epochs {saved_cfg['train']['num_epochs']} -> "
            f"{t['num_epochs']}, train.max_tokens {saved_cfg['train'].get('max_tokens', 0)} -> "
            f"{t.get('max_tokens', 0)}); continuing from its final checkpoint {path}")
    if taken % t["eval_interval"]:
        note += (f". Its evaluation at step {taken} (not a multiple of eval_interval={t['eval_interval']}) "
                 "stays in metrics.jsonl and counts for early stopping: an uninterrupted run of the new "
                 "length would not have made it")
    return note


def check_architecture(saved: list, current: list, path: str | Path = "checkpoint.pt") -> None:
    """Raise :class:`CheckpointMismatchError` naming the peers whose parameter names or shapes differ."""
    if saved == current:
        return
    which = [i for i in range(max(len(current), len(saved)))
             if i >= len(current) or i >= len(saved) or current[i] != saved[i]]
    raise CheckpointMismatchError(f"{path} holds other peers: peer(s) {which} differ in number or shape "
                                  f"({len(saved)} saved, {len(current)} given)")


def check_checkpoint(ck: Mapping[str, Any], cfg_dict: Mapping[str, Any], arch: list, path: str | Path,
                     done: bool) -> str:
    """:func:`resume_decision` on a loaded checkpoint, then :func:`check_architecture`; returns the decision."""
    decision = resume_decision(ck["config"], cfg_dict, done, ck.get("state"), path)
    check_architecture(ck["architecture"], arch, path)
    return decision


def checkpoint_note(path: str | Path, step: int | None = None) -> str:
    """What a stopped run leaves to resume from, for the message of a non-finite loss or gradient: the
    last good checkpoint where one was written, else that there is none yet (the run restarts at step 0)."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0:
        at = f" (step {step})" if step is not None else ""
        return f"the last good checkpoint {path}{at} is kept"
    return (f"no checkpoint was written yet ({path} does not exist): a new call starts again from step 0; "
            "lower train.checkpoint_interval to keep earlier states")


def _all_fields(*cfgs: Mapping[str, Any]) -> set[str]:
    return {f"{s}.{k}" for c in cfgs for s in COMPARED_SECTIONS for k in (c.get(s) or {})}


# --------------------------------------------------------------------------------------------------
# Writing and restoring: every state a run needs to continue bit for bit
# --------------------------------------------------------------------------------------------------

def rng_state() -> dict:
    """This process's RNG states (the CPU generator, and every CUDA device's where there is one)."""
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what :func:`rng_state` returned (the CUDA states only where a CUDA device is present)."""
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(path: str | Path, *, config: Mapping[str, Any], architecture: list, models: Sequence,
                     optimizers: Sequence, method, batchers: Mapping[str, dict], rng: dict, state: Mapping[str, Any],
                     metrics_bytes: int, rng_ranks: list | None = None) -> None:
    """Write the checkpoint atomically (temporary file, then rename: a kill leaves the previous one whole).

    ``batchers``: each batcher's state dict (already taken; the loop puts a prefetched batch back first);
    ``rng``: :func:`rng_state`; ``rng_ranks``: every rank's, under torchrun (each rank's dropout stream);
    ``metrics_bytes``: the metrics file's length, which a resume truncates it to. The keys are
    :data:`REQUIRED_KEYS` (plus ``rng_ranks``)."""
    from dwml.io import atomic_torch_save

    extra = {"rng_ranks": rng_ranks} if rng_ranks is not None else {}
    atomic_torch_save(path, {
        "config": config, "architecture": architecture, "models": [m.state_dict() for m in models],
        "optimizers": [o.state_dict() for o in optimizers], "method": method.state_dict(),
        "batchers": dict(batchers), "rng": rng, "state": dict(state), "metrics_bytes": metrics_bytes, **extra})


def restore_checkpoint(ck: Mapping[str, Any], *, models: Sequence, optimizers: Sequence, method,
                       batchers: Mapping[str, Any], rank: int | None = None) -> dict:
    """Load a checkpoint read by :func:`read_checkpoint` into the run's objects, and set this process's RNG
    (``rank``: under torchrun, that rank's saved state); returns the loop's saved state (step, tokens, ...).
    The caller has compared it with the run first (:func:`check_checkpoint`)."""
    for m, sd in zip(models, ck["models"]):
        m.load_state_dict(sd)
    for opt, sd in zip(optimizers, ck["optimizers"]):
        opt.load_state_dict(sd)
    method.load_state_dict(ck["method"])
    for name, b in batchers.items():
        b.load_state_dict(ck["batchers"][name])
    set_rng_state(ck["rng_ranks"][rank] if rank is not None else ck["rng"])
    return dict(ck["state"])


def warn_threads(saved: Mapping[str, Any], current: Mapping[str, Any], path, device) -> None:
    """A resume under another CPU thread count goes on, with a warning: its steps differ in the last digits."""
    import warnings

    before, now = saved.get("threads"), current.get("threads")
    if device.type == "cpu" and before is not None and before != now:
        warnings.warn(f"{path}: the run was written with {before} torch thread(s) and resumes with {now}: CPU "
                      "reductions split differently, so its steps differ in the last digits from an uninterrupted "
                      f"run (torch.set_num_threads({before}) reproduces it)", stacklevel=4)


# --------------------------------------------------------------------------------------------------
# Run folders as owned state: a marker that says "this folder is a run's", and a lock while one writes
# --------------------------------------------------------------------------------------------------

RUN_MARKER = ".dwml-run"
"""Written into a run folder when the loop creates it (or adopts an older run folder): the loop deletes and
replaces files only in a folder that holds it."""
LOCK_FILE = ".dwml-lock"
"""Held (``fcntl.flock``) by the process writing the run; holds that process's id and start time."""
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "summary.json", "DONE", "precision.json")


class RunFolderError(ConfigError):
    """A run folder that is not one (no marker), cannot be written, or is in use; names the folder."""


class RunFolderBusyError(RunFolderError):
    """Another process is writing the run in this folder (it holds the folder's lock)."""


def _is_legacy_run(run_dir: Path) -> bool:
    """A run folder written before the marker existed: a config.json of the loop's sections, and metrics or
    a checkpoint beside it."""
    import json

    try:
        cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(cfg, dict) and isinstance(cfg.get("train"), dict) and isinstance(cfg.get("data"), dict)
            and ((run_dir / "metrics.jsonl").is_file() or (run_dir / "checkpoint.pt").is_file()))


def check_run_folder(run_dir: str | Path) -> None:
    """Raise :class:`RunFolderError` if ``run_dir`` exists and holds anything but is not a run folder (no
    :data:`RUN_MARKER`, and not a run written before the marker existed): training there would delete or
    replace its ``summary.json``, ``metrics.jsonl``, ``DONE``, ... (an evaluation's output folder, say).
    Writes nothing."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"run folder {run_dir} is a file, not a folder")
    if not run_dir.is_dir() or (run_dir / RUN_MARKER).is_file():
        return
    held = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
    if held and not _is_legacy_run(run_dir):
        shown = ", ".join(held[:6]) + (f", ... ({len(held)} entries)" if len(held) > 6 else "")
        clash = [n for n in held if n in RUN_FILES or n.startswith("peer_")]
        raise RunFolderError(
            f"{run_dir} is not a dwml run folder (no {RUN_MARKER} marker) and is not empty ({shown}); a run "
            f"there would replace or delete {', '.join(clash) if clash else 'files'} in it. Give a new or empty "
            "folder as the run folder")


def claim_run_folder(run_dir: str | Path) -> Path:
    """Create ``run_dir`` as a run folder (with :data:`RUN_MARKER`), or check that it is one; an older run
    folder without the marker is adopted. Errors name the folder: not a run folder
    (:func:`check_run_folder`), or one that cannot be created or written (read-only, immutable, no space)."""
    run_dir = Path(run_dir)
    check_run_folder(run_dir)
    marker = run_dir / RUN_MARKER
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # the loop writes by temporary file and rename: a folder where no file can be created (read-only,
        # immutable) is named here, not by a raw OSError from the first checkpoint
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=run_dir)
        os.close(fd)
        os.unlink(probe)
        if not marker.is_file():
            with open(marker, "w", encoding="utf-8") as fh:  # constant content: two runs' folders stay comparable
                fh.write("a dwml run folder: dwml.train writes, replaces and deletes files here\n")
    except OSError as err:
        raise RunFolderError(f"run folder {run_dir}: cannot be created or written ({err.strerror or err}); "
                             "give a writable folder") from None
    return run_dir


class RunLock:
    """A run folder claimed (:func:`claim_run_folder`: a folder that is not a run's is refused before anything
    is written) and an exclusive ``fcntl.flock`` on ``<run_dir>/.dwml-lock`` while a process writes the run
    (``with RunLock(run_dir): ...``): a second
    process on the same folder gets :class:`RunFolderBusyError` naming the holder's pid and start time. The
    kernel drops the lock when its process dies, so a killed run's folder is taken over by the next call
    (the stale pid left in the file is then overwritten)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fh = None
        self.created = False

    def acquire(self) -> "RunLock":
        import datetime
        import json
        import socket
        import sys

        check_run_folder(self.run_dir)  # a folder that is not a run's gets no lock file either
        self.created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"run folder {self.run_dir}: cannot be created ({err.strerror or err})") from None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (the marker still guards the folder)
            claim_run_folder(self.run_dir)
            return self
        try:
            fh = open(self.path, "a+", encoding="utf-8")
        except OSError as err:
            raise RunFolderError(f"run folder {self.run_dir}: cannot be written ({err.strerror or err}): "
                                 f"{self.path} cannot be opened; give a writable folder") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            text = fh.read()
            fh.close()
            try:
                holder = json.loads(text)
                who = (f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                       f" ({' '.join(holder.get('argv', []))})")
            except ValueError:
                who = "a process that has not written its name yet"
            raise RunFolderBusyError(f"run folder {self.run_dir} is in use: {who} holds {self.path}. Wait for it "
                                     "to finish, or give another run folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                             "argv": [os.path.basename(sys.argv[0])] + sys.argv[1:8]}) + "\n")
        fh.flush()
        self.fh = fh
        try:
            claim_run_folder(self.run_dir)  # the marker, written under the lock
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self.fh is None:
            return
        import fcntl

        try:
            self.fh.seek(0)
            self.fh.truncate()  # an empty file: nobody holds it (a killed holder leaves its name)
            left = {q.name for q in self.run_dir.iterdir()}
            if self.created and left <= {LOCK_FILE, RUN_MARKER}:  # a run refused before writing: no folder left
                for name in left:
                    (self.run_dir / name).unlink()
                self.run_dir.rmdir()
        except OSError:
            pass
        fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
        self.fh.close()
        self.fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


# --------------------------------------------------------------------------------------------------
# A finished run without its checkpoint; files a resume reads
# --------------------------------------------------------------------------------------------------

def read_json_file(path: str | Path, what: str) -> Any:
    """A JSON file of a run folder; a missing or corrupt one raises :class:`CheckpointError` naming it."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing ({what})") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        where = f"{path}:{err.lineno}" if hasattr(err, "lineno") else str(path)
        raise CheckpointError(f"{where}: {what} cannot be read, truncated or corrupt ({err}); delete the run "
                              "folder's DONE to train the run again, or use another run folder") from None


def finished_without_checkpoint(run_dir: str | Path, current_cfg: Mapping[str, Any]) -> None:
    """A finished run (DONE) whose ``checkpoint.pt`` is gone is reused only if its ``config.json`` computes
    the same thing as ``current_cfg`` (:func:`resume_decision`, with the step count and early stop of its
    ``summary.json``); returns None then. Anything else raises :class:`CheckpointMismatchError` naming the
    fields: another configuration, or a longer run (an extension needs the final checkpoint)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointMismatchError(f"{run_dir} holds a finished run (DONE) whose checkpoint.pt and config.json "
                                      "are both gone: nothing tells under which settings it ran. Use another run "
                                      "folder, or resume=False to start over")
    saved = read_json_file(cfg_path, "the finished run's configuration")
    summary = read_json_file(run_dir / "summary.json", "the finished run's summary")
    if not isinstance(saved, dict) or not isinstance(summary, dict):
        raise CheckpointError(f"{cfg_path} or {run_dir / 'summary.json'}: not a JSON object")
    state = {"step": summary.get("steps"), "stopped_early": summary.get("stopped_early", False)}
    if state["step"] is None:
        raise CheckpointError(f"{run_dir / 'summary.json'}: no 'steps' field")
    if resume_decision(saved, current_cfg, True, state, cfg_path) != "same":
        raise CheckpointMismatchError(
            f"{run_dir} holds a finished run of {state['step']} steps and the configuration asks for "
            f"{planned_steps(current_cfg)}, but its checkpoint.pt is gone: it cannot be extended. Use another "
            "run folder, or resume=False to start over")


def check_metrics_file(path: str | Path, nbytes: int, ckpt_path: str | Path) -> None:
    """The metrics file a checkpoint continues must hold at least the ``nbytes`` the checkpoint recorded
    (the resume truncates it to that length); else :class:`CheckpointError` naming both files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing, but {ckpt_path} continues it (it recorded {nbytes} bytes of "
                              "metrics); restore the file, or delete the checkpoint to restart the run from step 0")
    size = path.stat().st_size
    if size < nbytes:
        raise CheckpointError(f"{path}: {size} bytes, shorter than the {nbytes} bytes {ckpt_path} recorded "
                              "(truncated after the checkpoint); restore the file, or delete the checkpoint "
                              "to restart the run from step 0")
