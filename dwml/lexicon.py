"""The synthetic grammar's word lists (``dwml.grammar`` draws from them, Zipfian over their order).

Lists are in rough order of frequency in child-directed speech; ``data.synthetic_lexicon`` keeps the first
N words of each. Pure Python.
"""
from __future__ import annotations

SG, PL = "sg", "pl"


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

# The irregular transitive verbs (past tense unlike the participle): the irregular_past pairs test them.
IRREGULAR = [v for v in TRANSITIVE if v[2] != v[3] and not v[2].endswith("ed")]
