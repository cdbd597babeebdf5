"""The response cache: every billed answer is written here the moment it arrives.

Keyed by `Request.key` (provider, endpoint, model, parameters and prompt), so a re-run of the
same job is answered from disk and spends nothing. Backed by diskcache (SQLite), which is safe
for several processes at once. Holds answers and usage only, never credentials.
"""

from __future__ import annotations

import json
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
            # No eviction: diskcache's default culls past 1 GB, and a culled answer is paid again.
            self._cache = diskcache.Cache(str(path), eviction_policy="none", size_limit=2**62)

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
            mode=data.get("mode") or "online",
            batch_id=data.get("batch_id"),
            paid_run_id=data.get("run_id"),
            retry_reason=data.get("retry_reason"),
        )

    def put(self, result: Result, run_id: str | None = None) -> None:
        """Persist a billed result; call before anything else uses it."""
        self.put_many([result], run_id)

    def put_many(self, results: list[Result], run_id: str | None = None) -> None:
        """Persist billed results in one transaction (one commit instead of one per result).

        `run_id` names the run that paid for them: a resumed run counts them as its own spend,
        any other run as cache hits."""
        if self._cache is None or not results:
            return
        with self._cache.transact():
            for result in results:
                self._cache.set(result.key, _record(result, run_id))

    def __len__(self) -> int:
        return 0 if self._cache is None else len(self._cache)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def _record(result: Result, run_id: str | None) -> str:
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
        "mode": result.mode,
        "batch_id": result.batch_id,
        "run_id": run_id,
        "retry_reason": result.retry_reason,
    }
    return json.dumps(record, ensure_ascii=False)
