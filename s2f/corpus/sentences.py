"""Varied English sentences for the synthetic speakers, from a small grammar (written for this
project; no external text). `sentence(rng)` draws one."""

from __future__ import annotations

import numpy as np

SUBJECTS = (
    "the old farmer", "my neighbour", "a young painter", "the small dog", "our teacher",
    "the quiet student", "her brother", "the night nurse", "a tired traveller", "the baker",
    "my grandmother", "the new manager", "a clever child", "the bus driver", "his sister",
    "the museum guide", "a local fisherman", "the team captain", "our landlord", "the pilot",
)
VERBS = (  # (past, base)
    ("carried", "carry"), ("painted", "paint"), ("found", "find"), ("repaired", "repair"),
    ("noticed", "notice"), ("described", "describe"), ("bought", "buy"), ("borrowed", "borrow"),
    ("cleaned", "clean"), ("opened", "open"), ("sold", "sell"), ("moved", "move"),
    ("wrapped", "wrap"), ("counted", "count"), ("hid", "hide"), ("measured", "measure"),
)
OBJECTS = (
    "a wooden chair", "the blue umbrella", "three fresh apples", "an old map of the city",
    "the heavy suitcase", "a basket of bread", "the broken clock", "two glass bottles",
    "a letter from home", "the garden gate", "a box of candles", "the silver spoon",
    "a pile of books", "the yellow kite", "a warm blanket", "the kitchen window",
    "a bag of coins", "the spare tyre", "a jar of honey", "the little boat",
)
PLACES = (
    "near the river", "before the storm", "on a cold morning", "after the long meeting",
    "in the crowded market", "at the end of the street", "behind the old church",
    "during the summer fair", "under the bridge", "late in the evening", "next to the station",
    "on the top floor", "at the harbour", "in the quiet library", "outside the bakery",
)
EVENTS = (
    "rain started", "bell rang", "lights went out", "train arrived", "wind picked up",
    "music stopped", "shop closed", "sun came out", "phone rang", "crowd cheered",
)
NUMBERS = ("two", "five", "ten", "twelve", "twenty", "forty", "ninety")

TEMPLATES = (
    "{S} {V} {O} {P}.",
    "{Pc}, {S} {V} {O}.",
    "Did {S} really {B} {O} {P}?",
    "I think {S} {V} {O}, but nobody was sure.",
    "When the {E}, {S} {V} {O}.",
    "It took {N} minutes to {B} {O}.",
    "Nobody expected {S} to {B} {O} {P}.",
    "Yesterday {S} {V} {O} and {S2} {V2} {O2}.",
    "Please ask {S} to {B} {O} {P}.",
    "We waited {N} minutes while {S} {V} {O}.",
)


def sentence(rng: np.random.Generator) -> str:
    """One sentence; the draw consumes a fixed number of values from `rng` per template."""
    t = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    v, v2 = VERBS[int(rng.integers(len(VERBS)))], VERBS[int(rng.integers(len(VERBS)))]
    place = PLACES[int(rng.integers(len(PLACES)))]
    text = t.format(
        S=SUBJECTS[int(rng.integers(len(SUBJECTS)))], S2=SUBJECTS[int(rng.integers(len(SUBJECTS)))],
        V=v[0], B=v[1], V2=v2[0], O=OBJECTS[int(rng.integers(len(OBJECTS)))],
        O2=OBJECTS[int(rng.integers(len(OBJECTS)))], P=place, Pc=place[0].upper() + place[1:],
        E=EVENTS[int(rng.integers(len(EVENTS)))], N=NUMBERS[int(rng.integers(len(NUMBERS)))],
    )
    return text[0].upper() + text[1:]
