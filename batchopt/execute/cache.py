"""The response cache: every billed answer is written here the moment it arrives.

Keyed by `Request.key` (provider, endpoint, model, parameters and prompt), so a re-run of the
same job is answered from disk and spends nothing. Backed by diskcache (SQLite), which is safe
for several processes at once. Holds answers and usage only, never credentials.

Each answer is also appended to a journal beside it (`journal.jsonl`, one JSON line per answer,
written before the cache), so a damaged cache loses nothing that was paid for:

- on open, `cache.db` is checked (`PRAGMA quick_check`); a damaged one is moved aside to
  `cache.db.corrupt-<time>` and a fresh cache is rebuilt from the journal and from whatever rows
  of the old file can still be read; a cache found empty beside a non-empty journal (a file cut
  to nothing) is rebuilt the same way;
- an entry that cannot be read or parsed (a value file cut short) is answered from the journal;
- a journal line cut short by a crash is skipped.

Each is one warning line on stderr (logging) that says what was found and how many answers were
kept. What neither the cache nor the journal holds is asked (and paid for) again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

from batchopt.execute.sqlite_repair import move_aside, readable_rows, sqlite_problem
from batchopt.records import Result, Usage

_FORMAT = 1
JOURNAL = "journal.jsonl"
OFFSET = "journal.offset"  # how much of the journal the cache was checked against at open
log = logging.getLogger(__name__)


class ResponseCache:
    """Billed results by request key, on disk."""

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._cache: Any = None
        self._journal: dict[str, str] | None = None  # key -> record, read when first needed
        if enabled:
            path.mkdir(parents=True, exist_ok=True)
            self._open()

    def _open(self) -> None:
        import diskcache

        db = self.path / "cache.db"
        problem = sqlite_problem(db) if db.exists() and db.stat().st_size else None
        salvaged: list[tuple[Any, ...]] = []
        if problem:
            salvaged = readable_rows(db, "SELECT key, raw, mode, filename, value FROM Cache")
            aside = move_aside(db)
        # No eviction: diskcache's default culls past 1 GB, and a culled answer is paid again.
        self._cache = diskcache.Cache(str(self.path), eviction_policy="none", size_limit=2**62)
        journal = self.path / JOURNAL
        if problem:
            kept = self._rebuild(salvaged)
            self._save_offset(journal.stat().st_size if journal.exists() else 0)
            log.warning(
                "warning: response cache %s is damaged (%s): moved it to %s and rebuilt %d "
                "answer(s) from %s and the rows still readable; any other answer is asked (and "
                "paid for) again", db, problem, aside.name, kept, JOURNAL)
        elif len(self._cache) == 0 and journal.exists() and journal.stat().st_size:
            kept = self._rebuild([])
            log.warning("warning: response cache %s was empty but %s holds answers: rebuilt %d "
                        "answer(s) from it", db, JOURNAL, kept)
            self._save_offset(journal.stat().st_size)
        else:
            self._recover_tail()

    def _recover_tail(self) -> None:
        """Answers journaled after the last open but missing from cache.db (a process stopped
        between the two writes) are put in the cache: they were paid for. Only the journal past
        the offset recorded at the last open is read, so opening stays cheap."""
        journal = self.path / JOURNAL
        if not journal.exists():
            return
        start = self._offset()
        size = journal.stat().st_size
        start = 0 if size < start else start  # a journal replaced since: read it all
        if size == start:
            return
        with open(journal, "rb") as handle:
            handle.seek(start)
            tail = handle.read(size - start)
        complete = tail.rfind(b"\n") + 1  # a line still being written is read next time
        missing = []
        for line in tail[:complete].split(b"\n"):
            try:
                key, record = json.loads(line)
            except (ValueError, TypeError):
                continue  # a torn line, or the empty string after the last newline
            if isinstance(key, str) and isinstance(record, str) and _parse(record) and (
                key not in self._cache
            ):
                missing.append((key, record))
        if missing:
            with self._cache.transact():
                for key, record in missing:
                    self._cache.set(key, record)
            log.warning("warning: response cache %s: %d answer(s) were in %s but not in the "
                        "cache (a run stopped between the two writes): restored", self.path,
                        len(missing), JOURNAL)
        self._save_offset(start + complete)

    def _offset(self) -> int:
        try:
            return int((self.path / OFFSET).read_text(encoding="ascii"))
        except (OSError, ValueError):
            return 0

    def _save_offset(self, size: int) -> None:
        temp = self.path / f"{OFFSET}.{os.getpid()}.tmp"
        temp.write_text(str(size), encoding="ascii")
        os.replace(temp, self.path / OFFSET)

    def _rebuild(self, salvaged: list[tuple[Any, ...]]) -> int:
        """Fill the (fresh) cache from the old file's readable rows, then the journal."""
        records = dict(self._salvaged_records(salvaged))
        records.update(self._journal_records())
        with self._cache.transact():
            for key, record in records.items():
                self._cache.set(key, record)
        return len(records)

    def _salvaged_records(self, rows: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
        out = []
        for key, raw, mode, filename, value in rows:
            if not raw or not isinstance(key, str):
                continue
            if mode == 3 and filename:  # diskcache's MODE_TEXT: the value is in a file
                try:
                    value = (self.path / filename).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
            if isinstance(value, str) and _parse(value) is not None:
                out.append((key, value))
        return out

    def _journal_records(self) -> dict[str, str]:
        """key -> record from the journal (the last line of a key wins); torn lines skipped."""
        if self._journal is not None:
            return self._journal
        records: dict[str, str] = {}
        bad = 0
        try:
            with open(self.path / JOURNAL, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        key, record = json.loads(line)
                    except (ValueError, TypeError):
                        bad += 1
                        continue
                    if isinstance(key, str) and isinstance(record, str) and _parse(record):
                        records[key] = record
                    else:
                        bad += 1
        except FileNotFoundError:
            pass
        if bad:
            log.warning("warning: %s: skipped %d unreadable line(s) (cut short by a crash?)",
                        self.path / JOURNAL, bad)
        self._journal = records
        return records

    def get(self, key: str) -> Result | None:
        """The cached result for `key`, marked `from_cache`, or None."""
        if self._cache is None:
            return None
        try:
            raw = self._cache.get(key)
            data = None if raw is None else _parse(raw)
            problem = None if raw is None or data is not None else "its record cannot be parsed"
        except (sqlite3.DatabaseError, OSError, UnicodeDecodeError) as exc:
            data, problem = None, f"{type(exc).__name__}: {exc}"
        if problem is not None:
            record = self._journal_records().get(key)
            data = _parse(record) if record is not None else None
            log.warning("warning: response cache %s: entry %s is damaged (%s); %s", self.path,
                        key[:12], problem,
                        "answered from the journal" if data else "it is asked again")
        if data is None or data.get("format") != _FORMAT:
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
        """Persist billed results in one transaction (one commit instead of one per result),
        after appending them to the journal.

        `run_id` names the run that paid for them: a resumed run counts them as its own spend,
        any other run as cache hits."""
        if self._cache is None or not results:
            return
        records = [(result.key, _record(result, run_id)) for result in results]
        self._append(records)
        try:
            with self._cache.transact():
                for key, record in records:
                    self._cache.set(key, record)
        except sqlite3.DatabaseError as exc:  # the journal holds them; the next run rebuilds
            log.warning("warning: response cache %s cannot be written (%s); %d answer(s) kept "
                        "in %s only", self.path, exc, len(records), JOURNAL)

    def _append(self, records: list[tuple[str, str]]) -> None:
        lines = "".join(json.dumps([key, record], ensure_ascii=False) + "\n"
                        for key, record in records)
        fd = os.open(self.path / JOURNAL, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size and os.pread(fd, 1, os.fstat(fd).st_size - 1) != b"\n":
                lines = "\n" + lines  # a line cut short by a crash stays on a line of its own
            os.write(fd, lines.encode("utf-8"))  # one write: appends of processes never mix
        finally:
            os.close(fd)
        if self._journal is not None:
            self._journal.update(records)

    def __len__(self) -> int:
        return 0 if self._cache is None else len(self._cache)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def _parse(raw: Any) -> dict[str, Any] | None:
    """A cached record, or None if it is not one (cut short, garbage)."""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or not {"text", "usage", "status"} <= data.keys():
        return None
    return data


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
