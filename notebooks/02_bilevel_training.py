# %% [markdown]
# # 02 · Bi-level training: weighted mutual learning of the searched peers (DWML)
#
# The peers found by `01_peer_search` learn together. In the **inner loop** each peer minimises eq. 2: its
# masked-LM cross-entropy, weighted by its importance w_i, plus the KL divergence from every other peer's
# prediction, weighted by that peer's w_j; a = `loss_alpha` balances the two. Every
# `weight_update_frequency` steps the **outer loop** takes the gradient of the dev ensemble loss L2 with
# respect to w through one look-ahead inner step (the hypergradient, eq. 3) and updates w by mirror descent
# (eq. 4), which keeps w on the probability simplex. The look-ahead step reuses the gradient the inner step
# has just computed on its own batch (`train.outer_grad = "reuse"`): the outer step then costs a dev
# forward + backward and one forward-mode pass, not a second training forward + backward.
#
# The paper shows the weights over training in its Figure 3 and reports final weights of
# 0.2511, 0.2504, 0.2484 and 0.2501: barely away from the 0.25 they started at. We draw the same figure for
# our run, with each peer's dev cross-entropy and the KL term beside it.
#
# The training loop is `dwml.train.train`, the method `dwml.methods.DWML`; the run folder holds the
# metrics (`metrics.jsonl`), a resumable checkpoint and each peer saved with `save_pretrained`. A finished
# run folder is reused, so running the notebook again only redraws.

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
executor = {"kind": "local", "workers": "auto", "threads": 1}
# what 03_baselines scores and draws, so that its DWML runs trained here are reused there as they are
suites = ["synthetic"]
suite_dirs = {}
max_pairs_per_task = 100
skip_tasks = {"synthetic": ["npi_licensing", "npi_scope"]}
curve_steps = [150, 300]
curve_pairs_per_task = 50

# %%
import math

import numpy as np
import pandas as pd

from dwml import runs
from dwml.studies import study as studies
from dwml.config import Config
from dwml.data import prepare_corpus
from dwml.plots import save_figure, save_table, set_style
from dwml.plots.training import peer_dev_table, plot_dev_ce, plot_kl, plot_weights

PAPER_WEIGHTS = [0.2511, 0.2504, 0.2484, 0.2501]  # arXiv 2411.16487, Figure 3 (final weights)

set_style()
cfg = Config.from_dict(data=data, search=search, train={**train, "method": "dwml"})
prep = prepare_corpus(cfg.data)
print("corpus:", prep.corpus_dir, "| vocab:", len(prep.tokenizer), "| train tokens:", len(prep.train))

# %% [markdown]
# ## The peers
# From `01_peer_search` (`peers.json` in the run folder); if that notebook has not run, the same search
# runs here with the profile's settings.

# %%
archs, meta = runs.peers_for(cfg, prep, run_root)
names = [f"peer {i + 1} ({a.params / 1e6:.2f}M)" for i, a in enumerate(archs)]
pd.DataFrame([{"peer": n, "layers": a.num_layers, "heads": a.num_heads, "hidden": a.hidden_size,
               "params": a.params} for n, a in zip(names, archs)])

# %% [markdown]
# ## Training
# One optimizer step accumulates `num_batches` micro-batches of `batch_size` blocks of `block_size`
# tokens (the paper's "epoch"). The learning rate warms up linearly and decays by a cosine; the
# mirror-descent step eta follows the same shape from `step_size` to `min_step_size`. The figures use
# the first seed. The first seeds' runs (as many as the executor trains at once) are trained here as
# `03_baselines` asks for them, which reuses them and trains the other seeds when it compares methods.

# %%
seed = seeds[0]
# The runs in <run_root>/dwml_seed<seed> (dwml.runs.run_folder), the ones 03_baselines scores, through the
# profile's executor (dwml.executor): the first seeds', as many as it runs at once (the second costs no time
# here, and 03 then has one run fewer), each as 03 asks for it (its learning curve, its scores). A finished run
# is reused only when its configuration, corpus and peers are these ones (dwml.train checks them and names
# what differs); an interrupted one resumes from its checkpoint.
study = studies.setup(data, search, train, run_root, suites, max_pairs_per_task, suite_dirs, skip_tasks)
done = studies.run_methods(study, ["dwml"], seeds[:studies.at_once(executor)], executor, curve_steps,
                           curve_pairs_per_task)
result = done["dwml", seed]
history = result.history
s = result.summary
print(f"{s['steps']} steps, {s['tokens']:,} tokens, {s['elapsed_s'] / 60:.1f} min"
      + (" (stopped early)" if s["stopped_early"] else ""))

# %% [markdown]
# ## The peer weights over training (the paper's Figure 3)

# %%
fig = plot_weights(history, names, published=PAPER_WEIGHTS)
save_figure(fig, figures_dir, "figure_weights")
w_hist = np.array([w for w in history.loc[history["kind"] == "train", "w"]])
print("final weights, ours:     ", np.round(w_hist[-1], 4).tolist())
print("final weights, published:", PAPER_WEIGHTS)
print(f"range over training: min {w_hist.min():.4f}, max {w_hist.max():.4f}; "
      f"final spread (max - min) {np.ptp(w_hist[-1]):.4f} (published: {max(PAPER_WEIGHTS) - min(PAPER_WEIGHTS):.4f})")

# %% [markdown]
# ## Dev cross-entropy of each peer, and the KL term
# The dev CE is each peer's own masked-LM loss, comparable with a plain MLM's; the KL term is what the
# peer receives from the others in eq. 2 during training.

# %%
fig = plot_dev_ce(history, names)
save_figure(fig, figures_dir, "figure_dev_ce")
fig = plot_kl(history, names)
save_figure(fig, figures_dir, "figure_kl")

# %% [markdown]
# ## Final dev loss, perplexity and weight of each peer

# %%
table = peer_dev_table(history, names, extra={"params": [a.params for a in archs]})
table["published_weight"] = PAPER_WEIGHTS[: len(table)] + [float("nan")] * max(0, len(table) - len(PAPER_WEIGHTS))
save_table(table, figures_dir, "table_bilevel_peers", floatfmt=".4f")
# Every peer must have learned: its dev CE well below its value at initialisation (ln V is chance).
assert (table["final_dev_ce"] < table["initial_dev_ce"] - 0.5).all(), table
table
