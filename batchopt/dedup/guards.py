"""Fact guards: cheap rules that forbid a semantic merge when two texts state different facts.

Embeddings place "refund order #10233" next to "refund order #10234" and "the part fits" next to
"the part does not fit"; merging them would ship a wrong answer. `extract` (`facts.py`) pulls the
facts an answer depends on out of a text (numbers, money amounts, codes, dates, negation,
opposite words such as big/small or add/remove, named things) and `veto` names the first guard
that objects. The last guard, `swaps` (`swaps.py`), compares the wording itself: the same
sentence with one ordinary word swapped for another asks about another thing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from batchopt.dedup.facts import Facts, GuardConfig, extract, extract_many, gc_paused
from batchopt.dedup.swaps import _swapped, _View, _view, same_word, swapped

__all__ = [
    "GUARD_ORDER", "Facts", "GuardConfig", "extract", "extract_many", "opposed", "same_word",
    "swapped", "veto", "veto_many",
]  # fmt: skip

GUARD_ORDER = (
    "numbers", "amounts", "codes", "dates", "negation", "opposites", "actions", "entities", "swaps"
)  # fmt: skip
ALL_ON = GuardConfig()  # the default: every guard may veto


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


def veto(a: Facts, b: Facts, config: GuardConfig = ALL_ON) -> str | None:
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
    facts: list[Facts], left: np.ndarray, right: np.ndarray, config: GuardConfig = ALL_ON
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
