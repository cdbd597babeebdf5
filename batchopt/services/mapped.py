"""Reading rows of a memory-mapped vector file without making the whole file resident.

Every page of a file mapping that a read faults in counts in the process's RSS until it is
unmapped. On this kernel (6.x, ext4 with large folios) one fault maps a whole folio of the page
cache, up to 2 MB, whatever madvise says: reading one 1 KB row every 2 MB of a 2 GB file mapped
all 2 GB (measured). So scattered reads are done a short stretch of the file at a time, and the
pages are handed back (MADV_DONTNEED: the data stays in the page cache) after each stretch.
"""

from __future__ import annotations

import contextlib
import mmap

import numpy as np

GATHER_ROWS = 2_048  # rows copied between page drops
SPAN_BYTES = 64 << 20  # and at most this stretch of the file


def mapping_of(x: np.ndarray) -> mmap.mmap | None:
    """The mmap under `x` (a np.memmap or a view of one), else None."""
    base = x
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "_mmap", None) or getattr(base, "base", None)
    return base


def drop_pages(x: np.ndarray) -> None:
    """If `x` is memory-mapped, unmap its resident pages (later reads fault them back in)."""
    mapped = mapping_of(x)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            mapped.madvise(mmap.MADV_DONTNEED)


def gather_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`x[rows]` as an array in RAM. From a memory-mapped `x` the rows are read in file order,
    at most GATHER_ROWS rows and SPAN_BYTES of the file between page drops, so what is mapped
    at any moment stays near SPAN_BYTES, however the rows are scattered."""
    rows = np.asarray(rows, dtype=np.int64)
    if mapping_of(x) is None or not len(rows):
        return np.ascontiguousarray(x[rows])
    out = np.empty((len(rows), *x.shape[1:]), dtype=x.dtype)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    span = max(1, SPAN_BYTES // max(1, x.strides[0]))
    start = 0
    while start < len(ordered):
        near = int(np.searchsorted(ordered, ordered[start] + span, side="left"))
        stop = max(start + 1, min(start + GATHER_ROWS, near))
        out[order[start:stop]] = x[ordered[start:stop]]
        drop_pages(x)
        start = stop
    return out
