"""The synthetic corpus's probabilistic grammar: phrase builders shared by the corpus and the minimal
pairs (``dwml.synthetic``, ``dwml.synthetic_pairs``), so both speak the same language.

Words come from ``dwml.lexicon``, drawn with a Zipfian law (the corpus) or uniformly (the pairs).
Pure Python, deterministic for a seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from dwml.lexicon import (ADJECTIVES, ADVERBS, ANIMALS, AUX, DET, EMPHATIC, EMPHATIC_DO, FILLERS, FOODS, INTRANSITIVE,
                          IRREGULAR, LICENSORS, MASS, NON_LICENSORS, P_ADVERB, PEOPLE, PL, PLACES, PREPOSITIONS,
                          REFLEXIVE, REFLEXIVE_VERBS, SG, SUBJECT_PRONOUNS, THINGS, TRANSITIVE, VERB)

GRAMMAR_VERSION = 5
"""Bumped whenever the grammar writes other sentences: a corpus folder names it (``ensure_corpus``)."""


def ing_form(base: str) -> str:
    doubling = {"run", "swim", "sit", "hug", "nap", "hop", "grab", "drop", "stop", "get", "put", "cut", "hit"}
    if base in doubling:
        return base + base[-1] + "ing"
    if base.endswith("ie"):
        return base[:-2] + "ying"
    if base.endswith("e") and not base.endswith("ee"):
        return base[:-1] + "ing"
    return base + "ing"


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------

class Sampler:
    """Draw list items with a Zipfian law over their order (rank r gets weight 1 / (r + 1) ** s), or
    uniformly (for the minimal pairs, so that rare words are tested as often as common ones)."""

    def __init__(self, rng: random.Random, zipf: float | None, lexicon: int | None = None):
        self.rng, self.zipf, self.lexicon, self._cum = rng, zipf, lexicon, {}

    def visible(self, items: list) -> list:
        """The first ``lexicon`` items of a word list (its most frequent words), or all of them."""
        return items[: self.lexicon] if self.lexicon else items

    def pick(self, items: list):
        items = self.visible(items)
        if self.zipf is None:
            return items[self.rng.randrange(len(items))]
        key = len(items)  # the cumulative weights depend on the length alone (and zipf, fixed per sampler)
        if key not in self._cum:
            acc, total = [], 0.0
            for r in range(len(items)):
                total += 1.0 / (r + 1) ** self.zipf
                acc.append(total)
            self._cum[key] = acc
        acc = self._cum[key]
        x = self.rng.random() * acc[-1]
        lo, hi = 0, len(acc) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if acc[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        return items[lo]


@dataclass
class NP:
    words: list[str]
    number: str
    gender: str | None  # for reflexives: m / f / n, None for plural


class Grammar:
    """Phrase builders shared by the corpus and the minimal pairs, so both speak the same language."""

    def __init__(self, seed: int | str, zipf: float | None = 1.1, p_pp: float = 0.18, p_rc: float = 0.10,
                 p_adj: float = 0.2, p_deep: float = 0.3, lexicon: int | None = None):
        if lexicon is not None and lexicon < 1:
            raise ValueError(f"lexicon={lexicon!r} (data.synthetic_lexicon): must be >= 1, or None/0 for the full lexicon")
        self.rng = random.Random(seed)
        self.s = Sampler(self.rng, zipf, lexicon)
        # The irregular verbs among the verbs this lexicon keeps: the pairs must test words the corpus has.
        self.irregular = [v for v in self.s.visible(TRANSITIVE) if v in IRREGULAR]
        if not self.irregular:
            raise ValueError(f"lexicon={lexicon!r} (data.synthetic_lexicon) keeps no irregular transitive verb; "
                             f"use at least {TRANSITIVE.index(IRREGULAR[0]) + 1}")
        self.p_pp, self.p_rc, self.p_adj, self.p_deep = p_pp, p_rc, p_adj, p_deep

    # ---- small helpers
    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def number(self) -> str:
        return SG if self.chance(0.6) else PL

    def other(self, number: str) -> str:
        return PL if number == SG else SG

    # ---- noun phrases
    def noun(self, kind: str, number: str) -> tuple[str, str | None]:
        """A noun of a semantic class ('person', 'animal', 'animate', 'thing', 'food', 'ride', 'any')."""
        if kind == "any":
            kind = self.rng.choice(["animate", "thing", "food"])
        if kind == "animate":
            kind = "person" if self.chance(0.5) else "animal"
        if kind == "ride":
            kind = self.rng.choice(["animal", "vehicle"])
        if kind == "person":
            sg, pl, g = self.s.pick(PEOPLE)
        elif kind == "animal":
            (sg, pl), g = self.s.pick(ANIMALS), "n"
        elif kind == "vehicle":
            (sg, pl), g = self.rng.choice([("bike", "bikes"), ("bus", "buses"), ("train", "trains"), ("wagon", "wagons"),
                                           ("tractor", "tractors"), ("boat", "boats")]), "n"
        elif kind == "food":
            (sg, pl), g = self.s.pick(FOODS), "n"
        else:
            (sg, pl), g = self.s.pick(THINGS), "n"
        return (sg, g) if number == SG else (pl, None)

    def np(self, kind: str = "animate", number: str | None = None, modify: bool = True, det: str | None = None,
           depth: int = 0) -> NP:
        number = number or self.number()
        head, gender = self.noun(kind, number)
        words = [det or self.rng.choice(DET[number])]
        if self.chance(self.p_adj):
            words.append(self.s.pick(ADJECTIVES))
        words.append(head)
        if modify and depth < 2:
            if self.chance(self.p_pp):
                words += self.pp(depth=depth)
            elif self.chance(self.p_rc):
                words += self.relative_clause(number, depth=depth)
        return NP(words, number, gender)

    def pp(self, attractor: str | None = None, depth: int = 0) -> list[str]:
        """A prepositional modifier whose noun may be of either number: an agreement attractor."""
        inner = self.np(self.rng.choice(["animate", "thing"]), attractor, modify=self.chance(self.p_deep),
                        det="the", depth=depth + 1)
        return [self.s.pick(PREPOSITIONS)] + inner.words

    def relative_clause(self, head_number: str, attractor: str | None = None, kind: str | None = None,
                        depth: int = 0) -> list[str]:
        """'who/that V the N' (the verb agrees with the head) or 'that the N V' (it agrees with the inner
        subject, an attractor for the main verb)."""
        kind = kind or ("subject" if self.chance(0.5) else "object")
        verb = self.s.pick(TRANSITIVE)
        if kind == "subject":
            obj = self.np(verb[4], attractor, modify=self.chance(self.p_deep), det="the", depth=depth + 1)
            return [self.rng.choice(["who", "that"]), self.present(verb, head_number)] + obj.words
        subj = self.np("animate", attractor, modify=False, det="the", depth=depth + 1)
        return ["that"] + subj.words + [self.present(verb, subj.number)]

    def subject(self, number: str | None = None) -> NP:
        if self.chance(0.3):
            word, num = self.rng.choice(SUBJECT_PRONOUNS)
            if number is None or num == number:
                return NP([word], num, {"he": "m", "she": "f", "it": "n"}.get(word))
        return self.np("animate", number)

    # ---- verbs
    @staticmethod
    def present(verb, number: str) -> str:
        return verb[1] if number == SG else verb[0]

    def obj(self, verb) -> list[str]:
        cls = verb[4] if len(verb) > 4 else "thing"
        if cls == "food" and self.chance(0.2):
            return [self.rng.choice(["some", "the", "my"]), self.s.pick(MASS[:7])]
        return self.np(cls, modify=self.chance(0.5)).words

    # ---- sentences of the corpus
    def sentence(self) -> str:
        kinds = [(self.statement, 31), (self.question, 18), (self.imperative, 12), (self.negated, 8),
                 (self.past, 8), (self.perfect, 8), (self.progressive, 6), (self.reflexive, 4), (self.copula, 7),
                 (self.filler, 8), (self.passive, 2), (self.scoped, 4)]
        fn = self.rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])[0]
        return " ".join(fn())

    def statement(self) -> list[str]:
        subj = self.subject()
        if self.chance(0.35):
            verb = self.s.pick(INTRANSITIVE)
            tail = [self.rng.choice(PLACES)] if self.chance(0.3) else []
            return subj.words + [self.present(verb, subj.number)] + tail
        verb = self.s.pick(TRANSITIVE)
        adv = [self.rng.choice(ADVERBS)] if self.chance(P_ADVERB) else []
        if self.chance(EMPHATIC_DO):  # emphatic do, as frequent as 'do(es) not': 'the boy does really like the cake'
            return subj.words + [AUX["do"][subj.number], EMPHATIC, verb[0]] + self.some_obj(verb)
        return subj.words + adv + [self.present(verb, subj.number)] + self.obj(verb)

    def some_obj(self, verb) -> list[str]:
        return ["some", self.obj_noun(verb, PL)]

    def obj_noun(self, verb, number: str) -> str:
        """A bare object noun that fits the verb's object class ('any' verbs take things)."""
        return self.noun("thing" if verb[4] == "any" else verb[4], number)[0]

    def negated(self) -> list[str]:
        """Negation licenses 'any'; the corpus never has 'any' without a licensor (negation or question)."""
        subj = self.subject()
        verb = self.s.pick(TRANSITIVE)
        aux = AUX["do"][subj.number] if self.chance(0.8) else self.rng.choice(["can", "will", "did"])
        if self.chance(0.5):
            return subj.words + [aux, "not", verb[0], "any", self.obj_noun(verb, PL)]
        return subj.words + [aux, "not", verb[0]] + self.obj(verb)

    def scoped(self) -> list[str]:
        """An adverb in the relative clause and one in the main clause, each a licensor, a non-licensor or
        none: 'the boy who has not seen the dog has already eaten some cookies', '... who has just seen
        the dog has never eaten any cookies'. 'any' follows only a licensor of its own clause, so the corpus
        shows that a licensor inside the relative clause licenses nothing outside it (the npi_scope pairs
        test exactly this), while each adverb is as frequent in either clause (its position alone decides
        nothing)."""
        number = self.number()
        head = self.np("animate", number, modify=False)
        rc_verb, verb = self.s.pick(TRANSITIVE), self.s.pick(TRANSITIVE)
        have = AUX["have"][number]
        rc_adv, main_adv = self.slot_adverb(), self.slot_adverb()
        rc = [self.rng.choice(["who", "that"]), have] + rc_adv + [rc_verb[3], "the", self.obj_noun(rc_verb, self.number())]
        licensed = bool(main_adv) and main_adv[0] in LICENSORS
        if self.chance(0.5):
            obj = ["any" if licensed else "some", self.obj_noun(verb, PL)]
        else:
            obj = ["the", self.obj_noun(verb, SG)]
        return head.words + rc + [have] + main_adv + [verb[3]] + obj

    def slot_adverb(self) -> list[str]:
        """The adverb after has/have/had: a licensor (a fifth), a non-licensor (three fifths) or none."""
        r = self.rng.random()
        if r < 0.2:
            return [self.rng.choice(LICENSORS)]
        if r < 0.8:
            return [self.rng.choice(NON_LICENSORS)]
        return []

    def past(self) -> list[str]:
        subj = self.subject()
        if self.chance(0.3):
            return subj.words + [self.s.pick(INTRANSITIVE)[2]]
        verb = self.s.pick(TRANSITIVE)
        return subj.words + [verb[2]] + self.obj(verb)

    def perfect(self) -> list[str]:
        """Perfect tense, with a licensor ('has never eaten any cookies'), a non-licensor ('has already
        eaten the cake', never followed by 'any') or no adverb; see NON_LICENSORS for their frequencies."""
        subj = self.subject()
        have = AUX["have"][subj.number] if self.chance(0.8) else "had"
        if self.chance(0.3):
            return subj.words + [have, self.s.pick(INTRANSITIVE)[3]]
        verb = self.s.pick(TRANSITIVE)
        r = self.rng.random()
        if r < 0.2:
            obj = ["any", self.obj_noun(verb, PL)] if self.chance(0.5) else self.obj(verb)
            return subj.words + [have, self.rng.choice(LICENSORS), verb[3]] + obj
        if r < 0.8:
            return subj.words + [have, self.rng.choice(NON_LICENSORS), verb[3]] + self.obj(verb)
        return subj.words + [have, verb[3]] + self.obj(verb)

    def passive(self) -> list[str]:
        verb = self.s.pick(TRANSITIVE)
        obj = self.np(verb[4] if verb[4] != "any" else "thing", modify=False)
        by = ["by"] + self.np("animate", modify=False, det="the").words if self.chance(0.5) else []
        return obj.words + [AUX["was"][obj.number], verb[3]] + by

    def progressive(self) -> list[str]:
        subj = self.subject()
        aux = AUX["be" if self.chance(0.7) else "was"][subj.number]
        if self.chance(0.4):
            return subj.words + [aux, ing_form(self.s.pick(INTRANSITIVE)[0])]
        verb = self.s.pick(TRANSITIVE)
        return subj.words + [aux, ing_form(verb[0])] + self.obj(verb)

    def reflexive(self) -> list[str]:
        """'the boy washes himself', or in the past ('the boys saw themselves'), where only the pronoun
        shows the antecedent's number."""
        subj = self.np("animate", modify=self.chance(0.4))
        verb = VERB[self.rng.choice(REFLEXIVE_VERBS)]
        form = verb[2] if self.chance(0.4) else self.present(verb, subj.number)
        return subj.words + [form, self.reflexive_pronoun(subj)]

    @staticmethod
    def reflexive_pronoun(np: NP) -> str:
        return REFLEXIVE[(PL, None)] if np.number == PL else REFLEXIVE[(SG, np.gender or "n")]

    def copula(self) -> list[str]:
        subj = self.subject()
        be = AUX["be" if self.chance(0.8) else "was"][subj.number]
        rest = [self.s.pick(ADJECTIVES)] if self.chance(0.6) else self.rng.choice(PLACES).split()
        return subj.words + [be] + rest

    def question(self) -> list[str]:
        r = self.rng.random()
        subj = self.np("animate") if self.chance(0.7) else self.subject()
        if r < 0.35:  # yes/no with do: the fronted auxiliary agrees with a subject that follows it
            verb = self.s.pick(TRANSITIVE)
            obj = ["any", self.obj_noun(verb, PL)] if self.chance(0.3) else self.obj(verb)
            return [AUX["do"][subj.number]] + subj.words + [verb[0]] + obj
        if r < 0.6:
            return [AUX["be"][subj.number]] + subj.words + [self.s.pick(ADJECTIVES)]
        if r < 0.75:
            return ["where", AUX["be"][subj.number]] + subj.words
        if r < 0.9:
            return ["what", AUX["do"][subj.number]] + subj.words + [self.s.pick(TRANSITIVE)[0]]
        verb = self.s.pick(TRANSITIVE)
        return ["who", verb[1]] + self.obj(verb)

    def imperative(self) -> list[str]:
        verb = self.s.pick(TRANSITIVE)
        r = self.rng.random()
        if r < 0.5:
            return [verb[0]] + self.obj(verb)
        if r < 0.7:
            return ["do", "not", verb[0]] + self.obj(verb)
        if r < 0.85:
            return ["look", "at"] + self.np(self.rng.choice(["animate", "thing"])).words
        return ["give", "the", self.noun("thing", SG)[0], "to"] + self.np("animate", modify=False).words

    def filler(self) -> list[str]:
        return self.s.pick(FILLERS).split()
