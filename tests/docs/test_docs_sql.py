"""The docs' example SQL over the ledger runs as written.

Every `batchopt ledger query "..."` and `duckdb -c "..."` command in the sh blocks of README.md
and docs/*.md, and every ```sql block, is run word for word from a folder whose `out/ledger`
holds the ledger of two real runs against the fake server: a cascade that escalates, dedup
followers, the provider's prompt cache, then a re-run answered mostly from the response cache
with three new rows that fail on both tiers. Each must run and return rows. docs/ledger.md, the
ledger's page, must use every shipped view and macro and name every ledger column.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner
from doc_blocks import DOCS, ROOT, Block, ledger_sql_commands, sql_blocks
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.config.pipeline import load_pipeline
from batchopt.fakeapi import FakeServer
from batchopt.ledger.ledger import LEDGER_COLUMNS
from batchopt.run.runner import RunOptions, run_pipeline

LEDGER_PAGE = DOCS / "ledger.md"
VIEWS_SQL = ROOT / "batchopt" / "ledger" / "views.sql"
RUN_IDS = ("2026-11-24", "2026-11-25")  # the docs' examples name the second

SHORT = "Where is my order?"
LONG = (
    "My order arrived with the wrong colour, the box was damaged, the invoice shows the "
    "wrong address and the tracking page still says it is in transit, what now?"
)
# about 1,300 tokens that every request sends first: the provider's prompt cache reads them
CONTEXT = " ".join(
    f"Rule {i}: answer politely, name the order number, and never promise a refund date."
    for i in range(80)
)

COMMANDS = ledger_sql_commands()
SQL_BLOCKS = sql_blocks()


def _label(where: str, words: list[str]) -> str:
    sql = words[3] if words[0] == "batchopt" else words[-1]
    return f"{where} {' '.join(sql.split())[:50]}"


def _tickets(extra: int) -> pl.DataFrame:
    bodies = [f"{SHORT} #{100 + i}" for i in range(6)] + [f"{LONG} #{200 + i}" for i in range(4)]
    bodies += [f"{SHORT} #100"]  # an exact copy: a dedup follower
    bodies += [f"{SHORT} #{900 + i}" for i in range(extra)]
    return pl.DataFrame(
        [{"ticket_id": f"T{i:02d}", "subject": "Order", "body": b} for i, b in enumerate(bodies)]
    )


@pytest.fixture(scope="module")
def workdir(fake_server: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with out/ledger: the ledgers of two fake-server runs of a cascade pipeline."""
    folder = tmp_path_factory.mktemp("docs")
    data = pipeline_dict(
        routing={
            "strategy": "cascade",
            "tiers": ["cheap", "strong"],
            "validators": [{"type": "finish_reason"}, {"type": "refusal"}],
        }
    )
    data["prompt"]["context"] = CONTEXT
    for name, model, max_tokens in (("cheap", "gpt-4o-mini", 16), ("strong", "gpt-4o", 64)):
        data["profiles"][name] = {
            "provider": "openai", "model": model, "max_tokens": max_tokens,
            "concurrency": 1, "max_attempts": 1, "timeout_s": 10,
        }
    path = write_pipeline(folder, data)
    env = fake_env(fake_server, "sk-test-docs-01", "sk-ant-test-docs-02")
    fake_server.reset()
    fake_server.latency_ms = 0
    try:
        for run_id, extra in zip(RUN_IDS, (0, 3), strict=True):
            _tickets(extra).write_parquet(folder / "data" / "tickets.parquet")
            if extra:  # the new rows fail on the cheap tier, then on the strong one
                fake_server.set_faults([{"status": 400, "count": 2 * extra}])
            summary = run_pipeline(load_pipeline(path), RunOptions(run_id=run_id), env=env)
            assert summary.pipeline == "tickets"
    finally:
        fake_server.reset()
    yield folder


def test_the_ledger_page_has_queries_naming_every_shipped_view_and_macro() -> None:
    assert len(COMMANDS) >= 10
    on_page = [words for _, words in ledger_sql_commands([LEDGER_PAGE])]
    text = " ".join(" ".join(words) for words in on_page)
    shipped = re.findall(
        r"CREATE OR REPLACE (?:VIEW|MACRO) (\w+)", VIEWS_SQL.read_text(encoding="utf-8")
    )
    assert len(shipped) >= 13
    missing = [name for name in shipped if not re.search(rf"\b{name}\b", text)]
    assert not missing, f"docs/ledger.md queries never use {missing}"


def test_the_ledger_page_names_every_ledger_column() -> None:
    text = LEDGER_PAGE.read_text(encoding="utf-8")
    missing = [name for name in LEDGER_COLUMNS if f"`{name}`" not in text]
    assert not missing, f"docs/ledger.md never names the ledger columns {missing}"


def test_the_run_behind_the_examples_has_what_they_ask_about(workdir: Path) -> None:
    parts = sorted(workdir.glob("out/ledger/pipeline=tickets/run_id=*/part.parquet"))
    ledger = pl.concat([pl.read_parquet(p) for p in parts])
    assert ledger.height == 11 + 14
    assert {"online", "cache", "dedup", "failed"} <= set(ledger["mode"])
    assert ledger["escalated"].any() and (ledger["cached_input_tokens"] > 0).any()


@pytest.mark.parametrize(("where", "words"), COMMANDS, ids=[_label(*c) for c in COMMANDS])
def test_docs_query_runs_as_written(
    where: str, words: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    if words[0] == "batchopt":
        result = CliRunner().invoke(main, words[1:])
        assert result.exit_code == 0, f"{where}: {result.output}"
        out = result.output.strip()
        fmt = words[words.index("--format") + 1] if "--format" in words else "table"
        if fmt == "json":
            assert json.loads(out), out
        elif fmt == "csv":
            assert len(list(csv.reader(io.StringIO(out)))) > 1, out
        else:
            count = re.fullmatch(r"\((\d+) rows?\)", out.splitlines()[-1])
            assert count and int(count.group(1)) > 0, out
        return
    # duckdb -c ".read FILE" -c "SQL": each -c in turn, in one in-memory database
    assert words[0] == "duckdb" and words[1::2] == ["-c"] * (len(words) // 2)
    con = duckdb.connect()
    try:
        rows: list[tuple[object, ...]] = []
        for command in words[2::2]:
            if command.startswith(".read "):
                con.execute(Path(command.removeprefix(".read ")).read_text(encoding="utf-8"))
            else:
                rows = con.execute(command).fetchall()
    finally:
        con.close()
    assert rows, words


@pytest.mark.parametrize("block", SQL_BLOCKS, ids=[b.where for b in SQL_BLOCKS])
def test_docs_sql_block_runs_after_the_views(
    block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ```sql block runs in any DuckDB client once views.sql is read (what `.read
    out/ledger/views.sql` does in the DuckDB CLI) and returns rows; and as the SQL of
    `batchopt ledger query`."""
    monkeypatch.chdir(workdir)
    con = duckdb.connect()
    try:
        con.execute(Path("out/ledger/views.sql").read_text(encoding="utf-8"))
        assert con.execute(block.text).fetchall(), block.where
    finally:
        con.close()
    args = ["ledger", "query", "--ledger", "out/ledger", "--", block.text]  # may start "--"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, f"{block.where}: {result.output}"
