"""The answer oracle of the fake server: per-model quality on known questions.

An oracle is a list of items, each a `match` substring with its right `answer`, some `wrong`
answers and a `difficulty` label, plus the accuracy of each model per difficulty:

    {"items": [{"match": "Q0001:", "answer": "Paris", "wrong": ["Lyon", "I don't know."],
                "difficulty": "hard"}, ...],
     "models": {"cheap": {"easy": 0.97, "hard": 0.35}, "strong": {"easy": 1.0, "hard": 0.98}},
     "default_accuracy": {"easy": 1.0, "hard": 1.0}}

A request whose last user message contains an item's `match` (the first item in list order
when several match; plain case-sensitive substring) is answered by that item, for the
request's model:

- right iff `hash_unit(model, match) < accuracy`, where the accuracy is
  `models[model][difficulty]`, else `default_accuracy[difficulty]`, else 1.0;
- when wrong, the answer is `wrong[int(hash_unit("wrong", model, match) * len(wrong))]`, or
  "I don't know." when `wrong` is empty.

A fine-tuned model (`ft:<base>:...`, made by the fake's fine-tuning jobs) takes the accuracies
of `models["ft:<base>"]` when the oracle names that, else of its base (`models[base]`), and draws
with its base's name: so it is right wherever its base is right, and, with a higher accuracy,
on more items besides ("like its base, or better"). Its answers are otherwise its own.

Everything is a pure function of (model, match), so the same request gets the same answer every
time, online and in a batch. `difficulty` may be any label ("easy" when left out). `wrong` may
hold anything, refusals included; nothing is special about them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

RIGHT, WRONG, UNMATCHED = "right", "wrong", "unmatched"
VERDICTS = (RIGHT, WRONG, UNMATCHED)
DEFAULT_WRONG = "I don't know."
DEFAULT_DIFFICULTY = "easy"
_ITEM_KEYS = {"match", "answer", "wrong", "difficulty"}
_TOP_KEYS = {"items", "models", "default_accuracy"}
_GRAM = 8  # anchor length of the match index (shorter when a match is shorter)
_LINEAR_UP_TO = 16  # items; fewer are scanned one by one


def digest(value: Any) -> str:
    """A hex digest of `value`, a str as is or anything else as JSON with sorted keys, so equal
    values (request bodies, cache prefixes) get equal digests."""
    text = value if isinstance(value, str) else json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def hash_unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from `parts`."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class OracleItem:
    """One known question."""

    match: str
    answer: str
    wrong: tuple[str, ...] = ()
    difficulty: str = DEFAULT_DIFFICULTY


@dataclass(frozen=True)
class Verdict:
    """How the oracle answers one request: `kind` is right | wrong | unmatched."""

    kind: str
    text: str | None = None  # the answer, None when unmatched
    match: str | None = None  # the item's match, None when unmatched


NO_MATCH = Verdict(UNMATCHED)


class Oracle:
    """Items with a substring index, and the per-model accuracies. Immutable once built."""

    def __init__(
        self,
        items: list[OracleItem],
        models: dict[str, dict[str, float]] | None = None,
        default_accuracy: dict[str, float] | None = None,
    ) -> None:
        self.items = list(items)
        self.models = {m: dict(a) for m, a in (models or {}).items()}
        self.default_accuracy = dict(default_accuracy or {})
        self._index = _MatchIndex([item.match for item in self.items])

    def find(self, text: str) -> OracleItem | None:
        """The first item whose `match` occurs in `text`."""
        index = self._index.find(text)
        return None if index is None else self.items[index]

    def accuracy(self, model: str, difficulty: str) -> float:
        """The chance that `model` answers an item of `difficulty` right."""
        by_model = self.models.get(model)
        base = fine_tuned_base(model)
        if by_model is None and base is not None:
            by_model = self.models.get(f"ft:{base}", self.models.get(base))
        by_model = by_model or {}
        if difficulty in by_model:
            return by_model[difficulty]
        return self.default_accuracy.get(difficulty, 1.0)

    def decide(self, model: str, user_text: str) -> Verdict:
        """The verdict and answer for a request to `model` whose last user text is given."""
        item = self.find(user_text)
        if item is None:
            return NO_MATCH
        draw = fine_tuned_base(model) or model  # a fine-tuned model draws as its base
        if hash_unit(draw, item.match) < self.accuracy(model, item.difficulty):
            return Verdict(RIGHT, item.answer, item.match)
        wrong = item.wrong or (DEFAULT_WRONG,)
        pick = min(len(wrong) - 1, int(hash_unit("wrong", model, item.match) * len(wrong)))
        return Verdict(WRONG, wrong[pick], item.match)

    def describe(self) -> dict[str, Any]:
        """A summary for GET /_fake/oracle."""
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.difficulty] = counts.get(item.difficulty, 0) + 1
        return {
            "set": True,
            "items": len(self.items),
            "by_difficulty": counts,
            "models": self.models,
            "default_accuracy": self.default_accuracy,
        }


def fine_tuned_base(model: str) -> str | None:
    """The base of a fine-tuned model name (`ft:<base>:<org>:<suffix>:<id>`), else None."""
    if not model.startswith("ft:"):
        return None
    return model.split(":")[1] or None


class _MatchIndex:
    """Finds the first of many substrings in a text without trying each one.

    Every match is filed under its rarest `k`-gram (k = min(8, the shortest match)); a text's
    own k-grams then name the few candidates, checked in list order with `in`.
    """

    def __init__(self, matches: list[str]) -> None:
        self.matches = matches
        self.linear = len(matches) <= _LINEAR_UP_TO
        self.k = min([_GRAM, *(len(m) for m in matches)])
        self.anchors: dict[str, list[int]] = {}
        if self.linear:
            return
        k, seen = self.k, set()
        counts: dict[str, int] = {}
        for m in matches:
            for gram in {m[i : i + k] for i in range(len(m) - k + 1)}:
                counts[gram] = counts.get(gram, 0) + 1
        for index, m in enumerate(matches):
            if m in seen:  # a repeated match never wins: the first one does
                continue
            seen.add(m)
            rarest = min((m[i : i + k] for i in range(len(m) - k + 1)), key=counts.__getitem__)
            self.anchors.setdefault(rarest, []).append(index)

    def find(self, text: str) -> int | None:
        if self.linear:
            return next((i for i, m in enumerate(self.matches) if m in text), None)
        k = self.k
        grams = {text[i : i + k] for i in range(len(text) - k + 1)}
        if len(grams) > len(self.anchors):
            hits = [g for g in self.anchors if g in grams]
        else:
            hits = [g for g in grams if g in self.anchors]
        candidates = sorted(i for g in hits for i in self.anchors[g])
        return next((i for i in candidates if self.matches[i] in text), None)


def parse_oracle(data: Any) -> Oracle:
    """An Oracle from its JSON form (see the module docstring); ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the oracle must be a JSON object")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"the oracle has unknown keys: {sorted(unknown)}")
    raw_items = data.get("items")
    if not isinstance(raw_items, list):
        raise ValueError("oracle items must be a list")
    items = [_item(raw, i) for i, raw in enumerate(raw_items)]
    models = data.get("models") or {}
    if not isinstance(models, dict):
        raise ValueError("oracle models must be an object: model name -> accuracies")
    parsed_models = {str(name): _accuracies(acc, f"models.{name}") for name, acc in models.items()}
    default = _accuracies(data.get("default_accuracy") or {}, "default_accuracy")
    return Oracle(items, parsed_models, default)


def _item(raw: Any, i: int) -> OracleItem:
    if not isinstance(raw, dict):
        raise ValueError(f"oracle item {i} is not an object")
    unknown = set(raw) - _ITEM_KEYS
    if unknown:
        raise ValueError(f"oracle item {i} has unknown keys: {sorted(unknown)}")
    match, answer = raw.get("match"), raw.get("answer")
    if not isinstance(match, str) or not match:
        raise ValueError(f"oracle item {i}: match must be a non-empty string")
    if not isinstance(answer, str):
        raise ValueError(f"oracle item {i}: answer must be a string")
    wrong = raw.get("wrong") or []
    if isinstance(wrong, str):
        wrong = [wrong]
    if not isinstance(wrong, list) or not all(isinstance(w, str) for w in wrong):
        raise ValueError(f"oracle item {i}: wrong must be a list of strings")
    difficulty = raw.get("difficulty", DEFAULT_DIFFICULTY)
    if not isinstance(difficulty, str) or not difficulty:
        raise ValueError(f"oracle item {i}: difficulty must be a label such as easy or hard")
    return OracleItem(match, answer, tuple(wrong), difficulty)


def _accuracies(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ValueError(f"oracle {where} must be an object: difficulty -> accuracy")
    out: dict[str, float] = {}
    for label, value in raw.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or not 0 <= value <= 1:
            raise ValueError(f"oracle {where}.{label}: accuracy must be a number from 0 to 1")
        out[str(label)] = float(value)
    return out
