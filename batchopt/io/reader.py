"""Read the input rows from Parquet: a file, a folder, a glob, or hive-partitioned folders.

Every problem with the input is an `InputError` that names the file, the column or the row, so it
can be fixed before anything is spent.
"""

from __future__ import annotations

import glob as globlib
from pathlib import Path

import polars as pl

from batchopt.errors import InputError

FILE_COLUMN = "__batchopt_file"
ROW_COLUMN = "__batchopt_row"


def list_input_files(path: Path) -> list[Path]:
    """The Parquet files that `path` names (file, folder searched recursively, or glob)."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(f"{path}: no files match this pattern")
        return files
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise InputError(f"{path}: folder holds no .parquet files")
        return files
    if not path.exists():
        raise InputError(f"{path}: input file not found")
    return [path]


def _check_readable(files: list[Path]) -> None:
    import pyarrow.parquet as pq

    for file in files:
        try:
            pq.read_schema(file)
        except Exception as exc:  # pyarrow raises several types for a broken file
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{file}: not a readable Parquet file ({reason})") from exc


def read_rows(
    path: Path,
    id_column: str,
    required_columns: list[str],
    keep_columns: list[str] | None = None,
    hive_partitioning: bool | None = None,
) -> pl.DataFrame:
    """Read the rows a pipeline needs, checked: ids present, unique and never null.

    Returns the id column, the required columns and `keep_columns` (default: all), with the
    source file and the row number within it in two private columns for error messages.
    """
    files = list_input_files(path)
    _check_readable(files)
    hive_root = path if path.is_dir() else None
    try:
        lazy = pl.scan_parquet(
            files if hive_root is None else hive_root,
            hive_partitioning=hive_partitioning,
            include_file_paths=FILE_COLUMN,
            missing_columns="insert",
            extra_columns="ignore",
        )
        available = lazy.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot read input ({str(exc).splitlines()[0]})") from exc

    available = [c for c in available if c != FILE_COLUMN]
    wanted = [id_column, *required_columns, *(keep_columns or available)]
    missing = sorted({c for c in wanted if c not in available})
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(available)})"
        )
    columns = list(dict.fromkeys(wanted))
    try:
        frame = (
            lazy.select(*columns, FILE_COLUMN)
            .with_columns(pl.int_range(pl.len()).over(FILE_COLUMN).alias(ROW_COLUMN))
            .collect()
        )
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{path}: cannot read input ({str(exc).splitlines()[0]})") from exc

    if frame.height == 0:
        raise InputError(f"{path}: input has no rows")
    _check_ids(frame, id_column)
    return frame


def _check_ids(frame: pl.DataFrame, id_column: str) -> None:
    nulls = frame.filter(pl.col(id_column).is_null())
    if nulls.height:
        first = nulls.row(0, named=True)
        raise InputError(
            f"{first[FILE_COLUMN]}: row {first[ROW_COLUMN]}: id column '{id_column}' is null "
            f"({nulls.height} null id(s) in all)"
        )
    dupes = frame.filter(pl.col(id_column).is_duplicated())
    if dupes.height:
        first = dupes.row(0, named=True)
        raise InputError(
            f"{first[FILE_COLUMN]}: row {first[ROW_COLUMN]}: id {first[id_column]!r} in column "
            f"'{id_column}' is not unique ({dupes[id_column].n_unique()} duplicated id(s))"
        )
