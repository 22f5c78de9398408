# %% [markdown]
# # 04 · Ablations (the paper's Figure 2, with seeds and intervals)
#
# The paper's Figure 2 carries its design claims, each from single runs whose differences are a few tenths
# of a point: (a) the number of peers matters little, (b) a = 0.5 balances label and peer supervision best,
# (c) learned weights correlate with accuracy (R = 0.7) and accuracy grows with peer size. Here each study
# reruns the one training loop over seeds and shows the mean with its 95% interval, and two more studies
# ask what the learned weights and the published learning rate contribute:
#
# 1. number of peers (DWML with the 1, 2 or 4 largest peers);
# 2. a in eq. 2;
# 3. dynamic weights (DWML) against fixed equal weights (DML) at the same budget;
# 4. peer size against accuracy and against learned weight (Pearson R per seed);
# 5. the published learning rate (0.05 decaying to 0.005) against the profile's conventional AdamW schedule.
#
# Runs are shared with `02` and `03` where they coincide (`dwml.runs`): the profile's DWML run is
# the 4-peer, a = 0.5, dynamic, conventional-lr point of every study.

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
suites = ["synthetic"]
suite_dirs = {}
max_pairs_per_task = 100
skip_tasks = {"synthetic": ["npi_licensing", "npi_scope"]}
ablation_peers = [1, 2, 4]
ablation_alphas = [0.3, 0.5, 0.7]
ablation_published_lr = {"learning_rate": 0.05, "min_lr": 0.005}
executor = {"kind": "local", "workers": "auto", "threads": 1}

# %%
import pandas as pd

from dwml.plots import save_figure, save_table, set_style
from dwml.plots.experiments import plot_size_weight, plot_study
from dwml.studies import ablations, study as studies

set_style()
study = studies.setup(data, search, train, run_root, suites, max_pairs_per_task, suite_dirs, skip_tasks)
cfg, archs = study.cfg, study.archs
paper = studies.paper_table("figure2")
p_all = len(archs)
base_alpha = cfg.train.loss_alpha
# Every run of this notebook at once, on the profile's executor (the later cells reuse them), then every seed's
# run of a method (trained, or reused when finished), scored: (per-pair scores, seed -> result).
studies.execute(study, ablations.specs(seeds, ablation_peers, ablation_alphas, p_all, base_alpha, ablation_published_lr), executor)
base_scores, base_results = studies.run_and_score(study, "dwml", seeds, executor=executor)

# %% [markdown]
# ## 1 · Number of peers (Figure 2a)
# The profile's run is the point at all the peers; the others train the largest k peers (`dwml.studies.ablations.sweep`).

# %%
peers_scores = ablations.sweep(study, "num_peers", ablation_peers, seeds, p_all, base_scores, executor=executor)
t_peers = ablations.ablation_table(peers_scores, "num_peers")
save_table(t_peers, figures_dir, "table_ablation_peers", floatfmt=".2f")
t_peers

# %%
save_figure(plot_study(t_peers, "num_peers", "Number of peers (DWML)", paper[paper["panel"] == "a_num_peers"]), figures_dir, "figure2a_num_peers")

# %% [markdown]
# ## 2 · a, the weight of the peers' KL against the labels (Figure 2b)

# %%
alpha_scores = ablations.sweep(study, "alpha", ablation_alphas, seeds, base_alpha, base_scores, executor=executor)
t_alpha = ablations.ablation_table(alpha_scores, "alpha")
save_table(t_alpha, figures_dir, "table_ablation_alpha", floatfmt=".2f")
save_figure(plot_study(t_alpha, "alpha", "a in eq. 2 (DWML)", paper[paper["panel"] == "b_alpha"]), figures_dir, "figure2b_alpha")
t_alpha

# %% [markdown]
# ## 3 · Learned against fixed equal weights
# DML is eq. 2 with w fixed at 1/p and no outer loop: the same peers, data and steps as DWML.

# %%
dml_scores, _ = studies.run_and_score(study, "dml", seeds, executor=executor)
dyn_scores = pd.concat([base_scores.assign(weights="learned (dwml)"), dml_scores.assign(weights="fixed (dml)")],
                       ignore_index=True)
t_dyn = ablations.ablation_table(dyn_scores, "weights")
save_table(t_dyn, figures_dir, "table_ablation_weights", floatfmt=".2f")
save_figure(plot_study(t_dyn, "weights", "Dynamic against fixed weights"), figures_dir, "figure_ablation_weights")
t_dyn

# %% [markdown]
# ## 4 · Peer size against accuracy and learned weight (Figure 2c)
# Each seed's four DWML peers give one R; the table gives the R of every seed and their mean with a 95%
# interval (through Fisher's z, `dwml.stats.r_interval`). The paper's R = 0.7 comes from one run of
# four peers, where R has about 2 degrees of freedom.

# %%
params = {i + 1: a.params for i, a in enumerate(archs)}
r, r_table, points = ablations.size_tables(base_scores, base_results, params)
save_table(r_table, figures_dir, "table_ablation_size", floatfmt=".3f")
save_figure(plot_size_weight(points, paper[paper["panel"] == "c_size"]), figures_dir, "figure2c_size_weight")
r

# %% [markdown]
# ## 5 · The published learning rate
# The paper's champion configuration trains with AdamW at 0.05, decaying to 0.005: unusually high for
# transformers of this size. Everything else equal, here is what it does.

# %%
lr_scores, lr_results = studies.run_and_score(study, "dwml", seeds, "publishedlr", executor, train_overrides=ablation_published_lr)
base_lr, paper_lr = f"lr {cfg.train.learning_rate:g}", f"lr {ablation_published_lr['learning_rate']:g}"
lr_all = pd.concat([base_scores.assign(schedule=base_lr), lr_scores.assign(schedule=paper_lr)], ignore_index=True)
t_lr = ablations.ablation_table(lr_all, "schedule")
dev = ablations.final_dev_losses({base_lr: base_results, paper_lr: lr_results})
save_table(t_lr, figures_dir, "table_ablation_lr", floatfmt=".2f")
save_figure(plot_study(t_lr, "schedule", "Learning rate"), figures_dir, "figure_ablation_lr")
dev.groupby("schedule")["final_dev_ce"].describe()

# %% [markdown]
# ## Which of the paper's claims survive
# Every ablated setting against the profile's own (4 peers, a = 0.5, learned weights, the conventional
# learning rate), paired by seed: the best peer's accuracy difference in points with its 95% t-interval
# (`dwml.studies.ablations.ablation_differences`). `differs` means the interval excludes 0. Claim (c) is the
# Pearson R of section 4 (its mean over seeds and interval are in `table_ablation_size`).

# %%
claims = ablations.claims_table([
    ("(a) the number of peers matters little", peers_scores, "num_peers", p_all),
    ("(b) a = 0.5 balances labels and peers best", alpha_scores, "alpha", base_alpha),
    ("learned weights beat fixed equal ones", dyn_scores, "weights", "learned (dwml)"),
    ("the published lr against a conventional one", lr_all, "schedule", base_lr),
])
save_table(claims, figures_dir, "table_ablation_claims", floatfmt=".2f")
claims

# %% [markdown]
# ## Verdicts
# Each claim's difference as a sentence generated from its interval (`dwml.compare.verdict`).

# %%
from IPython.display import Markdown

Markdown("\n".join(f"- {c}: {v}" for c, v in zip(claims["claim"], claims["verdict"])))
