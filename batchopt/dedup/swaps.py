"""The `swaps` guard: the same sentence with one ordinary word swapped for another ("the strap
you sent" / "the spare filter you sent", "at the austin location" / "at the phoenix location"
typed lower-case) asks about another thing. It compares the wording `facts.extract` keeps."""

from __future__ import annotations

import difflib
from functools import lru_cache

from batchopt.dedup import lexicon as lex
from batchopt.dedup.facts import Facts


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
