"""One prepared run for one GPU (under 8 minutes on an H100): is the CUDA path right, and how fast is it?

Stages, each in its own process with its own time limit, each writing ``<out>/<stage>.json`` before the next
starts (a stage that overruns or fails loses only itself), and ``<out>/summary.md`` rewritten after each:

  env        versions, the device, its memory and peaks;
  baselines  every method of ``03_baselines`` on the ``ci`` profile on CUDA, eager and compiled (``train.compile``):
             steps, minutes, final dev losses;
  hypergrad  the outer step's hypergradient (eq. 3, jvp) on CUDA against the same state in float64 on the CPU,
             in IEEE float32 (as the loop runs it) and, to show what it guards against, with TF32 on;
  nccl       the loop's data-parallel path (``dwml.distributed``: process group, DDP, the outer step's sums)
             in one process of world size 1, with nccl;
  mfu        the paper-shaped DWML step (4 peers, vocab 50,265, 60 x 3 x 512 tokens): the old path (one pass a
             micro-batch, eager, the loss in one piece, batches in series) against the new one (chunks of 20,
             compiled peers and loss, TF32 in the inner step, batches built ahead), measured steps and MFU;
  study      the ``aochildes`` profile's single model and DWML, 3 seeds, the six runs at once on the GPU
             (``dwml.executor``, ``runs_per_gpu``), as many passes as the stage's budget holds (at most 10,
             BabyBERTa's budget), scored on Zorro, else on a BLiMP subsample; without the AO-CHILDES corpus (``../shared/data/corpus``) the ci corpus and its
             synthetic pairs stand in, and the summary says so.

Run on the GPU machine: ``python benchmarks/gpu_check.py --out benchmarks/results/gpu/<gpu name>``.
``--dry-run`` runs every stage at toy sizes on the CPU (``tests/test_gpu_check.py``), so the script cannot rot.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (name, limit in seconds on the GPU); the limits add up to 7.8 minutes
STAGES = [("env", 30), ("baselines", 110), ("hypergrad", 30), ("nccl", 30), ("mfu", 150), ("study", 120)]
# The dry run checks that every stage works, not how fast: its limits only catch a hang. (At 60 s a stage,
# the baselines stage ran over on a 2-core machine busy with a study beside the tests.)
DRY_LIMIT = 240
DRY_LIMITS = {"study": 360}  # its six runs in spawned workers, each importing torch, on 2 cores
PAPER_PEERS = [(2, 3, 840), (1, 1, 688), (7, 12, 384), (9, 12, 288)]  # benchmarks/bench_train.py
PAPER_VOCAB = 50265


def _profile(name: str) -> dict:
    import yaml

    return yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())


def _device(dry: bool) -> str:
    return "cpu" if dry else "cuda"


def _write(out: Path, name: str, result: dict) -> None:
    from dwml.io import atomic_write_json

    atomic_write_json(out / f"{name}.json", result)


# ----------------------------------------------------------------------------------------------------
# stages (each returns a JSON-able dict)


def stage_env(out: Path, dry: bool) -> dict:
    import platform

    import torch
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "dry_run": dry}
    if torch.cuda.is_available():
        from dwml.profiling import lookup_gpu_peak

        p = torch.cuda.get_device_properties(0)
        name = torch.cuda.get_device_name()
        info.update(device=name, memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count,
                    capability=f"{p.major}.{p.minor}", bf16_peak=lookup_gpu_peak(name, "bf16"))
    else:
        info["device"] = platform.processor() or platform.machine()
    return info


def _ci_sections(dry: bool, **train) -> dict:
    prof = _profile("ci")
    t = {**prof["train"], "device": _device(dry), **train}
    if dry:
        t.update(num_epochs=2, eval_interval=2, checkpoint_interval=2)
    return {"data": dict(prof["data"]), "search": dict(prof["search"]), "train": t}


def stage_baselines(out: Path, dry: bool) -> dict:
    from dwml import runs
    from dwml.studies import study as studies

    prof = _profile("ci")
    methods = prof["baseline_methods"]
    rows = {}
    for compiled in ([False] if dry else [False, True]):  # compile on 2 CPU cores: tests/test_compile.py
        label = "compiled" if compiled else "eager"
        sec = _ci_sections(dry, compile=compiled)
        study = studies.setup(sec["data"], sec["search"], sec["train"], out / "runs" / "ci", [], 0)  # ci's peers
        t0 = time.perf_counter()
        res = runs.train_methods(study, methods, [0], out / "runs" / label, progress=False)
        table = runs.runs_table(res)
        rows[label] = {"seconds": time.perf_counter() - t0, "runs": json.loads(table.to_json(orient="records"))}
        print(f"baselines {label}: {len(res)} runs in {rows[label]['seconds']:.0f} s", flush=True)
    if dry:
        rows["compiled"] = "not run in --dry-run (2 CPU cores; tests/test_compile.py checks compile on the CPU)"
    return {"methods": methods, **rows}


def _tiny_state(device: str, dtype, seed: int = 0):
    """Two small peers and a train and a dev batch of the ci corpus, on ``device`` in ``dtype``."""
    import torch

    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.model import build_peer
    from types import SimpleNamespace

    cfg = Config.from_dict(**{k: v for k, v in _ci_sections(True).items() if k != "search"})
    prep = prepare_corpus(cfg.data, progress=False)
    torch.manual_seed(seed)
    models = [build_peer(SimpleNamespace(num_layers=l, num_heads=2, hidden_size=h, intermediate_size=2 * h),
                         len(prep.tokenizer), cfg.data.block_size + 2, attn_implementation="sdpa",
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).to(device, dtype)
              for l, h in ((2, 64), (1, 32))]
    b = [prep.batcher(s, cfg.data, 16, seed=seed).next_batch() for s in ("train", "dev")]
    move = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in x.items()} for x in b]
    return models, move[0], move[1]


def stage_hypergrad(out: Path, dry: bool) -> dict:
    import torch

    from dwml.bilevel import hypergradient
    from dwml.precision import matmul_precision

    dev = _device(dry)
    w = torch.tensor([0.6, 0.4], dtype=torch.float64)
    kw = dict(alpha=0.5, gamma=0.05, temperature=1.0, mode="jvp")
    ref_models, tb, db = _tiny_state("cpu", torch.float64)
    ref = hypergradient(ref_models, tb, db, w, **kw)
    models, tb, db = _tiny_state(dev, torch.float32)
    out_rows = {"float64_cpu": ref.tolist()}
    for label, tf32 in (("float32", False), ("tf32", True)):
        with matmul_precision(tf32):
            g = hypergradient(models, tb, db, w.float().to(dev), **kw).double().cpu()
        rel = float((g - ref).abs().max() / ref.abs().max())
        out_rows[label] = {"g": g.tolist(), "max_rel_error": rel}
    out_rows["ok"] = out_rows["float32"]["max_rel_error"] < 1e-3
    return out_rows


def stage_nccl(out: Path, dry: bool) -> dict:
    """World size 1 through the loop's real data-parallel code: the ranks are made 'active' for one process."""
    import torch

    from dwml import distributed, train
    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.model import build_peers
    from dwml.search import ensure_peers

    class OneRank(distributed.Ranks):
        @property
        def active(self) -> bool:  # the collective path with one process
            return True

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29500 + os.getpid() % 1000), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")
    distributed.env_ranks = lambda: OneRank(0, 1, 0)
    sec = _ci_sections(dry, method="dwml", num_epochs=4, eval_interval=2, checkpoint_interval=2)
    cfg = Config.from_dict(**sec)
    prep = prepare_corpus(cfg.data, progress=False)
    archs, meta = ensure_peers(out / "runs" / "ci" / "peers.json", cfg.search, len(prep.tokenizer),
                               cfg.data.block_size + 2)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    res = train.train(cfg, prep, build_peers(archs, meta), out / "runs" / "nccl", progress=False, resume=False)
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
    return {"backend": backend, "steps": res.summary["steps"], "weights": res.weights,
            "final_dev_ensemble": res.summary["final_dev_ensemble"], "seconds": time.perf_counter() - t0,
            "ok": backend == ("gloo" if dry else "nccl") and res.done}


def _paper_flops(peers, rows: int, width: int, n_pred: int, vocab: int) -> float:
    """FLOPs of one optimizer step of ``rows`` x ``width`` tokens (meta tensors, dwml.gpuplan)."""
    import torch
    from types import SimpleNamespace

    from dwml import gpuplan
    from dwml.model import build_peer

    with torch.device("meta"):
        models = [build_peer(SimpleNamespace(num_layers=l, num_heads=a, hidden_size=h, intermediate_size=4 * h),
                             vocab, width + 2, attn_implementation="sdpa") for l, a, h in peers]
    return sum(op.flops for op in gpuplan.step_ops(models, rows, width, n_pred, outer=False))


def stage_mfu(out: Path, dry: bool) -> dict:
    import torch
    from types import SimpleNamespace

    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.model import build_peer
    from dwml.train import Trainer

    peers, vocab, width, nb, bs = PAPER_PEERS, PAPER_VOCAB, 512, 60, 3
    steps, skip = 4, 1
    if dry:
        peers, vocab, width, nb, bs, steps, skip = [(1, 2, 32), (1, 1, 16)], 700, 32, 4, 2, 3, 1
    prof = _profile("ci")
    data = {**prof["data"], "block_size": width, "packing": "blocks", "mlm_probability": 0.15}
    settings = {"old": dict(chunk_size=1, compile=False, prefetch=0, loss_rows=0, tf32=False),
                "new": dict(chunk_size=min(20, nb), compile=not dry, prefetch=2, loss_rows=8192, tf32=True)}
    rows = {}
    for label, s in settings.items():
        train = dict(method="dwml", device=_device(dry), mixed_precision=not dry, num_batches=nb, batch_size=bs,
                     num_epochs=1000, eval_interval=1000, eval_batches=1, checkpoint_interval=1000, log_interval=1000,
                     weight_update_frequency=5, learning_rate=6e-4, min_lr=6e-5, warmup_iters=2, lr_decay_iters=100,
                     **s)
        cfg = Config.from_dict(data=data, train=train)
        prep = prepare_corpus(cfg.data, progress=False)
        torch.manual_seed(0)
        models = [build_peer(SimpleNamespace(num_layers=l, num_heads=a, hidden_size=h, intermediate_size=4 * h),
                             vocab, width + 2, attn_implementation="sdpa") for l, a, h in peers]
        if label == "old" and not dry:
            torch.backends.cuda.matmul.allow_tf32 = True  # as the old loop set it, process-wide
        tr = Trainer(cfg, prep, models, out / "runs" / f"mfu_{label}", progress=False, resume=False)
        times = []
        for k in range(steps):
            if torch.cuda.is_available() and not dry:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            tr.train_step()
            if torch.cuda.is_available() and not dry:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            print(f"mfu {label} step {k + 1}: {times[-1]:.3f} s", flush=True)
        if tr.prefetcher is not None:
            tr.prefetcher.close()
        torch.backends.cuda.matmul.allow_tf32 = False
        kept = sorted(times[skip:])
        rows[label] = {"settings": s, "step_s": times, "median_step_s": kept[len(kept) // 2],
                       "max_memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if torch.cuda.is_available() else None}
        del tr, models
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    n_pred = round(0.15 * bs * width)  # the predicted positions of a micro-batch (15% of its tokens)
    flops = _paper_flops(peers, bs * min(20, nb), width, n_pred * min(20, nb), vocab) * nb / min(20, nb)
    peak = 989e12
    if torch.cuda.is_available() and not dry:
        from dwml.profiling import lookup_gpu_peak

        found = lookup_gpu_peak(torch.cuda.get_device_name(), "bf16")
        peak = found[0] if found else peak
    for r in rows.values():
        r["mfu"] = flops / r["median_step_s"] / peak
    return {"flops_per_step": flops, "peak_flops": peak, "outer_step": "every 5 steps (not in these steps)", **rows,
            "speedup": rows["old"]["median_step_s"] / rows["new"]["median_step_s"]}


def stage_study(out: Path, dry: bool, budget_s: float = 110.0) -> dict:
    from dwml import runs
    from dwml.executor import baseline_specs, read_scores
    from dwml.studies import study as studies

    prof = _profile("aochildes")
    corpus_ok = (ROOT / prof["data"]["corpus"]).is_dir() if not Path(prof["data"]["corpus"]).is_absolute() else \
        Path(prof["data"]["corpus"]).is_dir()
    if dry or not corpus_ok:
        base = _ci_sections(dry)
        note = "the ci corpus (dry run)" if dry else "the ci corpus: no AO-CHILDES corpus at " + prof["data"]["corpus"]
    else:
        base = {"data": dict(prof["data"]), "search": dict(prof["search"]), "train": dict(prof["train"])}
        note = "AO-CHILDES (aochildes profile)"
    methods, seeds = ["mlm", "dwml"], [0, 1, 2]
    fast = dict(device=_device(dry), mixed_precision="auto", prefetch=0 if dry else 2, tf32=not dry)
    root = out / "runs" / ("ci" if (dry or not corpus_ok) else "aochildes")  # where the searched peers are kept
    study = studies.setup(base["data"], base["search"], {**base["train"], **fast}, root, [], 0)
    t = study.cfg.train  # one pass over the corpus, in optimizer steps of batch_size x num_batches
    steps_per_pass = study.prep.batcher("train", study.cfg.data, t.batch_size * t.num_batches, 0).batches_per_pass()
    # The six runs at once on the one GPU (issue 26, item 3): each small model's step is launch-bound (host
    # dispatch, not device time; benchmarks/results/gpu_plan.md), so each run gets a worker process and a core
    # of its own and the device is shared. On the CPU (the dry run) the pool is one one-thread worker a core.
    n_runs = len(methods) * len(seeds)
    executor = {"kind": "local", "workers": "auto", "threads": 1, "runs_per_gpu": 1 if dry else n_runs}
    at_once = studies.at_once(executor)
    # the passes the budget holds: time a few steps of each method first, here (throwaway folders)
    probe = 40
    per_step = {}
    for m in ([] if dry else methods):  # a dry run takes 2 steps a run, no probe
        t0 = time.perf_counter()
        runs.train_run(study.sections, study.prep, study.archs, study.meta, m, 0, out / "runs" / "probe",
                       progress=False, max_steps=probe, train_overrides={"eval_interval": 10_000}, tag="probe",
                       teacher_dir="")
        per_step[m] = (time.perf_counter() - t0) / probe
    # the rest of the budget: the workers' start (an interpreter, torch, CUDA: ~10 s) and the scoring
    train_budget = 0.6 * budget_s - 10
    rounds = math.ceil(n_runs / at_once)  # runs after one another in a worker
    passes = train_budget / (rounds * max(per_step.values()) * steps_per_pass) if per_step else 0.0
    passes = max(0.01, min(10.0, math.floor(passes * 100) / 100))
    steps = 2 if dry else max(2, int(passes * steps_per_pass))
    print(f"study: {passes} passes = {steps} steps a run, {at_once} runs at once ({per_step})", flush=True)
    train = {**study.sections["train"], "num_epochs": steps, "lr_decay_iters": steps,
             "warmup_iters": min(int(study.sections["train"].get("warmup_iters", 5)), max(1, steps // 10))}
    # Zorro on 300 pairs a paradigm (6,900; all 46,000 for 15 peers would not fit the stage), else BLiMP on 50
    suite_names = ["synthetic"] if dry else (["zorro"] if _has_suite("zorro") else ["blimp"])
    pairs_per_task = 5 if dry else (300 if suite_names == ["zorro"] else 50)
    if not (out / "runs" / "study" / "peers.json").is_file():  # the peers searched above, not a second search
        (out / "runs" / "study").mkdir(parents=True, exist_ok=True)
        (out / "runs" / "study" / "peers.json").write_text((root / "peers.json").read_text())
    scored = studies.setup(study.sections["data"], study.sections["search"], train, out / "runs" / "study",
                           suite_names, pairs_per_task)
    t0 = time.perf_counter()
    done = studies.execute(scored, baseline_specs(methods, seeds), executor)
    train_s = time.perf_counter() - t0
    suite_name = f"{suite_names[0]} ({pairs_per_task} pairs a task)"
    scores = read_scores(done)
    acc = (scores.groupby(["method", "seed", "peer"])["correct"].mean() * 100).reset_index()
    best = acc.groupby(["method", "seed"])["correct"].max().reset_index()
    table = best.groupby("method")["correct"].agg(["mean", "std", "count"]).reset_index()
    return {"corpus": note, "suite": suite_name, "passes": passes, "steps": steps, "probe_step_s": per_step,
            "runs_at_once": at_once, "train_and_score_s": train_s,
            "best_peer_accuracy": json.loads(best.to_json(orient="records")),
            "by_method": json.loads(table.to_json(orient="records"))}


def _has_suite(name: str) -> bool:
    """Whether the suite's sentences are where ``dwml.suites`` looks for them (the data root)."""
    from dwml import scoring

    try:
        return bool(scoring.load_suites_for([name], max_pairs_per_task=1))
    except Exception as err:  # noqa: BLE001 (reported; the stage scores BLiMP instead)
        print(f"study: no {name} ({type(err).__name__}: {err})", flush=True)
        return False


RUNNERS = {"env": stage_env, "baselines": stage_baselines, "hypergrad": stage_hypergrad, "nccl": stage_nccl,
           "mfu": stage_mfu, "study": stage_study}


# ----------------------------------------------------------------------------------------------------
# driver


def summary(out: Path, status: dict) -> str:
    lines = ["# GPU check", "", f"`python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`", "",
             "| stage | status | seconds | limit | result |", "|---|---|---:|---:|---|"]
    for name, s in status.items():
        path = out / f"{name}.json"
        brief = ""
        if path.is_file():
            r = json.loads(path.read_text())
            brief = {"env": lambda r: f"{r.get('device')}, torch {r.get('torch')}",
                     "hypergrad": lambda r: f"float32 rel. error {r['float32']['max_rel_error']:.1e}, "
                                            f"tf32 {r['tf32']['max_rel_error']:.1e}",
                     "nccl": lambda r: f"backend {r['backend']}, ok={r['ok']}",
                     "mfu": lambda r: f"old {r['old']['median_step_s']:.3f} s ({100 * r['old']['mfu']:.1f}%), "
                                      f"new {r['new']['median_step_s']:.3f} s ({100 * r['new']['mfu']:.1f}%)",
                     "study": lambda r: f"{r['passes']} passes, {r['suite']}: " + ", ".join(
                         f"{x['method']} {x['mean']:.1f}" for x in r["by_method"]),
                     "baselines": lambda r: ", ".join(f"{k}: {v['seconds']:.0f} s" for k, v in r.items()
                                                      if isinstance(v, dict))}[name](r)
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.0f} | {s['limit']} | {brief} |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu" / "check")
    ap.add_argument("--dry-run", action="store_true", help="every stage at toy sizes on the CPU")
    ap.add_argument("--stages", default=",".join(n for n, _ in STAGES))
    ap.add_argument("--stage", default="", help=argparse.SUPPRESS)  # one stage, in this process
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.stage:
        limit = dict(STAGES)[args.stage]
        kw = {"budget_s": limit - 20} if args.stage == "study" and not args.dry_run else {}
        t0 = time.perf_counter()
        result = RUNNERS[args.stage](out, args.dry_run, **kw)
        _write(out, args.stage, {**result, "seconds": time.perf_counter() - t0})
        return 0
    status = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    for name in [s for s in args.stages.split(",") if s]:
        limit = DRY_LIMITS.get(name, DRY_LIMIT) if args.dry_run else dict(STAGES)[name]
        (out / f"{name}.json").unlink(missing_ok=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--out", str(out)] + \
              (["--dry-run"] if args.dry_run else [])
        try:
            proc = subprocess.run(cmd, env=env, cwd=str(ROOT), timeout=limit, capture_output=True, text=True)
            state = "ok" if proc.returncode == 0 and (out / f"{name}.json").is_file() else f"failed (rc {proc.returncode})"
            log = proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as err:
            state, log = "over its time limit", (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else str(err.stdout or "")
        (out / f"{name}.log").write_text(log[-20000:])
        status[name] = {"status": state, "seconds": time.perf_counter() - t0, "limit": limit}
        print(f"{name}: {state} in {status[name]['seconds']:.0f} s", flush=True)
        print(summary(out, status).splitlines()[-1], flush=True)
    (out / "status.json").write_text(json.dumps(status, indent=1))
    return 0 if all(s["status"] == "ok" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
