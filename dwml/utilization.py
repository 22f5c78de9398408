"""Utilisation over time: a background thread that samples at a fixed interval (NVML's GPU and memory-controller
utilisation, memory used and power on CUDA; this process's share of the CPU cores otherwise), for the cost
study's Figure 4 and Table 9 (``dwml.profiling`` counts the FLOPs and the peaks)."""
from __future__ import annotations

import math
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import torch



def _nvml_handle(index: int):
    """The NVML handle of CUDA device ``index``. CUDA and NVML may number the GPUs differently (with
    ``CUDA_VISIBLE_DEVICES``), so match by UUID first and fall back to the index."""
    import pynvml

    pynvml.nvmlInit()
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
    except Exception:  # an older torch without .uuid, or a MIG slice: the index is the best guess
        return pynvml.nvmlDeviceGetHandleByIndex(index)


def utilization_column(tables: Iterable[Iterable[str]]) -> str:
    """The column that is "utilisation" for sampler tables with these columns: ``gpu_util`` if every one
    has it (all ran on CUDA with NVML), else ``cpu_percent`` (the process's share of the CPU cores)."""
    tables = [set(columns) for columns in tables]
    return "gpu_util" if tables and all("gpu_util" in columns for columns in tables) else "cpu_percent"


class UtilizationSampler:
    """Samples device utilisation every ``interval_s`` seconds on a daemon thread, into a table.

    Each row holds ``t`` (seconds since start, plus ``t_offset``), and
    - ``cpu_percent``: this process's CPU time over the last interval as a share of the cores it may run
      on (``psutil``'s per-process percentage, which reaches 100 x cores, divided by the number of cores
      in its affinity mask): 100 means every core busy with this process;
    - ``cpu_system_percent``: the whole machine's CPU load (other processes included), same scale;
    - ``rss_mb``: this process's resident memory;
    - on CUDA, from NVML: ``gpu_util`` (% of the last sample period in which a kernel ran, what system
      charts call GPU utilisation), ``mem_util`` (% of it in which device memory was read or written),
      ``mem_used_mb`` (the whole GPU's) and ``power_w``; and ``torch_alloc_mb`` (this process's tensors).

    Use as a context manager, or :meth:`start` / :meth:`stop`; the thread is joined on exit, exception
    or not. Without CUDA, or without a working NVML (``nvidia-ml-py``), only the CPU columns are recorded
    and :attr:`device_kind` says 'cpu'.

    ``clock`` (seconds, monotonic) and ``wait`` (``wait(timeout)`` blocks up to ``timeout`` seconds and
    returns True when sampling is to end) are the sampler's only view of time: by default
    ``time.monotonic`` and a wait on the stop event; a test passes a fake clock's to drive it exactly."""

    def __init__(self, interval_s: float = 0.5, device: str | torch.device | None = None, t_offset: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, wait: Callable[[float], bool] | None = None):
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"UtilizationSampler: interval_s={interval_s!r} must be a positive number of seconds")
        self.interval_s = float(interval_s)
        self.t_offset = float(t_offset)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.device_kind = "cpu"
        self.device_name = "cpu"
        self.nvml_error: str | None = None
        self._handle = None
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clock = clock
        self._wait = wait if wait is not None else self._stop.wait
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._t0 = 0.0
        self._stopped = False
        self.duration_s = 0.0

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> "UtilizationSampler":
        import psutil

        if self._thread is not None:
            raise RuntimeError("UtilizationSampler.start: already started (use one sampler per run)")
        self._proc = psutil.Process()
        try:
            self._cores = len(self._proc.cpu_affinity())
        except (AttributeError, NotImplementedError, OSError):  # no affinity on macOS
            self._cores = psutil.cpu_count() or 1
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            try:
                self._handle = _nvml_handle(index)
                self.device_kind = "cuda"
                self.device_name = torch.cuda.get_device_name(index)
            except Exception as err:  # no driver library, no permission: record the CPU side only
                self.nvml_error = f"{type(err).__name__}: {err}"
                warnings.warn(f"UtilizationSampler: NVML unavailable ({self.nvml_error}); recording CPU only")
        # psutil's percentages measure from the previous call: prime them so the first sample is real.
        self._proc.cpu_percent(None)
        psutil.cpu_percent(None)
        self._t0 = self._clock()
        self._thread = threading.Thread(target=self._run, name="dwml-utilization-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, raise_errors: bool = True) -> "UtilizationSampler":
        """Stop and join the thread (idempotent). Raises ``RuntimeError`` if sampling failed."""
        if self._thread is None:
            raise RuntimeError("UtilizationSampler.stop: never started")
        if self._stopped:
            return self
        self._stopped = True
        self._stop.set()
        self._thread.join(timeout=max(5.0, 4 * self.interval_s))
        if self._thread.is_alive():  # a hung NVML call; the daemon thread dies with the process
            warnings.warn("UtilizationSampler: the sampling thread did not stop in time; left as a daemon")
        self.duration_s = self._clock() - self._t0
        if self._handle is not None:
            import pynvml

            try:
                pynvml.nvmlShutdown()
            except Exception:
                pass
            self._handle = None
        if self._error is not None and raise_errors:
            err, self._error = self._error, None
            raise RuntimeError(f"UtilizationSampler: sampling failed: {err!r}") from err
        return self

    def __enter__(self) -> "UtilizationSampler":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        # If the body raised, that error is the one to see; a sampling error then only warns.
        self.stop(raise_errors=exc_type is None)
        if exc_type is not None and self._error is not None:
            warnings.warn(f"UtilizationSampler: sampling also failed: {self._error!r}")

    # -- sampling --------------------------------------------------------------------------------
    def _run(self) -> None:
        k = 1
        try:
            # Deadlines at start + k x interval, so the spacing does not drift by the sampling time; after
            # a stall (a loaded machine) skip the missed deadlines instead of sampling in a burst.
            while not (self._wait(max(0.0, self._t0 + k * self.interval_s - self._clock())) or self._stop.is_set()):
                self._sample()
                k = max(k + 1, math.floor((self._clock() - self._t0) / self.interval_s) + 1)
        except BaseException as err:  # kept for stop() to raise in the caller's thread
            self._error = err

    def _sample(self) -> None:
        import psutil

        row = {"t": self._clock() - self._t0 + self.t_offset,
               "cpu_percent": self._proc.cpu_percent(None) / self._cores,
               "cpu_system_percent": psutil.cpu_percent(None),
               "rss_mb": self._proc.memory_info().rss / 2**20}
        if self._handle is not None:
            import pynvml

            util = pynvml.nvmlDeviceGetUtilizationRates(self._handle)
            row.update(gpu_util=float(util.gpu), mem_util=float(util.memory),
                       mem_used_mb=pynvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20,
                       power_w=pynvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0,
                       torch_alloc_mb=torch.cuda.memory_allocated(self.device) / 2**20)
        with self._lock:
            self._rows.append(row)

    # -- results ---------------------------------------------------------------------------------
    def columns(self) -> list[str]:
        """The columns of this sampler's table (the GPU ones on CUDA with NVML only)."""
        columns = ["t", "cpu_percent", "cpu_system_percent", "rss_mb"]
        if self.device_kind == "cuda":
            columns += ["gpu_util", "mem_util", "mem_used_mb", "power_w", "torch_alloc_mb"]
        return columns

    def to_frame(self):
        """The samples so far as a ``pandas.DataFrame`` (safe to call while running)."""
        import pandas as pd

        with self._lock:
            return pd.DataFrame(list(self._rows), columns=self.columns())

    def summary(self) -> dict[str, Any]:
        """Means of the sampled columns, peaks of the memory columns, and what was measured."""
        df = self.to_frame()
        column = utilization_column([df.columns])
        out: dict[str, Any] = {"device_kind": self.device_kind, "device_name": self.device_name,
                               "interval_s": self.interval_s, "samples": len(df), "duration_s": self.duration_s,
                               "utilization_column": column}
        for col in df.columns.drop("t"):
            out[f"mean_{col}"] = float(df[col].mean()) if len(df) else math.nan
        for col in ("rss_mb", "mem_used_mb", "torch_alloc_mb"):
            if col in df:
                out[f"max_{col}"] = float(df[col].max()) if len(df) else math.nan
        out["mean_utilization"] = out[f"mean_{column}"]
        return out

    def save_csv(self, path: str | Path) -> Path:
        """Write the samples to ``path`` (CSV) atomically; returns the path."""
        from dwml.io import atomic_write_text

        atomic_write_text(path, self.to_frame().to_csv(index=False))
        return Path(path)
