"""The ledger on disk: hive-partitioned Parquet as the truth, DuckDB views on top.

Layout: `<root>/pipeline=<p>/run_id=<id>/part.parquet`. The part files do not carry `pipeline`
and `run_id` themselves: DuckDB 2.x takes hive values from the folder names (overriding a column
of the same name in the file) and guesses their types, so `run_id=20261125` would read back as a
BIGINT. The folders are the one place those values live; the views declare them VARCHAR.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import io
import json
import math
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from batchopt.errors import ConfigError, InputError
from batchopt.io.writer import ParquetParts, write_atomic
from batchopt.ledger.calls_table import CALLS_FILE, calls_view_sql
from batchopt.ledger.ledger import LEDGER_SCHEMA

if TYPE_CHECKING:
    import duckdb

PART_FILE = "part.parquet"
VIEWS_FILE = "views.sql"
FORMATS = ("table", "csv", "json")
_PACKAGE_VIEWS = Path(__file__).with_name("views.sql")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


def _check_name(kind: str, value: str) -> None:
    if not _SAFE_NAME.fullmatch(value):
        raise ConfigError(
            f"{kind} {value!r} cannot name a ledger folder; use letters, digits, '_', '.', ':' "
            "and '-', starting with a letter, digit or '_'"
        )


def part_path(root: Path, pipeline: str, run_id: str) -> Path:
    """Where one run's ledger part lives: `root/pipeline=<p>/run_id=<id>/part.parquet`."""
    return Path(root) / f"pipeline={pipeline}" / f"run_id={run_id}" / PART_FILE


class LedgerPart(ParquetParts):
    """One run's ledger file, written a chunk at a time; `commit` puts it in place."""

    def __init__(self, root: Path, pipeline: str, run_id: str) -> None:
        _check_name("pipeline", pipeline)
        _check_name("run_id", run_id)
        self.pipeline, self.run_id = pipeline, run_id
        super().__init__(part_path(root, pipeline, run_id), sync_folder=True)

    def write(self, frame: pl.DataFrame) -> None:
        for column, expected in (("pipeline", self.pipeline), ("run_id", self.run_id)):
            if column in frame.columns:
                other = frame.filter(pl.col(column) != expected)[column].unique().to_list()
                if other:
                    raise ValueError(
                        f"ledger rows for {column} {other[:3]} cannot be written "
                        f"under {column}={expected}"
                    )
        super().write(frame.drop("pipeline", "run_id", strict=False))


def write_ledger(ledger: pl.DataFrame, root: Path, pipeline: str, run_id: str) -> Path:
    """Write one run's ledger to `root/pipeline=<p>/run_id=<id>/part.parquet`, atomically.

    A re-run with the same run_id replaces that run's part. Rows naming another pipeline or run
    are refused (ValueError).
    """
    with LedgerPart(root, pipeline, run_id) as part:
        part.write(ledger)
        return part.commit()


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMPTZ" if dtype.time_zone else "TIMESTAMP"
    types = {pl.Date: "DATE", pl.String: "VARCHAR", pl.Float64: "DOUBLE", pl.Int64: "BIGINT",
             pl.Boolean: "BOOLEAN"}
    return types[dtype.base_type()]


def ledger_view_sql(root: Path) -> str:
    """The CREATE VIEW statements of `ledger` over the absolute glob of the part files under
    `root`, and of `calls` over the calls files beside them.

    union_by_name reads a column some parts lack as NULL there; the empty typed row set it is
    united with gives every column of LEDGER_SCHEMA even when no part has it yet (a folder of
    runs written before `run_at` existed), so the views over `ledger` always bind.
    """
    folder = Path(root).expanduser().resolve()
    glob = (folder / "**" / PART_FILE).as_posix()
    columns = ",\n".join(
        f"    NULL::{_duckdb_type(dtype)} AS {name}" for name, dtype in LEDGER_SCHEMA.items()
    )
    return (
        "CREATE OR REPLACE VIEW ledger AS\n"
        f"SELECT * FROM read_parquet({_sql_string(glob)}, hive_partitioning = true,\n"
        "    union_by_name = true, hive_types = {'pipeline': VARCHAR, 'run_id': VARCHAR})\n"
        "UNION ALL BY NAME\n"
        f"SELECT\n{columns}\nWHERE false;\n"
        + calls_view_sql(folder, _sql_string((folder / "**" / CALLS_FILE).as_posix()),
                         _duckdb_type)
    )


def connect(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the view `ledger` over `root` and the views of views.sql.

    Raises InputError if `root` holds no Parquet files.
    """
    import duckdb  # deferred: a run writes its ledger without needing DuckDB

    folder = Path(root).expanduser().resolve()
    if not folder.is_dir() or next(folder.rglob(PART_FILE), None) is None:
        raise InputError(f"{folder}: no ledger files ({PART_FILE}) found; run a pipeline first")
    con = duckdb.connect()
    try:
        con.execute(ledger_view_sql(folder))
        con.execute(_PACKAGE_VIEWS.read_text(encoding="utf-8"))
    except duckdb.Error as exc:
        con.close()
        raise InputError(f"{folder}: cannot read the ledger ({_one_line(exc)})") from exc
    return con


def _one_line(exc: BaseException) -> str:
    """DuckDB's message without the caret drawing: its first paragraph on one line."""
    first = str(exc).strip().split("\n\n", 1)[0]
    return " ".join(line.strip() for line in first.splitlines() if line.strip())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _text(value: Any, null: str, float_format: str = "r") -> str:
    """One value as text: floats in full (repr) by default, nested values as JSON."""
    value = _jsonable(value)
    if value is None:
        return null
    if isinstance(value, float):
        return repr(value) if float_format == "r" else format(value, float_format)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _render_table(names: list[str], types: list[str], rows: list[tuple[Any, ...]]) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="", pad_edge=False)
    numeric = re.compile(r"(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|U\w*INT|FLOAT|DOUBLE|DECIMAL)")
    for name, kind in zip(names, types, strict=True):
        table.add_column(name, justify="right" if numeric.match(kind) else "left")
    for row in rows:
        # 12 significant digits hide float noise (0.006999999999999999) from human eyes only.
        table.add_row(*(_text(v, "NULL", ".12g") for v in row))
    out = io.StringIO()
    Console(
        file=out,
        width=100_000,
        color_system=None,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
    ).print(table)
    lines = [line.rstrip() for line in out.getvalue().splitlines()]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def query(root: Path, sql: str, fmt: str = "table") -> str:
    """Run `sql` against the ledger under `root` and render the result.

    `fmt` is `table` (aligned text), `csv` (header and rows) or `json` (a list of objects); the
    text has no trailing newline, for the caller to print. A SQL error is a ConfigError carrying
    DuckDB's message on one line.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    import duckdb

    con = connect(root)
    try:
        cursor = con.execute(sql)
        description = cursor.description or []
        rows = cursor.fetchall() if description else []
    except duckdb.Error as exc:
        raise ConfigError(f"query failed: {_one_line(exc)}") from exc
    finally:
        con.close()
    names = [d[0] for d in description]
    if fmt == "json":
        records = [dict(zip(names, (_jsonable(v) for v in row), strict=True)) for row in rows]
        return json.dumps(records, ensure_ascii=False, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_text(v, "") for v in row] for row in rows)
        return out.getvalue().removesuffix("\n")
    return _render_table(names, [str(d[1]).upper() for d in description], rows)


def write_views_file(root: Path) -> Path:
    """Write `root/views.sql`: the `ledger` view over the absolute glob plus the other views.

    Run it from any directory with `duckdb -c ".read /path/to/views.sql"`.
    """
    folder = Path(root).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        '-- batchopt ledger views; run with: duckdb -c ".read '
        f'{(folder / VIEWS_FILE).as_posix()}"\n'
        + ledger_view_sql(folder)
        + "\n"
        + _PACKAGE_VIEWS.read_text(encoding="utf-8")
    )
    target = folder / VIEWS_FILE
    write_atomic(target, lambda handle: handle.write(text.encode("utf-8")), sync_folder=True)
    return target
