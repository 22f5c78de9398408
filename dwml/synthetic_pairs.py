"""Minimal pairs from the synthetic grammar, in BLiMP's JSONL schema, whose answers the grammar knows.

Every pair has the same number of words; all but the scope paradigm differ in exactly one word, and the
scope paradigm in the position of two words; every bad form is a word the corpus contains, and no sentence
is both a good and a bad member. Pure Python.
"""
from __future__ import annotations

from typing import Callable

from dwml.grammar import NP, Grammar
from dwml.lexicon import (ADJECTIVES, AUX, EMPHATIC, INTRANSITIVE, LICENSORS, NON_LICENSORS, PEOPLE, PL, REFLEXIVE,
                          REFLEXIVE_VERBS, SG, TRANSITIVE, VERB)

# Each generator returns (good words, bad words).
PairFn = Callable[[Grammar], tuple[list[str], list[str]]]


def _swap(words: list[str], i: int, word: str) -> list[str]:
    out = list(words)
    out[i] = word
    return out


def _sva(g: Grammar, modifier: str) -> tuple[list[str], list[str]]:
    """Main-verb (or auxiliary) agreement with the subject's head, across a modifier whose noun has the
    other number (an attractor), one or two deep."""
    number = g.number()
    subj = g.np("animate", number, modify=False)
    att = g.other(number)
    if modifier == "pp":
        mod = g.pp(attractor=att)
        if g.chance(0.5):  # two deep: 'the cat near the dogs with the hat'
            mod += g.pp(attractor=att)
    elif modifier == "rc":
        mod = g.relative_clause(number, attractor=att, kind="object" if g.chance(0.6) else "subject")
    else:
        mod = []
    words = subj.words + mod
    r = g.rng.random()
    if r < 0.4:
        verb = g.s.pick(INTRANSITIVE)
        good, bad = g.present(verb, number), g.present(verb, att)
        tail = []
    elif r < 0.7:
        verb = g.s.pick(TRANSITIVE)
        good, bad = g.present(verb, number), g.present(verb, att)
        tail = ["the", g.obj_noun(verb, SG)]
    else:
        aux = g.rng.choice(["be", "was", "have"])
        good, bad = AUX[aux][number], AUX[aux][att]
        tail = [g.s.pick(ADJECTIVES)] if aux in ("be", "was") else [g.s.pick(INTRANSITIVE)[3]]
    i = len(words)
    full = words + [good] + tail
    return full, _swap(full, i, bad)


def pair_sva_simple(g):
    return _sva(g, "none")


def pair_sva_pp(g):
    return _sva(g, "pp")


def pair_sva_rc(g):
    return _sva(g, "rc")


def _number_swap(g: Grammar, noun_kind: str, number: str) -> tuple[str, str]:
    """A noun of ``noun_kind`` in ``number`` and the same noun in the other number ('boy' / 'boys')."""
    state = g.rng.getstate()
    word = g.noun(noun_kind, number)[0]
    g.rng.setstate(state)  # the same draw again, in the other number
    return word, g.noun(noun_kind, g.other(number))[0]


def pair_sva_question(g):
    """Long distance: the fronted auxiliary agrees with a subject that follows it, across an attractor.
    The bad member swaps either the auxiliary ('*do the boy near the dogs like ...') or the subject's head
    noun ('*does the boys near the dog like ...'): the deciding words are the auxiliary pairs and every
    noun of the lexicon in both numbers, not one contrast."""
    number = g.number()
    head_kind = "person" if g.chance(0.5) else "animal"
    head, other_head = _number_swap(g, head_kind, number)
    subj = [g.rng.choice(["the", "my", "your"]), head] + g.pp(attractor=g.other(number))
    r = g.rng.random()
    if r < 0.5:
        verb = g.s.pick(TRANSITIVE)
        aux = "do"
        tail = [verb[0], "the", g.obj_noun(verb, SG)]
    else:
        aux = "be" if r < 0.75 else "was"
        tail = [g.s.pick(ADJECTIVES)]
    good = [AUX[aux][number]] + subj + tail
    if g.chance(0.5):
        return good, _swap(good, 0, AUX[aux][g.other(number)])
    return good, _swap(good, 2, other_head)


def pair_det_noun(g):
    """this/that + singular, these/those + plural; the bad member swaps the determiner's number ('*these
    cookie') or the noun's ('*this cookies'), so that every noun decides some pairs."""
    number = g.number()
    det = g.rng.choice(["this", "that"] if number == SG else ["these", "those"])
    bad_det = {"this": "these", "that": "those", "these": "this", "those": "that"}[det]
    verb = g.s.pick(TRANSITIVE)
    subj = g.subject()
    adj = [g.s.pick(ADJECTIVES)] if g.chance(0.5) else []
    kind = "thing" if verb[4] == "any" else verb[4]
    noun, other_noun = _number_swap(g, kind, number)
    good = subj.words + [g.present(verb, subj.number), det] + adj + [noun]
    if g.chance(0.5):
        return good, _swap(good, len(subj.words) + 1, bad_det)
    return good, _swap(good, len(good) - 1, other_noun)


def pair_anaphor_number(g):
    """A reflexive agrees in number with its antecedent, sometimes across an attractor. The bad member swaps
    the reflexive ('*the boy washes themselves') or, with a past-tense verb that shows no agreement, the
    antecedent's head noun ('*the boys saw himself')."""
    number = g.number()
    kind = "person" if g.chance(0.6) else "animal"
    head, other_head = _number_swap(g, kind, number)
    gender = "n"
    if kind == "person":
        gender = next(gd for sg, pl, gd in PEOPLE if head in (sg, pl))
    subj = NP([g.rng.choice(["the", "my", "your"]), head], number, gender if number == SG else None)
    mod = g.pp(attractor=g.other(number)) if g.chance(0.4) else []
    verb = VERB[g.rng.choice(REFLEXIVE_VERBS)]
    good_refl = g.reflexive_pronoun(subj)
    if g.chance(0.5):
        bad_refl = "themselves" if number == SG else REFLEXIVE[(SG, g.rng.choice(["m", "f", "n"]))]
        good = subj.words + mod + [g.present(verb, number), good_refl]
        return good, _swap(good, len(good) - 1, bad_refl)
    good = subj.words + mod + [verb[2], good_refl]
    return good, _swap(good, 1, other_head)


def pair_npi_licensing(g):
    """'any' needs a licensor: 'has never eaten any cookies' against '*has already eaten any cookies' (a
    non-licensor that the corpus puts in the same slot), 5 licensors x 8 non-licensors; or, with do-support,
    'does not want any' against '*does really want any'."""
    subj = g.subject()
    verb = g.s.pick(TRANSITIVE)
    if g.chance(0.2):
        good = subj.words + [AUX["do"][subj.number], "not", verb[0], "any", g.obj_noun(verb, PL)]
        return good, _swap(good, len(subj.words) + 1, EMPHATIC)
    have = AUX["have"][subj.number] if g.chance(0.8) else "had"
    good = subj.words + [have, g.rng.choice(LICENSORS), verb[3], "any", g.obj_noun(verb, PL)]
    return good, _swap(good, len(subj.words) + 1, g.rng.choice(NON_LICENSORS))


def pair_npi_scope(g):
    """A licensor inside a relative clause does not license 'any' in the main clause.
    Good: 'the boy who has not seen the dog has never eaten any cookies';
    bad:  'the boy who has not seen the dog has already eaten any cookies' (the main clause's licensor
    swapped for a non-licensor; the relative clause's licensor, which c-commands nothing outside it, stays)."""
    number = g.number()
    head = g.np("animate", number, modify=False)
    rc_verb, verb = g.s.pick(TRANSITIVE), g.s.pick(TRANSITIVE)
    rc_obj = ["the", g.obj_noun(rc_verb, g.number())]
    have = AUX["have"][number]
    who = g.rng.choice(["who", "that"])
    good = (head.words + [who, have, g.rng.choice(LICENSORS), rc_verb[3]] + rc_obj
            + [have, g.rng.choice(LICENSORS), verb[3], "any", g.obj_noun(verb, PL)])
    i = len(head.words) + 4 + len(rc_obj) + 1
    return good, _swap(good, i, g.rng.choice(NON_LICENSORS))


def deciding_words(good: str, bad: str) -> tuple[str, str]:
    """The words that tell a pair's members apart: (the good member's, the bad member's) at the positions
    where they differ, joined with spaces. A paradigm whose pairs share one deciding pair is one contrast,
    however many sentences it has."""
    g, b = good.split(), bad.split()
    diff = [i for i, (x, y) in enumerate(zip(g, b)) if x != y]
    return " ".join(g[i] for i in diff), " ".join(b[i] for i in diff)


def pair_argument_structure(g):
    """A strictly transitive verb needs its object and a strictly intransitive verb takes none:
    'the boy pushes the car' / '*the boy sleeps the car', and 'the boy sleeps' / '*the boy pushes'."""
    subj = g.subject()
    intr, tr = g.s.pick(INTRANSITIVE), g.s.pick(TRANSITIVE)
    form = 1 if subj.number == SG else 0
    if g.chance(0.5):
        good = subj.words + [tr[form], "the", g.obj_noun(tr, SG)]
        return good, _swap(good, len(subj.words), intr[form])
    good = subj.words + [intr[form]]
    return good, _swap(good, len(subj.words), tr[form])




def pair_irregular_past(g):
    """Simple past against participle with the same verb: 'the girl ate the cake' / '*the girl eaten the
    cake', and 'has eaten' / '*has ate'. Both forms occur in the corpus (past and perfect tenses)."""
    subj = g.subject()
    verb = g.s.pick(g.irregular)
    obj = ["the", g.obj_noun(verb, SG)]
    if g.chance(0.5):
        good = subj.words + [verb[2]] + obj
        return good, _swap(good, len(subj.words), verb[3])
    good = subj.words + [AUX["have"][subj.number], verb[3]] + obj
    return good, _swap(good, len(subj.words) + 1, verb[2])


# UID -> (generator, BLiMP field, linguistics_term: the BLiMP phenomenon it mirrors)
PARADIGMS: dict[str, tuple[PairFn, str, str]] = {
    "sva_simple": (pair_sva_simple, "morphology", "subject_verb_agreement"),
    "sva_across_pp": (pair_sva_pp, "syntax", "subject_verb_agreement"),
    "sva_across_relative_clause": (pair_sva_rc, "syntax", "subject_verb_agreement"),
    "sva_question": (pair_sva_question, "syntax", "subject_verb_agreement"),
    "determiner_noun_agreement": (pair_det_noun, "morphology", "determiner_noun_agreement"),
    "anaphor_number_agreement": (pair_anaphor_number, "morphology", "anaphor_agreement"),
    "npi_licensing": (pair_npi_licensing, "semantics", "npi_licensing"),
    "npi_scope": (pair_npi_scope, "semantics", "npi_licensing"),
    "argument_structure": (pair_argument_structure, "syntax", "argument_structure"),
    "irregular_past": (pair_irregular_past, "morphology", "irregular_forms"),
}


def minimal_pairs(n_per_paradigm: int = 200, seed: int = 0, zipf: float | None = None,
                  exclude: set[str] | None = None, lexicon: int | None = None) -> list[dict]:
    """``n_per_paradigm`` distinct pairs per paradigm in the BLiMP schema.

    Words are drawn uniformly (``zipf=None``) so rare words are tested as often as common ones. No
    sentence is both a good and a bad member anywhere, and sentences in ``exclude`` (e.g. the corpus'
    lines) can be kept out of the pairs."""
    g = Grammar(f"pairs-{seed}", zipf=zipf, p_pp=0.0, p_rc=0.0, p_adj=0.15, p_deep=0.0, lexicon=lexicon)
    exclude = exclude or set()
    records, goods, bads = [], set(), set()
    for uid, (fn, field, term) in PARADIGMS.items():
        made, tries = 0, 0
        while made < n_per_paradigm:
            tries += 1
            if tries > 200 * n_per_paradigm:
                raise RuntimeError(f"paradigm {uid}: could not make {n_per_paradigm} distinct pairs")
            good_w, bad_w = fn(g)
            good, bad = " ".join(good_w), " ".join(bad_w)
            if good == bad or good in goods or good in bads or bad in goods or bad in bads or good in exclude:
                continue
            goods.add(good)
            bads.add(bad)
            records.append({"sentence_good": good, "sentence_bad": bad, "UID": uid, "field": field,
                            "linguistics_term": term, "pair_id": made})
            made += 1
    return records
