"""Shards of the cross-run answered index on disk, read one at a time.

A shard is one immutable file `part-<run>-<uuid>.crs`: magic, header length, a JSON header
(rows, dim, run id, the quantizer its rows were assigned with, section offsets, total size),
then 64-byte-aligned sections: `vectors` (float32 rows x dim), `list_start` (int64, lists + 1,
only in shards stored list by list: rows of inverted list j are rows list_start[j] to
list_start[j+1]), `str_start` (int64, 3 * rows + 1) and `strings` (UTF-8 row id, request key
and text of every row). Vectors and strings are memory-mapped, so reading a candidate's text
costs a few pages, not the shard. It is written to a temporary file, fsynced and renamed: a
reader sees a whole shard or none, and a file whose size differs from its header's is skipped.

Shards of the first format (`part-*.npz`: vectors, row_id, run_id, request_key, text) are
still read: their vectors whole, their strings only when one of their rows is a candidate.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from batchopt.io.writer import write_atomic
from batchopt.services.mapped import drop_pages

MAGIC = b"BOXRUN\x00\x01"
_PREFIX = struct.Struct("<8sQ")  # magic, header length
_ALIGN = 64
SUFFIX = ".crs"
LEGACY_SUFFIX = ".npz"
UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError)


@dataclass(frozen=True)
class Record:
    """Who answered one stored row: enough to reuse its answer and to run the guards."""

    row_id: str
    run_id: str
    request_key: str
    text: str


@dataclass
class Shard:
    """One shard's header: what `len` and the search plan need, without its vectors."""

    path: Path
    rows: int
    dim: int
    run_id: str = ""
    quantizer: str | None = None  # id of the quantizer `list_start` was made with
    sections: dict[str, list[int]] | None = None  # name -> [offset, bytes]; None: legacy npz

    @property
    def legacy(self) -> bool:
        return self.sections is None

    @contextlib.contextmanager
    def vectors(self) -> Iterator[np.ndarray]:
        """The shard's vectors (memory-mapped, or loaded for a legacy shard), released on exit:
        their resident pages are handed back, so one shard at a time stays in memory."""
        if self.sections is None:
            with np.load(self.path, allow_pickle=False) as data:
                table = data["vectors"].astype(np.float32, copy=False)
            yield table
            del table
            return
        table = self._map("vectors", "<f4", (self.rows, self.dim))
        try:
            yield table
        finally:
            drop_pages(table)
            del table

    def list_start(self) -> np.ndarray | None:
        """Where each inverted list starts (lists + 1 entries), or None for an unsorted shard."""
        if self.sections is None or "list_start" not in self.sections:
            return None
        _, size = self.sections["list_start"]
        return np.array(self._map("list_start", "<i8", (size // 8,)))

    def records(self, rows: np.ndarray) -> list[Record]:
        """Row id, run id, request key and text of the given rows (positions in the shard)."""
        if self.sections is None:
            with np.load(self.path, allow_pickle=False) as data:
                cols = {n: data[n] for n in ("row_id", "run_id", "request_key", "text")}
            return [Record(*(str(cols[n][r]) for n in cols)) for r in rows.tolist()]
        starts = self._map("str_start", "<i8", (3 * self.rows + 1,))
        blob = self._map("strings", "u1", (self.sections["strings"][1],))
        out = []
        for r in rows.tolist():
            a, b, c, d = (int(v) for v in starts[3 * r : 3 * r + 4])
            fields = (blob[a:b], blob[b:c], blob[c:d])
            row_id, key, text = (bytes(f).decode("utf-8") for f in fields)
            out.append(Record(row_id, self.run_id, key, text))
        drop_pages(starts)
        drop_pages(blob)
        return out

    def _map(self, name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        assert self.sections is not None
        offset, size = self.sections[name]
        if size == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)


def list_shards(folder: Path, known: dict[str, Shard]) -> list[Shard]:
    """Complete shards in `folder`, oldest name first; headers are cached in `known` (shards
    are immutable). Unreadable or cut-short shards are left out."""
    try:
        names = sorted(
            e.name for e in os.scandir(folder)
            if e.name.startswith("part-") and e.name.endswith((SUFFIX, LEGACY_SUFFIX))
        )  # fmt: skip
    except OSError:
        return []
    shards = []
    for name in names:
        shard = known.get(name)
        if shard is None:
            try:
                shard = read_header(folder / name)
            except UNREADABLE:
                continue  # a shard cut short by a crash: its answers are simply not reused
            known[name] = shard
        shards.append(shard)
    return shards


def read_header(path: Path) -> Shard:
    if path.suffix == LEGACY_SUFFIX:
        return _legacy_header(path)
    with open(path, "rb") as handle:
        magic, length = _PREFIX.unpack(handle.read(_PREFIX.size))
        if magic != MAGIC or length > 1 << 20:
            raise ValueError(f"{path.name}: not a cross-run shard")
        head = json.loads(handle.read(length))
        if os.fstat(handle.fileno()).st_size != head["size"]:
            raise ValueError(f"{path.name}: cut short")
    return Shard(
        path,
        int(head["rows"]),
        int(head["dim"]),
        head["run_id"],
        head["quantizer"],
        {k: [int(a), int(b)] for k, (a, b) in head["sections"].items()},
    )


def _legacy_header(path: Path) -> Shard:
    """Rows and dim of a `part-*.npz` shard from its vectors' .npy header, not its data; the
    zip's central directory (at the end of the file) is missing if the file was cut short."""
    with zipfile.ZipFile(path) as archive:
        for name in ("row_id", "run_id", "request_key", "text"):
            archive.getinfo(f"{name}.npy")
        with archive.open("vectors.npy") as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, _ = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, _ = np.lib.format.read_array_header_2_0(member)
    if len(shape) != 2:
        raise ValueError(f"{path.name}: vectors of shape {shape}")
    return Shard(path, int(shape[0]), int(shape[1]))


def write_shard(
    folder: Path,
    name: str,
    vectors: np.ndarray,
    strings: tuple[list[str], list[str], list[str]],
    run_id: str,
    list_start: np.ndarray | None = None,
    quantizer: str | None = None,
) -> Path:
    """Write one shard atomically; `strings` are (row ids, request keys, texts), row-aligned
    with `vectors`."""
    rows, dim = vectors.shape
    encoded = [s.encode("utf-8") for triple in zip(*strings, strict=True) for s in triple]
    str_start = np.zeros(3 * rows + 1, np.int64)
    np.cumsum([len(s) for s in encoded], out=str_start[1:])
    parts: dict[str, bytes | memoryview] = {
        "vectors": memoryview(np.ascontiguousarray(vectors, dtype="<f4"))
    }
    if list_start is not None:
        parts["list_start"] = memoryview(list_start.astype("<i8"))
    parts["str_start"] = memoryview(str_start.astype("<i8"))
    parts["strings"] = b"".join(encoded)
    del encoded
    # the header's length depends on the offsets it names: lay out with a fixed-width guess
    names = len(json.dumps(run_id)) + len(json.dumps(quantizer))
    head_room = _ALIGN * (1 + (300 + names) // _ALIGN)
    offset, sections = _PREFIX.size + head_room, {}
    for key, data in parts.items():
        size = memoryview(data).nbytes
        sections[key] = [offset, size]
        offset = _aligned(offset + size)
    head = json.dumps(
        {
            "rows": rows,
            "dim": dim,
            "run_id": run_id,
            "quantizer": quantizer,
            "sections": sections,
            "size": offset,
        }
    ).encode()
    assert len(head) <= head_room, "cross-run shard header outgrew its room"

    def write(handle: BinaryIO) -> None:
        handle.write(_PREFIX.pack(MAGIC, len(head)) + head.ljust(head_room, b" "))
        for key, data in parts.items():
            handle.seek(sections[key][0])
            handle.write(data)
        handle.truncate(offset)

    return write_atomic(folder / name, write)  # its temp name starts with "." (never listed)


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN
