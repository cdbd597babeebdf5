"""How good the fake server's own answers are: deliberate flaws per model, and a judge.

Settings (`Quality`), given to `FakeServer(...)`, `batchopt fake-server` or `set_quality`:

- `invalid_share[model]`: the share of that model's JSON answers that fail their schema (a
  required property left out, or an enum value outside the enum);
- `wrong_share[model]`: the share of its answers that are valid but wrong (every enum property
  takes another value than the row's true one, booleans flip; a text answer summarises the
  end of the message instead of its start);
- `judge_reject_share`: the share of answers the judge rejects on top of the flawed ones.

A model name `*` sets the share of every model not named. Which rows are flawed is a pure
function of (model, last user message): `hash_unit("flaw", model, text)` below
`invalid_share` is invalid, below `invalid_share + wrong_share` is wrong. So the same request
gets the same answer every time, in every process.

The judge: a request without a schema whose last user message asks for "yes or no" (what
`DEFAULT_JUDGE_PROMPT` ends with) is a judge call. It answers "no" when the answer it is shown
is one the fake made flawed (or that the oracle made wrong) for the question it is shown, else
"yes" (unless `judge_reject_share` draws a "no"). The fake remembers the flawed answers it gave
(`FlawLog`, the newest `FLAW_LOG_SIZE`), so the judge knows them in the same server's lifetime.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from batchopt.fakeapi.oracle import hash_unit

INVALID, WRONG = "invalid", "wrong"
ANY_MODEL = "*"
FLAW_LOG_SIZE = 200_000
_JUDGE_ASK = re.compile(r"\byes or no\b", re.IGNORECASE)
# The default judge prompt: "Question:\n{prompt}\n\nAnswer:\n{answer}\n\nDoes the answer ..."
_QUESTION, _ANSWER, _TAIL = "Question:\n", "\n\nAnswer:\n", "\n\nDoes the answer"


@dataclass(frozen=True)
class Quality:
    """The flaw settings (see the module docstring). Immutable; replaced as a whole."""

    invalid_share: dict[str, float] = field(default_factory=dict)
    wrong_share: dict[str, float] = field(default_factory=dict)
    judge_reject_share: float = 0.0

    def __post_init__(self) -> None:
        for name, shares in (
            ("invalid_share", self.invalid_share),
            ("wrong_share", self.wrong_share),
        ):
            if not isinstance(shares, dict):
                raise ValueError(f"{name} must be an object: model name -> share")
            for model, value in shares.items():
                _check_share(value, f"{name}.{model}")
        _check_share(self.judge_reject_share, "judge_reject_share")
        for model in set(self.invalid_share) | set(self.wrong_share):
            if self.share(self.invalid_share, model) + self.share(self.wrong_share, model) > 1:
                raise ValueError(f"invalid_share + wrong_share of {model} is more than 1")

    @staticmethod
    def share(shares: dict[str, float], model: str) -> float:
        return float(shares.get(model, shares.get(ANY_MODEL, 0.0)))

    def flaw(self, model: str, user_text: str, structured: bool) -> str | None:
        """invalid | wrong | None for `model`'s answer to `user_text` (invalid only if JSON)."""
        invalid = self.share(self.invalid_share, model) if structured else 0.0
        wrong = self.share(self.wrong_share, model)
        if invalid <= 0 and wrong <= 0:
            return None
        draw = hash_unit("flaw", model, user_text)
        if draw < invalid:
            return INVALID
        if draw < invalid + wrong:
            return WRONG
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "invalid_share": dict(self.invalid_share),
            "wrong_share": dict(self.wrong_share),
            "judge_reject_share": self.judge_reject_share,
        }


def parse_quality(data: Any) -> Quality:
    """A Quality from its JSON form; ValueError says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("the quality settings must be a JSON object")
    unknown = set(data) - {"invalid_share", "wrong_share", "judge_reject_share"}
    if unknown:
        raise ValueError(f"the quality settings have unknown keys: {sorted(unknown)}")
    return Quality(
        dict(data.get("invalid_share") or {}),
        dict(data.get("wrong_share") or {}),
        data.get("judge_reject_share", 0.0),
    )


def _check_share(value: Any, where: str) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value <= 1:
        raise ValueError(f"{where}: a share must be a number from 0 to 1")


def _key(question: str, answer: str) -> tuple[str, str]:
    return question.strip(), answer.strip()


class FlawLog:
    """The (question, answer) pairs the fake answered with a flaw, newest kept. Thread-safe."""

    def __init__(self, size: int = FLAW_LOG_SIZE) -> None:
        self._lock = threading.Lock()
        self._pairs: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._size = size

    def add(self, question: str, answer: str) -> None:
        key = _key(question, answer)
        with self._lock:
            self._pairs[key] = None
            self._pairs.move_to_end(key)
            while len(self._pairs) > self._size:
                self._pairs.popitem(last=False)

    def knows(self, message: str) -> bool:
        """Whether the judge `message` shows a flawed answer to its question."""
        parsed = _parse_default_prompt(message)
        with self._lock:
            if parsed is not None and parsed in self._pairs:
                return True
            pairs = list(self._pairs) if parsed is None else []
        # a custom judge prompt: look for a flawed pair shown anywhere in it
        return any(a in message and q in message for q, a in pairs if a)

    def clear(self) -> None:
        with self._lock:
            self._pairs.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pairs)


def _parse_default_prompt(message: str) -> tuple[str, str] | None:
    if not message.startswith(_QUESTION):
        return None
    tail = message.rfind(_TAIL)
    answer_at = message.rfind(_ANSWER, 0, tail if tail >= 0 else len(message))
    if answer_at < 0:
        return None
    end = tail if tail >= 0 else len(message)
    return _key(message[len(_QUESTION) : answer_at], message[answer_at + len(_ANSWER) : end])


def is_judge_call(user_text: str, structured: bool) -> bool:
    """Whether a request is a judge's: no schema, and its message asks for yes or no."""
    return not structured and _JUDGE_ASK.search(user_text) is not None


def judge_answer(quality: Quality, flaws: FlawLog, model: str, message: str) -> str:
    """The judge's one word for the judge `message`: "no" or "yes" (see the module doc)."""
    if flaws.knows(message):
        return "no"
    if quality.judge_reject_share > 0 and hash_unit("judge", model, message) < (
        quality.judge_reject_share
    ):
        return "no"
    return "yes"


def parse_shares(options: tuple[str, ...] | list[str], where: str) -> dict[str, float]:
    """`MODEL=SHARE` options as {model: share}; ValueError says which one is wrong."""
    shares: dict[str, float] = {}
    for option in options:
        model, sep, value = option.rpartition("=")
        try:
            share = float(value)
        except ValueError:
            share = math.nan
        if not sep or not model or not math.isfinite(share):
            raise ValueError(f"{where} {option!r}: expected MODEL=SHARE, e.g. gpt-4o-mini=0.1")
        shares[model] = share
    return shares


def quality_from_options(
    env_json: str | None,
    invalid: tuple[str, ...] | list[str] = (),
    wrong: tuple[str, ...] | list[str] = (),
    judge_reject_share: float | None = None,
) -> Quality:
    """The server's settings: the JSON of BATCHOPT_FAKE_QUALITY, then the command's options."""
    try:
        base = parse_quality(json.loads(env_json)) if env_json else Quality()
    except json.JSONDecodeError as exc:
        raise ValueError(f"BATCHOPT_FAKE_QUALITY is not JSON: {exc}") from None
    invalid_share = {**base.invalid_share, **parse_shares(invalid, "--invalid-share")}
    wrong_share = {**base.wrong_share, **parse_shares(wrong, "--wrong-share")}
    reject = judge_reject_share or base.judge_reject_share
    return Quality(invalid_share, wrong_share, reject)
