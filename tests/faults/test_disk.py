"""Disk: a response cache or run state found cut short or damaged is detected, said in one warning
line, rebuilt from what is still sound, and what was paid for is not paid again wherever it can
be recovered; what cannot is paid again after the warning, and the tests count it exactly."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from faults import tally
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.execute.cache import JOURNAL, ResponseCache
from batchopt.execute.state import RunState
from batchopt.records import Result, Usage

BATCHOPT = Path(sys.executable).parent / "batchopt"
N = 12


def _pipeline(tmp_path: Path, **execution: object) -> Path:
    data = pipeline_dict(execution={"poll_seconds": 0.05, **execution})
    path = write_pipeline(tmp_path, data)
    pl.DataFrame([{"ticket_id": f"T{i:02d}", "subject": "Order", "body": f"Where is #{700 + i}?"}
                  for i in range(N)]).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _run(fake, path: Path, run_id: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BATCHOPT), "run", str(path), "--run-id", run_id, "--quiet", *extra],
                          env=fake_env(fake), capture_output=True, text=True, timeout=180)


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "out" / "cache" / "tickets"


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def _corrupt_page_of(db: Path, name: str) -> None:
    """Overwrite the root page of table or index `name` with garbage."""
    con = sqlite3.connect(db)
    page = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0]
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write(b"\xff" * size)


@pytest.fixture
def paid(fake, tmp_path) -> Path:
    """A pipeline whose first run (id "a") paid for N answers online."""
    path = _pipeline(tmp_path)
    first = _run(fake, path, "a")
    assert first.returncode == 0, first.stderr
    assert fake.stats()["requests"] == N
    assert (_cache(tmp_path) / JOURNAL).read_text().count("\n") == N
    return path


# ---- the response cache --------------------------------------------------------------------

def test_cache_cut_in_half_is_rebuilt_from_the_journal(fake, tmp_path, paid):
    db = _cache(tmp_path) / "cache.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    tally.add("disk faults tried")
    again = _run(fake, paid, "b")
    assert again.returncode == 0, again.stderr
    [line] = _warnings(again.stderr)
    assert f"response cache {db} is damaged" in line and f"rebuilt {N} answer(s)" in line
    assert list(db.parent.glob("cache.db.corrupt-*"))
    assert fake.stats()["requests"] == N  # nothing paid twice
    assert (_ledger(tmp_path, "b")["mode"] == "cache").all()
    third = _run(fake, paid, "c")  # the rebuilt cache is sound: no warning the next time
    assert third.returncode == 0 and _warnings(third.stderr) == []


def test_garbage_cache_and_a_torn_journal_pay_exactly_the_lost_answer(fake, tmp_path, paid):
    db, journal = _cache(tmp_path) / "cache.db", _cache(tmp_path) / JOURNAL
    db.write_bytes(b"this is not a database " * 500)
    text = journal.read_bytes()
    last = text.rstrip(b"\n").rsplit(b"\n", 1)[1]
    journal.write_bytes(text[: len(text) - len(last) // 2 - 1])  # a crash mid-line
    tally.add("disk faults tried")
    again = _run(fake, paid, "b")
    assert again.returncode == 0, again.stderr
    lines = _warnings(again.stderr)
    assert any("skipped 1 unreadable line(s)" in line for line in lines), lines
    assert any("file is not a database" in line and f"rebuilt {N - 1} answer(s)" in line
               for line in lines), lines
    assert fake.stats()["requests"] == N + 1
    modes = _ledger(tmp_path, "b")["mode"].to_list()
    assert modes.count("cache") == N - 1 and modes.count("online") == 1
    after = journal.read_text().splitlines()
    assert len(after) == N + 1 and after[-1].startswith('["')  # the new answer on its own line


def test_a_damaged_entry_is_answered_from_the_journal(fake, tmp_path, paid):
    db = _cache(tmp_path) / "cache.db"
    con = sqlite3.connect(db)
    con.execute("UPDATE Cache SET value = substr(value, 1, 20) WHERE rowid = "
                "(SELECT min(rowid) FROM Cache)")
    con.commit()
    con.close()
    tally.add("disk faults tried")
    again = _run(fake, paid, "b")
    assert again.returncode == 0, again.stderr
    [line] = _warnings(again.stderr)
    assert "is damaged (its record cannot be parsed); answered from the journal" in line
    assert fake.stats()["requests"] == N


def test_a_damaged_index_keeps_every_row_even_without_a_journal(fake, tmp_path, paid):
    """A cache written before the journal existed: the rows still readable are kept."""
    db = _cache(tmp_path) / "cache.db"
    (_cache(tmp_path) / JOURNAL).unlink()
    _corrupt_page_of(db, "Cache_key_raw")
    tally.add("disk faults tried")
    again = _run(fake, paid, "b")
    assert again.returncode == 0, again.stderr
    [line] = _warnings(again.stderr)
    assert "is damaged" in line and f"rebuilt {N} answer(s)" in line
    assert fake.stats()["requests"] == N


def test_without_a_journal_what_is_lost_is_paid_again_after_the_warning(fake, tmp_path, paid):
    db = _cache(tmp_path) / "cache.db"
    (_cache(tmp_path) / JOURNAL).unlink()
    db.write_bytes(b"\x00" * 4096 + b"garbage")
    tally.add("disk faults tried")
    again = _run(fake, paid, "b")
    assert again.returncode == 0, again.stderr
    [line] = _warnings(again.stderr)
    assert "rebuilt 0 answer(s)" in line and "asked (and paid for) again" in line
    assert fake.stats()["requests"] == 2 * N
    assert (_ledger(tmp_path, "b")["mode"] == "online").all()


def test_a_cache_cut_to_nothing_is_rebuilt(fake, tmp_path, paid):
    db = _cache(tmp_path) / "cache.db"
    db.write_bytes(b"")
    tally.add("disk faults tried")
    again = _run(fake, paid, "b")
    assert again.returncode == 0, again.stderr
    [line] = _warnings(again.stderr)
    assert f"was empty but {JOURNAL} holds answers: rebuilt {N} answer(s)" in line
    assert fake.stats()["requests"] == N


def test_a_value_file_cut_short_is_read_from_the_journal(tmp_path, caplog):
    """Answers over 32 KB live in files beside cache.db; one cut short is read from the
    journal."""
    cache = ResponseCache(tmp_path / "c")
    long = "word " * 10_000
    cache.put(Result(key="k1", text=long, usage=Usage(5, 7)), run_id="r")
    cache.close()
    [value_file] = [p for p in (tmp_path / "c").rglob("*.val")]
    value_file.write_bytes(value_file.read_bytes()[:100])
    cache = ResponseCache(tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        got = cache.get("k1")
    cache.close()
    assert got is not None and got.text == long and got.usage == Usage(5, 7)
    assert "answered from the journal" in caplog.text


# ---- the run state -------------------------------------------------------------------------

def test_a_damaged_state_of_a_finished_batch_run_costs_nothing(bfake, tmp_path):
    path = _pipeline(tmp_path, mode="batch")
    first = _run(bfake, path, "n")
    assert first.returncode == 0, first.stderr
    state = _cache(tmp_path) / "runs" / "n" / "state.sqlite"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    tally.add("disk faults tried")
    again = _run(bfake, path, "n")
    assert again.returncode == 0, again.stderr
    [line] = _warnings(again.stderr)
    assert f"run state {state} is damaged" in line
    assert bfake.stats()["requests"] == N and bfake.stats()["batches_created"] == 1
    assert (_ledger(tmp_path, "n")["status"] == "ok").all()


def _batch_out(fake, tmp_path: Path) -> tuple[Path, Path]:
    fake.batch_seconds = 1.5
    path = _pipeline(tmp_path, mode="batch")
    out = _run(fake, path, "n", "--no-wait")
    assert out.returncode == 75, out.stderr
    state = _cache(tmp_path) / "runs" / "n" / "state.sqlite"
    return path, state


def test_a_damaged_index_of_a_state_keeps_the_batch_out_and_collects_it(fake, tmp_path):
    path, state = _batch_out(fake, tmp_path)
    _corrupt_page_of(state, "items_key")
    tally.add("disk faults tried")
    again = _run(fake, path, "n")
    assert again.returncode == 0, again.stderr
    [line] = _warnings(again.stderr)
    assert "is damaged" in line and f"(1 batch submission(s), {N} row record(s))" in line
    stats = fake.stats()
    assert stats["batches_created"] == 1 and stats["requests"] == N  # collected, not resent
    assert (_ledger(tmp_path, "n")["mode"] == "batch").all()


def test_a_lost_state_with_a_batch_out_resends_its_rows_after_the_warning(fake, tmp_path):
    path, state = _batch_out(fake, tmp_path)
    state.write_bytes(b"garbage" * 1000)
    tally.add("disk faults tried")
    again = _run(fake, path, "n")
    assert again.returncode == 0, again.stderr
    [line] = _warnings(again.stderr)
    assert "(0 batch submission(s), 0 row record(s))" in line
    assert "cannot be collected and its rows will be sent again" in line
    stats = fake.stats()
    assert stats["batches_created"] == 2 and stats["requests"] == 2 * N  # the old batch ran too


def test_state_salvage_copies_the_readable_rows(tmp_path, caplog):
    folder = tmp_path / "run"
    state = RunState.open(folder)
    state.set("started", {"mode": "batch"})
    state.begin_submission("tag-1", 1, "openai", "gpt-4o-mini", ["k1", "k2"])
    state.record_batch_id("tag-1", "batch_1")
    state.close()
    _corrupt_page_of(folder / "state.sqlite", "items_key")
    with caplog.at_level(logging.WARNING):
        state = RunState.open(folder)
    assert "(1 batch submission(s), 2 row record(s))" in caplog.text
    assert state.get("started") == {"mode": "batch"}
    assert [s.batch_id for s in state.submissions()] == ["batch_1"]
    assert state.open_keys() == {"k1", "k2"}
    state.close()
    assert list(folder.glob("state.sqlite.corrupt-*"))
