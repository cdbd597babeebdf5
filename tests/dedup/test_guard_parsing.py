"""The fact guards read times, amounts and dates as values, not as text (issue 20, point 15:
"treating 3pm as 3am, or "$2k" as $200, fails no test"). Two texts that state one value in two
notations may merge; two that state different values may not, and the guard named is the one
for that kind of fact; likewise for the words that are facts or names (months, "one", greetings,
possessives, capitals) and for what the `swaps` guard counts as a swapped word. Held through
`veto`, so the facts' inner spelling is free to change."""

from __future__ import annotations

import pytest

from batchopt.dedup import facts
from batchopt.dedup.guards import extract, veto


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> None:
    """Each test reads its words afresh: a token met in an earlier test is otherwise answered
    from `facts._TOKENS`, and the mutation run (which gives a function only the tests that
    reached it) would not give that test the tokenizer's mutants."""
    facts._TOKENS.clear()


def _veto(a: str, b: str) -> str | None:
    return veto(extract(a), extract(b))


SAME_VALUE = [
    ("Please call me back at 3pm", "Please call me back at 15:00"),
    ("Please call me back at 3 p.m.", "Please call me back at 3pm"),
    ("Please call me back at 3:30pm", "Please call me back at 15:30"),
    ("The courier came at 12am", "The courier came at 00:00"),
    ("The courier came at 12pm", "The courier came at 12:00"),
    ("The courier came at 9am", "The courier came at 09:00"),
    ("I was charged $2k for the sofa", "I was charged $2,000 for the sofa"),
    ("I was charged $2 k for the sofa", "I was charged $2000 for the sofa"),
    ("I was charged 2k eur for the sofa", "I was charged 2000 EUR for the sofa"),
    ("I was charged 50 cents extra", "I was charged $0.50 extra"),
    ("I was charged $2.50 extra", "I was charged $2.5 extra"),
    ("Refund £5 please", "Refund 5 GBP please"),
    ("It shipped on 3/5/24", "It shipped on 3/5/2024"),
    ("It shipped on 5 March 2024", "It shipped on 2024-03-05"),
    ("It shipped on March 5th, 2024", "It shipped on 2024-03-05"),
    ("I was charged 20k€ for the sofa", "I was charged €20,000 for the sofa"),
    ("The shelf is 2.50 m long", "The shelf is 2.5 m long"),
    ("Send 1,000 units", "Send 1000 units"),
    ("Scan the label SKU AB_12", "Scan the label SKU AB12"),
    ("Details at www.shop.com/Item.", "Details at WWW.SHOP.COM/item"),
    ("The lid did'nt fit", "The lid didn't fit"),
    ("The lift-gate broke", "The lift gate broke"),
    ("Turn it on/off", "Turn it on off"),
    ("Send the e_mail again", "Send the e mail again"),
    ("May I return it", "Can I return it"),
    ("I want this one", "I want this lamp"),
    ("The shelf is 10.0 m long", "The shelf is 10 m long"),
    ("I ordered one lamp", "I ordered 1 lamp"),
]

OTHER_VALUE = [
    ("Please call me back at 3pm", "Please call me back at 3am", "dates"),
    ("Please call me back at 3pm", "Please call me back at 3:00", "dates"),
    ("The courier came at 12am", "The courier came at 12pm", "dates"),
    ("The courier came at 12am", "The courier came at 12:00", "dates"),
    ("Please call me back at 3:30pm", "Please call me back at 3:45pm", "dates"),
    ("I was charged $2k for the sofa", "I was charged $200 for the sofa", "amounts"),
    ("I was charged $2k for the sofa", "I was charged $2 for the sofa", "amounts"),
    ("I was charged 2k eur for the sofa", "I was charged 2 eur for the sofa", "amounts"),
    ("I was charged $2k for the sofa", "I was charged 2k eur for the sofa", "amounts"),
    ("I was charged 50 cents extra", "I was charged $50 extra", "amounts"),
    ("I was charged $1,250 extra", "I was charged $1,520 extra", "amounts"),
    ("It shipped on 3/5/24", "It shipped on 5/3/24", "dates"),
    ("It shipped on 3/5/24", "It shipped on 4/5/24", "dates"),
    ("It shipped on 3/5", "It shipped on 3/6", "dates"),
    ("It shipped on 1/2/100", "It shipped on 1/2/2100", "dates"),
    ("I was charged 20k€ for the sofa", "I was charged 20k$ for the sofa", "amounts"),
    ("The shelf is 2.50 m long", "The shelf is 2.05 m long", "numbers"),
    ("Can you deliver it in May", "Can you deliver it in June", "dates"),
    ("I ordered one lamp", "I ordered two lamps", "numbers"),
    ("The lid did'nt fit", "The lid did fit", "negation"),
    ("It shipped on 3/5/24", "It shipped on 3/5/2023", "dates"),
    ("It shipped on 2024-03-05", "It shipped on 2024-03-06", "dates"),
    ("It shipped on 2024-03-05", "It shipped on 2023-03-05", "dates"),
    ("It shipped on March 5th", "It shipped on March 6th", "dates"),
    ("It shipped on 5 March 2024", "It shipped on 5 March 2023", "dates"),
    ("It shipped in March 2024", "It shipped in March 2023", "dates"),
    ("It shipped in March 2024", "It shipped in May 2024", "dates"),
]


@pytest.mark.parametrize(("a", "b"), SAME_VALUE)
def test_one_value_in_two_notations_may_merge(a: str, b: str) -> None:
    assert _veto(a, b) is None
    assert _veto(b, a) is None


@pytest.mark.parametrize(("a", "b", "guard"), OTHER_VALUE)
def test_another_value_is_vetoed_by_its_guard(a: str, b: str, guard: str) -> None:
    assert _veto(a, b) == guard
    assert _veto(b, a) == guard


# How words become facts and names (the guard parsing beyond values): "May" is the month only
# capitalised inside a sentence, "one" is the number 1 unless a pronoun, greetings and
# capitalised function words name nothing, a possessive is its name, a capitalised word inside a
# sentence (CamelCase or an ACRONYM even first) is a name, a hyphenated word is its parts. The
# `swaps` guard counts ordinary words only: one fact in digits or in words, a sign-off, a hyphen
# or a name's capital changes no count of what the two texts share.
SAME_WORDS = [
    ("The lamp may be broken", "The lamp might be broken"),  # "may", the verb
    ("Sorry, Our lamp is broken", "Sorry, my lamp is broken"),  # "Our" names nothing
    ("Is O'Brien's pharmacy open on Sunday?", "is o'brien's pharmacy open on sunday?"),
]

OTHER_WORDS = [
    ("Can you deliver it in May?", "Can you deliver it soon?", "dates"),
    ("My Xbox controller is broken", "My Xperia controller is broken", "entities"),
    ("Do you have Plain yogurt in stock?", "Do you have greek yogurt in stock?", "entities"),
    ("TV arrived broken", "Laptop arrived broken", "entities"),  # an ACRONYM opening
    ("I bought the new Lumen lamp", "I bought the new Nomad lamp", "entities"),  # after "new"
    ("I need the x-large shirt", "I need the x-small shirt", "opposites"),
    ("Re-ship order 5 please", "Cancel order 5 please", "actions"),  # the part after "Re-"
    ("Hello, Parcel arrived damaged", "Hello, Box arrived damaged", "swaps"),  # no names
    ("I need 2 chairs and a desk", "I need two chairs and a lamp", "swaps"),
    ("The strap you sent is broken", "The filter you sent is broken, thanks", "swaps"),
    ("Do you have an e-bike strap?", "do you have an e bike filter?", "swaps"),
    ("The strap for the Lumen broke", "the filter for the lumen broke", "swaps"),
]


@pytest.mark.parametrize(("a", "b"), SAME_WORDS)
def test_the_same_words_may_merge(a: str, b: str) -> None:
    assert _veto(a, b) is None
    assert _veto(b, a) is None


@pytest.mark.parametrize(("a", "b", "guard"), OTHER_WORDS)
def test_other_words_are_vetoed_by_their_guard(a: str, b: str, guard: str) -> None:
    assert _veto(a, b) == guard
    assert _veto(b, a) == guard


def test_greetings_and_function_words_name_nothing_acronyms_do() -> None:
    assert extract("Hello, Parcel arrived damaged").entities == frozenset()
    assert extract("Sorry, Our lamp is broken").entities == frozenset()
    assert extract("TV stopped working").entities  # an ACRONYM is a name, even first
