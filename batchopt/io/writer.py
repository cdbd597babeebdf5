"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def write_atomic(path: Path, write: Callable[[BinaryIO], object], *, sync_folder: bool = False
                 ) -> Path:
    """Call `write` on a temp file in `path`'s folder, fsync it and rename it over `path`;
    with `sync_folder`, fsync the folder too, so the rename itself survives a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """fsync `folder`, so a rename into it survives a crash."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_text_atomic(path: Path, text: str) -> Path:
    """`text` (UTF-8) written to `path` by `write_atomic`."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> Path:
    """Write `frame` to `path` through a temp file in the same folder and an atomic rename."""
    return write_atomic(path, frame.write_parquet)


class ParquetParts:
    """One Parquet file written a frame at a time (each frame a row group), so no caller holds
    the whole table. Nothing appears at `path` until `commit`; leaving the `with` block without
    committing removes the temp file, and a killed process leaves only a hidden `.tmp` beside it.

    Every frame must have the first frame's column names and types."""

    def __init__(self, path: Path, *, sync_folder: bool = False) -> None:
        self.path = Path(path)
        self.sync_folder = sync_folder
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                        dir=self.path.parent)
        os.close(fd)
        self._tmp: Path | None = Path(tmp_name)

    def write(self, frame: pl.DataFrame) -> None:
        if self._tmp is None:
            raise ValueError(f"{self.path}: already committed or abandoned")
        table = frame.to_arrow()
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        elif table.schema != self._schema:
            table = table.cast(self._schema)  # e.g. a column all null in this frame
        self._writer.write_table(table)

    def commit(self, empty: pl.DataFrame | None = None) -> Path:
        """Close the file and rename it over `path`; `empty` gives the schema if no frame
        was written."""
        if self._tmp is None:
            raise ValueError(f"{self.path}: already committed or abandoned")
        if self._writer is None:
            if empty is None:
                raise ValueError(f"{self.path}: nothing written and no schema given")
            self.write(empty.clear())
        assert self._writer is not None
        self._writer.close()
        with open(self._tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self._tmp, self.path)
        self._tmp = None
        if self.sync_folder:
            _fsync_folder(self.path.parent)
        return self.path

    def abandon(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> ParquetParts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abandon()
