"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import polars as pl


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
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    """`text` (UTF-8) written to `path` by `write_atomic`."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> Path:
    """Write `frame` to `path` through a temp file in the same folder and an atomic rename."""
    return write_atomic(path, frame.write_parquet)
