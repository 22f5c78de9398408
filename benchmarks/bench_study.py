"""A study's wall time under each executor, and each method's throughput in float32 against bf16.

1. The study (``--methods``, ``--seeds`` of ``--profile``, ``--steps`` steps a run, every run scored on
   ``--pairs`` pairs a task) run three ways, one after another in this process, each in a fresh run root
   (the corpus and the searched peers shared, so only the runs are timed):
     serial     one run after another in this process, torch's default threads (every core: today's way);
     local      ``dwml.executor`` local pool, ``--workers`` processes x ``--threads`` thread(s);
     ray        Ray tasks of ``--threads`` CPU(s) on a local Ray instance of ``--workers x --threads`` CPUs
                (left out, with a note, when Ray is not installed: ``pip install -e '.[ray]'``).
   Wall seconds of ``run_study`` (training and scoring; worker start-up included) and the ratio to serial.
2. Throughput: a run of each of ``--tput-methods`` on ``--tput-profile`` for ``--tput-steps`` steps with
   ``train.mixed_precision`` false (float32) and true (bf16 autocast), torch's default threads; real tokens
   per second over the steps after ``--tput-skip`` (``metrics.jsonl``'s ``tokens_per_step`` / their times),
   median of ``--rounds`` interleaved rounds.

Run at full size (the lead): ``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_study.py
--profile default --methods mlm,dwml,kd --steps 60 --tput-profile default`` (the default profile's peers are
searched once into ``runs/default/peers.json`` when missing: minutes). At toy size (seconds):
``benchmarks/bench_study.py --steps 3 --tput-steps 8 --tput-skip 2 --out benchmarks/results/study_toy.md``.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's dwml, also when another one is installed

import yaml  # noqa: E402

from dwml.executor import ExecutorConfig, RunSpec, baseline_specs, run_study  # noqa: E402
from dwml.runs import StudySource  # noqa: E402
from dwml.studies.study import load, run_spec  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "study.md"


def profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())


def source_for(prof: dict, run_root: Path, train: dict, pairs: int) -> StudySource:
    return StudySource(prof["data"], prof["search"], {**prof["train"], **train}, str(run_root), ("synthetic",), pairs)


def short_train(steps: int) -> dict:
    """A run of ``steps`` steps, evaluated and checkpointed at its end only, no early stop."""
    return {"num_epochs": steps, "lr_decay_iters": steps, "warmup_iters": min(2, steps), "eval_interval": steps,
            "checkpoint_interval": steps, "enable_early_stopping": False}


def time_study(args, tmp: Path) -> list[tuple[str, float | None, str]]:
    prof = profile(args.profile)
    train = short_train(args.steps)
    specs = baseline_specs(args.methods.split(","), [int(s) for s in args.seeds.split(",")])
    shared = tmp / "shared"
    print(f"study: {[s.name for s in specs]} on {args.profile}, {args.steps} steps a run; corpus and peers ...",
          flush=True)
    load(source_for(prof, shared, train, args.pairs))  # the corpus and the peer search, once
    configs = [("serial", ExecutorConfig(kind="serial")),
               (f"local {args.workers} x {args.threads}",
                ExecutorConfig(kind="local", workers=args.workers, threads=args.threads)),
               (f"ray {args.workers} x {args.threads}", ExecutorConfig(kind="ray", threads=args.threads))]
    rows = []
    for label, config in configs:
        root = tmp / label.split()[0]
        root.mkdir()
        shutil.copy(shared / "peers.json", root / "peers.json")
        note = ""
        if config.kind == "ray":
            try:
                import ray
            except ImportError:
                rows.append((label, None, "Ray not installed (pip install -e '.[ray]')"))
                continue
            ray.init(num_cpus=args.workers * args.threads, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        try:
            run_study(source_for(prof, root, train, args.pairs), specs, config, work=run_spec,
                      progress=lambda line, label=label: print(f"  {label}: {line}", flush=True))
        finally:
            if config.kind == "ray":
                ray.shutdown()
        rows.append((label, time.perf_counter() - t0, note))
        print(f"{label}: {rows[-1][1]:.1f} s", flush=True)
    return rows


def rate(run_dir: Path, skip: int) -> float:
    """Real tokens per second over the train steps after ``skip``."""
    from dwml.runfolder import read_metrics

    m = read_metrics(run_dir)
    t = m[(m["kind"] == "train") & (m["step"] > skip)]
    return float(t["tokens_per_step"].sum() / (t["tokens_per_step"] / t["tokens_per_s"]).sum())


def time_precision(args, tmp: Path) -> list[tuple[str, str, float, float]]:

    prof = profile(args.tput_profile)
    peers = ROOT / "runs" / args.tput_profile / "peers.json"
    rates = {}
    for r in range(args.rounds):
        for method in args.tput_methods.split(","):
            for mp in ("false", "true"):
                root = tmp / f"tput{r}_{method}_{mp}"
                root.mkdir()
                if peers.is_file():
                    shutil.copy(peers, root / "peers.json")
                train = {**short_train(args.tput_steps), "mixed_precision": mp == "true"}
                source = source_for(prof, root, train, 0)
                out = run_spec(source, RunSpec(method, 0, score=False))
                if not peers.is_file():  # searched here: keep it for the next runs
                    peers.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(root / "peers.json", peers)
                rates.setdefault((method, mp), []).append(rate(Path(out.run_dir), args.tput_skip))
                print(f"round {r} {method} mixed_precision={mp}: {rates[method, mp][-1]:,.0f} tokens/s", flush=True)
    rows = []
    for method in args.tput_methods.split(","):
        fp32, bf16 = statistics.median(rates[method, "false"]), statistics.median(rates[method, "true"])
        rows.append((method, f"{args.tput_steps}", fp32, bf16))
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="ci")
    p.add_argument("--methods", default="mlm,dwml,kd")
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--pairs", type=int, default=10, help="pairs a task scored per run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tput-profile", default="ci")
    p.add_argument("--tput-methods", default="mlm,dwml")
    p.add_argument("--tput-steps", type=int, default=60)
    p.add_argument("--tput-skip", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.tput_skip >= args.tput_steps:
        p.error(f"--tput-skip={args.tput_skip} must be below --tput-steps={args.tput_steps}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_study_") as tmp:
        study = time_study(args, Path(tmp))
        tput = time_precision(args, Path(tmp))
    serial = study[0][1]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cmd = "benchmarks/bench_study.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# A study under each executor; fp32 against bf16", "",
             f"`{cmd}` on {cpu_name()}, {cores} cores ({platform.machine()}), torch threads default for serial "
             f"and throughput; {time.strftime('%Y-%m-%d')}; {time.perf_counter() - t0:.0f} s in all.", "",
             f"## The study: {args.methods} x seeds {args.seeds} on `{args.profile}`, {args.steps} steps a run, "
             f"{args.pairs} pairs a task scored", "",
             "| executor | wall s | vs serial | note |", "|---|---|---|---|"]
    for label, wall, note in study:
        lines.append(f"| {label} | {'' if wall is None else f'{wall:.1f}'} | "
                     f"{'' if wall is None else f'{serial / wall:.2f}x'} | {note} |")
    lines += ["", f"## Throughput on `{args.tput_profile}`: real tokens/s over steps {args.tput_skip + 1}-"
              f"{args.tput_steps}, median of {args.rounds} round(s)", "",
              "| method | steps | float32 tokens/s | bf16 tokens/s | bf16 / float32 |", "|---|---|---|---|---|"]
    for method, steps, fp32, bf16 in tput:
        lines.append(f"| {method} | {steps} | {fp32:,.0f} | {bf16:,.0f} | {bf16 / fp32:.2f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text("\n".join(lines) + "\n")
    tmp_out.replace(out)  # atomic: a reader never sees half a table
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
