"""Deterministic answers and token counts for the fake provider server.

Text answers are "Summary: " plus the first words of the last user message. Structured answers
are built from the JSON schema, with enum values, numbers and booleans drawn per row by a stable
hash of the last user message and the property's path: they validate (unless cut by
`max_tokens`, or made invalid or wrong on purpose, see `quality`).

How a request asks for JSON:
- OpenAI wire: `response_format = {"type": "json_schema", "json_schema": {"schema": {...}}}`.
- Anthropic wire: the system prompt holds the schema between `<json_schema>` and
  `</json_schema>` tags (what `batchopt.providers.anthropic` sends), or the request carries
  `output_config = {"format": {"type": "json_schema", "schema": {...}}}`.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

from batchopt.fakeapi import tokens
from batchopt.fakeapi.oracle import hash_unit

SUMMARY_WORDS = 20
STRING_WORDS = 6
# Tokens added per message for role and framing, plus once for the reply's priming.
MESSAGE_OVERHEAD = tokens.MESSAGE_OVERHEAD
REPLY_OVERHEAD = tokens.REPLY_OVERHEAD

_SCHEMA_TAG = re.compile(r"<json_schema>\s*(.*?)\s*</json_schema>", re.DOTALL)


# Texts up to this size are memoised: bounded memory even when every prompt is a long document.
_CACHED_TEXT_CHARS = 32_768


@lru_cache(maxsize=4096)
def _memo_count(text: str, model: str) -> int:
    return tokens.count(text, model)


def cached_count(text: str, model: str) -> int:
    """`tokens.count`, memoised for short texts: prompts repeat a lot (system prompts, retries)."""
    if len(text) > _CACHED_TEXT_CHARS:
        return tokens.count(text, model)
    return _memo_count(text, model)


def content_text(content: Any) -> str:
    """The text of a message's content: a string or a list of parts with a `text` field."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def prompt_tokens(texts: list[str], model: str) -> int:
    """Input tokens for a prompt made of `texts` (one per message, the system prompt included)."""
    return sum(cached_count(t, model) + MESSAGE_OVERHEAD for t in texts) + REPLY_OVERHEAD


def last_user_text(messages: list[Any]) -> str:
    """The text of the last message whose role is `user` ("" when there is none)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def first_words(text: str, n: int) -> str:
    """The first `n` whitespace-separated words of `text`, joined by single spaces."""
    return " ".join(text.split()[:n])


def text_answer(user_text: str) -> str:
    """The plain-text answer to a request whose last user message is `user_text`."""
    return ("Summary: " + first_words(user_text, SUMMARY_WORDS)).rstrip()


def truncate_to_tokens(text: str, max_tokens: int, model: str) -> tuple[str, bool]:
    """(`text` cut to at most `max_tokens` tokens, whether it was cut)."""
    if cached_count(text, model) <= max_tokens:
        return text, False
    if max_tokens <= 0:
        return "", True
    lo, hi = 0, len(text)  # longest prefix within budget: count is monotone enough for BPE
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tokens.count(text[:mid], model) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo], True


def openai_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema an OpenAI chat request asks its answer to follow, if any."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {}


def anthropic_schema(body: dict[str, Any], system_text: str) -> dict[str, Any] | None:
    """The JSON schema an Anthropic messages request asks for, if any (see module docstring)."""
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        return schema if isinstance(schema, dict) else {}
    if "<json_schema>" not in system_text:
        return None
    match = _SCHEMA_TAG.search(system_text)
    if match is None:
        return None
    try:
        schema = json.loads(match.group(1))
    except ValueError:
        return None
    return schema if isinstance(schema, dict) else None


def json_answer(
    schema: dict[str, Any], user_text: str, flaw: str | None = None, model: str = ""
) -> str:
    """A compact JSON document for `schema`, derived from `user_text`.

    Enum values, numbers and booleans are drawn per row: by a stable hash of the user text and
    the property's path (the row's "true" values, the same for every model). With `flaw`
    "wrong", every enum (of two values or more) takes another value and booleans flip (still
    valid); with "invalid", a required property is left out, or failing that an enum value is
    replaced by one outside the enum (see `quality`).
    """
    words = first_words(user_text, STRING_WORDS) or "text"
    draw = _Draw(user_text, wrong=flaw == "wrong", model=model)
    value = _value(schema, schema, words, 0, draw, "$")
    if flaw == "invalid":
        value = _break(schema, value, draw)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def wrong_text_answer(user_text: str) -> str:
    """A plain-text answer that is not the right one: it summarises the message's last words."""
    return ("Summary: " + " ".join(user_text.split()[-SUMMARY_WORDS:])).rstrip()


class _Draw:
    """Deterministic per-row draws in [0, 1) by property path."""

    def __init__(self, user_text: str, wrong: bool, model: str) -> None:
        self.user_text, self.wrong, self.model = user_text, wrong, model

    def unit(self, kind: str, path: str) -> float:
        return hash_unit(kind, path, self.user_text)

    def pick(self, options: list[Any], path: str) -> Any:
        n = len(options)
        index = min(n - 1, int(self.unit("enum", path) * n))
        if self.wrong and n > 1:
            shift = 1 + min(
                n - 2, int(hash_unit("wrong", self.model, path, self.user_text) * (n - 1))
            )
            index = (index + shift) % n
        return options[index]


def _break(schema: dict[str, Any], value: Any, draw: _Draw) -> Any:
    """`value` made to fail `schema`: a required property dropped, else an enum value changed."""
    required = schema.get("required") if isinstance(schema, dict) else None
    if isinstance(value, dict) and isinstance(required, list):
        present = [name for name in required if name in value]
        if present:
            drop = present[min(len(present) - 1, int(draw.unit("drop", "$") * len(present)))]
            return {k: v for k, v in value.items() if k != drop}
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(value, dict) and isinstance(props, dict):
        for name, sub in props.items():
            if isinstance(sub, dict) and isinstance(sub.get("enum"), list) and name in value:
                return {**value, name: f"not {value[name]}"}
    return {"invalid": value} if not isinstance(value, dict) else [value]


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    if not ref.startswith("#"):
        return {}
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _value(
    schema: Any, root: dict[str, Any], words: str, depth: int, draw: _Draw, path: str
) -> Any:
    if not isinstance(schema, dict) or depth > 12:
        return None if depth > 12 else words
    if "$ref" in schema:
        return _value(_resolve(schema["$ref"], root), root, words, depth + 1, draw, path)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return draw.pick(schema["enum"], path)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return _value((non_null or options)[0], root, words, depth + 1, draw, path)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = _value(part, root, words, depth + 1, draw, path)
            if isinstance(value, dict):
                merged.update(value)
            elif not merged:
                return value
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            name: _value(sub, root, words, depth + 1, draw, f"{path}.{name}")
            for name, sub in props.items()
        }
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        items = schema.get("items", {})
        return [_value(items, root, words, depth + 1, draw, f"{path}[{i}]") for i in range(count)]
    if kind == "string":
        return _string(schema, words)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer", unit=draw.unit("number", path))
    if kind == "boolean":
        return (draw.unit("boolean", path) < 0.5) != draw.wrong
    return None


_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(schema: dict[str, Any], words: str) -> str:
    text = _FORMATS.get(str(schema.get("format")), words)
    min_len = int(schema.get("minLength", 0))
    max_len = schema.get("maxLength")
    if len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    if isinstance(max_len, int):
        text = text[:max_len]
    return text


# Numbers without bounds are drawn from this span (from a bound when there is one).
_NUMBER_SPAN = 100


def _number(schema: dict[str, Any], integer: bool, unit: float = 0.0) -> int | float:
    low = schema.get("minimum")
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    high = schema.get("maximum")
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    has_low, has_high = isinstance(low, int | float), isinstance(high, int | float)
    if has_low and has_high:
        start, span = float(low), max(0.0, float(high) - float(low))
    elif has_low:
        start, span = float(low), float(_NUMBER_SPAN)
    elif has_high:
        start, span = float(high) - _NUMBER_SPAN, float(_NUMBER_SPAN)
    else:
        start, span = 0.0, float(_NUMBER_SPAN)
    if integer:
        first = math.ceil(start)
        count = max(1, math.floor(start + span) - first + 1)
        value: float = first + min(count - 1, int(unit * count))
    else:
        value = round(start + unit * span, 2)
    if has_low and value < low:
        value = low
    if has_high and value > high:
        value = high
    if not integer:
        return float(value)
    result = math.ceil(value)
    if isinstance(high, int | float) and result > high:
        result = math.floor(high)
    return result
