"""A run's state on disk: which batches it submitted and what came back, so a run outlives
its process.

One SQLite file per run (`<cache>/<pipeline>/runs/<run_id>/state.sqlite`). A submission is
written before the provider is asked to create the batch (with the tag the batch will carry),
its batch id the moment the provider returns it, and each row's outcome as the results are
read; every write is its own transaction. So a process killed at any point leaves a state from
which the next `batchopt run --run-id` knows what it has, what is still with the provider and
what was never sent.

`RunLock` keeps two processes from advancing the same run at once: an exclusive `flock` on a
file beside the state, released by the kernel when its holder dies (even by SIGKILL).

A state file found damaged on open (`PRAGMA quick_check` fails, or it is not a database) is
moved aside to `state.sqlite.corrupt-<time>`, what can still be read of it is copied into a fresh
one, and a warning says how much was saved. A batch whose record is lost cannot be collected:
its rows are sent again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchopt.errors import RunLockedError
from batchopt.execute.sqlite_repair import move_aside, readable_rows, sqlite_problem
from batchopt.execute.state_calls import CallJournal
from batchopt.execute.state_schema import CALL_FIELDS, SCHEMA, TABLES

OPEN_STATES = ("submitting", "pending")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """One batch this run asked a provider for."""

    tag: str
    round: int
    provider: str
    model: str
    requests: int
    batch_id: str | None
    state: str
    raw_status: str | None
    error: str | None
    created_at: float
    ended_at: float | None


def run_dir(cache_dir: Path, pipeline: str, run_id: str) -> Path:
    """Where a run keeps its state and lock."""
    return cache_dir / pipeline / "runs" / run_id


class RunState(CallJournal):
    """The state file of one run; open with `RunState.open`, close with `close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._state_id: str | None = None  # `state_id`, once read or made
        path.parent.mkdir(parents=True, exist_ok=True)
        problem = sqlite_problem(path) if path.exists() and path.stat().st_size else None
        salvaged = {t: readable_rows(path, f"SELECT * FROM {t}") for t in TABLES} if problem \
            else {}
        aside = move_aside(path) if problem else None
        self._db = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a recorded batch id survives power loss
        self._db.executescript(SCHEMA)
        if aside is not None:
            self._restore(salvaged, aside, problem or "")

    def _restore(self, rows: dict[str, list[tuple[Any, ...]]], aside: Path, problem: str) -> None:
        """Copy what was read of a damaged state into this fresh one, and say so."""
        tags = {row[0] for row in rows["submissions"] if len(row) == 11}
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO meta VALUES (?, ?)",
                           [r for r in rows["meta"] if len(r) == 2])
            db.executemany(f"INSERT OR IGNORE INTO submissions VALUES ({', '.join('?' * 11)})",
                           [r for r in rows["submissions"] if len(r) == 11])
            db.executemany("INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?)",
                           [r for r in rows["items"] if len(r) == 4 and r[0] in tags])
            db.executemany(f"INSERT OR IGNORE INTO calls VALUES ({', '.join('?' * 19)})",
                           [r for r in rows["calls"] if len(r) == len(CALL_FIELDS)])
        counts = self._db.execute(
            "SELECT (SELECT count(*) FROM submissions), (SELECT count(*) FROM items)").fetchone()
        log.warning(
            "warning: run state %s is damaged (%s): moved it to %s and kept what could be read "
            "(%d batch submission(s), %d row record(s)); a batch whose record is lost cannot be "
            "collected and its rows will be sent again", self.path, problem, aside.name,
            counts[0], counts[1],
        )

    @classmethod
    def open(cls, directory: Path) -> RunState:
        return cls(directory / "state.sqlite")

    @staticmethod
    def exists(directory: Path) -> bool:
        return (directory / "state.sqlite").exists()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- meta -----------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def state_id(self) -> str:
        """This state's own id, made once: batch tags carry it, so a batch found by its tag is
        one this state created, not one another run with the same run id made (another cache
        folder, a deleted state). "" for a state that submitted batches before it had one:
        their tags have no id, and a batch out must still be found."""
        if self._state_id is not None:  # made once and never changed: read once per process
            return self._state_id
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'state_id'").fetchone()
            if row is not None:
                self._state_id = str(json.loads(row[0]))
                return self._state_id
            legacy = db.execute("SELECT 1 FROM submissions LIMIT 1").fetchone() is not None
            made = "" if legacy else uuid.uuid4().hex
            db.execute("INSERT INTO meta(key, value) VALUES ('state_id', ?)", (json.dumps(made),))
        self._state_id = made
        return made

    # ---- submissions ------------------------------------------------------------------------

    def begin_submission(
        self, tag: str, round_: int, provider: str, model: str, keys: list[str]
    ) -> None:
        """Record a batch about to be created, before the provider is asked."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO submissions(tag, round, provider, model, requests, state, created_at)"
                " VALUES (?, ?, ?, ?, ?, 'submitting', ?)",
                (tag, round_, provider, model, len(keys), time.time()),
            )
            db.executemany(
                "INSERT INTO items(tag, key) VALUES (?, ?)", ((tag, key) for key in keys)
            )
            db.executemany(  # sent (maybe billed) until an answer confirms it
                "INSERT INTO calls(key, provider, model, mode, tag, status, sent_at) "
                "VALUES (?, ?, ?, 'batch', ?, 'sent_unconfirmed', ?)",
                ((key, provider, model, tag, time.time()) for key in keys),
            )

    def record_batch_id(self, tag: str, batch_id: str) -> None:
        """The provider created the batch: remember its id at once."""
        with self._tx() as db:
            db.execute(
                "UPDATE submissions SET batch_id = ?, state = 'pending' WHERE tag = ?",
                (batch_id, tag),
            )

    def mark_lost(self, tag: str, why: str) -> None:
        """A submission whose batch was never created: its rows are free to be sent again."""
        self._unbilled(tag, whole=True)
        self._end(tag, "lost", None, why)

    def mark_failed(self, tag: str, raw_status: str, error: str | None) -> None:
        """The provider rejected the batch: none of its rows ran."""
        with self._tx() as db:
            db.execute(
                "UPDATE items SET outcome = 'errored', error = ? WHERE tag = ? AND outcome IS NULL",
                (error or "batch failed", tag),
            )
        self._unbilled(tag, whole=True)
        self._end(tag, "failed", raw_status, error)

    def record_outcomes(self, tag: str, outcomes: Iterable[tuple[str, str, str | None]]) -> None:
        """(key, outcome, error) for rows of a batch, as they are read."""
        with self._tx() as db:
            db.executemany(
                "UPDATE items SET outcome = ?, error = ? WHERE tag = ? AND key = ?",
                ((outcome, error, tag, key) for key, outcome, error in outcomes),
            )
        self._unbilled(tag)

    def mark_collected(self, tag: str, raw_status: str, missing_outcome: str) -> None:
        """Every row of the batch has been read; rows the results left out get `missing_outcome`
        (an expired OpenAI batch leaves out the rows that never ran)."""
        with self._tx() as db:
            db.execute(
                "UPDATE items SET outcome = ?, error = ? WHERE tag = ? AND outcome IS NULL",
                (missing_outcome, f"not in the results of a {raw_status} batch", tag),
            )
        self._unbilled(tag)
        self._end(tag, "collected", raw_status, None)

    def _unbilled(self, tag: str, whole: bool = False) -> None:
        """Rows of a batch that will never answer were not billed: their calls say so. `whole`:
        the batch failed or was never created; else the rows that errored, expired or were
        canceled."""
        rows = "" if whole else (" AND key IN (SELECT key FROM items WHERE tag = calls.tag AND "
                                 "outcome IS NOT NULL AND outcome != 'succeeded')")
        with self._tx() as db:
            db.execute("UPDATE calls SET status = 'not_billed' WHERE tag = ? AND status = "
                       "'sent_unconfirmed'" + rows, (tag,))

    def set_raw_status(self, tag: str, raw_status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE submissions SET raw_status = ? WHERE tag = ?", (raw_status, tag))

    def _end(self, tag: str, state: str, raw_status: str | None, error: str | None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE submissions SET state = ?, raw_status = COALESCE(?, raw_status), "
                "error = ?, ended_at = ? WHERE tag = ?",
                (state, raw_status, error, time.time(), tag),
            )

    def submissions(self, states: tuple[str, ...] | None = None) -> list[Submission]:
        query = "SELECT * FROM submissions"
        args: tuple[str, ...] = ()
        if states:
            query += f" WHERE state IN ({', '.join('?' * len(states))})"
            args = states
        rows = self._db.execute(query + " ORDER BY created_at, tag", args).fetchall()
        return [Submission(*row) for row in rows]

    def next_round(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(round), 0) FROM submissions").fetchone()
        return int(row[0]) + 1

    def keys_of(self, tag: str) -> list[str]:
        rows = self._db.execute("SELECT key FROM items WHERE tag = ?", (tag,)).fetchall()
        return [key for (key,) in rows]

    def open_keys(self) -> set[str]:
        """Keys in a batch that is being created or still with the provider."""
        rows = self._db.execute(
            "SELECT i.key FROM items i JOIN submissions s USING (tag) "
            "WHERE s.state IN ('submitting', 'pending')"
        ).fetchall()
        return {key for (key,) in rows}

    def history(self) -> dict[str, list[tuple[str | None, str | None]]]:
        """key -> what each batch it went through said of it, oldest first: (outcome, note),
        outcome None while that batch is open. Lost submissions (never created) are left out."""
        rows = self._db.execute(
            "SELECT i.key, i.outcome, i.error, s.batch_id FROM items i JOIN submissions s "
            "USING (tag) WHERE s.state != 'lost' ORDER BY s.created_at, s.tag"
        ).fetchall()
        seen: dict[str, list[tuple[str | None, str | None]]] = {}
        for key, outcome, error, batch_id in rows:
            note = None
            if outcome is not None and outcome != "succeeded":
                note = f"{outcome} in {batch_id or 'a batch never created'}"
                note += f" ({error})" if error else ""
            seen.setdefault(key, []).append((outcome, note))
        return seen


class RunLock:
    """An exclusive lock on one run, held for a whole invocation."""

    def __init__(self, directory: Path, run_id: str) -> None:
        self.path = directory / "lock"
        self.run_id = run_id
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"run '{self.run_id}' is being advanced by {holder}; nothing was sent. "
                "Run the same command again once it is done"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"batchopt pid {os.getpid()} since {time.strftime('%H:%M:%S')}".encode())
        self._fd = fd
        return self

    @staticmethod
    def held(directory: Path) -> bool:
        """Whether some process holds this run's lock now."""
        path = directory / "lock"
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
