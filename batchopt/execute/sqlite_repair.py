"""A damaged SQLite file: say what is wrong with it, move it aside, read what can be read.

Used by the run state and the response cache, which rebuild a fresh file from what is saved.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any


def sqlite_problem(path: Path) -> str | None:
    """Why the SQLite file at `path` is damaged (`quick_check`'s first complaints, or that it is
    not a database), or None if it is sound. A locked or unreadable file is not damaged: its
    OperationalError is raised as it is."""
    try:
        db = sqlite3.connect(str(path), timeout=30.0)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "") or ""
        if isinstance(exc, sqlite3.OperationalError) and not ("CORRUPT" in name
                                                             or "NOTADB" in name):
            raise
        return str(exc) or type(exc).__name__
    problems = [" ".join(str(row[0]).replace("*** in database main ***", "").split())
                for row in rows if row and row[0] != "ok"]
    if not problems:
        return None
    return "; ".join(p for p in problems[:2] if p) or "quick_check failed"


def move_aside(path: Path) -> Path:
    """Rename a damaged SQLite file (and its -wal and -shm) to `<name>.corrupt-<time>`."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(aside.with_name(aside.name + suffix))
    return aside


def readable_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    """The rows of `query` over a damaged SQLite file, up to the first page that fails."""
    rows: list[tuple[Any, ...]] = []
    try:
        db = sqlite3.connect(str(path), timeout=30.0)
    except sqlite3.DatabaseError:
        return rows
    try:
        for row in db.execute(query):
            rows.append(tuple(row))
    except sqlite3.DatabaseError:
        pass  # what was read before the broken page is kept
    finally:
        db.close()
    return rows
