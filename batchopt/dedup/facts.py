"""Facts: what the guards (`guards.py`) compare, pulled out of a text.

`extract` finds the facts an answer depends on (numbers, money amounts, codes, dates, negation,
opposite words such as big/small or add/remove, request actions, named things) and the text's
wording for the `swaps` guard (`swaps.py`).

One tokenizer pass splits every text into spans that belong to exactly one guard: the "20" of
"$20" is an amount, not a number, and the "12" of "AB-12" is a code. So switching one guard off
lets exactly its kind of difference through and no other guard picks it up instead.
"""

from __future__ import annotations

import dataclasses
import gc
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from batchopt.dedup import lexicon as lex


@dataclasses.dataclass(frozen=True)
class GuardConfig:
    """Which guards may veto a merge; each one is switchable from the pipeline YAML."""

    numbers: bool = True  # any differing number / order id / quantity
    amounts: bool = True  # money amounts with currency ($20 vs $200, 20 EUR)
    codes: bool = True  # ids/codes like T-000123, SKU AB-12, emails, URLs
    dates: bool = True  # dates, times, weekdays, months, today/tomorrow
    negation: bool = True  # another count of negations (not, no, never, n't, cannot, without)
    entities: bool = True  # differing capitalised names (products, places) and vocabulary terms
    vocabulary: tuple[str, ...] = ()  # extra terms that must match, case-insensitive
    opposites: bool = True  # one side says big/early/add/upgrade, the other small/late/remove/...
    actions: bool = True  # each side asks for something the other does not (cancel vs refund)
    swaps: bool = True  # the same wording with one ordinary word swapped (strap vs spare filter)


@dataclasses.dataclass(frozen=True)
class Facts:
    """What `extract` found in one text; two texts may merge only if their facts agree."""

    numbers: frozenset[str] = frozenset()
    amounts: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    dates: frozenset[str] = frozenset()
    negations: int = 0  # how many negation words: "not" added to a text with "never" counts
    opposites: frozenset[str] = frozenset()  # "<pair>+" / "<pair>-": which side of which pair
    actions: frozenset[str] = frozenset()  # request families named (`lexicon.ACTIONS`)
    entities: frozenset[str] = frozenset()  # lower-cased capitalised words
    terms: frozenset[str] = frozenset()  # vocabulary terms present
    words: str = " "  # " w1 w2 ... ": every lower-cased word, to find an entity typed lower-case
    wording: str = ""  # lower-case words in order: "#" for a fact, "^name" for a name (`swaps`)


_TOKEN_RE = re.compile(lex.TOKEN_PATTERN)
_FULL = [(kind, re.compile(pattern, re.IGNORECASE)) for kind, pattern in lex.KINDS[:-2]]
_ORDINAL = re.compile(rf"\d+{lex.ORD}", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")
_LETTERS = re.compile("[a-z]+")
_SPLIT = re.compile(r"[-_/]")
_POSSESSIVE = r"'s\b"
_NON_WORD = r"[\W_]+"


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return Decimal(0)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _amount(span: str, prefix: bool) -> str:
    low = span.lower()
    match = re.search(rf"{lex.NUM}|\d+", low)
    assert match is not None
    value = _decimal(match.group())
    head, tail = low[: match.start()].strip(), low[match.end() :].strip()
    if tail.startswith("k") and (prefix or tail[1:].strip()):
        value *= 1000
        tail = tail[1:].strip()
    currency = lex.CURRENCIES.get(head if prefix else tail, head if prefix else tail)
    if currency.endswith("/100"):
        currency, value = currency[:-4], value / 100
    return f"{currency}:{_plain(value)}"


def _date(kind: str, span: str) -> str:
    low = span.lower()
    numbers = [int(n) for n in _DIGITS.findall(low)]
    if kind == "iso":
        return f"{numbers[0]}-{numbers[1]}-{numbers[2]}"
    if kind == "numdate":
        year = (numbers[2] + 2000 if numbers[2] < 100 else numbers[2]) if len(numbers) > 2 else "*"
        return f"n:{numbers[0]}/{numbers[1]}/{year}"
    if kind == "time":
        low = low.replace(".", "")
        hour, minute = numbers[0], numbers[1] if len(numbers) > 1 else 0
        if low.endswith("pm") and hour < 12:
            hour += 12
        elif low.endswith("am") and hour == 12:
            hour = 0
        return f"t{hour}:{minute:02d}"
    month = next(lex.MONTHS[w] for w in _LETTERS.findall(low) if w in lex.MONTHS)
    if kind == "month_year":
        return f"{numbers[0]}-{month}-*"
    year = numbers[1] if len(numbers) > 1 else "*"
    return f"{year}-{month}-{numbers[0]}"


@lru_cache(maxsize=64)
def _vocabulary_pattern(vocabulary: tuple[str, ...]) -> re.Pattern[str] | None:
    terms = sorted({" ".join(t.casefold().split()) for t in vocabulary if t.strip()}, key=len)
    if not terms:
        return None
    body = "|".join(r"\s+".join(map(re.escape, t.split())) for t in reversed(terms))
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


def _fold(text: str) -> str:
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")


def extract(text: str, config: GuardConfig = GuardConfig()) -> Facts:
    """The facts of `text` that the guards enabled in `config` compare."""
    text = _fold(text)
    words = ""
    if config.entities or config.swaps:
        words = re.sub(_NON_WORD, " ", re.sub(_POSSESSIVE, "", text.lower()))
    return _facts(text, _TOKEN_RE.findall(text), words, config)


def extract_many(texts: list[str], config: GuardConfig = GuardConfig()) -> list[Facts]:
    """`extract` for many texts at once: the tokenizing runs in polars (Rust), same result."""
    if not texts:
        return []
    import polars as pl

    folded = pl.Series(texts, dtype=pl.String).str.normalize("NFKC").str.replace_all("[’‘]", "'")
    tokens = folded.str.extract_all(lex.TOKEN_PATTERN).to_list()
    if config.entities or config.swaps:
        lowered = folded.str.to_lowercase().str.replace_all(_POSSESSIVE, "")
        words = lowered.str.replace_all(_NON_WORD, " ").to_list()
    else:
        words = [""] * len(texts)
    plain = folded.to_list()
    with gc_paused():
        return [_facts(*row, config) for row in zip(plain, tokens, words, strict=True)]


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: building many small acyclic objects (facts, sets)
    otherwise makes the collector rescan them all, doubling the time of `extract_many`."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_NUMBERS, _AMOUNTS, _CODES, _DATES = range(4)


def _facts(text: str, tokens: list[str], words: str, config: GuardConfig) -> Facts:
    found: tuple[set[str], ...] = (set(), set(), set(), set())  # numbers, amounts, codes, dates
    entities: set[str] = set()
    opposites: set[str] = set()
    actions: set[str] = set()
    negations = 0
    at_start = True  # the next word opens a sentence
    previous = ""
    wording: list[str] = []  # ordinary words as they are, "#" for anything a guard looks at
    say = wording.append if config.swaps else _ignore
    cached = _TOKENS.get
    for token in tokens:
        info = cached(token) or _token(token)
        if info[0] == "plain":  # most tokens: an ordinary lower-case word
            previous, at_start = info[1], False
            say(info[1])
            continue
        if info[0] != "words":
            previous = ""
            at_start = info[0] == "stop"
            if not at_start:
                found[info[1]].add(info[2])
                say("#")
            continue
        for category, value, low in info[1]:
            fact = True
            if category == "neg":
                negations += 1
            elif category == "fact" or (category == "may" and not at_start):
                found[_DATES if category != "fact" else value[0]].add(value[-1])
            elif category == "opp":
                opposites.add(value)
            elif category == "act":
                actions.add(value)
            elif category == "one" and previous not in lex.ONE_PRONOUN_AFTER:
                found[_NUMBERS].add("1")
            elif category == "filler":
                if at_start:
                    continue  # "Hi team, Where is ...": the sentence starts after the greeting
                fact = False
            elif category == "shaped" or (category == "cap" and not at_start):
                entities.add(value)
                fact = False
                say("^" + low)  # a name: the `entities` guard's, but it aligns the wording
            else:  # an ordinary word: "plain", a capital opening a sentence, "one" as a pronoun
                fact = False
                say(low)
            if fact:
                say("#")
            previous, at_start = low, False
    return _kept(config, text, words, wording, found, negations, opposites, actions, entities)


def _kept(
    config: GuardConfig,
    text: str,
    words: str,
    wording: list[str],
    found: tuple[set[str], ...],
    negations: int,
    opposites: set[str],
    actions: set[str],
    entities: set[str],
) -> Facts:
    """What `_facts` collected, as `Facts`: a guard switched off sees none of its facts; the
    vocabulary terms are looked up in the whole text."""
    terms: frozenset[str] = frozenset()
    if config.entities:
        pattern = _vocabulary_pattern(config.vocabulary)
        if pattern is not None:
            terms = frozenset(" ".join(t.casefold().split()) for t in pattern.findall(text))
    empty: frozenset[str] = frozenset()
    return Facts(
        numbers=frozenset(found[_NUMBERS]) if config.numbers else empty,
        amounts=frozenset(found[_AMOUNTS]) if config.amounts else empty,
        codes=frozenset(found[_CODES]) if config.codes else empty,
        dates=frozenset(found[_DATES]) if config.dates else empty,
        negations=negations if config.negation else 0,
        opposites=frozenset(opposites) if config.opposites else empty,
        actions=frozenset(actions) if config.actions else empty,
        entities=frozenset(entities) if config.entities else empty,
        terms=terms,
        words=f" {words.strip()} " if config.entities or config.swaps else " ",
        wording=" ".join(w for w in wording if w not in lex.NOT_ENTITIES),
    )


def _ignore(word: str) -> None:
    pass


_TOKENS: dict[str, tuple] = {}  # token -> what it says, see `_token`


def _token(token: str) -> tuple:
    """("plain", lower), ("stop",), ("fact", field, value) or ("words", ((category, value,
    lower), ...)); remembered for the next text (up to a bound)."""
    kind = _classify(token)
    if kind == "stop":
        info: tuple = ("stop",)
    elif kind == "word":
        parts = tuple(_word(part) for part in _SPLIT.split(token) if part)
        info = (
            ("plain", parts[0][2])
            if len(parts) == 1 and parts[0][0] == "plain"
            else ("words", parts)
        )
    else:
        info = ("fact", *_fact(kind, token))
    if len(_TOKENS) > 500_000:
        _TOKENS.clear()
    _TOKENS[token] = info
    return info


def _word(span: str) -> tuple[str, object, str]:
    low = span.lower()
    if low in lex.NEGATIONS or low.endswith(("n't", "'nt")):
        return ("neg", None, low)
    if low in lex.DATE_WORDS:
        return ("fact", (_DATES, lex.DATE_WORDS[low]), low)
    if span == "May":
        return ("may", "*-5-*", low)
    if low in lex.MONTH_WORDS:
        return ("fact", (_DATES, f"*-{lex.MONTHS[low]}-*"), low)
    side = lex.OPPOSITES.get(low) or lex.misspelt_opposite(low)
    if side:
        return ("opp", side, low)
    if low == "one":
        return ("one", None, low)
    if low in lex.NOT_ENTITIES:
        return ("filler", None, low)
    if low in lex.NUMBER_WORDS or low in lex.MISSPELT_NUMBERS:
        number = lex.NUMBER_WORDS.get(low) or lex.MISSPELT_NUMBERS[low]
        return ("fact", (_NUMBERS, number), low)
    action = lex.action_of(low)
    if action is not None:
        return ("act", action, low)
    if span[0].isupper():
        name = (low[:-2] if low.endswith("'s") else low).replace("'", " ")  # as `words` splits
        if any(c.isupper() for c in span[1:]):  # CamelCase, ACRONYM: a name even first
            return ("shaped", name, low)
        return ("cap", name, low) if low not in lex.OPENERS else ("plain", None, low)
    return ("plain", None, low)


def _classify(token: str) -> str:
    if token.isdigit():
        return "number"
    if token[0] in ".!?;:\n":
        return "stop"
    if token.replace("'", "").replace("-", "").replace("_", "").replace("/", "").isalpha():
        return "word"
    for kind, pattern in _FULL:
        if pattern.fullmatch(token):
            return kind
    if _ORDINAL.fullmatch(token):
        return "ordinal"
    if any(c.isalpha() for c in token):
        return "code"
    return "number"


def _fact(kind: str, token: str) -> tuple[int, str]:
    if kind in ("url", "email"):
        return _CODES, token.lower().rstrip(".,;:!?)")
    if kind in ("amount_pre", "amount_post"):
        return _AMOUNTS, _amount(token, kind == "amount_pre")
    if kind in ("iso", "numdate", "time", "month_day", "day_month", "month_year"):
        return _DATES, _date(kind, token)
    if kind == "num_abbr":
        return _NUMBERS, _DIGITS.findall(token)[-1]
    if kind == "number" and "." in token:
        return _NUMBERS, _plain(_decimal(token))
    if kind == "code":
        return _CODES, token.lower().replace("-", "").replace("_", "")
    return _NUMBERS, token.lower().replace(",", "")
