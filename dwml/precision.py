"""Where float32 matrix products may round to TF32, and whether a run uses bf16 autocast at all.

TF32, as a context instead of a process-wide switch.

On an Ampere or later GPU a float32 matmul may run on the tensor cores in TF32 (10-bit mantissa, ~1e-3
relative rounding). That is harmless in the inner step's forward and backward (under bf16 autocast most
products are bf16 anyway), and wrong in the outer step: the hypergradient of eq. 3 is a small difference of
large terms, and its finite-difference mode steps theta by ~5e-3 (``dwml.bilevel``). So the loop turns TF32
on only around the inner step, when ``train.tf32`` asks for it, and :func:`matmul_precision` (False) holds
the outer step in IEEE float32 whatever the process had set. PyTorch's three switches are set together and
restored on exit, exceptions included: ``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32`` and ``torch.get_float32_matmul_precision()`` (which the first one
moves too). They are plain flags, settable on a CPU build, so the tests check them on the CPU.

bf16 autocast, chosen by measurement (``train.mixed_precision: auto``). A CPU with bf16 instructions
(AVX512-BF16, AMX) is not always faster under autocast: the casts around each product can cost more than
the products save, and how much depends on the shapes and the method (the measurements that showed it are
in ``docs/decisions.md``). So on such a CPU :func:`choose_bf16` times a few forward-backward passes of the
run's own models and method both ways and keeps bf16 only when it is clearly faster; the decision is cached
per machine and shape (:func:`probe_key`), so every run of a study on one machine decides alike, and the
run records what it chose and why. On CUDA the rule stands (bf16 tensor cores where supported); a CPU
without bf16 instructions emulates bf16 and stays float32.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch

from dwml.io import atomic_write_json
from dwml.model import cpu_has_native_bf16


def tf32_state() -> tuple[bool, bool, str | None]:
    """(cuda matmul allow_tf32, cudnn allow_tf32, float32 matmul precision) as PyTorch holds them now; the
    precision is None where the process has set the backends apart with PyTorch's newer per-backend API
    (then it has no single value, and only the two flags are restored)."""
    try:
        precision = torch.get_float32_matmul_precision()
    except RuntimeError:  # "a mix of the legacy and new APIs": no one value to read
        precision = None
    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32), precision


def _set(state: tuple[bool, bool, str | None]) -> None:
    # The precision first: it moves allow_tf32 too. The flag is set after it only where it still differs
    # (setting it needlessly would split the backends, e.g. 'medium' is TF32 on CUDA and bf16 on the CPU).
    if state[2] is not None:
        torch.set_float32_matmul_precision(state[2])
    if bool(torch.backends.cuda.matmul.allow_tf32) != state[0]:
        torch.backends.cuda.matmul.allow_tf32 = state[0]
    if bool(torch.backends.cudnn.allow_tf32) != state[1]:
        torch.backends.cudnn.allow_tf32 = state[1]


@contextlib.contextmanager
def matmul_precision(tf32: bool) -> Iterator[None]:
    """Within the block, float32 matmuls and convolutions may use TF32 (``tf32=True``: precision 'high')
    or must not ('highest', both ``allow_tf32`` flags False); the three flags are restored on exit."""
    if not isinstance(tf32, bool):
        raise TypeError(f"tf32={tf32!r}: must be True or False (train.tf32)")
    before = tf32_state()
    try:
        _set((True, True, "high") if tf32 else (False, False, "highest"))
        yield
    finally:
        _set(before)


# ---- bf16 autocast by measurement ---------------------------------------------------------------------

BF16_MARGIN = 0.05
"""bf16 is kept only when its median step is at least this much shorter than float32's: it also rounds, so a
tie (or a gain inside the timing noise) goes to float32."""


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``train.mixed_precision`` resolved to, and why (a run records it)."""

    bf16: bool
    reason: str
    fp32_s: float | None = None  # median seconds of one probed pass, where a probe decided
    bf16_s: float | None = None


def decide_bf16(fp32_s, bf16_s, margin: float = BF16_MARGIN) -> PrecisionChoice:
    """The decision from timed passes (seconds each, any number of both): bf16 where its median is below
    ``(1 - margin)`` times float32's."""
    if not fp32_s or not bf16_s:
        raise ValueError("decide_bf16: needs at least one timing of each precision")
    if any(not (t > 0) for t in (*fp32_s, *bf16_s)):
        raise ValueError(f"decide_bf16: timings must be positive seconds, got {list(fp32_s)} and {list(bf16_s)}")
    f, b = statistics.median(fp32_s), statistics.median(bf16_s)
    speed = f / b
    keep = b < (1.0 - margin) * f
    why = (f"measured: bf16 autocast {speed:.2f}x float32's speed (median {b * 1e3:.1f} against {f * 1e3:.1f} ms a "
           f"pass); kept {'bf16' if keep else 'float32'} (bf16 needs >= {1 / (1 - margin):.2f}x)")
    return PrecisionChoice(keep, why, f, b)


def machine_identity(device: torch.device | str) -> dict:
    """What a timing depends on besides the shapes: the processor (or GPU), torch and the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        chip = torch.cuda.get_device_name(device)
    else:
        chip = _cpu_model() or platform.processor() or platform.machine()
    return {"device": device.type, "chip": chip, "torch": torch.__version__, "threads": torch.get_num_threads()}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def probe_key(device: torch.device | str, shape: Mapping) -> str:
    """A short, stable key of this machine and this run's shape (method, peers' architecture, batch, ...)."""
    text = json.dumps({"machine": machine_identity(device), "shape": dict(shape)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_file() -> Path:
    """Where decisions are cached: ``$DWML_CACHE_DIR/precision.json``, else ``$XDG_CACHE_HOME/dwml/``, else
    ``~/.cache/dwml/``."""
    root = os.environ.get("DWML_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dwml"
    return Path(root) / "precision.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or unreadable: decide again (it is only a cache)
        return {}
    return data if isinstance(data, dict) else {}


def time_passes(run_pass: Callable[[], None], n: int = 5, warmup: int = 2,
                clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds of each of ``n`` calls of ``run_pass`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run_pass()
    times = []
    for _ in range(n):
        t0 = clock()
        run_pass()
        times.append(clock() - t0)
    return times


def recorded_choice(path: str | Path) -> PrecisionChoice | None:
    """The choice a run recorded when it started (its ``precision.json``), or None where there is none or it is
    unreadable. A run that goes on, or is reused, keeps it: deciding again (another thread count, another
    machine, a noisy probe) could change the precision in the middle of a run, or refuse a finished one."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("bf16"), bool):
        return None
    return PrecisionChoice(rec["bf16"], f"kept from the run's start ({Path(path).name}): {rec.get('reason', '')}",
                           rec.get("fp32_s"), rec.get("bf16_s"))


def choose_bf16(setting: bool | str, device: torch.device | str, probe: Callable[[bool], list[float]] | None = None,
                key: str | None = None, cache: Path | None = None) -> PrecisionChoice:
    """``train.mixed_precision`` resolved for ``device``. True/False: as the run asks. 'auto': CUDA follows the
    rule (bf16 where supported); a CPU without bf16 instructions stays float32; a CPU with them runs
    ``probe(bf16)`` (seconds of a few passes) both ways and :func:`decide_bf16` decides, cached under ``key``
    in ``cache`` (default :func:`cache_file`) when a key is given. Without a probe the rule decides."""
    if setting in (True, False):
        return PrecisionChoice(bool(setting), "set by train.mixed_precision")
    if setting != "auto":
        raise ValueError(f"train.mixed_precision={setting!r}: must be true, false or 'auto'")
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return PrecisionChoice(ok, "rule: CUDA " + ("computes bf16 on its tensor cores" if ok else "without bf16 support"))
    if device.type != "cpu" or not cpu_has_native_bf16():
        return PrecisionChoice(False, f"rule: {device.type} without bf16 instructions (bf16 would be emulated)")
    if probe is None:
        return PrecisionChoice(True, "rule: the CPU has bf16 instructions (not measured)")
    cache = cache_file() if cache is None else Path(cache)
    if key is not None:
        hit = _read_cache(cache).get(key)
        if isinstance(hit, dict) and isinstance(hit.get("bf16"), bool):
            return PrecisionChoice(hit["bf16"], f"cached ({cache}): {hit.get('reason', '')}",
                                   hit.get("fp32_s"), hit.get("bf16_s"))
    choice = decide_bf16(probe(False), probe(True))
    if key is not None:  # read again just before writing: another run may have added its own key meanwhile
        entries = _read_cache(cache)
        entries[key] = asdict(choice)
        atomic_write_json(cache, entries)
    return choice
