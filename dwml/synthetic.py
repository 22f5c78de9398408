"""The embedded default corpus: child-directed-style English from a small probabilistic grammar.

Why a grammar of our own: a researcher without the BabyLM data (or a GPU) must still see the method
learn something measurable in minutes on a CPU, and be able to tell methods apart. So the same grammar
writes (1) a corpus in the BabyLM layout, sized by a word count and deterministic for a seed, and (2)
minimal pairs in BLiMP's JSONL schema whose answers the grammar knows.

What makes it hard enough not to saturate (a first prototype with ~40 nouns reached 100% in 5 CPU
minutes):
- a larger lexicon drawn with a Zipfian law, so most nouns and verbs are rare, and the pairs draw their
  words uniformly, so the rare ones are tested as often as the common ones;
- agreement across attractors of the other number, in prepositional phrases and relative clauses, one
  or two deep, and across a fronted auxiliary (long-distance);
- NPI licensing and NPI *scope* (a negation inside a relative clause licenses nothing outside it);
- irregular past forms against the participle ("ate" / "*eaten"), both of which the corpus contains.

How the pairs stay honest: every pair has the same number of words; all but the scope paradigm differ in
exactly one word, and the scope paradigm in the position of two words; every bad form is a word that the
corpus contains (no unseen "*eated" that a tokenizer splits into rare pieces), and no sentence is ever
both a good and a bad member. Sentence length therefore cannot decide a pair under a summed PLL.

This module writes the corpus folder (train, dev, pairs, meta.json); the grammar is ``dwml.grammar`` (its
words in ``dwml.lexicon``), the pairs ``dwml.synthetic_pairs``. No torch is needed; all four are pure Python.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from dwml.grammar import GRAMMAR_VERSION, Grammar
from dwml.io import atomic_dir
from dwml.synthetic_pairs import PARADIGMS, minimal_pairs


def generate_lines(words: int, seed: int | str, lexicon: int | None = None) -> Iterator[str]:
    """Utterances until ``words`` words have been produced (deterministic for the seed).

    ``lexicon``: keep only the first (most frequent) ``lexicon`` words of every word list, for a grammar
    that a small model learns within a CPU budget; None keeps them all."""
    g = Grammar(f"corpus-{seed}", lexicon=lexicon)
    produced = 0
    while produced < words:
        line = g.sentence()
        produced += line.count(" ") + 1
        yield line


def write_corpus(out_dir: str | Path, words: int = 1_000_000, seed: int = 0, n_pairs: int = 200,
                 lexicon: int | None = None) -> Path:
    """Write ``train/synthetic.train`` (``words`` words), ``dev/synthetic.dev`` (a tenth),
    ``pairs/<UID>.jsonl`` and ``meta.json`` into ``out_dir``, atomically (a temp folder renamed)."""
    if words <= 0:
        raise ValueError(f"words={words}: must be > 0")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        (tmp / "train").mkdir()
        (tmp / "dev").mkdir()
        (tmp / "pairs").mkdir()
        train = list(generate_lines(words, f"{seed}-train", lexicon))
        (tmp / "train" / "synthetic.train").write_text("\n".join(train) + "\n", encoding="utf-8")
        dev = list(generate_lines(max(words // 10, 1), f"{seed}-dev", lexicon))
        (tmp / "dev" / "synthetic.dev").write_text("\n".join(dev) + "\n", encoding="utf-8")
        pairs = minimal_pairs(n_pairs, seed=seed, lexicon=lexicon)
        for uid in PARADIGMS:
            rows = [json.dumps(r) for r in pairs if r["UID"] == uid]
            (tmp / "pairs" / f"{uid}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        meta = {"grammar_version": GRAMMAR_VERSION, "words": words, "seed": seed, "n_pairs": n_pairs, "lexicon": lexicon,
                "train_lines": len(train), "dev_lines": len(dev), "paradigms": list(PARADIGMS)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out_dir


def ensure_corpus(root: str | Path, words: int = 1_000_000, seed: int = 0, n_pairs: int = 200,
                  lexicon: int | None = None) -> Path:
    """The corpus folder for these settings under ``root``, written once and reused afterwards."""
    lexicon = lexicon or None
    folder = Path(root) / f"v{GRAMMAR_VERSION}-w{words}-s{seed}-p{n_pairs}{f'-l{lexicon}' if lexicon else ''}"
    meta = folder / "meta.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        if (m.get("grammar_version"), m.get("words"), m.get("seed"), m.get("n_pairs"), m.get("lexicon")) == \
                (GRAMMAR_VERSION, words, seed, n_pairs, lexicon):
            return folder
    return write_corpus(folder, words=words, seed=seed, n_pairs=n_pairs, lexicon=lexicon)


def pairs_dir(corpus_dir: str | Path) -> Path:
    """Where a synthetic corpus keeps its minimal pairs (BLiMP-schema JSONL files)."""
    return Path(corpus_dir) / "pairs"
