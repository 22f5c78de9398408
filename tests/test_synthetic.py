"""dwml.synthetic, dwml.grammar, dwml.synthetic_pairs: determinism (golden bytes), the corpus's coverage, and
well-formed minimal pairs."""
from __future__ import annotations

import collections
import hashlib
import json
import re

import pytest

from dwml import grammar, lexicon, synthetic, synthetic_pairs


def test_generator_is_deterministic_and_sized():
    a = list(synthetic.generate_lines(5000, "7-train"))
    b = list(synthetic.generate_lines(5000, "7-train"))
    c = list(synthetic.generate_lines(5000, "8-train"))
    assert a == b and a != c
    words = sum(len(l.split()) for l in a)
    assert 5000 <= words < 5000 + 40


def _folder_digest(folder) -> str:
    """sha256 over every file's relative path and bytes, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("settings,digest", [
    (dict(words=3000, seed=1, n_pairs=5), "60ec127d1c957d85b353b07eefc6dc73a73e575e7a6f20458ca83240256bd3e7"),
    (dict(words=2000, seed=3, n_pairs=4, lexicon=8), "dddd1024dc62c5548062c09332a8c70b707ed8beb52842dd5d925ca955a3a260"),
])
def test_corpus_and_pairs_are_the_golden_bytes(tmp_path, settings, digest):
    """Golden digests of a small corpus folder (train, dev, pairs, meta.json), computed on the single-module
    dwml/synthetic.py (main at 781e75b) before it was split into lexicon/grammar/synthetic_pairs/synthetic:
    the split, and any later change that is not meant to change the grammar, writes the same bytes."""
    assert _folder_digest(synthetic.write_corpus(tmp_path / "c", **settings)) == digest


def test_write_corpus_layout_and_bytes(tmp_path):
    one = synthetic.write_corpus(tmp_path / "a", words=3000, seed=1, n_pairs=5)
    two = synthetic.write_corpus(tmp_path / "b", words=3000, seed=1, n_pairs=5)
    for rel in ["train/synthetic.train", "dev/synthetic.dev", "pairs/npi_scope.jsonl", "meta.json"]:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    assert len((one / "pairs").glob("*.jsonl").__iter__().__next__().read_text().splitlines()) == 5
    assert synthetic.ensure_corpus(tmp_path / "root", words=3000, seed=1, n_pairs=5).name == f"v{grammar.GRAMMAR_VERSION}-w3000-s1-p5"
    with pytest.raises(ValueError, match="words=0"):
        synthetic.write_corpus(tmp_path / "c", words=0)


def test_corpus_covers_the_phenomena():
    lines = list(synthetic.generate_lines(60_000, "0-train"))
    text = collections.Counter(w for l in lines for w in l.split())
    # questions, imperatives, negation + any, reflexives, relative clauses, perfect and past forms
    assert text["does"] and text["any"] and text["not"] and text["themselves"] and text["himself"]
    assert text["who"] and text["that"] and text["ate"] and text["eaten"] and text["has"] and text["were"]
    assert any(l.startswith(("is ", "are ", "does ", "do ")) for l in lines)
    assert any(l.startswith(("look at", "give the")) for l in lines)
    # a Zipfian lexicon: the most frequent noun is far more frequent than the median one
    nouns = [text[sg] + text[pl] for sg, pl, *_ in lexicon.PEOPLE + lexicon.ANIMALS + lexicon.THINGS + lexicon.FOODS]
    nouns.sort(reverse=True)
    assert nouns[0] > 10 * nouns[len(nouns) // 2]
    # 'any' never appears without a licensor in its own clause: 'not' right before its verb, or a question
    for l in lines:
        w = l.split()
        for i, word in enumerate(w):
            if word == "any":
                assert w[i - 2] in lexicon.LICENSORS or w[0] in ("do", "does"), l
    # the npi_scope evidence: a licensor inside a relative clause, followed by an unlicensed main clause
    lic = "|".join(lexicon.LICENSORS)
    assert any(re.search(rf"(who|that) (has|have) ({lic}) \w+ the \w+ (has|have) \w+ some", l) for l in lines)
    # every licensor and non-licensor stands in the has/have/had slot
    slot = collections.Counter(b for l in lines for a, b in zip(l.split(), l.split()[1:]) if a in ("has", "have", "had"))
    assert all(slot[w] > 0 for w in lexicon.LICENSORS + lexicon.NON_LICENSORS), slot


def test_npi_words_are_frequency_matched():
    """Word frequency must not decide the NPI pairs for the model: in the has/have/had slot every
    non-licensor is more frequent than every licensor but 'not', and 'really' is a little more frequent
    than 'not' over the whole corpus (so a frequency counter prefers the bad member of most NPI pairs)."""
    lines = list(synthetic.generate_lines(200_000, "0-train"))
    slot = collections.Counter(b for l in lines for a, b in zip(l.split(), l.split()[1:]) if a in ("has", "have", "had"))
    rare_licensors = [w for w in lexicon.LICENSORS if w != "not"]
    assert min(slot[w] for w in lexicon.NON_LICENSORS) > max(slot[w] for w in rare_licensors), slot
    do_slot = collections.Counter(b for l in lines for a, b in zip(l.split(), l.split()[1:]) if a in ("do", "does"))
    assert 0.85 < do_slot[lexicon.EMPHATIC] / do_slot["not"] < 1.15, (do_slot[lexicon.EMPHATIC], do_slot["not"])
    words = collections.Counter(w for l in lines for w in l.split())
    assert 1.0 < words[lexicon.EMPHATIC] / words["not"] < 1.6, (words[lexicon.EMPHATIC], words["not"])
    # and each kind of adverb stands after has/have as often inside relative clauses as outside them (npi_scope)
    rc, main = collections.Counter(), collections.Counter()
    kind = {**{w: "licensor" for w in lexicon.LICENSORS}, **{w: "other" for w in lexicon.NON_LICENSORS}}
    adv = "|".join(kind)
    for l in lines:
        m = re.search(rf"(?:who|that) (?:has|have) (?:({adv}) )?\w+ the \w+ (?:has|have) (?:({adv}) )?\w+ (?:any|some|the) ", l)
        if m:
            rc[kind.get(m.group(1), "none")] += 1
            main[kind.get(m.group(2), "none")] += 1
    for k in ("licensor", "other"):
        assert rc[k] > 200 and 0.85 < rc[k] / main[k] < 1.15, (k, rc, main)


def test_npi_pairs_are_not_decided_by_word_frequency():
    """A unigram model counted on the corpus prefers the bad member of most NPI pairs."""
    from dwml.ngrams import ngram_accuracy_table, ngram_pair_scores
    from dwml.evaluate import MinimalPair

    lines = list(synthetic.generate_lines(200_000, "0-train"))
    pairs = [MinimalPair(suite="synthetic", task=p["UID"], pair_id=p["pair_id"], good=p["sentence_good"],
                         bad=p["sentence_bad"]) for p in synthetic_pairs.minimal_pairs(100, seed=0)
             if p["UID"] in ("npi_licensing", "npi_scope")]
    table = ngram_accuracy_table(ngram_pair_scores(lines, pairs, orders=(1,)))
    assert table.loc["npi_licensing", "1-gram"] < 50 and table.loc["npi_scope", "1-gram"] < 50, table


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs.minimal_pairs(100, seed=0)


def test_pairs_schema_and_counts(pairs):
    assert len(synthetic_pairs.PARADIGMS) >= 8
    by_uid = collections.Counter(p["UID"] for p in pairs)
    assert by_uid == {uid: 100 for uid in synthetic_pairs.PARADIGMS}
    for p in pairs:
        assert set(p) == {"sentence_good", "sentence_bad", "UID", "field", "linguistics_term", "pair_id"}
        json.dumps(p)


def test_pairs_are_token_length_matched_at_the_default_vocabulary():
    """With the default profile's vocabulary (2,048) every word of the grammar is one BPE token, so the two
    members of a pair have the same number of tokens too: a summed PLL cannot prefer the shorter one."""
    from dwml.tokenizer import train_tokenizer

    tok = train_tokenizer(synthetic.generate_lines(300_000, "0-train"), vocab_size=2048)
    for p in synthetic_pairs.minimal_pairs(50, seed=0):
        good, bad = tok(p["sentence_good"])["input_ids"], tok(p["sentence_bad"])["input_ids"]
        assert len(good) == len(bad), p


def test_pairs_differ_minimally(pairs):
    for p in pairs:
        good, bad = p["sentence_good"].split(), p["sentence_bad"].split()
        assert len(good) == len(bad), p  # length-matched: a summed PLL cannot decide on length
        diff = [i for i, (x, y) in enumerate(zip(good, bad)) if x != y]
        assert len(diff) == 1, p  # one word swapped


def test_every_paradigm_turns_on_many_contrasts(pairs):
    """At least 20 distinct deciding word pairs in every paradigm's 100 pairs: a paradigm is many
    measurements, not one contrast that a model gets right or wrong as a whole."""
    by = collections.defaultdict(set)
    for p in pairs:
        by[p["UID"]].add(synthetic_pairs.deciding_words(p["sentence_good"], p["sentence_bad"]))
    assert set(by) == set(synthetic_pairs.PARADIGMS)
    for uid, contrasts in by.items():
        assert len(contrasts) >= 20, (uid, sorted(contrasts))


def test_deciding_words():
    assert synthetic_pairs.deciding_words("the boy has never eaten any", "the boy has already eaten any") == ("never", "already")
    assert synthetic_pairs.deciding_words("a b c", "a x y") == ("b c", "x y")
    assert synthetic_pairs.deciding_words("a b", "a b") == ("", "")


def test_no_sentence_is_both_good_and_bad(pairs):
    goods = {p["sentence_good"] for p in pairs}
    bads = {p["sentence_bad"] for p in pairs}
    assert not goods & bads
    assert len(goods) == len(pairs)


def test_bad_forms_are_words_of_the_corpus(pairs):
    vocab = {w for l in synthetic.generate_lines(300_000, "0-train") for w in l.split()}
    for p in pairs:
        for word in p["sentence_bad"].split() + p["sentence_good"].split():
            assert word in vocab, (word, p)


def test_pairs_deterministic():
    assert synthetic_pairs.minimal_pairs(10, seed=4) == synthetic_pairs.minimal_pairs(10, seed=4)
    assert synthetic_pairs.minimal_pairs(10, seed=4) != synthetic_pairs.minimal_pairs(10, seed=5)


def test_grammar_agreement_in_pairs(pairs):
    """Independent check of the grammar's answers: re-derive the head's number from the words."""
    plural_nouns = {pl for _, pl, *_ in lexicon.PEOPLE + lexicon.ANIMALS + lexicon.THINGS + lexicon.FOODS}
    singular_nouns = {sg for sg, *_ in lexicon.PEOPLE + lexicon.ANIMALS + lexicon.THINGS + lexicon.FOODS}
    for p in pairs:
        if p["UID"] != "sva_simple":
            continue
        words = p["sentence_good"].split()
        head = next(w for w in words if w in plural_nouns or w in singular_nouns)
        verb_idx = words.index(head) + 1
        verb = words[verb_idx]
        singular_verb = verb in ("is", "was", "has") or (verb.endswith("s") and verb not in ("was",))
        assert singular_verb == (head in singular_nouns), p


def test_small_lexicon_keeps_corpus_and_pairs_consistent():
    """data.synthetic_lexicon: every word list cut to its most frequent words, for corpus and pairs alike."""
    lines = list(synthetic.generate_lines(100_000, "0-train", lexicon=8))
    vocab = {w for line in lines for w in line.split()}
    full = {w for line in synthetic.generate_lines(100_000, "0-train") for w in line.split()}
    assert len(vocab) < 0.6 * len(full)
    assert not {pl for _, pl, *_ in lexicon.PEOPLE[8:]} & vocab  # nouns past the cut never occur
    pairs = synthetic_pairs.minimal_pairs(20, seed=1, lexicon=8)
    assert {p["UID"] for p in pairs} == set(synthetic_pairs.PARADIGMS)
    for p in pairs:
        for word in p["sentence_bad"].split() + p["sentence_good"].split():
            assert word in vocab, (word, p)
    with pytest.raises(ValueError, match="synthetic_lexicon"):
        grammar.Grammar(0, lexicon=2)  # keeps no irregular verb
    with pytest.raises(ValueError, match="synthetic_lexicon"):
        grammar.Grammar(0, lexicon=-1)


def test_ensure_corpus_names_the_lexicon(tmp_path):
    a = synthetic.ensure_corpus(tmp_path, words=2000, seed=0, n_pairs=3, lexicon=8)
    b = synthetic.ensure_corpus(tmp_path, words=2000, seed=0, n_pairs=3)
    assert a.name.endswith("-l8") and not b.name.endswith("-l8")
    assert json.loads((a / "meta.json").read_text())["lexicon"] == 8


@pytest.mark.slow  # ~5 CPU minutes: 1600 steps of a 4 x 192 model, then 2,000 pairs scored
def test_a_small_model_learns_the_synthetic_grammar(tmp_path):
    """Issue 2's bar: one small masked LM, a few CPU minutes on the default corpus (one utterance per
    sequence), scores >= 75% on the synthetic minimal pairs (and not 100%: the benchmark must not saturate).

    Measured (grammar v4, 30% masking as in the default profile, seed 0, 3 min 45 s): 91.3% mean;
    npi_licensing 100%, sva_question 99.5%, anaphor 99%, determiner_noun 98.5%, npi_scope 98%,
    sva_simple 97.5%, argument_structure 95.5%, sva_across_pp 81.5%, sva_across_relative_clause 77.5%,
    irregular_past 66%. Grammar v3 with 15% masking: 82.1%; grammar v2: 72.5%, its NPI pairs decided by
    word frequency (npi_scope 8.5%), fixed by frequency-matched words and corpus evidence."""
    import torch
    import yaml
    from transformers import RobertaConfig, RobertaForMaskedLM

    from conftest import ROOT
    from dwml.config import Config
    from dwml.data import prepare_corpus
    from dwml.evaluate import score_pairs
    from dwml.suites import load_synthetic
    from dwml.train import train

    prof = yaml.safe_load((ROOT / "profiles" / "default.yaml").read_text())
    cfg = Config.from_dict(data=prof["data"], train={**prof["train"], "method": "mlm", "num_epochs": 1600,
                                                      "lr_decay_iters": 1600, "enable_early_stopping": False})
    prep = prepare_corpus(cfg.data, progress=False)
    torch.manual_seed(0)
    model = RobertaForMaskedLM(RobertaConfig(
        vocab_size=len(prep.tokenizer), hidden_size=192, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=768, max_position_embeddings=cfg.data.block_size + 2, pad_token_id=1))
    train(cfg, prep, [model], tmp_path / "run", progress=False)
    df = score_pairs(model.eval(), prep.tokenizer, load_synthetic(prep.corpus_dir), progress=False)
    per_task = df.groupby("task")["correct"].mean()
    print(per_task.round(3).to_dict(), "mean", round(float(per_task.mean()), 3))
    assert per_task.mean() >= 0.75, per_task
    assert per_task.min() < 0.9, per_task  # some paradigm stays well below ceiling
