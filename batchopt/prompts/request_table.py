"""A run's requests, routes and request tiers as columns, not one Python object per request.

At ten million rows a `dict[str, Request]` alone holds gigabytes. Here each distinct request is
one row of a few numpy columns (its representative row, tier, key, prompt token count); the
fields every request of a tier shares come from the tier's `CallSpec`, the user message from the
representative's `prompt_user` in the plan's rows (or a stored column where the tier has its own
template or the context check cut the prompt). A `Request` is made only when one is asked for,
equal to the one `build_requests` makes.

- `Representatives`, `RouteTable` (in `groups`): each dedup group's representative row, and
  the tier it goes to and why.
- `RequestTable`: group_id -> Request, for every group sent (in group order).
- `KeyTiers`: request key -> the tier it was built for; what a run adds (escalations, judge
  calls) goes into a small dict beside the table.

Lookups by group or key sort the ids once, when first asked (the run path; `batchopt plan`
never asks).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from batchopt.hashing import canonical_json
from batchopt.prompts.groups import (
    CHUNK,
    ITER_CHUNK,
    ColumnTable,
    Representatives,
    SortedIndex,
    small_ints,
)
from batchopt.prompts.requests import CallSpec, request_keyer, resolve_counter
from batchopt.records import Request
from batchopt.tokens import TokenCounter, static_prompt_tokens

USER_COLUMN = "prompt_user"


@dataclass(frozen=True)
class TierFields:
    """What every request built for one tier shares."""

    name: str
    spec: CallSpec
    counter: str  # the token counter's name (Request.token_counter)
    params: dict[str, Any] = field(default_factory=dict)  # one copy, shared by its Requests

    @classmethod
    def of(cls, name: str, spec: CallSpec, counter: TokenCounter | None = None) -> TierFields:
        return cls(name, spec, resolve_counter(spec, counter).name, dict(spec.params))

    def key_head(self) -> str:
        """What decides a key besides the user message: equal heads can give equal keys."""
        spec = self.spec
        return canonical_json([spec.provider, spec.endpoint, spec.model, spec.system,
                               spec.max_tokens, spec.temperature, spec.json_schema, spec.params])


def request_columns(users: pl.Series, spec: CallSpec, counter: TokenCounter | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(keys as bytes, prompt token counts) of requests asking `users` with `spec`: the key and
    `estimated_input_tokens` `build_requests` gives each, hashed and counted a chunk at a time."""
    counter = resolve_counter(spec, counter)
    key_of = request_keyer(spec)
    system_tokens = static_prompt_tokens(counter, spec.system, spec.json_schema)
    keys, tokens = [], []
    for start in range(0, len(users), CHUNK):
        texts = users.slice(start, CHUNK).to_list()
        keys.append(np.array([key_of(text) for text in texts], dtype=np.bytes_))
        tokens.append(np.fromiter((system_tokens + counter.count(text) for text in texts),
                                  dtype=np.int64, count=len(texts)))
    if not keys:
        return np.array([], dtype="S32"), np.array([], dtype=np.int32)
    counts = np.concatenate(tokens)
    return np.concatenate(keys), small_ints(counts, int(counts.max(initial=0)) + 1)


class RequestTable(ColumnTable[Request]):
    """group_id -> the Request its representative is sent as, for every group sent, in group
    order; one row of columns per request, each `Request` made when asked for.

    Columns (one entry per request): `rep` (index among `reps`, ascending), `tier` (code into
    `tiers`), `key` (bytes), `tokens` (`estimated_input_tokens`). The user message is the
    representative's `prompt_user`, or `users[i]` for the request at `user_at[i]` (a tier's own
    template, a prompt cut to fit the context)."""

    def __init__(self, reps: Representatives, tiers: Sequence[TierFields], rep: np.ndarray,
                 tier: np.ndarray, key: np.ndarray, tokens: np.ndarray,
                 user_at: np.ndarray | None = None, users: pl.Series | None = None) -> None:
        if not len(rep) == len(tier) == len(key) == len(tokens):
            raise ValueError("the request columns differ in length")
        self.reps = reps
        self.tiers = tuple(tiers)
        self.rep, self.tier, self.key, self.tokens = rep, tier, key, tokens
        self.user_at = user_at if user_at is not None else np.array([], dtype=np.int64)
        self.users = users if users is not None else pl.Series("user", [], dtype=pl.String)
        self._keys: SortedIndex | None = None

    @classmethod
    def assemble(cls, reps: Representatives, tiers: Sequence[TierFields],
                 parts: Sequence[tuple[int, np.ndarray, np.ndarray, np.ndarray, pl.Series | None]]
                 ) -> RequestTable:
        """One table from per-tier parts (tier code, representative indices, keys, tokens, the
        users when they are not the representatives' `prompt_user`), in group order."""
        if not parts:
            empty = np.array([], dtype=np.int32)
            return cls(reps, tiers, empty, empty.astype(np.uint8), np.array([], dtype="S32"),
                       empty)
        rep = np.concatenate([p[1] for p in parts])
        order = np.argsort(rep, kind="stable")
        tier = np.concatenate([np.full(len(p[1]), p[0], dtype=np.uint8) for p in parts])
        key = np.concatenate([p[2] for p in parts])
        tokens = np.concatenate([p[3] for p in parts])
        own, offset = [], 0
        for part in parts:
            if part[4] is not None:
                own.append((offset, part[4]))
            offset += len(part[1])
        where = np.empty(len(rep), dtype=np.int64)
        where[order] = np.arange(len(rep))  # a part's row -> its place in group order
        user_at, users = None, None
        if own:
            at = np.concatenate([where[offset:offset + len(u)] for offset, u in own])
            texts = pl.concat([u.rename("user") for _, u in own], rechunk=True)
            sort = np.argsort(at, kind="stable")
            user_at, users = at[sort], texts.gather(sort)
        return cls(reps, tiers, small_ints(rep[order], len(reps)), tier[order], key[order],
                   tokens[order], user_at, users)

    # --- the mapping -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.rep)

    def __iter__(self) -> Iterator[str]:
        return self.reps.group_ids(self.rep)

    def __getitem__(self, group: str) -> Request:
        return self.request_at(self._index_of(group))

    def _index_of(self, group: str) -> int:
        at = self.reps.find(group)
        index = int(self.rep.searchsorted(at))
        if index >= len(self.rep) or self.rep[index] != at:
            raise KeyError(group)
        return index

    def iter_items(self, start: int = 0, stop: int | None = None
                   ) -> Iterator[tuple[str, Request]]:
        """(group_id, Request) for the requests `start` to `stop`, made a chunk at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, ITER_CHUNK):
            last = min(stop, first + ITER_CHUNK)
            which = self.rep[first:last]
            groups = self.reps.column("group_id", which).to_list()
            users = self.reps.column(USER_COLUMN, which).to_list()
            lo, hi = self.user_at.searchsorted([first, last])
            for at, text in zip(self.user_at[lo:hi].tolist(),
                                self.users.slice(int(lo), int(hi - lo)).to_list(), strict=True):
                users[at - first] = text
            for group, user, code, key, tokens in zip(
                groups, users, self.tier[first:last].tolist(), self.key[first:last].tolist(),
                self.tokens[first:last].tolist(), strict=True,
            ):
                yield group, self._request(code, key.decode(), user, tokens)

    def request_at(self, index: int) -> Request:
        """The request in place `index` (group order)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        return next(self.iter_items(index, index + 1))[1]

    def group_at(self, index: int) -> str:
        return self.reps.column("group_id", self.rep[index:index + 1])[0]

    def _request(self, code: int, key: str, user: str, tokens: int) -> Request:
        fields = self.tiers[code]
        spec = fields.spec
        return Request(
            key=key, provider=spec.provider, model=spec.model, system=spec.system, user=user,
            max_tokens=spec.max_tokens, temperature=spec.temperature,
            json_schema=spec.json_schema, params=fields.params, estimated_input_tokens=tokens,
            token_counter=fields.counter,
        )

    # --- columns and keys --------------------------------------------------------------

    @property
    def tier_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers)

    def iter_keys(self) -> Iterator[str]:
        """Each request's key, in group order."""
        for start in range(0, len(self), CHUNK):
            for key in self.key[start:start + CHUNK].tolist():
                yield key.decode()

    def find_key(self, key: object) -> int | None:
        """The place of the last request with `key` (None: no request has it)."""
        if not isinstance(key, str):
            return None
        if self._keys is None:
            self._keys = SortedIndex(self.key)
        return self._keys.find(key.encode())

    def distinct_keys(self) -> int:
        return len(np.unique(self.key))

    def key_tiers(self) -> np.ndarray:
        """Each request's tier code as `KeyTiers` gives it: the tier of the last request with
        the same key (its own, unless two tiers ask alike and so share keys)."""
        heads = [t.key_head() for t in self.tiers]
        if len(set(heads)) == len(heads):
            return self.tier
        order = np.argsort(self.key, kind="stable")
        ordered = self.key[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], len(ordered)] - 1  # the last of each run of equal keys
        run = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
        result = np.empty_like(self.tier)
        result[order] = self.tier[order][ends][run]
        return result

    def revise(self, cut: Mapping[int, Request], drop: Sequence[int]) -> RequestTable:
        """This table with the requests in places `cut` replaced by theirs (same group and
        tier: a prompt cut to fit) and those in places `drop` left out."""
        key, tokens = self.key, self.tokens.copy()
        user_at, users = self.user_at, self.users
        if cut:
            width = max([key.dtype.itemsize, *(len(r.key.encode()) for r in cut.values())])
            key = key.astype(f"S{width}")
            places = np.array(sorted(cut), dtype=np.int64)
            for place in places.tolist():
                key[place] = cut[place].key.encode()
                tokens[place] = cut[place].estimated_input_tokens
            keep = ~np.isin(user_at, places)
            at = np.concatenate([user_at[keep], places])
            texts = pl.concat([users.filter(pl.Series(keep)),
                               pl.Series("user", [cut[p].user for p in places.tolist()],
                                         dtype=pl.String)])
            sort = np.argsort(at, kind="stable")
            user_at, users = at[sort], texts.gather(sort)
        rep, tier = self.rep, self.tier
        if len(drop):
            mask = np.ones(len(self), dtype=bool)
            mask[np.asarray(drop, dtype=np.int64)] = False
            new_place = np.cumsum(mask) - 1
            kept_users = mask[user_at]
            user_at, users = new_place[user_at[kept_users]], users.filter(pl.Series(kept_users))
            rep, tier, key, tokens = rep[mask], tier[mask], key[mask], tokens[mask]
        return RequestTable(self.reps, self.tiers, rep, tier, key, tokens, user_at, users)

    def nbytes(self) -> int:
        """Bytes held by the columns (the representatives' positions are the RouteTable's)."""
        return (self.rep.nbytes + self.tier.nbytes + self.key.nbytes + self.tokens.nbytes
                + self.user_at.nbytes + int(self.users.estimated_size())
                + (self._keys.nbytes if self._keys is not None else 0))

    def __repr__(self) -> str:
        return f"RequestTable({len(self):,} requests, tiers {list(self.tier_names)})"


class KeyTiers(MutableMapping[str, str]):
    """Request key -> the name of the tier it was built for: the table's requests, and in
    `added` what a run asks besides them (escalations, judge calls)."""

    def __init__(self, table: RequestTable) -> None:
        self.table = table
        self.added: dict[str, str] = {}

    def __getitem__(self, key: str) -> str:
        if key in self.added:
            return self.added[key]
        at = self.table.find_key(key)
        if at is None:
            raise KeyError(key)
        return self.table.tiers[self.table.tier[at]].name

    def __setitem__(self, key: str, tier: str) -> None:
        self.added[key] = tier

    def __delitem__(self, key: str) -> None:
        if key not in self.added:
            raise KeyError(f"{key}: only tiers added at run time can be removed")
        del self.added[key]

    def __iter__(self) -> Iterator[str]:
        _, first = np.unique(self.table.key, return_index=True)
        for at in np.sort(first).tolist():
            yield self.table.key[at].decode()
        yield from (k for k in self.added if self.table.find_key(k) is None)

    def __len__(self) -> int:
        return self.table.distinct_keys() + sum(
            1 for k in self.added if self.table.find_key(k) is None)

    def nbytes(self) -> int:
        """Bytes of its own: the table's key index (built on the first lookup) is counted with
        the table; the added entries as their strings."""
        return sum(len(k) + len(v) for k, v in self.added.items())

    def __repr__(self) -> str:
        return f"KeyTiers({len(self.table):,} requests + {len(self.added):,} added)"
