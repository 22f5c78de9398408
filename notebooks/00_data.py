# %% [markdown]
# # 00 · Data: corpus, tokenizer, token cache and masked-LM batches
#
# The published code for *When Babies Teach Babies* wrote its token file as printed text and read it back
# as binary `uint16`: its models never saw English. This notebook shows, on whatever corpus the profile
# names, that ours do: the statistics of the corpus, of the tokenizer trained on it, a check that the
# token cache decodes back to the corpus, and a masked batch as the models see it.
#
# By default it runs on the **embedded synthetic corpus** (`dwml.synthetic`), which the package generates
# from a small probabilistic grammar of child-directed English; set `data = {"corpus": "../shared/data/corpus"}`
# to run it on the BabyLM AO-CHILDES files instead.

# %% tags=["parameters"]
profile = "default"
run_root = "runs/default"
figures_dir = "figures"
seeds = [0, 1, 2]
data = {"corpus": "synthetic", "synthetic_words": 1000000, "vocab_size": 2048, "block_size": 32, "packing": "packed",
        "mlm_probability": 0.3}
compare_corpus = "../shared/data/corpus"

# %%
import numpy as np
import pandas as pd
from IPython.display import display

from dwml.config import Config
from dwml.batches import describe_batch
from dwml.corpus import corpus_stats, read_corpus
from dwml.data import prepare_corpus, tokenizer_stats
from dwml.tokenizer import normalize
from dwml.tokens import decode_cache
from dwml.io import project_path
from dwml.plots import save_table, set_style
from dwml.plots.data import plot_token_lengths
from dwml import synthetic

set_style()
cfg = Config.from_dict(data=data)
prep = prepare_corpus(cfg.data)
tok = prep.tokenizer
print("corpus folder:", prep.corpus_dir)
print("tokenizer:", prep.tokenizer_dir, "| vocab:", len(tok))

# %% [markdown]
# ## Corpus statistics
# Lines, words and word types per source file, for the training and dev splits.

# %%
stats = corpus_stats(prep.corpus_dir, "train", cfg.data.drop_markers).assign(split="train")
stats_dev = corpus_stats(prep.corpus_dir, "dev", cfg.data.drop_markers).assign(split="dev")
corpus_table = pd.concat([stats, stats_dev], ignore_index=True)
corpus_table

# %% [markdown]
# ## Tokenizer statistics
# A byte-level BPE (RoBERTa's special tokens, lower-casing in the saved normaliser). Tokens per word
# measures how much the vocabulary compresses this corpus; the cache round trip shows the stored ids decode
# back to the normalised corpus, line for line.

# %%
tok_table = tokenizer_stats(prep, cfg.data)
print(tok_table.to_string(index=False))
roundtrip = decode_cache(prep.dev, tok) == [normalize(tok, l) for l in read_corpus(prep.corpus_dir, "dev", cfg.data.drop_markers)]
print("dev cache decodes back to the normalised corpus:", roundtrip)
assert roundtrip

# %%
if not profile.startswith("ci"):
    save_table(corpus_table, figures_dir, "table_corpus_stats", floatfmt=".0f")
    save_table(tok_table, figures_dir, "table_tokenizer_stats", floatfmt=".3f")
fig = plot_token_lengths(prep.train.tokens, tok)

# %% [markdown]
# ## A masked batch, decoded
# 15% of the ordinary tokens are selected; 80% of those become `<mask>`, 10% a random token, 10% stay.
# Special tokens are never selected. Below, `[x→y]` marks a selected position whose input is `y` and whose
# label is `x`.

# %%
batcher = prep.batcher("train", cfg.data, batch_size=2, seed=seeds[0])
batch = batcher.next_batch()
for row in describe_batch(batch, tok, max_tokens=60):
    print(row, "\n")

# %% [markdown]
# ## The synthetic minimal pairs
# Ten paradigms in BLiMP's schema; every pair is length-matched, and all but `npi_scope` differ in one word.

# %%
if cfg.data.corpus == "synthetic":
    pairs = pd.concat([pd.read_json(f, lines=True) for f in sorted(synthetic.pairs_dir(prep.corpus_dir).glob("*.jsonl"))])
    print(pairs.groupby("UID").size().rename("pairs").to_string(), "\n")
    with pd.option_context("display.max_colwidth", 120, "display.width", 250):
        print(pairs.groupby("UID").head(2)[["UID", "sentence_good", "sentence_bad"]].to_string(index=False))

# %% [markdown]
# ## What word statistics alone decide
# Word n-gram models counted on the training text (`dwml.ngrams`: interpolated absolute discounting)
# score the same pairs. A paradigm that the unigram model (word frequency) already gets right says little
# about learned grammar; one that the trigram model gets right needs only local context. A tie (the same
# words in another order, under the unigram model) counts as wrong, as it does for the masked LMs.

# %%
if cfg.data.corpus == "synthetic":
    from dwml.ngrams import ngram_accuracy_table, ngram_pair_scores
    from dwml.suites import load_synthetic

    ngram = ngram_accuracy_table(ngram_pair_scores(read_corpus(prep.corpus_dir, "train"), load_synthetic(prep.corpus_dir)))
    save_table(ngram.reset_index(names="paradigm"), figures_dir, "table_ngram_baselines", floatfmt=".1f")
    display(ngram.round(1))

# %% [markdown]
# ## The real corpus beside it
# When `compare_corpus` points at a BabyLM-layout folder (the AO-CHILDES files in `../shared/data/corpus`),
# the same statistics for it, with a tokenizer of the same vocabulary size trained on it.

# %%
if compare_corpus and project_path(compare_corpus).is_dir():
    real_cfg = Config.from_dict(data={**data, "corpus": compare_corpus})
    real = prepare_corpus(real_cfg.data)
    print(corpus_stats(real.corpus_dir, "train").to_string(index=False))
    real_tok = tokenizer_stats(real, real_cfg.data)
    print(real_tok.to_string(index=False))
    if not profile.startswith("ci"):
        save_table(real_tok, figures_dir, "table_tokenizer_stats_aochildes", floatfmt=".3f")
else:
    print("compare_corpus not set or not found:", repr(compare_corpus))
