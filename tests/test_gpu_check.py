"""benchmarks/gpu_check.py --dry-run: every stage of the prepared GPU run at toy sizes on the CPU, each in its
own process with its result file, so that the script is known to run as it is when a GPU is lent."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


# six stages, each a fresh process importing torch and transformers (tens of seconds on 2 cores); in `make test` so
# that the prepared GPU script cannot rot between GPU sessions
def test_gpu_check_dry_run_runs_every_stage(tmp_path):
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    status = json.loads((out / "status.json").read_text())
    assert list(status) == ["env", "baselines", "hypergrad", "nccl", "mfu", "study"]
    assert {k: v["status"] for k, v in status.items()} == {k: "ok" for k in status}, \
        proc.stdout[-3000:] + "".join((out / f"{k}.log").read_text()[-2000:] for k in status)
    assert proc.returncode == 0
    r = {k: json.loads((out / f"{k}.json").read_text()) for k in status}
    assert r["env"]["dry_run"] is True
    assert len(r["baselines"]["eager"]["runs"]) == len(r["baselines"]["methods"])
    assert r["hypergrad"]["ok"] and r["hypergrad"]["float32"]["max_rel_error"] < 1e-3  # float32 against float64
    assert r["nccl"]["ok"] and r["nccl"]["backend"] == "gloo" and r["nccl"]["steps"] == 2  # the dry run's 2 steps
    assert r["mfu"]["old"]["median_step_s"] > 0 and r["mfu"]["flops_per_step"] > 0
    assert {x["method"] for x in r["study"]["by_method"]} == {"mlm", "dwml"}
    assert all(x["count"] == 3 for x in r["study"]["by_method"])  # 3 seeds
    text = (out / "summary.md").read_text()
    assert all(f"| {k} | ok |" in text for k in status)
