# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · What each method costs: utilisation, FLOPs per peer, training time (Table 9, Figure 4)
#
# The paper's appendix F says DWML had the **lowest average GPU utilisation (43.2%)** of all methods on one
# H100, and the **longest training time**; its Table 9 also lists FLOPs per peer and each method's change
# against RoBERTa-base. The published code measured none of this, so here every method runs at the same
# budget (the same optimizer steps of the same micro-batches) while `dwml.profiling.UtilizationSampler`
# samples the device at a fixed interval:
#
# - on CUDA, NVML's GPU utilisation (the share of time a kernel was running: what system charts show);
# - on a CPU, the training process's share of the CPU cores. **These are CPU figures**: they measure a
#   different thing from the paper's GPU utilisation and are not comparable with its 43.2%.
#
# FLOPs per peer are counted with `FlopCounterMode` on one micro-batch and checked against the closed
# form (`dwml.profiling.analytic_step_flops`), then scaled to the run. The baseline is the single
# teacher-shaped model trained alone by masked LM (the paper's RoBERTa-base); the teacher of `kd` and
# `kd_dwml` is the teacher of `profiling_teacher_dir` if given, else a freshly initialised model of the
# teacher's shape: its weights do not change what a step costs.
#
# On a GPU, `python -m dwml.notebooks --profile gpu 05_gpu_profiling` runs this notebook at the paper's
# shapes (a RoBERTa-base-shaped model, 4 peers, micro-batches of 3 x 512, bf16); `figures/gpu/` holds one
# such run on an NVIDIA H200, and its README says how it was made.

# %% tags=["parameters"]
profile = "default"
run_root = "runs/default"
figures_dir = "figures"
seeds = [0, 1, 2]
data = {"corpus": "synthetic", "synthetic_words": 1000000, "vocab_size": 2048, "block_size": 32, "packing": "packed",
        "mlm_probability": 0.3}
search = {"teacher_layers": 4, "teacher_hidden": 192, "teacher_heads": 4, "num_peers": 4, "bayesian_n_iter": 30}
train = {"mixed_precision": "auto", "learning_rate": 0.003, "min_lr": 0.0003, "dropout": 0.0, "warmup_iters": 80, "lr_decay_iters": 250,
         "num_epochs": 250, "num_batches": 1, "batch_size": 128, "eval_interval": 100, "eval_batches": 8,
         "patience": 5, "checkpoint_interval": 50, "weight_update_frequency": 5}
profiling_steps = 40
profiling_interval_s = 0.25
profiling_methods = ["mlm", "sd", "kd", "dml", "kd_dwml", "dwml"]
profiling_teacher_dir = ""

# %%
import json
import shutil

import pandas as pd
import torch

from dwml import experiments as X
from dwml import profiling as prof
from dwml import search as S
from dwml.config import Config
from dwml.data import prepare_corpus
from dwml.io import atomic_write_json, project_path
from dwml.methods import make_method
from dwml.model import build_peers, predicted_logits, prediction_targets
from dwml.plots import save_figure, save_table, set_style
from dwml.plots.profiling import plot_cost, plot_utilisation
from dwml.train import load_teacher, resolve_device
from dwml.train import train as train_models

set_style()
# The same budget for every method: profiling_steps optimizer steps, one evaluation at the end, no early
# stopping (a method that stopped early would look cheap), no checkpoint until the end.
budget = {**train, "num_epochs": profiling_steps, "max_tokens": 0, "eval_interval": profiling_steps,
          "checkpoint_interval": profiling_steps, "enable_early_stopping": False, "seed": seeds[0]}
cfg = Config.from_dict(data=data, search=search, train=budget)
device = resolve_device(cfg.train.device)
prep = prepare_corpus(cfg.data)
vocab = len(prep.tokenizer)
archs, meta = S.ensure_peers(project_path(run_root) / "peers.json", cfg.search, vocab, cfg.data.block_size + 2)
teacher_arch = X.teacher_arch(meta)  # the single-model baseline: the teacher-sized mlm model
on_gpu = device.type == "cuda"
device_name = torch.cuda.get_device_name(device) if on_gpu else "CPU"
print("device:", device_name, "| peers:", [a.params for a in archs], "| budget:", profiling_steps, "steps of",
      cfg.train.num_batches, "x", cfg.train.batch_size, "x", cfg.data.block_size, "tokens")
if not on_gpu:
    print("NOTE: no CUDA device. Every utilisation below is the training process's share of the CPU cores:\n"
          "      CPU figures, not comparable with the paper's GPU utilisation.")

# %% [markdown]
# ## FLOPs of one micro-batch, per peer: counted against the closed form
# Every method computes the LM head at the masked positions only (`dwml.model.predicted_logits`), so the
# count uses that loss and the closed form puts the head on the labelled positions.

# %%
def masked_loss(model, batch):
    logits, _ = predicted_logits(model, batch)
    return torch.nn.functional.cross_entropy(logits, prediction_targets(batch))


def build(archs_, seed):
    torch.manual_seed(seed)
    return [m.to(device) for m in build_peers(archs_, meta)]


peer_names = [f"peer {i + 1}" for i in range(len(archs))]
flops_table = prof.flops_per_peer(build(archs, 0), cfg.train.batch_size, cfg.data.block_size,
                                  cfg.data.mlm_probability, loss_fn=masked_loss, head="labels", names=peer_names)
teacher_flops = prof.flops_per_peer(build([teacher_arch], 0), cfg.train.batch_size, cfg.data.block_size,
                                    cfg.data.mlm_probability, loss_fn=masked_loss, head="labels", names=["baseline"])
flops_table = pd.concat([teacher_flops, flops_table], ignore_index=True)
assert ((flops_table["ratio"] - 1).abs() < 0.10).all(), flops_table  # counted within 10% of the closed form
print("counted / analytic:", flops_table["ratio"].round(4).tolist())
flops_table

# %% [markdown]
# ## Every method at the same budget, sampled
# One sampler per run, started before the loop and stopped after it; the run folders live under
# `<run_root>/profiling/`, and a finished measurement (its `record.json`) is reused.

# %%
teacher = None
if {"kd", "kd_dwml"} & set(profiling_methods):
    teacher = (load_teacher(profiling_teacher_dir, device) if profiling_teacher_dir
               else build([teacher_arch], 1)[0].eval().requires_grad_(False))


def measure(method, archs_):
    out = project_path(run_root) / "profiling" / method
    record_path = out / "record.json"
    if record_path.is_file():
        return json.loads(record_path.read_text()), pd.read_csv(out / "utilisation.csv")
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_cfg = Config.from_dict(data=data, search=search, train={**budget, "method": method.replace("baseline", "mlm")})
    models = build(archs_, seeds[0])
    use_teacher = teacher if method in ("kd", "kd_dwml") else None
    # The FLOPs of one micro-batch of the method (all its models, teacher forward, exit heads, KL terms),
    # counted on a random batch before training; the outer steps of DWML come on top.
    strategy = make_method(run_cfg.train, models, use_teacher)
    batch = prof.random_mlm_batch(vocab, run_cfg.train.batch_size, cfg.data.block_size, cfg.data.mlm_probability, device)
    method_flops, _ = prof.count_flops(lambda: strategy.loss(batch)[0].backward())
    for m in models:
        m.zero_grad(set_to_none=True)
    with prof.UtilizationSampler(profiling_interval_s, device) as sampler:
        result = train_models(run_cfg, prep, models, run_dir, teacher=use_teacher, resume=False)
    # Counted on a full batch_size x block_size batch, scaled to the real tokens the run trained on
    # (with 'lines' packing a batch is shorter and part padding: see dwml.profiling.run_flops).
    batch_tokens, run_tokens = batch["input_ids"].numel(), result.summary["tokens"]
    per_peer = (teacher_flops if method == "baseline" else flops_table.iloc[1:])["counted_flops"]
    summary = sampler.summary()
    record = {"method": method, "peers": len(archs_), "device": device_name,
              "avg_util_pct": summary["mean_utilization"], "utilisation": summary["utilization_column"],
              "flops_per_peer": [prof.run_flops(float(f), batch_tokens, run_tokens) for f in per_peer],
              "method_flops": prof.run_flops(float(method_flops), batch_tokens, run_tokens),
              "train_time_s": result.summary["elapsed_s"], "wall_time_s": sampler.duration_s,
              "tokens": result.summary["tokens"], "samples": summary["samples"]}
    sampler.save_csv(out / "utilisation.csv")
    atomic_write_json(record_path, record)
    return record, sampler.to_frame()


records, traces = [], {}
for method in ["baseline"] + list(profiling_methods):
    record, trace = measure(method, [teacher_arch] if method == "baseline" else archs)
    records.append(record)
    traces[method] = trace
    print(f"{method:>8}: {record['train_time_s']:.1f} s, mean utilisation {record['avg_util_pct']:.1f}% "
          f"({record['utilisation']}, {record['samples']} samples)")

# %% [markdown]
# ## Table 9: average utilisation, FLOPs per peer, training time
# Changes are against the single-model baseline, in percent (negative: less). `tflops_per_peer` is each
# peer's own forward and backward over the run (mean over the method's peers); `method_tflops` adds
# everything else a method computes per micro-batch (teacher forward, exit heads, KL terms), but not
# DWML's outer steps. MFU divides the method's FLOP rate by the device's peak
# (`dwml.profiling.peak_flops`: a datasheet's dense peak on a listed GPU, a measured matmul peak on a CPU).

# %%
from dwml.model import use_bf16

peak, peak_source = prof.peak_flops(device, torch.bfloat16 if use_bf16(cfg.train.mixed_precision, device) else torch.float32)
table = prof.table9(records, baseline="baseline")
table["method_tflops"] = [r["method_flops"] / 1e12 for r in records]
table["mfu_pct"] = [100 * prof.mfu(r["method_flops"], r["train_time_s"], peak) for r in records]
print("peak:", f"{peak / 1e12:.3f} TFLOP/s", "|", peak_source)
if not on_gpu:
    print("CPU figures: avg_util_pct is the process's share of the CPU cores, not GPU utilisation.")
save_table(table, figures_dir, "table9_profiling", floatfmt=".4g")
table

# %% [markdown]
# ## Figure 4: utilisation over time per method
# The paper's one surviving value (DWML's mean, 43.2% on an H100) is drawn only when ours are GPU figures.

# %%
fig = plot_utilisation(traces, paper=prof.PAPER_AVG_UTILISATION, device=device_name)
save_figure(fig, figures_dir, "figure4_utilisation")
fig = plot_cost(table)
save_figure(fig, figures_dir, "figure_cost")

# %% [markdown]
# ## What the numbers say
# The paper's claim has two parts: DWML uses the device least, and takes longest. Both are printed here
# for this machine; on a CPU the first part is about CPU cores and says nothing about a GPU.

# %%
by = table.set_index("method")
if "dwml" in by.index:
    lowest = by["avg_util_pct"].idxmin()
    longest = by["train_time_min"].idxmax()
    kind = "GPU" if on_gpu else "CPU (process share of the cores)"
    print(f"{kind} utilisation: lowest {lowest} ({by.loc[lowest, 'avg_util_pct']:.1f}%); "
          f"DWML {by.loc['dwml', 'avg_util_pct']:.1f}% (paper: 43.2% on an H100)")
    print(f"training time: longest {longest} ({by.loc[longest, 'train_time_min']:.2f} min); "
          f"DWML {by.loc['dwml', 'train_time_min']:.2f} min, {by.loc['dwml', 'time_change_pct']:+.0f}% against the baseline")
