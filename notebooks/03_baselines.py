# %% [markdown]
# # 03 · Baselines and the paper's results tables (Tables 1 and 2)
#
# The paper's claim is comparative: teacher-less DWML against a RoBERTa trained alone (`mlm`), against
# self-distillation (`sd`, Zhang et al. 2019), teacher distillation (`kd`, Hinton et al. 2015), deep mutual
# learning with equal weights (`dml`, Zhang et al. 2018) and teacher-supervised DWML (`kd_dwml`). Here every
# method goes through the one training loop (`dwml.train`), on the same corpus, peers and budget, over
# several seeds; every peer is scored on the profile's minimal-pair suites; and the tables print the
# paper's numbers beside ours.
#
# The teacher of `kd` and `kd_dwml` is this project's own `mlm` run of the same seed (the teacher-sized
# model trained on the same corpus), never a downloaded checkpoint. Runs are reused when their folder is
# finished (`dwml.runs`), so the DWML run of `02_bilevel_training` is the one scored here.
#
# On the `default` profile the suite is the embedded corpus's synthetic minimal pairs, for which the
# paper has no numbers; the `aochildes` and `babylm10m` profiles score BLiMP, its supplement and EWoK, and
# `aochildes` also Zorro (Huebner et al. 2021: grammar in the vocabulary of child-directed speech), beside
# the published BabyBERTa and RoBERTa-base results. The suites are the registry's (`dwml.suites`); a
# profile's `suite_dirs` points a suite at another folder (`ci`: the synthetic pairs in Zorro's format).

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
baseline_methods = ["mlm", "sd", "kd", "dml", "kd_dwml", "dwml"]
suites = ["synthetic"]
suite_dirs = {}
max_pairs_per_task = 100
skip_tasks = {"synthetic": ["npi_licensing", "npi_scope"]}
table_pairs_per_task = {}
glue_tasks = []
curve_steps = [150, 300]
curve_pairs_per_task = 50
baseline_published_bugs = False
best_peer_all_pairs = False
bug_train_overrides = {}
bug_blocks_overrides = {}
bug_pairs_per_task = 0
bug_seeds = []
executor = {"kind": "local", "workers": "auto", "threads": 1}

# %%
from IPython.display import display

from dwml import compare, runs, scoring
from dwml.plots import save_figure, save_table, set_style
from dwml.plots.experiments import plot_methods
from dwml.studies import baselines, published_bugs, study as studies

set_style()
study = studies.setup(data, search, train, run_root, suites, max_pairs_per_task, suite_dirs, skip_tasks)
sections, cfg, archs, meta, pairs = study.sections, study.cfg, study.archs, study.meta, study.pairs
# the learning curves' points along the way are scored on a fixed subset of the pairs (the final point on all)
curve_pairs = scoring.subsample_suites(pairs, curve_pairs_per_task)
print({k: len(v) for k, v in pairs.items()}, "pairs;", len(seeds), "seeds;", baseline_methods)
print({k: str(v) for k, v in study.suite_dirs.items()})

# %% [markdown]
# ## Training every method
# Every (method, seed) run is independent but for one rule: `mlm` is the teacher of `kd` and `kd_dwml`, which
# wait for their seed's `mlm` run (`dwml.methods.training_order`). The profile's `executor` runs them one after
# another, on a pool of local workers, or on Ray (`dwml.executor`); each run is scored as part of its work.

# %%
results = studies.run_methods(study, baseline_methods, seeds, executor, curve_steps, curve_pairs_per_task)
runs.runs_table(results)

# %% [markdown]
# ## Scoring every peer

# %%
scores = scoring.score_runs(results, pairs, cfg.eval)
params = runs.model_params(baseline_methods, archs, meta)
print(f"{len(scores):,} scored pairs; tie rate {100 * scores['tie'].mean():.2f}%")

# %% [markdown]
# ## The kept peers on all the pairs
# With `best_peer_all_pairs` (and `max_pairs_per_task` subsampling the suites), the peer each run keeps
# (chosen on the subsample, as everywhere) is scored again on every pair of every suite, or on
# `table_pairs_per_task[suite]` pairs of each task where the profile gives that (a seeded subsample, more
# than the choice's); Table 1 and Tables 6-8 use those scores. Beside them: word n-gram models counted on
# the same training text and scored on the same pairs (`dwml.ngrams`), the bar a model must clear before its
# accuracy says anything about syntax, and the published results of a suite that has them (Zorro's, read
# from `reference_results.csv` beside its sentences).

# %%
import pandas as pd

from dwml.corpus import read_corpus
from dwml.suites import references as suite_references  # (`suites` is the parameter: the suites' names)

all_pairs, table_scores = pairs, scores
if best_peer_all_pairs and max_pairs_per_task:
    all_pairs = scoring.subsample_suites(
        scoring.load_suites_for(suites, corpus_dir=study.prep.corpus_dir, suite_dirs=study.suite_dirs),
        table_pairs_per_task)
    table_scores = scoring.rescore_best(results, scores, all_pairs, cfg.eval, progress=True)
references = suite_references(study.suite_dirs)
ngram_rows = scoring.ngram_rows(read_corpus(study.prep.corpus_dir, "train", drop_markers=cfg.data.drop_markers),
                                all_pairs)
extra_rows = pd.concat([ngram_rows, baselines.reference_rows(references)], ignore_index=True)
print({k: len(v) for k, v in all_pairs.items()}, "pairs for Tables 1 and 6-8;", list(references), "with published results")
extra_rows

# %% [markdown]
# ## Learning curves: is the comparison made before or after convergence?
# Every run was stopped at `curve_steps` and its peers scored there on `curve_pairs_per_task` pairs of each
# paradigm (a checkpoint and a resume: the run is the same as an uninterrupted one); the last point is its
# final score on all the pairs. The first figure follows each
# method's best peer (the one the tables keep, chosen per seed) to the end of training: curves still
# climbing at the end mean the methods are compared before convergence. The second shows the single
# model per paradigm: which paradigms it learns early, which never within the budget, how far seeds spread.

# %%
# the tables and figures go to figures_dir (dwml.studies.baselines.learning_curves)
curves = baselines.learning_curves(results, scores, baseline_methods, figures_dir) if curve_steps else {}
curve_table = curves.get("paradigm_table")
curve_table

# %% [markdown]
# ## Table 2: per method and peer
# Mean over seeds of each suite's macro accuracy (%) with its 95% t-interval; the `best` row is, in each
# seed, the peer that is best on average over the suites (chosen once per run, not per suite as the paper's
# "Best" column does). The paper's values (10M track, peers of 60M to 28M) stand beside ours where the
# suite is one the paper reports.

# %%
t2 = baselines.table2(scores, params)
save_table(t2, figures_dir, "table2_methods", floatfmt=".2f")
t2

# %% [markdown]
# ## Which methods differ
# Every method's best peer against DWML's and against the single model (`mlm`), paired by seed: the mean
# difference in points with its 95% t-interval (`dwml.compare.t_over_seeds`). `differs` is an
# interval that excludes 0; with three seeds only large, consistent gaps get there. Chance is 50%: the
# first table gives each method's weakest peer, whose interval should lie well above it.

# %%
seeded = compare.best_peer(compare.per_seed(scores))
weakest = compare.weakest_peers(scores)
save_table(weakest, figures_dir, "table_weakest_peer", floatfmt=".2f")
diffs = compare.method_differences(seeded, baseline_methods)
save_table(diffs, figures_dir, "table_method_differences", floatfmt=".2f")
display(weakest)
diffs

# %% [markdown]
# ## Table 1: the single-model baseline against the best DWML peer
# The organisers' baselines that the paper cites (BabyLlama, LTG-BERT) are printed from its Table 1. With
# `glue_tasks`, both models' best peers are fine-tuned on them, and one more row gives what always answering
# the most frequent validation label scores: a model at that number has learnt nothing the labels' balance
# does not give (`dwml.studies.baselines.table1`).

# %%
glue = baselines.best_peer_glue(table_scores, results, baseline_methods, seeds[0], glue_tasks) if glue_tasks else None
t1 = baselines.table1(table_scores, baseline_methods, glue, extra_rows=extra_rows)
save_table(t1, figures_dir, "table1_summary", floatfmt=".2f")
# the same two models paired pair by pair: an interval over pairs even with one seed (pairs' sampling
# error only), and with two or more seeds one over seeds too (seed_ci_low / seed_ci_high)
t1_diffs = baselines.table1_differences(table_scores, baseline_methods)
if t1_diffs is not None and len(t1_diffs):
    save_table(t1_diffs, figures_dir, "table1_pair_differences", floatfmt=".2f")
display(t1_diffs)
t1

# %% [markdown]
# ## Figure: the methods with their intervals
# Each method's best peer per seed (dots) and the mean with its 95% interval (bar), per suite.

# %%
paper = studies.paper_table2_long()
fig = plot_methods(seeded, compare.over_seeds(seeded.assign(peer="best")), baseline_methods,
                   paper[paper["peer"] == "best"])
save_figure(fig, figures_dir, "figure_methods")

# %% [markdown]
# ## Tables 6, 7 and 8: per BLiMP phenomenon, supplement task and EWoK domain; Zorro per paradigm
# Each method's best peer per seed, seeds pooled, with the paper's column acronyms; every cell with its
# 95% bootstrap interval and tie rate in the `_intervals` table. Written only for the profiles that score
# BLiMP, the supplement, EWoK or Zorro (the synthetic suite has no such tables). Below our rows in the Zorro
# table: BabyBERTa on AO-CHILDES (the mean, min and max over its 10 seeds, per paradigm), RoBERTa-base
# trained on AO-CHILDES and RoBERTa-base as released (30B words), all scored with `mlm` PLL as we score.

# %%
group_tables = baselines.per_group_tables(table_scores, figures_dir, references=references)
if group_tables:
    print(baselines.PAPER_GROUPS_MISSING)
for name, table in group_tables.items():
    print(name)
    display(table)

# %% [markdown]
# ## What each published bug costs
# DWML corrected, against DWML with each bug of the published code switched on alone and all together
# (`dwml.config`: `data.published_token_file`, `train.published_hypergradient`, `train.published_kl`), on
# the same seeds and peers. The difference is in points against the corrected run (against the corrected
# run on random blocks for the token file, whose stream has no utterances left), with a 95% paired
# bootstrap interval over pairs and, with two or more seeds, a paired t-interval over seeds. A profile can
# give the table a budget of its own (`bug_train_overrides`, `bug_blocks_overrides` for the runs on
# blocks), fewer pairs (`bug_pairs_per_task`) and fewer seeds (`bug_seeds`; empty: the profile's); every
# setting, the corrected one included, then runs under it.

# %%
bug_table = None
if baseline_published_bugs:
    bug_pairs = scoring.subsample_suites(pairs, bug_pairs_per_task)
    bug_scores = published_bugs.bug_runs(sections, archs, meta, bug_seeds or seeds, run_root, bug_pairs, cfg.eval,
                                         train_overrides=bug_train_overrides, blocks_overrides=bug_blocks_overrides)
    bug_table = published_bugs.bug_table(bug_scores)
    save_table(bug_table, figures_dir, "table_published_bugs", floatfmt=".2f")
bug_table

# %% [markdown]
# ## Verdicts
# Each paired difference above as a sentence, generated from its interval (`dwml.compare.verdict`): a
# method beats another only when the interval excludes 0; otherwise the sentence bounds the difference by
# the farther end of the interval: no difference larger than that is consistent with these seeds.

# %%
from IPython.display import Markdown

Markdown("\n".join(f"- {line}" for line in diffs["verdict"]))
