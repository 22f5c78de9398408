"""A config's data prepared: corpus folder -> tokenizer -> token caches, each step cached on content hashes.

The published code for this paper wrote its token file as printed text and read it back as binary
``uint16``, so its models trained on noise. Every step is therefore checked by a test that decodes
what was stored: the cache decodes back to the normalised corpus, line for line.

Flow (each step in the module of its concern)::

    corpus folder (BabyLM layout: *.train / *.dev / *.test, one utterance a line)
      -> dwml.corpus.read_corpus_files (UTF-8, cleaned) -> dwml.tokenizer.train_tokenizer (byte-level BPE)
      -> dwml.tokens.build_token_cache (numpy memmap + JSON sidecar, atomic)
      -> dwml.batches.MLMBatcher (random blocks or utterances, 15% masked)

``prepare_corpus(DataConfig)`` runs the chain; ``PreparedCorpus.batcher`` makes a split's batches.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dwml.batches import MLMBatcher
from dwml.config import DataConfig
from dwml.corpus import DataError, corpus_files, read_corpus, resolve_corpus_dir
from dwml.io import project_path
from dwml.tokenizer import load_tokenizer, train_tokenizer
from dwml.tokens import TokenCache, build_published_cache, build_token_cache, sources_meta


@dataclass
class PreparedCorpus:
    corpus_dir: Path
    tokenizer_dir: Path
    tokenizer: object
    train: TokenCache
    dev: TokenCache

    def batcher(self, split: str, cfg: DataConfig, batch_size: int, seed: int,
                shard: tuple[int, int] = (0, 1)) -> MLMBatcher:
        cache = {"train": self.train, "dev": self.dev}[split]
        return MLMBatcher(cache.tokens, self.tokenizer, block_size=cfg.block_size, batch_size=batch_size,
                          mlm_probability=cfg.mlm_probability, mask_replace_prob=cfg.mask_replace_prob,
                          random_replace_prob=cfg.random_replace_prob, seed=seed, packing=cfg.packing,
                          length_grouping=cfg.length_grouping, shard=shard)


def prepare_corpus(cfg: DataConfig, progress: bool = True) -> PreparedCorpus:
    """Corpus folder -> trained (or cached) tokenizer -> train/dev token caches.

    The tokenizer is keyed on the train files' hashes and the tokenizer settings, the caches on the
    tokenizer and the files, so changing any input rebuilds exactly what depends on it.
    """
    corpus_dir = resolve_corpus_dir(cfg)
    train_files, dev_files = corpus_files(corpus_dir, "train"), corpus_files(corpus_dir, "dev")
    key = json.dumps({"sources": [s["sha256"] for s in sources_meta(train_files)], "vocab": cfg.vocab_size,
                      "lower": cfg.lowercase, "minf": cfg.min_frequency, "drop": cfg.drop_markers}, sort_keys=True)
    fp = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = project_path(cfg.cache_dir) / f"{corpus_dir.name}-{fp}"
    tok_dir = root / "tokenizer"
    tokenizer = None
    if (tok_dir / "tokenizer.json").is_file():
        try:
            tokenizer = load_tokenizer(tok_dir)
        except DataError as err:  # a build product: retrain it (same lines and settings, same tokenizer)
            warnings.warn(f"cached tokenizer unusable, retraining it: {err}", stacklevel=2)
    if tokenizer is None:
        lines = read_corpus(corpus_dir, "train", cfg.drop_markers)
        tokenizer = train_tokenizer(lines, cfg.vocab_size, tok_dir, lowercase=cfg.lowercase,
                                    min_frequency=cfg.min_frequency, model_max_length=max(cfg.block_size, 512))
        tokenizer = load_tokenizer(tok_dir)
    train = build_token_cache(train_files, tokenizer, root / "train.bin", cfg.drop_markers, progress=progress)
    dev = build_token_cache(dev_files, tokenizer, root / "dev.bin", cfg.drop_markers, progress=progress)
    if cfg.published_token_file:  # the stream as the published code reads it (data.published_token_file)
        train = build_published_cache(train, root / "train.published.bin")
        dev = build_published_cache(dev, root / "dev.published.bin")
    for name, cache, files in (("train", train, train_files), ("dev", dev, dev_files)):
        if cache.meta["n_lines"] == 0:
            raise DataError(f"the {name} split of {corpus_dir} is empty: its file(s) "
                            f"{', '.join(str(f) for f in files)} hold no text after cleaning")
        if len(cache) < cfg.block_size - 2:
            raise DataError(f"data.block_size={cfg.block_size} is larger than the {name} split of {corpus_dir} "
                            f"({len(cache)} tokens)")
    return PreparedCorpus(corpus_dir, tok_dir, tokenizer, train, dev)


def tokenizer_stats(prep: PreparedCorpus, cfg: DataConfig):
    """Per split: lines, words, tokens (separators excluded), tokens per word, vocabulary used."""
    import pandas as pd

    rows = []
    for split, cache in (("train", prep.train), ("dev", prep.dev)):
        words = sum(len(line.split()) for line in read_corpus(prep.corpus_dir, split, cfg.drop_markers))
        tokens = np.asarray(cache.tokens)
        n_tok = int(len(tokens) - cache.meta["n_lines"])
        rows.append({"split": split, "lines": cache.meta["n_lines"], "words": words, "tokens": n_tok,
                     "tokens_per_word": n_tok / max(words, 1), "vocab_size": len(prep.tokenizer),
                     "vocab_used": int(np.unique(tokens).size), "dtype": cache.meta["dtype"]})
    return pd.DataFrame(rows)
