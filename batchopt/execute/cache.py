"""The response cache: every billed answer is written here the moment it arrives.

Keyed by `Request.key` (provider, endpoint, model, parameters and prompt), so a re-run of the
same job is answered from disk and spends nothing. Backed by diskcache (SQLite), which is safe
for several processes at once. Holds answers and usage only, never credentials.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from batchopt.records import Result, Usage

_FORMAT = 1


class ResponseCache:
    """Billed results by request key, on disk."""

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._cache: Any = None
        if enabled:
            import diskcache

            path.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(path))

    def get(self, key: str) -> Result | None:
        """The cached result for `key`, marked `from_cache`, or None."""
        if self._cache is None:
            return None
        raw = self._cache.get(key)
        if raw is None:
            return None
        data = json.loads(raw)
        if data.get("format") != _FORMAT:
            return None
        return Result(
            key=key,
            text=data["text"],
            usage=Usage.from_dict(data["usage"]),
            status=data["status"],
            error=data.get("error"),
            finish_reason=data.get("finish_reason"),
            request_id=data.get("request_id"),
            latency_ms=float(data.get("latency_ms") or 0.0),
            attempts=0,
            from_cache=True,
            parsed=data.get("parsed"),
        )

    def put(self, result: Result) -> None:
        """Persist a billed result; call before anything else uses it."""
        if self._cache is None:
            return
        record = {
            "format": _FORMAT,
            "text": result.text,
            "usage": result.usage.to_dict(),
            "status": result.status,
            "error": result.error,
            "finish_reason": result.finish_reason,
            "request_id": result.request_id,
            "latency_ms": result.latency_ms,
            "parsed": result.parsed,
        }
        self._cache.set(result.key, json.dumps(record, ensure_ascii=False))

    def __len__(self) -> int:
        return 0 if self._cache is None else len(self._cache)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def as_fresh(result: Result) -> Result:
    """A copy of a cached result that is not marked as coming from the cache."""
    return replace(result, from_cache=False)
