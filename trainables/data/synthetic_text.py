"""Embedded text benchmarks, generated from a seed without files: ``synthetic-civilcomments`` and
``synthetic-multinli``.

Each mirrors a real benchmark's group composition (Table 2 via ``scaled_counts``). Texts are short
English-like sentences of plain lowercase words separated by single spaces, built from templates and
word lists. The class is carried by one *core* word drawn from a large per-class set; it is present
only with probability ``rate`` and, when present, comes from a wrong class's set with probability
``noise`` (per-dataset constants below). The spurious attribute is carried by a few frequent words (identity terms,
or the negation words nobody/no/never/nothing) that appear exactly when ``s == 1``. A model therefore
learns the attribute first and plain ERM shows a worst-group accuracy well below its average.
"""

from __future__ import annotations

import numpy as np

from trainables.data.base import SPLITS, GroupDataset, Split, register_dataset
from trainables.data.synthetic import check_int, group_labels, options_check, split_group_counts, split_streams

MAX_LENGTH_BOUNDS = {"max_length": (2, None)}  # a text keeps at least [CLS] and [SEP]

# (rate, noise) of the core words, calibrated so that plain ERM (bag-of-words logistic regression or a
# small embedding model) has a worst-group accuracy far below its average while group balancing helps.
CIVIL_CORE = (0.8, 0.05)
NLI_CORE = (0.8, 0.1)

# ---------------------------------------------------------------------------------------------
# synthetic-civilcomments: "opener subject verb about topic [identity phrase] and it is judgement"
# ---------------------------------------------------------------------------------------------

IDENTITY_WORDS = ("muslim", "christian", "jewish", "black", "white", "gay", "lesbian", "transgender",
                  "female", "male")
CIVIL_WORDS = (
    # neutral
    ("thoughtful", "insightful", "reasonable", "sensible", "helpful", "informative", "balanced", "fair",
     "honest", "accurate", "respectful", "polite", "constructive", "excellent", "wonderful", "interesting",
     "useful", "clear", "decent", "kind", "generous", "careful", "patient", "wise"),
    # toxic
    ("stupid", "idiotic", "moronic", "pathetic", "disgusting", "dumb", "worthless", "clueless", "ignorant",
     "brainless", "spineless", "shameless", "despicable", "vile", "nasty", "rotten", "useless", "hopeless",
     "ridiculous", "lousy", "sleazy", "gross", "hateful", "dishonest"),
)
CIVIL_FILLER = ("new", "long", "short", "recent", "typical", "common", "official", "familiar")
_CIVIL_OPENERS = ("i think", "honestly", "well", "in my view", "frankly", "so", "again", "sadly", "clearly",
                  "as usual")
_CIVIL_SUBJECTS = ("the mayor", "this article", "the council", "your comment", "the editor", "that reporter",
                   "the governor", "the senator", "the board", "this writer", "the minister", "the police chief")
_CIVIL_VERBS = ("said", "wrote", "argued", "claimed", "posted", "announced", "suggested", "explained",
                "complained", "asked")
_CIVIL_TOPICS = ("the budget", "the new road", "the election", "the school plan", "the housing law", "taxes",
                 "the pipeline", "the ferry", "the hospital", "the park", "the fishing season", "the tourism fee")
_CIVIL_IDENTITY = ("for {} people", "and {} families", "as a {} voter", "about {} neighbours")
_CIVIL_JUDGEMENTS = ("and it is {}", "which sounds {}", "and that was {}", "and the whole thing is {}")


def _core_words(rng: np.random.Generator, y: np.ndarray, core: tuple[tuple[str, ...], ...],
                filler: tuple[str, ...], rate_noise: tuple[float, float]) -> list[str]:
    """One word per example: with probability ``rate`` a core word, drawn from ``core[y]`` or, with
    probability ``noise``, from another class's set; otherwise a class-free ``filler`` word."""
    n, n_classes = len(y), len(core)
    rate, noise = rate_noise
    present = rng.random(n) < rate
    wrong = rng.random(n) < noise
    source = np.where(wrong, (y + rng.integers(1, n_classes, n)) % n_classes, y)
    pick = rng.integers(0, 1 << 30, n)
    return [core[c][k % len(core[c])] if p else filler[k % len(filler)]
            for c, k, p in zip(source, pick, present)]


def _choice(rng: np.random.Generator, options: tuple[str, ...], n: int) -> list[str]:
    return [options[i] for i in rng.integers(0, len(options), n)]


def _civil_texts(y: np.ndarray, s: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Comments about local affairs; identity words appear exactly when ``s == 1``."""
    n = len(y)
    judgement = _core_words(rng, y, CIVIL_WORDS, CIVIL_FILLER, CIVIL_CORE)
    parts = zip(_choice(rng, _CIVIL_OPENERS, n), _choice(rng, _CIVIL_SUBJECTS, n), _choice(rng, _CIVIL_VERBS, n),
                _choice(rng, _CIVIL_TOPICS, n), _choice(rng, _CIVIL_IDENTITY, n), _choice(rng, IDENTITY_WORDS, n),
                _choice(rng, _CIVIL_JUDGEMENTS, n), judgement, s)
    return [" ".join([opener, subject, verb, "about", topic] + ([identity.format(who)] if has else [])
                     + [verdict.format(word)])
            for opener, subject, verb, topic, identity, who, verdict, word, has in parts]


# ---------------------------------------------------------------------------------------------
# synthetic-multinli: premise "a person is doing something somewhere", hypothesis about that person
# ---------------------------------------------------------------------------------------------

NEGATION_WORDS = ("nobody", "no", "never", "nothing")
NLI_WORDS = (
    # contradiction
    ("asleep", "sleeping", "napping", "resting", "lying", "seated", "indoors", "motionless", "silent", "crying",
     "frowning", "bored", "alone", "sick", "injured", "absent", "upstairs", "underwater", "barefoot", "frozen",
     "hiding", "fainting", "unconscious", "bedridden"),
    # entailment
    ("outdoors", "outside", "awake", "active", "moving", "present", "busy", "performing", "participating",
     "occupied", "engaged", "involved", "alive", "upright", "dressed", "attending", "visible", "nearby",
     "focused", "concentrating", "energetic", "mobile", "conscious", "doing"),
    # neither
    ("famous", "professional", "married", "wealthy", "tired", "hungry", "thirsty", "nervous", "excited", "proud",
     "late", "early", "competing", "celebrating", "rehearsing", "training", "waiting", "volunteering",
     "graduating", "vacationing", "retired", "jealous", "lonely", "worried"),
)
NLI_FILLER = ("pictured", "shown", "seen", "photographed", "described", "mentioned")
_NLI_PEOPLE = ("man", "woman", "boy", "girl", "child", "teenager", "worker", "dancer", "student", "musician",
               "chef", "tourist")
_NLI_ADJECTIVES = ("young", "old", "tall", "short", "smiling", "bearded", "blond", "skinny")
_NLI_ACTIVITIES = ("playing a guitar", "riding a bike", "throwing a ball", "painting a wall", "selling fruit",
                   "climbing a rock", "reading a map", "walking a dog", "carrying a box", "fixing a car",
                   "singing a song", "cutting bread")
_NLI_PLACES = ("in the park", "on the street", "near the river", "at the market", "on a beach", "in a garden",
               "by the station", "at a festival")
_NLI_PLAIN = ("the {p} is {w}", "the {p} is {w} right now", "the {p} is clearly {w}", "this {p} is {w} today")
_NLI_NEGATED = ("nobody is {w}", "the {p} is never {w}", "the {p} is {w} with no company",
                "the {p} is {w} and says nothing")


def _nli_pairs(y: np.ndarray, s: np.ndarray, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(premise, hypothesis) pairs; negation words appear in the hypothesis exactly when ``s == 1``."""
    n = len(y)
    word = _core_words(rng, y, NLI_WORDS, NLI_FILLER, NLI_CORE)
    people = _choice(rng, _NLI_PEOPLE, n)
    premises = [f"a {adjective} {person} is {activity} {place}" for adjective, person, activity, place in
                zip(_choice(rng, _NLI_ADJECTIVES, n), people, _choice(rng, _NLI_ACTIVITIES, n),
                    _choice(rng, _NLI_PLACES, n))]
    plain, negated = _choice(rng, _NLI_PLAIN, n), _choice(rng, _NLI_NEGATED, n)
    hypotheses = [(neg if has else pos).format(p=person, w=w)
                  for pos, neg, has, person, w in zip(plain, negated, s, people, word)]
    return list(zip(premises, hypotheses))


# ---------------------------------------------------------------------------------------------
# Registered builders
# ---------------------------------------------------------------------------------------------

def _generated(name: str, real: str, draw, class_names, attribute_names, max_length: int, size, val_size,
               test_size, seed) -> GroupDataset:
    """Build a text dataset whose inputs ``draw(y, s, rng)`` generates per split."""
    max_length = check_int(name, "max_length", max_length, *MAX_LENGTH_BOUNDS["max_length"])
    counts = split_group_counts(name, real, {"train": size, "val": val_size, "test": test_size})
    streams = split_streams(name, seed)
    splits = {}
    for split in SPLITS:
        y, s = group_labels(streams[split], counts[split], len(attribute_names))
        splits[split] = Split(draw(y, s, streams[split]), y, s)
    return GroupDataset(
        name=name, modality="text", splits=splits, class_names=class_names, attribute_names=attribute_names,
        average="pooled", max_length=max_length, meta={"embedded": True, "mirrors": real, "seed": seed},
    )


@register_dataset("synthetic-civilcomments", modality="text",
                  check_options=options_check("synthetic-civilcomments", "civilcomments", MAX_LENGTH_BOUNDS))
def synthetic_civilcomments(size: int = 2000, val_size: int = 1000, test_size: int = 2000,
                            seed: int = 0, max_length: int = 32) -> GroupDataset:
    """CivilComments analogue: comments whose judgement word marks them neutral or toxic; identity
    terms (muslim, christian, jewish, black, white, gay, lesbian, transgender, female, male) mark the attribute.

    Group counts follow CivilComments' Table 2 columns (toxic comments are 11% of training, 16% of
    those with an identity term). Inputs are strings of at most 20 words; ``max_length`` 32 covers them (the
    real CivilComments loader pads to 220: set 220 to train on inputs of that size).
    """
    return _generated("synthetic-civilcomments", "civilcomments", _civil_texts, ("neutral", "toxic"),
                      ("no identity", "identity"), max_length, size, val_size, test_size, seed)


@register_dataset("synthetic-multinli", modality="text",
                  check_options=options_check("synthetic-multinli", "multinli", MAX_LENGTH_BOUNDS))
def synthetic_multinli(size: int = 2000, val_size: int = 1500, test_size: int = 3000,
                       seed: int = 0, max_length: int = 48) -> GroupDataset:
    """MultiNLI analogue: (premise, hypothesis) pairs whose hypothesis predicate marks contradiction,
    entailment or neither; nobody/no/never/nothing in the hypothesis mark the attribute.

    Group counts follow MultiNLI's Table 2 columns (classes balanced; negation in 7% of training
    pairs, 76% of them contradictions; the two smallest groups are 0.7% and 0.9% of test, hence the
    larger default evaluation splits). ``max_length`` 48 covers both sentences with BERT's special tokens (the
    real MultiNLI loader pads to 128).
    """
    return _generated("synthetic-multinli", "multinli", _nli_pairs, ("contradiction", "entailment", "neither"),
                      ("no negation", "negation"), max_length, size, val_size, test_size, seed)
