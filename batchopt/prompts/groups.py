"""Each dedup group's representative row and route, as columns, not one object per group.

- `Representatives`: each dedup group's representative row (`dedup == "none"`), in row order.
- `RouteTable`: group_id -> (tier, why), for every group.

Lookups by group sort the ids once, when first asked (the run path; `batchopt plan` never
asks). `request_table` builds the run's requests on these.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import ItemsView, Iterator, Mapping, Sequence, ValuesView
from typing import Any, TypeVar

import numpy as np
import polars as pl

CHUNK = 100_000  # texts hashed and counted at once (Python strings only for one chunk)
ITER_CHUNK = 10_000  # rows read from the frame at once when objects are made
V = TypeVar("V")


def small_ints(values: np.ndarray, bound: int) -> np.ndarray:
    """`values` (row positions, token counts: all below `bound`) as int32 where they fit."""
    return values.astype(np.int32 if bound < 2**31 else np.int64, copy=False)


class SortedIndex:
    """Exact lookup of byte strings: a sorted copy and where each came from. Among equal
    values, `find` gives the last position (as a dict built in order keeps the last value)."""

    def __init__(self, values: np.ndarray) -> None:
        self.order = small_ints(np.argsort(values, kind="stable"), len(values))
        self.sorted = values[self.order]

    def find(self, value: bytes) -> int | None:
        """The position `value` came from (the last, among equal ones); None if absent."""
        if self.sorted.size == 0 or len(value) > self.sorted.dtype.itemsize:
            return None
        at = int(self.sorted.searchsorted(value, side="right")) - 1
        if at < 0 or self.sorted[at] != value:
            return None
        return int(self.order[at])

    @property
    def nbytes(self) -> int:
        """Bytes held by the sorted copy and the positions."""
        return self.order.nbytes + self.sorted.nbytes


def _encoded(values: pl.Series) -> np.ndarray:
    """`values` (strings) as a numpy bytes array, UTF-8, converted a chunk at a time."""
    parts = [
        np.array([v.encode() for v in values.slice(start, CHUNK).to_list()], dtype=np.bytes_)
        for start in range(0, len(values), CHUNK)
    ]
    return np.concatenate(parts) if parts else np.array([], dtype="S1")


class Representatives:
    """Each dedup group's representative row of `rows` (`dedup == "none"`), in row order."""

    def __init__(self, rows: pl.DataFrame) -> None:
        self.rows = rows
        chosen = (rows["dedup"] == "none").fill_null(False).to_numpy()
        self.positions = small_ints(np.flatnonzero(chosen), rows.height)
        self._index: SortedIndex | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def column(self, name: str, which: np.ndarray | None = None) -> pl.Series:
        """Column `name` of the representatives `which` (indices among them; default all)."""
        positions = self.positions if which is None else self.positions[which]
        return self.rows[name].gather(positions)

    def group_ids(self, which: np.ndarray | None = None) -> Iterator[str]:
        """The group ids of the representatives `which`, in that order."""
        count = len(self) if which is None else len(which)
        for start in range(0, count, ITER_CHUNK):
            part = np.arange(start, min(count, start + ITER_CHUNK)) if which is None else (
                which[start:start + ITER_CHUNK])
            yield from self.column("group_id", part).to_list()

    def find(self, group: object) -> int:
        """The index of `group`'s representative; KeyError if no group has that id."""
        if not isinstance(group, str):
            raise KeyError(group)
        if self._index is None:
            self._index = SortedIndex(_encoded(self.column("group_id")))
        found = self._index.find(group.encode())
        if found is None:
            raise KeyError(group)
        return found

    def group_sizes(self, which: np.ndarray | None = None) -> np.ndarray:
        """How many rows each representative's group has (int64)."""
        sizes = self.rows.select(pl.len().over("group_id"))[:, 0]
        positions = self.positions if which is None else self.positions[which]
        return sizes.gather(positions).to_numpy().astype(np.int64)

    @property
    def nbytes(self) -> int:
        return self.positions.nbytes + (self._index.nbytes if self._index is not None else 0)


class _Items(ItemsView[str, Any]):
    def __init__(self, table: ColumnTable[Any]) -> None:
        super().__init__(table)
        self.table = table

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return self.table.iter_items()


class _Values(ValuesView[Any]):
    def __init__(self, table: ColumnTable[Any]) -> None:
        super().__init__(table)
        self.table = table

    def __iter__(self) -> Iterator[Any]:
        return (value for _, value in self.table.iter_items())


class ColumnTable(Mapping[str, V]):
    """A mapping held as columns: its items and values are made a chunk at a time by
    `iter_items`, not looked up one key at a time."""

    @abstractmethod
    def iter_items(self) -> Iterator[tuple[str, V]]:
        """Each (key, value), in the table's order."""

    def items(self) -> ItemsView[str, V]:
        """The (key, value) pairs, made by `iter_items`."""
        return _Items(self)

    def values(self) -> ValuesView[V]:
        """The values, made by `iter_items`."""
        return _Values(self)


class RouteTable(ColumnTable[tuple[str, str]]):
    """group_id -> (tier name, why it goes there) for every dedup group; tiers and reasons are
    small codes into `tier_names` and `reasons`, in the representatives' order."""

    def __init__(self, reps: Representatives, tier_names: Sequence[str], tiers: np.ndarray,
                 reasons: Sequence[str], reason_codes: np.ndarray) -> None:
        self.reps = reps
        self.tier_names = tuple(tier_names)
        self.tiers = tiers
        self.reasons = tuple(reasons)
        self.reason_codes = reason_codes

    @classmethod
    def from_frame(cls, reps: Representatives, routed: pl.DataFrame, tier_column: str,
                   reason_column: str, tier_names: Sequence[str]) -> RouteTable:
        """From `routed` (one row per representative, in their order) with the tier's name and
        the reason in `tier_column` and `reason_column`."""
        if routed.height != len(reps):
            raise ValueError(f"{routed.height} routed rows for {len(reps)} groups")
        unknown = set(routed[tier_column].unique().to_list()) - set(tier_names)
        if unknown:
            raise ValueError(f"rows routed to unknown tier(s) {sorted(unknown)}")
        tiers = _codes(routed[tier_column], list(tier_names))
        reasons = routed[reason_column].unique(maintain_order=True).to_list()
        return cls(reps, tier_names, tiers, reasons, _codes(routed[reason_column], reasons))

    def __getitem__(self, group: str) -> tuple[str, str]:
        at = self.reps.find(group)
        return self.tier_names[self.tiers[at]], self.reasons[self.reason_codes[at]]

    def __iter__(self) -> Iterator[str]:
        return self.reps.group_ids()

    def __len__(self) -> int:
        return len(self.reps)

    def iter_items(self) -> Iterator[tuple[str, tuple[str, str]]]:
        routes = [(t, r) for t in self.tier_names for r in self.reasons]
        width = len(self.reasons)
        combined = self.tiers.astype(np.int64) * width + self.reason_codes
        for group, code in zip(self.reps.group_ids(), combined.tolist(), strict=True):
            yield group, routes[code]

    def nbytes(self) -> int:
        """Bytes held, the representatives' positions (shared with the RequestTable) included."""
        return self.tiers.nbytes + self.reason_codes.nbytes + self.reps.nbytes

    def __repr__(self) -> str:
        return f"RouteTable({len(self):,} groups, tiers {list(self.tier_names)})"


def _codes(values: pl.Series, names: list[str]) -> np.ndarray:
    """Each value's index in `names` (every value is one of them), as a small unsigned int."""
    dtype = np.uint8 if len(names) < 2**8 else np.uint16 if len(names) < 2**16 else np.uint32
    codes = values.replace_strict(names, list(range(len(names))), return_dtype=pl.UInt32)
    return codes.to_numpy().astype(dtype)
