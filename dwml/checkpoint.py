"""Reading a run folder's ``checkpoint.pt`` and deciding whether a configuration may reuse it.

``dwml.train`` writes the checkpoint; this module decides what a second call on the same folder does,
so that a finished run is never returned under a configuration that would compute something else:

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
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

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
"""What ``dwml.train`` writes into a checkpoint; one that lacks any of them is not a checkpoint of it."""


class CheckpointError(ConfigError):
    """A checkpoint file cannot be read (empty, truncated, corrupt or not a dwml checkpoint); names the path."""


class CheckpointMismatchError(ConfigError):
    """The checkpoint in a run folder was written under another configuration or other peers."""


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load`` of a checkpoint on the CPU (``weights_only=True``), with an error naming ``path``.

    A 0-byte, truncated or otherwise unreadable file, or one without the keys ``dwml.train`` writes,
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
