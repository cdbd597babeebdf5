"""Prompt caching in the fake server, the way each provider reports it.

OpenAI (automatic prefix caching, chat completions online and batch rows): a prompt of at least
1024 tokens whose leading part matches a prompt of the same model seen within the TTL reports
`usage.prompt_tokens_details.cached_tokens` = the shared prefix rounded down to a multiple of
128 tokens (nothing under 1024); `prompt_tokens` stays the total. The prefix is measured on the
messages in order (system first, then user): every whole message both prompts share (same role,
same text) counts its tokens plus the per-message framing (`answers.MESSAGE_OVERHEAD`); in the
first message that differs, the characters both texts start with count, less one token (the
last token may straddle the difference). Only prompts of 1024 tokens or more are remembered,
up to `MAX_PROMPTS` per model (least recently used dropped first).

Anthropic (explicit caching, Messages online and batch rows): a content block with
`cache_control: {"type": "ephemeral"}` (in `system` given as a list of blocks, or in a message's
content list) is a breakpoint, at most 4 per request. The prefix up to and including that block
(system blocks first, then the messages in order) is cacheable when it has at least
`anthropic_min_tokens(model)` tokens (Anthropic's documented minimums: 4096 for Opus 4.5/4.6 and
Haiku 4.5, 2048 for Sonnet 4.6 and Haiku 3/3.5, 1024 otherwise); shorter ones are silently not
cached, as the real API does. The longest live cached prefix is read (`cache_read_input_tokens`);
if the longest cacheable prefix is not live, its tokens beyond the read are written
(`cache_creation_input_tokens`); `input_tokens` is what remains after the last breakpoint.

Both caches live `TTL_SECONDS` (5 minutes, `"ttl": "1h"` on an Anthropic breakpoint: an hour)
from their last use, by the server's clock (`PromptCache.clock`); a hit refreshes the entry.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from batchopt.fakeapi import answers
from batchopt.fakeapi.oracle import digest

TTL_SECONDS = 300.0
ANTHROPIC_TTLS = {"5m": 300.0, "1h": 3600.0}
OPENAI_MIN_TOKENS = 1024  # OpenAI's prompt-caching guide: 1024 tokens, then steps of 128
OPENAI_STEP = 128
MAX_PROMPTS = 64  # remembered OpenAI prompts per model
MAX_BREAKPOINTS = 4
_MAX_ANTHROPIC_ENTRIES = 4096

Message = tuple[str, str]  # (role, text)


class CacheControlError(ValueError):
    """A `cache_control` the real API would refuse; the message says why."""


# The fewest prefix tokens Anthropic caches, per model name prefix (first match wins; 1024
# otherwise), from Anthropic's prompt-caching documentation ("Cache limitations").
_ANTHROPIC_MINIMUMS = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4-6", 2048),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
)
_ANTHROPIC_DEFAULT_MINIMUM = 1024


def anthropic_min_tokens(model: str) -> int:
    """The fewest prompt-prefix tokens Anthropic caches for `model`."""
    name = model.lower()
    return next((n for prefix, n in _ANTHROPIC_MINIMUMS if name.startswith(prefix)),
                _ANTHROPIC_DEFAULT_MINIMUM)


class PromptCache:
    """Both providers' prompt caches; thread-safe, cleared by `clear`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._openai: dict[str, OrderedDict[tuple[Message, ...], float]] = {}
        self._anthropic: OrderedDict[str, float] = OrderedDict()  # prefix key -> expiry

    def clear(self) -> None:
        """Forget every cached prefix."""
        with self._lock:
            self._openai = {}
            self._anthropic = OrderedDict()

    # ---- OpenAI -------------------------------------------------------------------------------

    def openai_cached(self, model: str, messages: list[Message], prompt_tokens: int) -> int:
        """The cached tokens of an OpenAI prompt of `prompt_tokens`; remembers the prompt."""
        if prompt_tokens < OPENAI_MIN_TOKENS:
            return 0
        prompt = tuple(messages)
        now = self.clock()
        with self._lock:
            seen = self._openai.setdefault(model, OrderedDict())
            for key in [k for k, expiry in seen.items() if expiry <= now]:
                del seen[key]
            best_key, best = None, (0, 0)
            for key in seen:
                match = _shared(key, prompt)
                if match > best:
                    best_key, best = key, match
            if best_key is not None:
                seen[best_key] = now + TTL_SECONDS
                seen.move_to_end(best_key)
            seen[prompt] = now + TTL_SECONDS
            seen.move_to_end(prompt)
            while len(seen) > MAX_PROMPTS:
                seen.popitem(last=False)
        shared = _prefix_tokens(prompt, best, model)
        cached = min(shared, prompt_tokens) // OPENAI_STEP * OPENAI_STEP
        return cached if cached >= OPENAI_MIN_TOKENS else 0

    # ---- Anthropic ----------------------------------------------------------------------------

    def anthropic_usage(self, data: dict[str, Any]) -> tuple[int, int]:
        """(cache read tokens, cache write tokens) of a Messages body; records the writes.

        CacheControlError if a `cache_control` is malformed or there are too many."""
        model = str(data["model"])
        points = _breakpoints(data, model)
        minimum = anthropic_min_tokens(model)
        points = [p for p in points if p[1] >= minimum]
        if not points:
            return 0, 0
        now = self.clock()
        with self._lock:
            live = [p for p in points if self._anthropic.get(p[0], 0.0) > now]
            read = max((p[1] for p in live), default=0)
            longest = max(points, key=lambda p: p[1])
            write = 0 if longest in live else longest[1] - read
            for key, _tokens, ttl in points:
                self._anthropic[key] = max(self._anthropic.get(key, 0.0), now + ttl)
                self._anthropic.move_to_end(key)
            while len(self._anthropic) > _MAX_ANTHROPIC_ENTRIES:
                self._anthropic.popitem(last=False)
        return read, write


def _shared(a: tuple[Message, ...], b: tuple[Message, ...]) -> tuple[int, int]:
    """(whole messages `a` and `b` share from the start, characters shared in the next one)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            if x[0] != y[0]:
                return n, 0
            return n, _common_chars(x[1], y[1])
        n += 1
    return n, 0


def _common_chars(a: str, b: str) -> int:
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # the longest common prefix, by slices compared in C
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _prefix_tokens(prompt: tuple[Message, ...], match: tuple[int, int], model: str) -> int:
    whole, chars = match
    tokens = sum(
        answers.cached_count(t, model) + answers.MESSAGE_OVERHEAD for _, t in prompt[:whole]
    )
    if chars and whole < len(prompt):
        part = answers.cached_count(prompt[whole][1][:chars], model)
        tokens += answers.MESSAGE_OVERHEAD + max(0, part - 1)
    return tokens


def _breakpoints(data: dict[str, Any], model: str) -> list[tuple[str, int, float]]:
    """(prefix key, prefix tokens, ttl seconds) of every `cache_control` block, in order."""
    sections: list[tuple[str, Any]] = []
    system = data.get("system")
    if system:
        sections.append(("system", system))
    for message in data.get("messages") or []:
        if isinstance(message, dict):
            sections.append((str(message.get("role")), message.get("content")))
    points: list[tuple[str, int, float]] = []
    before = 0  # tokens of the whole sections so far
    for i, (role, content) in enumerate(sections):
        if isinstance(content, list):
            for j, block in enumerate(content):
                control = block.get("cache_control") if isinstance(block, dict) else None
                if control is None:
                    continue
                ttl = _ttl(control)
                part = answers.cached_count(answers.content_text(content[: j + 1]), model)
                key = digest(
                    [model, _strip(sections[:i]), role, _strip_blocks(content[: j + 1])]
                )
                points.append((key, before + part + answers.MESSAGE_OVERHEAD, ttl))
        text = answers.content_text(content)
        before += answers.cached_count(text, model) + answers.MESSAGE_OVERHEAD
    if len(points) > MAX_BREAKPOINTS:
        raise CacheControlError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(points)}."
        )
    return points


def _ttl(control: Any) -> float:
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise CacheControlError("cache_control: type must be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl not in ANTHROPIC_TTLS:
        raise CacheControlError("cache_control.ttl: must be '5m' or '1h'")
    return ANTHROPIC_TTLS[ttl]


def _strip(sections: list[tuple[str, Any]]) -> list[Any]:
    return [[role, _strip_blocks(content)] for role, content in sections]


def _strip_blocks(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    return [
        {k: v for k, v in block.items() if k != "cache_control"}
        if isinstance(block, dict)
        else block
        for block in content
    ]
