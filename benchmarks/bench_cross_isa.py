"""How much a `default` run's numbers depend on the CPU's kernels (its vector instruction set).

The study's runs are retrained with the instruction set capped and set beside the study's own runs.

A float32 run is deterministic on one machine, but another CPU takes other kernels (AVX2 against AVX-512
against AMX: other blockings, other summation orders), and the rounding differences grow through training.
Two machines cannot be had at once here, so this script makes the other machine's kernels on this one: each
level retrains the `default` profile's runs (``--methods``, ``--seeds``; the notebooks' specs, learning-curve
stops included) in a child process whose environment caps PyTorch's own kernels (``ATEN_CPU_CAPABILITY``),
oneDNN's (``ONEDNN_MAX_CPU_ISA``) and MKL's (``MKL_ENABLE_INSTRUCTIONS``), with one thread as the pool's
workers have. Then, per run and level, against the reference run (``--reference``, the study's own folder):

- whether the folders are the same bytes (``dwml.executor.folder_differences``; timing fields aside);
- the largest absolute difference of any final weight of any peer;
- each peer's macro accuracy on the profile's pairs, its difference from the reference in points, and the
  share of pairs whose decision (good scored above bad) is the same.

The level ``native`` (no cap) is the control: where it gives the committed run's bytes, the committed run
is this code on this machine's kernels; where it does not, the committed run came from older code, and the
capped levels are also set beside the native rerun, which differs from them in the kernels only. Each level
is one child process training mlm then DWML per seed (~6 min a seed here); ``--jobs`` of them at once::

    flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_cross_isa.py --levels native,avx2,default \
        --seeds 0 --jobs 1 --out benchmarks/results/cross_isa.md
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # dwml, imported where needed: a child imports torch after its caps are set

# What each level sets before torch is imported (``native``: nothing)
LEVELS = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
               "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    # PyTorch's kernels without AVX: its float32 matrix products take another path too
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def train(level: str, run_root: Path, methods: list[str], seeds: list[int]) -> None:
    """The child's work: the profile's study set up under ``run_root`` and the specs trained one after
    another, one thread (the environment of ``level`` was set by the parent)."""
    import torch

    torch.set_num_threads(1)
    from dwml.executor import baseline_specs
    from dwml.runner import load_profile
    from dwml.studies import study as studies

    prof = load_profile("default")
    study = studies.setup(prof["data"], prof["search"], prof["train"], run_root, prof["suites"],
                          prof["max_pairs_per_task"], prof["suite_dirs"] or None, prof["skip_tasks"] or None)
    specs = baseline_specs(methods, seeds, curve_steps=tuple(prof["curve_steps"]),
                           curve_pairs_per_task=prof["curve_pairs_per_task"])
    print(f"[{level}] torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} thread(s): {[s.name for s in specs]}", flush=True)
    studies.execute(study, specs, executor=None)


def max_weight_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if wa.keys() != wb.keys():
        raise ValueError(f"{a} and {b} hold other tensors")
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def compare(reference: Path, run: Path) -> list[dict]:
    """One row per peer of ``run`` against the same peer of ``reference``."""
    import pandas as pd

    from dwml.executor import folder_differences

    diffs = folder_differences(reference, run)
    ref, new = pd.read_csv(reference / "scores.csv"), pd.read_csv(run / "scores.csv")
    keys = ["suite", "task", "pair_id", "peer"]
    both = ref.merge(new, on=keys, suffixes=("_ref", "_new"), validate="one_to_one")
    if len(both) != len(ref) or len(both) != len(new):
        raise ValueError(f"{run / 'scores.csv'} scores other pairs than {reference / 'scores.csv'}")
    rows = []
    for peer, g in both.groupby("peer"):
        acc_ref = g.groupby("task")["correct_ref"].mean().mean() * 100
        acc_new = g.groupby("task")["correct_new"].mean().mean() * 100
        rows.append({"run": run.name, "peer": int(peer), "same bytes": not diffs, "files differing": len(diffs),
                     "max |weight diff|": max_weight_difference(reference / f"peer_{int(peer) - 1}",
                                                                run / f"peer_{int(peer) - 1}"),
                     "reference macro %": round(acc_ref, 2), "this level macro %": round(acc_new, 2),
                     "difference (points)": round(acc_new - acc_ref, 2),
                     "same decisions %": round(float((g["correct_ref"] == g["correct_new"]).mean()) * 100, 2),
                     "pairs": len(g)})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="native,avx2", help=f"comma-separated, of {sorted(LEVELS)}")
    ap.add_argument("--methods", default="mlm,dwml", help="the teacher (mlm) is trained first when one needs it")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--reference", default="runs/default", help="the study's run root holding the same runs")
    ap.add_argument("--run-root", default="runs/cross_isa", help="each level's runs go to RUN_ROOT/LEVEL")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cross_isa.md"))
    ap.add_argument("--jobs", type=int, default=0, help="levels trained at once (0: all side by side)")
    ap.add_argument("--compare-only", action="store_true", help="the levels' runs are there: compare only")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    levels = args.levels.split(",")
    for level in levels:
        if level not in LEVELS:
            raise SystemExit(f"--levels: {level!r} is not one of {sorted(LEVELS)}")
    if args.child:
        train(args.child, ROOT / args.run_root / args.child, methods, seeds)
        return
    reference = (ROOT / args.reference).resolve()
    if not reference.is_dir():
        raise SystemExit(f"--reference {reference}: no such run root (make reproduce writes it)")
    t0 = time.perf_counter()
    jobs = args.jobs or len(levels)
    for start in range(0, 0 if args.compare_only else len(levels), jobs):  # side by side: one thread each, as the pool's workers
        children = []
        for level in levels[start:start + jobs]:
            env = {**os.environ, **LEVELS[level], "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
            cmd = [sys.executable, __file__, "--child", level, "--levels", level, "--methods", args.methods,
                   "--seeds", args.seeds, "--run-root", args.run_root]
            children.append((level, subprocess.Popen(cmd, env=env, cwd=ROOT)))
        for level, proc in children:
            if proc.wait() != 0:
                raise SystemExit(f"level {level}: the training process exited with {proc.returncode}")
    minutes = (time.perf_counter() - t0) / 60

    import pandas as pd

    # each level against the study's committed run, and (when native ran) against the native rerun: the
    # committed run may come from older code, the native rerun is this code on this machine
    bases = [("committed run", reference)] + ([("native rerun", ROOT / args.run_root / "native")]
                                              if "native" in levels else [])
    tables = []
    for title, base in bases:
        rows = []
        for level in levels:
            if base == ROOT / args.run_root / level:
                continue
            for run in sorted((ROOT / args.run_root / level).glob("*_seed*")):
                if (base / run.name).is_dir():
                    rows += [{"level": level, **r} for r in compare(base / run.name, run)]
        if rows:
            tables += [f"Against the {title} (`{os.path.relpath(base, ROOT)}`):", "",
                       pd.DataFrame(rows).to_markdown(index=False), ""]
    from dwml.precision import machine_identity

    cpu = machine_identity("cpu")["chip"]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    lines = [f"# `default` runs retrained with the CPU's kernels capped, against `{args.reference}`", "",
             f"Machine: {cpu} ({', '.join(isa)}), {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}; "
             + ("compared only (the levels' runs were there)." if args.compare_only else
                f"{minutes:.1f} min for the levels {', '.join(levels)}, {jobs} at a time."),
             f"Command: `python benchmarks/bench_cross_isa.py --levels {args.levels} --methods {args.methods} "
             f"--seeds {args.seeds} --jobs {jobs}`. Environment of each level: "
             + "; ".join(f"{k}: {v or 'nothing set'}" for k, v in LEVELS.items() if k in levels) + ".", "",
             *tables]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(args.out) + ".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
