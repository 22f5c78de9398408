# %% [markdown]
# # 05 · What each method costs: utilisation, FLOPs per peer, training time (Table 9, Figure 4)
#
# The paper's appendix F says DWML had the **lowest average GPU utilisation (43.2%)** of all methods on one
# H100, and the **longest training time**; its Table 9 also lists FLOPs per peer and each method's change
# against RoBERTa-base. The published code measured none of this, so here every method runs at the same
# budget (the same optimizer steps of the same micro-batches) while `dwml.utilization.UtilizationSampler`
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
# On a GPU, `python -m dwml.runner --profile gpu 05_gpu_profiling` runs this notebook at the paper's
# shapes (a RoBERTa-base-shaped model, 4 peers, micro-batches of 3 x 512, bf16); `figures/gpu/` holds one
# such run on an NVIDIA H200, and its README says how it was made.

# %% tags=["parameters"]
profile = "default"
run_root = "runs/default"
figures_dir = "figures"
seeds = [0, 1, 2]
data = {"corpus": "synthetic", "synthetic_words": 1000000, "vocab_size": 2048, "block_size": 32, "packing": "packed",
        "mlm_probability": 0.3}
search = {"teacher_layers": 4, "teacher_hidden": 192, "teacher_heads": 4, "num_peers": 4, "bayesian_n_iter": 30,
          "min_layers": 2, "max_layers": 4, "min_heads": 2, "max_heads": 4, "pinned": "figures/peers.json"}
train = {"mixed_precision": False, "learning_rate": 0.002, "min_lr": 0.0002, "dropout": 0.0, "warmup_iters": 80,
         "lr_decay_iters": 550, "num_epochs": 550, "num_batches": 1, "batch_size": 128, "eval_interval": 100,
         "eval_batches": 8, "patience": 5, "checkpoint_interval": 100, "weight_update_frequency": 5}
profiling_steps = 40
profiling_interval_s = 0.25
profiling_methods = ["mlm", "sd", "kd", "dml", "kd_dwml", "dwml"]
profiling_teacher_dir = ""

# %%
import pandas as pd
import torch

from dwml import profiling as prof
from dwml.io import project_path
from dwml.plots import save_figure, save_table, set_style
from dwml.plots.profiling import plot_cost, plot_utilisation
from dwml.studies import costs

set_style()
# The same budget for every method (dwml.studies.costs.setup): profiling_steps optimizer steps, one evaluation
# at the end, no early stopping, no checkpoint until the end.
study = costs.setup(data, search, train, run_root, profiling_steps, seeds[0])
cfg, device, archs, meta = study.cfg, study.device, study.archs, study.meta
on_gpu, device_name = device.type == "cuda", study.device_name
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
peer_names = [f"peer {i + 1}" for i in range(len(archs))]
peers_flops = costs.peer_flops(archs, meta, cfg, peer_names, device)
teacher_flops = costs.peer_flops([study.teacher_arch], meta, cfg, ["baseline"], device)
flops_table = pd.concat([teacher_flops, peers_flops], ignore_index=True)
assert ((flops_table["ratio"] - 1).abs() < 0.10).all(), flops_table  # counted within 10% of the closed form
print("counted / analytic:", flops_table["ratio"].round(4).tolist())
flops_table

# %% [markdown]
# ## Every method at the same budget, sampled
# One sampler per run, started before the loop and stopped after it; the run folders live under
# `<run_root>/profiling/`, and a finished measurement (its `record.json`) is reused. The baseline is the
# single-model method on the teacher's shape.

# %%
teacher = costs.make_teacher(study, profiling_methods, profiling_teacher_dir)
records, traces = costs.measure_methods(study, profiling_methods, peers_flops, teacher_flops,
                                        project_path(run_root) / "profiling", teacher=teacher,
                                        interval_s=profiling_interval_s)

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
print("\n".join(prof.table9_claims(table, "dwml", "GPU" if on_gpu else "CPU (process share of the cores)")))
