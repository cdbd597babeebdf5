"""One canonical hash for dedup keys, cache keys and run fingerprints."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(value: Any, length: int = 32) -> str:
    """Hex blake2b digest of `value` (a str is hashed as is, anything else as canonical JSON)."""
    text = value if isinstance(value, str) else canonical_json(value)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()[:length]


def keyed_by_last_field(fields: dict[str, Any], last: str) -> Callable[[str], str]:
    """A function `value -> stable_hash({**fields, last: value})` that hashes the canonical
    JSON of `fields` once: per call, only `value` is encoded and hashed (a request key's static
    part, its system text and parameters, is most of its bytes). `last` must sort after every
    key of `fields`, so it is the last member of the canonical JSON."""
    if any(key >= last for key in fields):
        raise ValueError(f"'{last}' must sort after every key of fields")
    head = canonical_json(fields)
    opening = head[:-1] + ("," if fields else "") + json.dumps(last) + ":"
    state = hashlib.blake2b(opening.encode("utf-8"), digest_size=16)

    def key(value: str) -> str:
        h = state.copy()
        h.update((json.dumps(value, ensure_ascii=False) + "}").encode("utf-8"))
        return h.hexdigest()

    return key
