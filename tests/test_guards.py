from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchopt.dedup.guards import (
    GUARD_ORDER,
    GuardConfig,
    extract,
    extract_many,
    veto,
    veto_many,
)

# (a, b, the guard that must refuse the merge): each pair differs in one fact only.
VETOED = [
    ("I was charged $20 for my order", "I was charged $200 for my order", "amounts"),
    ("Refund 20 EUR please", "Refund $20 please", "amounts"),
    ("You billed me 15 dollars", "You billed me 150 dollars", "amounts"),
    ("Refund order #10233", "Refund order #10234", "numbers"),
    ("I need 2 more chairs", "I need 3 more chairs", "numbers"),
    ("I was charged twice", "I was charged three times", "numbers"),
    ("Is SKU AB-12 in stock?", "Is SKU AB-13 in stock?", "codes"),
    ("Where is ticket T-000123?", "Where is ticket T-000124?", "codes"),
    ("Reset the password for anna@mail.com", "Reset the password for anna2@mail.com", "codes"),
    ("See https://shop.example/a", "See https://shop.example/b", "codes"),
    ("Deliver it on Monday", "Deliver it on Tuesday", "dates"),
    ("Cancel my plan on March 3", "Cancel my plan on March 13", "dates"),
    ("Book a repair at 10am", "Book a repair at 11am", "dates"),
    ("I bought it in June", "I bought it in July", "dates"),
    ("Deliver it tomorrow", "Deliver it today", "dates"),
    ("The part fits my bike", "The part does not fit my bike", "negation"),
    ("I can log in", "I can't log in", "negation"),
    ("The lamp works", "The lamp never works", "negation"),
    ("Ship it with the cable", "Ship it without the cable", "negation"),
    ("The shoes are too big", "The shoes are too small", "opposites"),
    ("Please add gift wrapping", "Please remove gift wrapping", "opposites"),
    ("Can it arrive earlier?", "Can it arrive later?", "opposites"),
    ("I want to upgrade my plan", "I want to dwongrade my plan", "opposites"),  # typo
    ("Can it be delivered earlier?", "Can it be delivered ltaer?", "opposites"),  # swapped
    ("My jacket runs samll", "My jacket runs large", "opposites"),
    ("Can I pick up order 5 in Austin?", "Please ship order 5 to Austin", "actions"),
    ("Please cancel order 5", "Where is the refund for order 5?", "actions"),
    ("Please cnacel order 5", "Please track order 5", "actions"),  # typo
    ("I was charged $15, is that the right price?", "A duplicate charge of $15", "actions"),
    ("My Lumen lamp is broken", "My AeroBlend blender is broken", "entities"),
    ("Is the store in Denver open?", "Is the store in Austin open?", "entities"),
    ("Do you ship to Canada?", "Do you ship to Mexico?", "entities"),
]

# Same facts in other words, formats and cases: no guard may object.
MERGEABLE = [
    ("I was charged $20", "You billed me 20 dollars"),
    ("Refund USD 20.00", "refund $20"),
    ("Order #10233 is late", "order no. 10233 is late"),
    ("I ordered two lamps", "I ordered 2 lamps"),
    ("Cancel on March 3rd", "cancel on the 3rd of March"),
    ("It arrived at 10am", "It arrived at 10:00 AM"),
    ("Deliver on Friday", "deliver on friday please"),
    ("The part does not fit", "The part doesn't fit"),
    ("I can't log in", "I cannot log in"),
    ("My TrailRunner shoes are too big", "the trailrunner shoes are way too large"),
    ("Hi, Where is my refund?", "Where's the refund?"),
    ("The Paris store is closed", "Is the store in Paris closed?"),
    ("SKU AB-12 please", "sku ab12 please"),
    ("I want a new one", "I want a replacement"),
    # one side names an action the other leaves implicit: no contrast, no veto
    ("Cancel order 5", "Order 5 by mistake, please cancel it and refund me"),
    ("Ship order 5 to Austin", "I moved to Austin, redirect order 5 to my new address"),
]


@pytest.mark.parametrize(("a", "b", "guard"), VETOED)
def test_each_guard_vetoes_its_kind(a: str, b: str, guard: str) -> None:
    assert veto(extract(a), extract(b)) == guard
    assert veto(extract(b), extract(a)) == guard


@pytest.mark.parametrize(("a", "b", "guard"), VETOED)
def test_switching_a_guard_off_lets_its_kind_merge(a: str, b: str, guard: str) -> None:
    config = dataclasses.replace(GuardConfig(), **{guard: False})
    assert veto(extract(a, config), extract(b, config), config) is None


@pytest.mark.parametrize(("a", "b"), MERGEABLE)
def test_equal_facts_pass(a: str, b: str) -> None:
    assert veto(extract(a), extract(b)) is None


def test_amounts_numbers_and_codes_do_not_double_count() -> None:
    facts = extract("Refund $20 for SKU AB-12, order #10233, on March 3rd")
    assert facts.amounts == {"usd:20"}
    assert facts.codes == {"ab12"}
    assert facts.numbers == {"10233"}
    assert facts.dates == {"*-3-3"}


def test_vocabulary_terms_must_match_case_insensitively() -> None:
    config = GuardConfig(vocabulary=("gold plan", "silver plan"))
    gold = extract("please move me to the gold plan", config)
    assert veto(gold, extract("please move me to the silver plan", config), config) == "entities"
    assert veto(gold, extract("Please move me to the Gold  Plan", config), config) is None
    plain = extract("please move me to the gold plan")  # no vocabulary: lower-case words pass
    assert veto(plain, extract("please move me to the silver plan")) is None


def test_sentence_start_and_greetings_are_not_names() -> None:
    assert extract("Hi team, Where is my refund? Thanks").entities == frozenset()
    assert extract("Refund please. My order is late").entities == frozenset()
    assert extract("I bought it in Paris").entities == {"paris"}
    assert extract("TrailRunner shoes hurt").entities == {"trailrunner"}


def test_extract_many_matches_extract() -> None:
    texts = [a for pair in VETOED for a in pair[:2]] + [a for pair in MERGEABLE for a in pair]
    texts += ["", "   ", "Ｒｅｆｕｎｄ $２０ don’t", "café №5 😀 O'Brien's"]
    for config in (GuardConfig(), GuardConfig(entities=False, vocabulary=("x",))):
        assert extract_many(texts, config) == [extract(t, config) for t in texts]


def test_veto_many_matches_veto() -> None:
    texts = [a for pair in VETOED for a in pair[:2]] + [a for pair in MERGEABLE for a in pair]
    facts = [extract(t) for t in texts]
    rng = np.random.default_rng(0)
    left, right = rng.integers(0, len(texts), (2, 500))
    codes = veto_many(facts, left, right)
    for code, a, b in zip(codes.tolist(), left.tolist(), right.tolist(), strict=True):
        expected = veto(facts[a], facts[b])
        assert (GUARD_ORDER[code] if code >= 0 else None) == expected


FRAGMENTS = st.sampled_from([
    "refund", "order", "#10233", "#10234", "$20", "$200", "20 EUR", "two", "2", "twice",
    "AB-12", "ab12", "T-000123", "a@b.com", "Monday", "March 3rd", "3 March", "10am", "not",
    "can't", "never", "big", "small", "earlier", "later", "Denver", "Austin", "denver",
    "TrailRunner", "the", "my", "is", "please", "Hi,", ".", "?", "Thanks", "Lumen", "lamp",
])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAGMENTS, max_size=12), st.lists(FRAGMENTS, max_size=12))
def test_veto_is_symmetric(a: list[str], b: list[str]) -> None:
    fa, fb = extract(" ".join(a)), extract(" ".join(b))
    assert veto(fa, fb) == veto(fb, fa)
    assert veto(fa, fa) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_any_text_extracts_and_veto_is_symmetric(a: str, b: str) -> None:
    fa, fb = extract(a), extract(b)
    assert veto(fa, fb) == veto(fb, fa)
    assert veto(fa, fa) is None


def test_identical_text_is_never_vetoed_even_when_tokens_split_oddly() -> None:
    for text in ("£0B", "Order 12AB from Oslo", "the KX-2 fits"):
        facts = extract(text)
        assert veto(facts, facts) is None, text
