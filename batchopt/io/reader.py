"""Read the input rows from Parquet: a file, a folder, a glob, or hive-partitioned folders.

Every problem with the input is an `InputError` that names the file, the column or the row, so it
can be fixed before anything is spent. Text the prompt uses must be valid UTF-8 without NUL
characters (a Binary column is decoded as UTF-8); other control characters are kept as they are.
"""

from __future__ import annotations

import difflib
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


def input_schema(path: Path, hive_partitioning: bool | None = None) -> dict[str, pl.DataType]:
    """The columns `path` holds and their types, from Parquet metadata only (no rows are read):
    the first file's schema, with key=value folders as columns as `read_rows` reads them."""
    files = list_input_files(path)
    _check_readable(files[:1])
    source, hive_partitioning = _scan_source(path, files, hive_partitioning)
    try:
        schema = pl.scan_parquet(
            source,
            hive_partitioning=hive_partitioning,
            missing_columns="insert",
            extra_columns="ignore",
        ).collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise _unreadable(path, exc) from exc
    return dict(schema.items())


def _scan_source(path: Path, files: list[Path], hive_partitioning: bool | None
                 ) -> tuple[Path | list[Path], bool | None]:
    """What polars scans for `path`, and its hive_partitioning setting: a folder as a hive
    dataset, anything else as its list of files."""
    if not path.is_dir():
        return files, hive_partitioning
    if any(p.is_file() and p.suffix != ".parquet" for p in path.rglob("*")):
        # polars refuses a folder that holds other files (a README, a _SUCCESS marker): the
        # Parquet files are read as a list, their key=value folders still read as columns
        return files, True if hive_partitioning is None else hive_partitioning
    return path, hive_partitioning


def _unreadable(path: Path, exc: Exception) -> InputError:
    return InputError(f"{path}: cannot read input ({str(exc).splitlines()[0]})")


def read_rows(
    path: Path,
    id_column: str,
    required_columns: list[str],
    keep_columns: list[str] | None = None,
    hive_partitioning: bool | None = None,
    limit: int | None = None,
) -> pl.DataFrame:
    """Read the rows a pipeline needs, checked: ids present, unique and never null.

    Returns the id column, the required columns and `keep_columns` (default: all), with the
    source file and the row number within it in two private columns for error messages.
    `limit` keeps the first rows in read order (files in order, then rows); the scan stops
    there, so trying a pipeline on a few rows of a huge input does not read all of it.
    """
    files = list_input_files(path)
    _check_readable(files)
    source, hive_partitioning = _scan_source(path, files, hive_partitioning)
    try:
        lazy = pl.scan_parquet(
            source,
            hive_partitioning=hive_partitioning,
            include_file_paths=FILE_COLUMN,
            missing_columns="insert",
            extra_columns="ignore",
        )
        available = lazy.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise _unreadable(path, exc) from exc

    columns = _wanted_columns(path, available, [id_column, *required_columns], keep_columns)
    selected = lazy.select(*columns, FILE_COLUMN)
    if limit is not None:  # a prefix of each file read, so row numbers within files still hold
        selected = selected.head(limit)
    try:
        frame = (
            selected
            .with_columns(pl.int_range(pl.len()).over(FILE_COLUMN).alias(ROW_COLUMN),
                          pl.col(FILE_COLUMN).cast(pl.Categorical))  # not a path per row
            .collect()
        )
    except pl.exceptions.PolarsError as exc:
        if "utf-8" in str(exc).lower():
            _locate_bad_utf8(files, columns)
        raise _unreadable(path, exc) from exc

    if frame.height == 0:
        raise InputError(f"{path}: input has no rows")
    _check_ids(frame, id_column)
    return _check_text(frame, [c for c in required_columns if c != id_column])


def _wanted_columns(path: Path, available: list[str], needed: list[str],
                    keep_columns: list[str] | None) -> list[str]:
    """`needed`, then `keep_columns` (default: every column), each once; an InputError names
    the ones the input lacks."""
    available = [c for c in available if c != FILE_COLUMN]
    wanted = [*needed, *(keep_columns or available)]
    missing = sorted({c for c in wanted if c not in available})
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(columns: {', '.join(available)}){_did_you_mean(missing, available)}"
        )
    return list(dict.fromkeys(wanted))


def _did_you_mean(missing: list[str], available: list[str]) -> str:
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.6)
        if close:
            hints.append(f"'{close[0]}' for '{name}'")
    return f"; did you mean {', '.join(hints)}?" if hints else ""


def _where(frame: pl.DataFrame, index: int) -> str:
    return f"{frame[FILE_COLUMN][index]}: row {frame[ROW_COLUMN][index]}"


def _check_text(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Binary columns the prompt uses decoded as UTF-8; NUL characters refused (the first row
    that holds one is named)."""
    masks: dict[str, pl.Series] = {}
    for column in columns:
        if frame.schema[column] == pl.Binary:
            decoded = []
            for i, value in enumerate(frame[column].to_list()):
                decoded.append(None if value is None else _decode(value, frame, i, column))
            frame = frame.with_columns(pl.Series(column, decoded, dtype=pl.String))
        if frame.schema[column] == pl.String:
            masks[column] = frame[column].str.contains("\x00", literal=True).fill_null(False)
    if masks:
        any_nul = pl.DataFrame(masks).select(pl.any_horizontal(pl.all())).to_series()
        if any_nul.any():
            first = int(any_nul.arg_max() or 0)
            column = next(c for c, mask in masks.items() if mask[first])
            raise InputError(
                f"{_where(frame, first)}: column '{column}' holds a NUL character (\\x00); "
                f"remove it before sending ({int(any_nul.sum())} row(s) in all)"
            )
    return frame


def _decode(value: bytes, frame: pl.DataFrame, index: int, column: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{_where(frame, index)}: column '{column}' is not valid UTF-8 "
            f"(byte 0x{value[exc.start]:02x} at offset {exc.start})"
        ) from exc


def _locate_bad_utf8(files: list[Path], columns: list[str]) -> None:
    """Name the file, row and column of the first string value that is not UTF-8."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for file in files:
        names = set(pq.read_schema(file).names)
        for column in (c for c in columns if c in names):
            try:
                chunked = pq.read_table(file, columns=[column]).column(0)
            except (pa.ArrowException, OSError):
                continue
            if not pa.types.is_string(chunked.type) and not pa.types.is_large_string(
                chunked.type
            ):
                continue
            binary = pa.binary() if pa.types.is_string(chunked.type) else pa.large_binary()
            row = 0
            for chunk in chunked.chunks:
                for value in chunk.view(binary).to_pylist():
                    if value is not None:
                        try:
                            value.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise InputError(
                                f"{file}: row {row}: column '{column}' is not valid UTF-8 "
                                f"(byte 0x{value[exc.start]:02x} at offset {exc.start})"
                            ) from None
                    row += 1


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
        same = dupes.filter(pl.col(id_column) == first[id_column])
        also = [
            f"row {row}" if file == first[FILE_COLUMN] else f"{file}: row {row}"
            for file, row in same.select(FILE_COLUMN, ROW_COLUMN).rows()[1:4]
        ]
        raise InputError(
            f"{first[FILE_COLUMN]}: row {first[ROW_COLUMN]}: id {first[id_column]!r} in column "
            f"'{id_column}' is not unique (also at {', '.join(also)}; "
            f"{dupes[id_column].n_unique()} duplicated id(s) in all)"
        )
