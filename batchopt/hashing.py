"""One canonical hash for dedup keys, cache keys and run fingerprints."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no insignificant whitespace, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(value: Any, length: int = 32) -> str:
    """Hex blake2b digest of `value` (a str is hashed as is, anything else as canonical JSON)."""
    text = value if isinstance(value, str) else canonical_json(value)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()[:length]
