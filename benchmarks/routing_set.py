"""A labelled set for the routing benchmark: support tickets to file under one category.

    from routing_set import make_splits
    train, evaluation = make_splits(train_rows=2000, eval_rows=4000, seed=11)

Each task is one ticket whose text opens with a unique marker, `Ticket TCK-11-000042:` (seed,
number), which the fake server's oracle matches, so every row's answer is decided on its own.
The right answer is one of six category labels (CATEGORIES); the wrong answers the oracle may
give instead are other labels and, sometimes, "I don't know." (a refusal a cascade's `refusal`
validator catches).

About 80% of the tasks are easy: one issue in one or two plain sentences. The rest are hard:

- multi-issue (about 60% of hard): two or three issues from different categories, joined by a
  connective ("Also,", "On top of that," ...) most of the time; the label is the issue the
  customer asks to have dealt with first, which is not always the first one mentioned;
- ambiguous (about 40% of hard): one short issue whose words point at two categories ("I sent
  the jacket back but was still charged $40": returns or billing).

Difficulty can be learnt from the text, but not perfectly: multi-issue tickets are longer and
use connectives, ambiguous ones are short; some easy tickets are long (a customer's back story)
and some use the same connectives ("I also tried restarting it"). So a length or keyword rule
catches most multi-issue tickets and few ambiguous ones, and an embedding classifier can learn
both.

Everything is a pure function of the seed: the same seed gives the same tasks, byte for byte.
The training and evaluation splits draw from the same templates with disjoint markers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

CATEGORIES = ("billing", "shipping", "account", "technical", "returns", "product")
REFUSAL = "I don't know."
HARD_SHARE = 0.2
MULTI_SHARE_OF_HARD = 0.6
LONG_EASY_SHARE = 0.15  # easy tickets padded with a back story
CONNECTIVE_EASY_SHARE = 0.10  # easy tickets with a harmless "also"
EVAL_FIRST_ID = 0
TRAIN_FIRST_ID = 500_000

PRODUCTS = (
    "PulseBand 2", "Summit Shell jacket", "HearthTemp thermostat", "AeroBrew kettle",
    "Nimbus router", "TrailMax boots", "Lumen desk lamp", "Orbit earbuds", "Vela backpack",
    "Kite smart plug",
)  # fmt: skip

# One clear issue per line, by category. {p} product, {o} order number, {a} {b} amounts.
ISSUES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for order #{o}",
        "my card was billed ${a} but the price was ${b}",
        "the invoice for order #{o} shows the wrong VAT number",
        "my subscription renewed at ${a} although I cancelled it",
        "I need a corrected invoice for order #{o} for my company",
        "there is a charge of ${a} on my statement I do not recognise",
        "the discount code was not applied and I paid ${a} too much",
    ),
    "shipping": (
        "order #{o} has still not arrived",
        "the tracking for order #{o} has not moved in a week",
        "the courier left my parcel at the wrong address",
        "can I change the delivery address for order #{o}",
        "order #{o} shows delivered but there is nothing at my door",
        "how long does express delivery take to Norway",
        "only half of order #{o} was delivered",
    ),
    "account": (
        "I cannot log in to my account",
        "the password reset link never reaches my inbox",
        "please change the email address on my account",
        "I want to delete my account and my data",
        "my account was locked after too many attempts",
        "two-factor codes are not accepted when I sign in",
        "how do I merge my two customer accounts",
    ),
    "technical": (
        "my {p} does not turn on any more",
        "the app crashes every time I open the settings",
        "the {p} keeps dropping the wifi connection",
        "the firmware update failed halfway on my {p}",
        "the {p} makes a loud buzzing noise",
        "the {p} does not pair with my phone",
        "the battery of my {p} drains in an hour",
    ),
    "returns": (
        "I would like to return the {p}",
        "how do I send back order #{o}",
        "the {p} is the wrong size and I want an exchange",
        "please send me a return label for order #{o}",
        "can I still return the {p} after 40 days",
        "I want to swap the {p} for another colour",
        "what is your return policy for opened items",
    ),
    "product": (
        "does the {p} work with Apple Home",
        "is the {p} waterproof",
        "what is the battery life of the {p}",
        "when will the {p} be back in stock",
        "what are the dimensions of the {p}",
        "is there a bigger version of the {p}",
        "which charger does the {p} need",
    ),
}

# Short issues whose words point at two categories; the first is the right label.
AMBIGUOUS: tuple[tuple[str, str, str], ...] = (
    ("billing", "returns", "I sent the {p} back but was still charged ${a}"),
    ("returns", "billing", "the refund for the {p} I returned is ${a} short"),
    ("shipping", "returns", "the {p} arrived broken in a crushed box"),
    ("technical", "account", "I cannot sign in to the app on my {p}"),
    ("account", "billing", "someone used my account to place order #{o}"),
    ("billing", "shipping", "I paid ${a} for express delivery and it came late"),
    ("returns", "shipping", "the return label for order #{o} is for the wrong country"),
    ("product", "technical", "the {p} does not seem to support the feature you advertised"),
    ("technical", "returns", "the replacement {p} has the same fault as the first one"),
    ("shipping", "billing", "customs asked me for ${a} before they would deliver order #{o}"),
    ("account", "technical", "my saved devices disappeared from my profile after the update"),
    ("product", "returns", "the {p} looks nothing like the photos on your site"),
)

OPENERS = ("", "", "Hi, ", "Hello, ", "Hello team, ", "Good morning, ", "Dear support, ")
CLOSERS = ("", "", " Thanks.", " Thank you!", " Please help.", " Regards, Sam.")
STORIES = (
    "I have been a customer for years and usually everything works fine, so this surprised me. ",
    "I bought this as a birthday present for my sister and her party is next weekend. ",
    "I already spoke to someone on the phone last Tuesday but nothing happened since then. ",
    "I work night shifts so email is the best way to reach me, I rarely pick up the phone. ",
    "We moved house last month and I am still sorting everything out, so bear with me. ",
)
HARMLESS_ALSO = (
    " I also tried again this morning.",
    " I have also checked your help pages.",
    " Also, my order number is in the subject.",
)
CONNECTIVES = ("Also, ", "On top of that, ", "And another thing: ", "Separately, ",
               "Besides that, ", "")  # fmt: skip
FIRST_ASKS = ("Please deal with {x} first.", "The most urgent is {x}.",
              "{x} matters most to me.")  # fmt: skip
FOCUS = {
    "billing": "the charge",
    "shipping": "the delivery",
    "account": "my account",
    "technical": "the fault",
    "returns": "the return",
    "product": "the product question",
}


@dataclass(frozen=True)
class Task:
    """One labelled ticket."""

    ticket_id: str  # e.g. "TCK-11-000042" (seed 11, number 42)
    text: str  # the whole ticket, marker included: what the model is asked
    answer: str  # the right label
    wrong: tuple[str, ...]  # what a wrong model says instead
    difficulty: str  # "easy" or "hard"
    kind: str  # "single", "long", "ambiguous" or "multi"

    @property
    def match(self) -> str:
        return f"Ticket {self.ticket_id}:"


def marker(number: int, seed: int) -> str:
    """The ticket id; the seed is part of it, so each seed draws the fake's answers anew."""
    return f"TCK-{seed}-{number:06d}"


def _fill(template: str, rng: random.Random) -> str:
    amount = rng.randrange(12, 400)
    return template.format(
        p=rng.choice(PRODUCTS),
        o=rng.randrange(10_000, 99_999),
        a=amount,
        b=amount - rng.randrange(5, 11),
    )


QUESTION_WORDS = ("does ", "is ", "what ", "when ", "how ", "can ", "which ")


def _stop(clause: str) -> str:
    return "?" if clause.lower().startswith(QUESTION_WORDS) else "."


def _sentence(clause: str) -> str:
    return clause[0].upper() + clause[1:] + _stop(clause)


def _lower_first(text: str) -> str:
    return text if text.startswith("I ") else text[0].lower() + text[1:]


def _wrong(label: str, rng: random.Random, confusable: str | None = None) -> tuple[str, ...]:
    """Two other labels (the confusable one first, if any) and a refusal."""
    others = [c for c in CATEGORIES if c not in (label, confusable)]
    picks = [confusable] if confusable else [rng.choice(others)]
    picks.append(rng.choice([c for c in others if c not in picks]))
    return (*picks, REFUSAL)


def _easy(rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    label = rng.choice(CATEGORIES)
    body = _sentence(_fill(rng.choice(ISSUES[label]), rng))
    roll = rng.random()
    if roll < LONG_EASY_SHARE:
        body = rng.choice(STORIES) + body + rng.choice(("", " " + rng.choice(STORIES).strip()))
        kind = "long"
    else:
        kind = "single"
    if rng.random() < CONNECTIVE_EASY_SHARE:
        body += rng.choice(HARMLESS_ALSO)
    opener = rng.choice(OPENERS)
    text = opener + (_lower_first(body) if opener else body) + rng.choice(CLOSERS)
    return text, kind, _wrong(label, rng) + (label,)


def _multi(rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    labels = rng.sample(CATEGORIES, rng.choice((2, 2, 3)))
    sentences = []
    for i, label in enumerate(labels):
        clause = _fill(rng.choice(ISSUES[label]), rng)
        lead = rng.choice(CONNECTIVES) if i else ""
        start = _lower_first(clause) if lead else clause[0].upper() + clause[1:]
        sentences.append(lead + start + _stop(clause))
    main = rng.randrange(len(labels))
    first = rng.choice(FIRST_ASKS).format(x=FOCUS[labels[main]])
    opener = rng.choice(OPENERS)
    body = " ".join(sentences)
    text = opener + (_lower_first(body) if opener else body) + " " + first[0].upper() + first[1:]
    text += rng.choice(CLOSERS)
    confusable = labels[(main + 1) % len(labels)]
    return text.strip(), "multi", _wrong(labels[main], rng, confusable) + (labels[main],)


def _ambiguous(rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    label, confusable, template = rng.choice(AMBIGUOUS)
    body = _sentence(_fill(template, rng))
    opener = rng.choice(OPENERS)
    text = opener + (_lower_first(body) if opener else body) + rng.choice(CLOSERS)
    return text, "ambiguous", _wrong(label, rng, confusable) + (label,)


def make_tasks(n: int, seed: int, first_id: int = EVAL_FIRST_ID) -> list[Task]:
    """`n` tasks with markers first_id, first_id + 1, ...; about HARD_SHARE of them hard."""
    rng = random.Random(f"routing-set/{seed}/{first_id}")
    tasks = []
    for i in range(n):
        if rng.random() < HARD_SHARE:
            maker = _multi if rng.random() < MULTI_SHARE_OF_HARD else _ambiguous
            difficulty = "hard"
        else:
            maker, difficulty = _easy, "easy"
        body, kind, labels = maker(rng)
        *wrong, answer = labels
        ticket = marker(first_id + i, seed)
        tasks.append(
            Task(ticket, f"Ticket {ticket}: {body}", answer, tuple(wrong), difficulty, kind)
        )
    return tasks


def make_splits(
    train_rows: int = 2000, eval_rows: int = 4000, seed: int = 11
) -> tuple[list[Task], list[Task]]:
    """(training, evaluation): disjoint markers, the same templates and mix."""
    if eval_rows > TRAIN_FIRST_ID - EVAL_FIRST_ID:
        raise ValueError(f"eval_rows must be at most {TRAIN_FIRST_ID - EVAL_FIRST_ID}")
    return (
        make_tasks(train_rows, seed, TRAIN_FIRST_ID),
        make_tasks(eval_rows, seed, EVAL_FIRST_ID),
    )


def oracle_items(tasks: list[Task]) -> list[dict[str, Any]]:
    """The fake server's oracle items for `tasks` (see batchopt.fakeapi.oracle)."""
    return [
        {"match": t.match, "answer": t.answer, "wrong": list(t.wrong), "difficulty": t.difficulty}
        for t in tasks
    ]


def normalise_answer(text: str | None) -> str:
    """An answer as compared with the label: trimmed, lower case, no final full stop."""
    return " ".join((text or "").split()).strip().rstrip(".").casefold()


if __name__ == "__main__":
    train, evaluation = make_splits()
    for task in evaluation[:12]:
        print(f"{task.difficulty:4} {task.kind:9} {task.answer:9} {task.text}")
    hard = sum(t.difficulty == "hard" for t in evaluation)
    print(
        f"{len(evaluation)} evaluation rows, {hard / len(evaluation):.1%} hard; "
        f"{len(train)} training rows"
    )
