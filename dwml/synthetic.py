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

No torch is needed here; the module is pure Python.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from dwml.io import atomic_dir

GRAMMAR_VERSION = 5
SG, PL = "sg", "pl"

# --------------------------------------------------------------------------------------------------
# Lexicon. Lists are in rough order of frequency in child-directed speech; the Zipfian draw follows it.
# --------------------------------------------------------------------------------------------------

# (singular, plural, gender of the reflexive: m / f / n)
PEOPLE = [
    ("boy", "boys", "m"), ("girl", "girls", "f"), ("baby", "babies", "n"), ("man", "men", "m"),
    ("lady", "ladies", "f"), ("teacher", "teachers", "n"), ("friend", "friends", "n"), ("kid", "kids", "n"),
    ("brother", "brothers", "m"), ("sister", "sisters", "f"), ("woman", "women", "f"), ("child", "children", "n"),
    ("doctor", "doctors", "n"), ("farmer", "farmers", "n"), ("king", "kings", "m"), ("queen", "queens", "f"),
    ("princess", "princesses", "f"), ("prince", "princes", "m"), ("clown", "clowns", "n"), ("pirate", "pirates", "n"),
    ("nurse", "nurses", "n"), ("baker", "bakers", "n"), ("cousin", "cousins", "n"), ("neighbor", "neighbors", "n"),
    ("sailor", "sailors", "n"), ("wizard", "wizards", "m"), ("giant", "giants", "n"), ("knight", "knights", "m"),
    ("dentist", "dentists", "n"), ("policeman", "policemen", "m"), ("fireman", "firemen", "m"),
    ("grandmother", "grandmothers", "f"), ("grandfather", "grandfathers", "m"), ("uncle", "uncles", "m"),
    ("aunt", "aunts", "f"), ("witch", "witches", "f"), ("cowboy", "cowboys", "m"), ("mailman", "mailmen", "m"),
]
ANIMALS = [
    ("dog", "dogs"), ("cat", "cats"), ("puppy", "puppies"), ("bunny", "bunnies"), ("bird", "birds"),
    ("duck", "ducks"), ("cow", "cows"), ("horse", "horses"), ("pig", "pigs"), ("mouse", "mice"), ("frog", "frogs"),
    ("bear", "bears"), ("lion", "lions"), ("monkey", "monkeys"), ("tiger", "tigers"), ("elephant", "elephants"),
    ("chicken", "chickens"), ("giraffe", "giraffes"), ("goat", "goats"), ("turtle", "turtles"), ("owl", "owls"),
    ("kitty", "kitties"), ("zebra", "zebras"), ("penguin", "penguins"), ("squirrel", "squirrels"),
    ("butterfly", "butterflies"), ("bee", "bees"), ("spider", "spiders"), ("snake", "snakes"),
    ("dinosaur", "dinosaurs"), ("whale", "whales"), ("rabbit", "rabbits"), ("fox", "foxes"), ("wolf", "wolves"),
    ("goose", "geese"), ("kangaroo", "kangaroos"), ("dolphin", "dolphins"), ("donkey", "donkeys"),
    ("camel", "camels"), ("octopus", "octopuses"), ("hippo", "hippos"), ("raccoon", "raccoons"),
    ("beaver", "beavers"), ("lamb", "lambs"), ("pony", "ponies"), ("calf", "calves"), ("crab", "crabs"),
]
THINGS = [
    ("ball", "balls"), ("book", "books"), ("toy", "toys"), ("block", "blocks"), ("car", "cars"),
    ("truck", "trucks"), ("train", "trains"), ("box", "boxes"), ("cup", "cups"), ("hat", "hats"),
    ("shoe", "shoes"), ("boat", "boats"), ("doll", "dolls"), ("chair", "chairs"), ("spoon", "spoons"),
    ("sock", "socks"), ("picture", "pictures"), ("bowl", "bowls"), ("blanket", "blankets"), ("bike", "bikes"),
    ("plane", "planes"), ("bus", "buses"), ("balloon", "balloons"), ("flower", "flowers"), ("puzzle", "puzzles"),
    ("crayon", "crayons"), ("coat", "coats"), ("table", "tables"), ("bottle", "bottles"), ("pillow", "pillows"),
    ("letter", "letters"), ("drum", "drums"), ("bell", "bells"), ("key", "keys"), ("rock", "rocks"),
    ("stick", "sticks"), ("leaf", "leaves"), ("basket", "baskets"), ("bucket", "buckets"), ("kite", "kites"),
    ("wagon", "wagons"), ("brush", "brushes"), ("towel", "towels"), ("plate", "plates"), ("clock", "clocks"),
    ("shovel", "shovels"), ("rocket", "rockets"), ("bag", "bags"), ("button", "buttons"), ("ribbon", "ribbons"),
    ("candle", "candles"), ("mirror", "mirrors"), ("lamp", "lamps"), ("knife", "knives"), ("whistle", "whistles"),
    ("tractor", "tractors"), ("helmet", "helmets"), ("scarf", "scarves"), ("sweater", "sweaters"),
    ("umbrella", "umbrellas"), ("marble", "marbles"), ("sticker", "stickers"), ("teapot", "teapots"),
    ("trumpet", "trumpets"), ("lantern", "lanterns"), ("compass", "compasses"), ("shell", "shells"),
]
FOODS = [
    ("cookie", "cookies"), ("apple", "apples"), ("banana", "bananas"), ("cake", "cakes"), ("sandwich", "sandwiches"),
    ("carrot", "carrots"), ("grape", "grapes"), ("egg", "eggs"), ("cracker", "crackers"), ("muffin", "muffins"),
    ("cherry", "cherries"), ("strawberry", "strawberries"), ("peach", "peaches"), ("potato", "potatoes"),
    ("tomato", "tomatoes"), ("pancake", "pancakes"), ("noodle", "noodles"), ("pie", "pies"), ("orange", "oranges"),
    ("pear", "pears"), ("cupcake", "cupcakes"), ("pretzel", "pretzels"), ("raisin", "raisins"), ("waffle", "waffles"),
    ("lemon", "lemons"), ("plum", "plums"), ("berry", "berries"), ("radish", "radishes"), ("pickle", "pickles"),
    ("dumpling", "dumplings"), ("meatball", "meatballs"), ("biscuit", "biscuits"),
]
MASS = ["milk", "juice", "water", "cereal", "soup", "bread", "cheese", "rice", "toast", "sand", "paper", "pasta"]

# (base, 3sg, past, participle): strictly transitive verbs (an object is required), object class
TRANSITIVE = [
    ("like", "likes", "liked", "liked", "any"), ("want", "wants", "wanted", "wanted", "any"),
    ("see", "sees", "saw", "seen", "any"), ("need", "needs", "needed", "needed", "any"),
    ("love", "loves", "loved", "loved", "any"), ("take", "takes", "took", "taken", "thing"),
    ("find", "finds", "found", "found", "thing"), ("hold", "holds", "held", "held", "thing"),
    ("push", "pushes", "pushed", "pushed", "thing"), ("hug", "hugs", "hugged", "hugged", "animate"),
    ("eat", "eats", "ate", "eaten", "food"), ("throw", "throws", "threw", "thrown", "thing"),
    ("break", "breaks", "broke", "broken", "thing"), ("give", "gives", "gave", "given", "thing"),
    ("bring", "brings", "brought", "brought", "thing"), ("kiss", "kisses", "kissed", "kissed", "animate"),
    ("wash", "washes", "washed", "washed", "any"), ("pull", "pulls", "pulled", "pulled", "thing"),
    ("catch", "catches", "caught", "caught", "thing"), ("draw", "draws", "drew", "drawn", "thing"),
    ("carry", "carries", "carried", "carried", "thing"), ("kick", "kicks", "kicked", "kicked", "thing"),
    ("touch", "touches", "touched", "touched", "any"), ("hide", "hides", "hid", "hidden", "thing"),
    ("bite", "bites", "bit", "bitten", "food"), ("tickle", "tickles", "tickled", "tickled", "animate"),
    ("fix", "fixes", "fixed", "fixed", "thing"), ("grab", "grabs", "grabbed", "grabbed", "thing"),
    ("ride", "rides", "rode", "ridden", "ride"), ("drop", "drops", "dropped", "dropped", "thing"),
    ("shake", "shakes", "shook", "shaken", "thing"), ("steal", "steals", "stole", "stolen", "thing"),
    ("wear", "wears", "wore", "worn", "thing"), ("forget", "forgets", "forgot", "forgotten", "thing"),
    ("tear", "tears", "tore", "torn", "thing"), ("choose", "chooses", "chose", "chosen", "any"),
    ("know", "knows", "knew", "known", "animate"), ("chase", "chases", "chased", "chased", "animate"),
    ("feed", "feeds", "fed", "fed", "animate"), ("blow", "blows", "blew", "blown", "thing"),
    ("follow", "follows", "followed", "followed", "animate"), ("tease", "teases", "teased", "teased", "animate"),
    ("squeeze", "squeezes", "squeezed", "squeezed", "thing"), ("swallow", "swallows", "swallowed", "swallowed", "food"),
    ("scold", "scolds", "scolded", "scolded", "animate"), ("rescue", "rescues", "rescued", "rescued", "animate"),
]
# strictly intransitive verbs (no object)
INTRANSITIVE = [
    ("sleep", "sleeps", "slept", "slept"), ("cry", "cries", "cried", "cried"), ("laugh", "laughs", "laughed", "laughed"),
    ("jump", "jumps", "jumped", "jumped"), ("smile", "smiles", "smiled", "smiled"), ("fall", "falls", "fell", "fallen"),
    ("sit", "sits", "sat", "sat"), ("dance", "dances", "danced", "danced"), ("swim", "swims", "swam", "swum"),
    ("go", "goes", "went", "gone"), ("run", "runs", "ran", "run"), ("wait", "waits", "waited", "waited"),
    ("sneeze", "sneezes", "sneezed", "sneezed"), ("giggle", "giggles", "giggled", "giggled"),
    ("yawn", "yawns", "yawned", "yawned"), ("nap", "naps", "napped", "napped"), ("hop", "hops", "hopped", "hopped"),
    ("arrive", "arrives", "arrived", "arrived"), ("cough", "coughs", "coughed", "coughed"),
    ("fly", "flies", "flew", "flown"), ("wiggle", "wiggles", "wiggled", "wiggled"), ("shiver", "shivers", "shivered", "shivered"),
    ("snore", "snores", "snored", "snored"), ("blink", "blinks", "blinked", "blinked"), ("sulk", "sulks", "sulked", "sulked"),
]
# reflexive-friendly transitive verbs
VERB = {v[0]: v for v in TRANSITIVE}
REFLEXIVE_VERBS = ["see", "wash", "hug", "like", "tickle", "touch", "love", "know", "feed", "scold"]
ADJECTIVES = [
    "big", "little", "happy", "hungry", "red", "blue", "sleepy", "nice", "funny", "sad", "small", "tired", "pretty",
    "silly", "green", "yellow", "soft", "wet", "dirty", "clean", "hot", "cold", "tall", "old", "new", "fast",
    "loud", "quiet", "brave", "fluffy", "shiny", "sticky", "purple", "grumpy", "gentle", "clumsy", "curious",
    "bumpy", "fuzzy", "noisy",
]
PREPOSITIONS = ["near", "with", "behind", "by", "under", "beside", "from", "without", "above", "on"]
PLACES = ["in the box", "on the table", "in the kitchen", "outside", "at the park", "in the bath", "on the floor",
          "in the garden", "at home", "upstairs", "in the car", "on the bed"]
FILLERS = ["yes", "no", "okay", "oh", "wow", "look", "uh oh", "good job", "thank you", "there you go",
           "all done", "yeah", "mhm", "oh dear", "come here", "bye bye", "hi", "peekaboo", "oops", "alright"]
SUBJECT_PRONOUNS = [("i", PL), ("you", PL), ("we", PL), ("they", PL), ("he", SG), ("she", SG), ("it", SG)]
REFLEXIVE = {(SG, "m"): "himself", (SG, "f"): "herself", (SG, "n"): "itself", (PL, None): "themselves"}
AUX = {"be": {SG: "is", PL: "are"}, "was": {SG: "was", PL: "were"}, "have": {SG: "has", PL: "have"},
       "do": {SG: "does", PL: "do"}}
DET = {SG: ["the", "the", "the", "a", "this", "that", "my", "your", "his", "her"],
       PL: ["the", "the", "the", "some", "these", "those", "my", "your", "two", "three"]}
ADVERBS = ["really"]
"""Adverbs before a main verb ('the boy really likes the cake')."""
P_ADVERB = 0.55
"""Share of plain transitive statements with an adverb: tuned so that 'really' is a little more frequent
than 'not' over the whole corpus, so that word frequency alone does not prefer the good member of an
npi_licensing pair whose licensor is 'not' (a test holds it)."""
EMPHATIC_DO = 0.39
"""Share of transitive statements with emphatic do; tuned so that 'do(es) really' and 'do(es) not' are
about equally frequent in the corpus."""
EMPHATIC = "really"
"""The one word that fills the slot of 'not' after do/does in the corpus ('the boy does really like it')."""
LICENSORS = ["not", "never", "hardly", "barely", "rarely"]
"""Words that license 'any' in the slot after has/have/had ('the boy has never eaten any cookies')."""
NON_LICENSORS = ["really", "always", "already", "just", "still", "also", "often", "finally"]
"""Words the corpus puts in that same slot that license nothing ('the boy has already eaten the cake').
Each is drawn more often there than each licensor but 'not', so that word frequency alone prefers the bad
member of most NPI pairs (a test holds it): what decides them is the dependency between 'any' and its
licensor, and the 5 x 8 licensor / non-licensor pairs make an NPI paradigm many contrasts, not one."""

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


# --------------------------------------------------------------------------------------------------
# Minimal pairs (BLiMP schema). Each generator returns (good words, bad words).
# --------------------------------------------------------------------------------------------------

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


IRREGULAR = [v for v in TRANSITIVE if v[2] != v[3] and not v[2].endswith("ed")]


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


# --------------------------------------------------------------------------------------------------
# Writing the corpus in the BabyLM layout
# --------------------------------------------------------------------------------------------------

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
