"""Fact guards: cheap rules that forbid a semantic merge when two texts state different facts.

Embeddings place "refund order #10233" next to "refund order #10234" and "the part fits" next to
"the part does not fit"; merging them would ship a wrong answer. `extract` pulls the facts an
answer depends on out of a text (numbers, money amounts, codes, dates, negation, opposite words
such as big/small or add/remove, named things) and `veto` names the first guard that objects.
The last guard, `swaps`, compares the wording itself: the same sentence with one ordinary word
swapped for another ("the strap you sent" / "the spare filter you sent", "at the austin location"
/ "at the phoenix location" typed lower-case) asks about another thing.

One tokenizer pass splits every text into spans that belong to exactly one guard: the "20" of
"$20" is an amount, not a number, and the "12" of "AB-12" is a code. So switching one guard off
lets exactly its kind of difference through and no other guard picks it up instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import numpy as np

from batchopt.dedup import lexicon as lex

GUARD_ORDER = (
    "numbers", "amounts", "codes", "dates", "negation", "opposites", "actions", "entities", "swaps"
)  # fmt: skip


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


def opposed(a: frozenset[str], b: frozenset[str]) -> bool:
    """True if one side of an opposite pair is only in `a` and the other side only in `b`."""
    only_b = b - a
    flip = {"+": "-", "-": "+"}
    return any(f"{side[:-1]}{flip[side[-1]]}" in only_b for side in a - b)


def _entities_differ(a: Facts, b: Facts) -> bool:
    if a.terms != b.terms:
        return True
    # A name both sides carry matches; one capitalised on one side only (sentence start, typed
    # lower-case) still matches when the other side has it as a word.
    return any(e not in b.entities and f" {e} " not in b.words for e in a.entities) or any(
        e not in a.entities and f" {e} " not in a.words for e in b.entities
    )


@lru_cache(maxsize=200_000)
def _ordinary(word: str) -> bool:
    """A word that can be what two texts differ in: not a fact, a function word or a greeting
    (typed with one swap, "mornnig" / "tehre", it still is one)."""
    if word == "#" or len(word) < 2 or word in lex.FUNCTION_WORDS:
        return False
    return len(word) < 5 or not any(s in lex.FUNCTION_WORDS for s in lex._swaps(word))


def _distance(a: str, b: str, limit: int) -> int:
    """Edit distance with neighbouring swaps (optimal string alignment), capped at limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if cost and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], before[j - 2] + 1)
        if min(row) > limit:
            return limit + 1
        before, previous = previous, row
    return previous[-1]


def same_word(a: str, b: str) -> bool:
    """True if `a` and `b` are one word: typed with letters swapped ("starp", also twice:
    "srtap" / "starp"), one letter off (two in a word of 8+), or one the stem of the other
    ("wrap" / "wrapping", "purchase" / "purchased")."""
    if sorted(a) == sorted(b):
        return True
    shorter = min(len(a), len(b))
    common = 0
    while common < shorter and a[common] == b[common]:
        common += 1
    if common >= 4 and (common == shorter or common >= max(len(a), len(b)) - 3):
        return True
    limit = 1 if shorter < 8 else 2
    # an edit changes at most two letters of the letter sets: most pairs end here, cheaply
    return len(set(a).symmetric_difference(b)) <= 2 * limit and _distance(a, b, limit) <= limit


SWAP_MAX_WORDS = 3  # at most this many words swapped on each side
SWAP_EXTRA = (1, 3)  # at most 1 word that only one side has per 3 that both have


def swapped(a: Facts, b: Facts) -> tuple[str, str] | None:
    """What `a` says instead of what `b` says, if the two are one sentence with a few ordinary
    words swapped for others (`SWAP_MAX_WORDS` or fewer each side, the rest the same up to
    typos, greetings and function words); else None. Another wording of the same request
    ("the part you sent fits" / "the new part works with ... and fits fine") shares less than
    `SWAP_MIN_SHARED` of its words, or adds words of its own, and passes."""
    if a.wording == b.wording:
        return None
    return _swapped(a, b, _view(a), _view(b))


_View = tuple[list[str], frozenset[str]]


def _view(facts: Facts) -> _View:
    """The wording's words, and the set of its ordinary ones (names included)."""
    words = facts.wording.split()
    return words, frozenset(w for w in words if _ordinary(w))


def _swapped(a: Facts, b: Facts, view_a: _View, view_b: _View) -> tuple[str, str] | None:
    own = view_a[1] - view_b[1]  # most pairs stop here or at `other`: C set operations
    if not own:
        return None
    other = view_b[1] - view_a[1]
    if not other:
        return None
    flip = a.wording > b.wording  # the same alignment both ways round: a symmetric veto
    if flip:
        a, b, own, other, view_a, view_b = b, a, other, own, view_b, view_a
    own = {w for w in own if f" {w} " not in b.words}
    other = {w for w in other if f" {w} " not in a.words}
    if not own or not other:
        return None
    mine, theirs = view_a[0], view_b[0]
    if "^" in a.wording or "^" in b.wording:  # "Nomad" and "nomad" align, but no name counts
        names = {w[1:] for w in (*mine, *theirs) if w[0] == "^"}
        own, other = own - names, other - names
        mine = [w.lstrip("^") for w in mine]
        theirs = [w.lstrip("^") for w in theirs]
    own_left = {w for w in own if not any(same_word(w, v) for v in other)}
    other_left = {w for w in other if not any(same_word(w, v) for v in own)}
    if not own_left or not other_left or max(len(own_left), len(other_left)) > SWAP_MAX_WORDS:
        return None
    shared, extra, found = 0, 0, None
    blocks = difflib.SequenceMatcher(None, mine, theirs, autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in blocks:
        if tag == "equal":
            shared += _weight(mine[i1:i2])
            continue
        here, there = own_left.intersection(mine[i1:i2]), other_left.intersection(theirs[j1:j2])
        if not here and not there and tag == "replace" and i2 - i1 == j2 - j1:
            shared += _weight(mine[i1:i2])  # typos, another function word
        elif tag != "replace" or not here or not there:
            # words only one side has ("the Lumen lamp" / "the Lumen desk lamp")
            extra += max(_weight(mine[i1:i2]), _weight(theirs[j1:j2]))
        elif found is None and max(i2 - i1, j2 - j1) <= SWAP_MAX_WORDS:
            found = (" ".join(mine[i1:i2]), " ".join(theirs[j1:j2]))
        else:
            return None  # reworded: a long or a second swap ("is working" / "turns on", ...)
    if found is None or shared < 2 or extra * SWAP_EXTRA[1] > shared * SWAP_EXTRA[0]:
        return None
    return (found[1], found[0]) if flip else found


def _weight(words: list[str]) -> int:
    """How many of `words` say something: facts, names and ordinary words, no function words."""
    return sum(w not in lex.FUNCTION_WORDS for w in words)


def veto(a: Facts, b: Facts, config: GuardConfig = GuardConfig()) -> str | None:
    """The name of the first guard (in `GUARD_ORDER`) that forbids merging a and b, else None."""
    if config.numbers and a.numbers != b.numbers:
        return "numbers"
    if config.amounts and a.amounts != b.amounts:
        return "amounts"
    if config.codes and a.codes != b.codes:
        return "codes"
    if config.dates and a.dates != b.dates:
        return "dates"
    if config.negation and a.negations != b.negations:
        return "negation"
    if config.opposites and opposed(a.opposites, b.opposites):
        return "opposites"
    if config.actions and (a.actions - b.actions) and (b.actions - a.actions):
        return "actions"
    if config.entities and _entities_differ(a, b):
        return "entities"
    if config.swaps and a.wording != b.wording and swapped(a, b) is not None:
        return "swaps"
    return None


def veto_many(
    facts: list[Facts], left: np.ndarray, right: np.ndarray, config: GuardConfig = GuardConfig()
) -> np.ndarray:
    """`veto` for many pairs at once: for pair i, the index in `GUARD_ORDER` of the first guard
    that forbids merging facts[left[i]] and facts[right[i]], or -1 if they may merge.

    Each set-valued fact is mapped to an exact integer id per distinct value, so the equality
    guards are vectorised comparisons; `veto` itself runs only for the pairs they let through
    whose opposites or names differ.
    """
    result = np.full(len(left), -1, np.int8)
    if not len(left):
        return result
    fields = ("numbers", "amounts", "codes", "dates", "negations")
    for index in reversed(range(len(fields))):  # reversed: the first guard in GUARD_ORDER wins
        if getattr(config, GUARD_ORDER[index]):
            ids = _value_ids([getattr(f, fields[index]) for f in facts])
            result[ids[left] != ids[right]] = index
    rich = np.fromiter(
        (bool(f.opposites or f.actions or f.entities or f.terms) for f in facts), bool
    )
    # equal names, terms, actions and opposites on both sides pass; so does the same wording
    same = _value_ids([(f.opposites, f.actions, f.entities, f.terms) for f in facts])
    check = np.flatnonzero((result < 0) & (rich[left] | rich[right]) & (same[left] != same[right]))
    others = dataclasses.replace(config, swaps=False)  # `swaps`, the last guard, comes below
    for i, a, b in zip(check.tolist(), left[check].tolist(), right[check].tolist(), strict=True):
        refused = veto(facts[a], facts[b], others)
        if refused is not None:
            result[i] = GUARD_ORDER.index(refused)
    if config.swaps:
        wording = _value_ids([f.wording for f in facts])
        check = np.flatnonzero((result < 0) & (wording[left] != wording[right]))
        views: dict[int, _View] = {}
        done: dict[tuple[int, int], bool] = {}  # a neighbour list holds most pairs both ways
        code = GUARD_ORDER.index("swaps")
        with gc_paused():
            for i, a, b in zip(check.tolist(), left[check].tolist(), right[check].tolist(),
                               strict=True):  # fmt: skip
                key = (a, b) if a < b else (b, a)
                refused = done.get(key)
                if refused is None:
                    view_a = views.get(a) or views.setdefault(a, _view(facts[a]))
                    view_b = views.get(b) or views.setdefault(b, _view(facts[b]))
                    refused = done[key] = _swapped(facts[a], facts[b], view_a, view_b) is not None
                if refused:
                    result[i] = code
    return result


def _value_ids(values: list[object]) -> np.ndarray:
    ids: dict[object, int] = {}
    return np.fromiter((ids.setdefault(v, len(ids)) for v in values), np.int64, len(values))
