"""The `calls` table of a run's state: every call the run id sent, journaled before it is sent
and confirmed when its answer is kept (see `batchopt.run.calls`)."""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from typing import Any

from batchopt.execute.state_schema import CALL_FIELDS


class CallJournal:
    """The `calls` part of `RunState`, which provides the connection and its transactions."""

    _db: sqlite3.Connection

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def calls_sent(self, rows: list[dict[str, Any]]) -> None:
        """Journal online calls about to be sent: `sent_unconfirmed` until answered."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO calls(key, tier, provider, model, kind, mode, status, estimated_usd,"
                " sent_at) VALUES (:key, :tier, :provider, :model, :kind, 'online', "
                "'sent_unconfirmed', :estimated_usd, :sent_at)", rows)

    def calls_unsent(self, keys: list[str]) -> None:
        """Online calls journaled but never sent (stopped before): forget them."""
        with self._tx() as db:
            db.executemany(
                "DELETE FROM calls WHERE id = (SELECT max(id) FROM calls WHERE key = ? AND "
                "mode = 'online' AND status = 'sent_unconfirmed')", ((k,) for k in keys))

    def calls_not_billed(self, keys: list[str]) -> None:
        """Online calls the provider answered with an error: not billed."""
        with self._tx() as db:
            db.executemany(
                "UPDATE calls SET status = 'not_billed', answered_at = ? WHERE id = (SELECT "
                "max(id) FROM calls WHERE key = ? AND mode = 'online' AND status = "
                "'sent_unconfirmed')", ((time.time(), k) for k in keys))

    def calls_confirmed(self, rows: list[dict[str, Any]]) -> None:
        """Answers persisted: the latest unconfirmed call of each key in the same mode becomes
        `confirmed` with its usage and cost; a key without one gets a new confirmed call."""
        fields = ("tier", "provider", "model", "kind", "input_tokens", "cached_input_tokens",
                  "cache_write_tokens", "output_tokens", "cost_usd", "request_id", "batch_id")
        now = time.time()
        # no fsync of its own: the response cache's journal holds the answer durably, and a
        # confirmation lost with the machine is made again from it (`rounds._Round.answer`)
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._confirm(rows, fields, now)
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def _confirm(self, rows: list[dict[str, Any]], fields: tuple[str, ...], now: float) -> None:
        with self._tx() as db:
            for row in rows:
                found = db.execute(
                    "SELECT max(id) FROM calls WHERE key = ? AND mode = ? AND status = "
                    "'sent_unconfirmed'", (row["key"], row["mode"])).fetchone()[0]
                if found is None:
                    db.execute(
                        f"INSERT INTO calls(key, mode, status, answered_at, {', '.join(fields)}) "
                        f"VALUES (?, ?, 'confirmed', ?, {', '.join('?' * len(fields))})",
                        (row["key"], row["mode"], now, *(row[f] for f in fields)))
                else:  # what the journal knew first (tier, kind, estimate) is kept
                    db.execute(
                        "UPDATE calls SET status = 'confirmed', answered_at = ?, "
                        + ", ".join(f"{f} = COALESCE({f}, ?)" if f in ("tier", "kind") else
                                    f"{f} = ?" for f in fields) + " WHERE id = ?",
                        (now, *(row[f] for f in fields), found))

    def calls(self) -> list[dict[str, Any]]:
        """Every call of this run id, oldest first."""
        rows = self._db.execute(f"SELECT {', '.join(CALL_FIELDS)} FROM calls ORDER BY id")
        return [dict(zip(CALL_FIELDS, row, strict=True)) for row in rows.fetchall()]
