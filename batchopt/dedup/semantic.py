"""Semantic dedup: paraphrased requests are sent once and the answer fanned out.

Runs after exact dedup, on the exact representatives only. Every row gets its k nearest
neighbours above the similarity threshold (`index.neighbours`); the fact guards (`guards`) strike
out the pairs they refuse. Then greedy leader clustering: rows are visited by decreasing number
of approved neighbours (ties in input order) and each joins the most similar representative
already chosen, else becomes one. So every member is within the threshold of its group's
REPRESENTATIVE, whose answer it receives, and passed the guards against it: no chaining (A~B and
B~C put C with A only when both sit next to one representative, never through a member).
Names and opposite words are also checked against the whole group (see `group.Group`).
With `same_columns` (columns a tier's own prompt variant reads and the embedded default
rendering does not), two rows with different values there are never merged: the group's
representative's variant is what every member would be answered from, and the guards cannot
see a difference in text they are not shown (a refused pair is reported as guard
"tier_template"). Visiting hubs
first lets a request that many paraphrases resemble represent them: on the labelled set it
raised recall from 0.54 to 0.65 at 0.75 over input order, with the same precision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import polars as pl

from batchopt.config.sections import DEFAULT_THRESHOLD
from batchopt.dedup.facts import Facts, GuardConfig, extract_many, gc_paused
from batchopt.dedup.group import Group
from batchopt.dedup.guards import GUARD_ORDER, veto_many
from batchopt.dedup.index import SEED, kmeans, neighbours
from batchopt.services.mapped import drop_pages, gather_rows

DEFAULT_GUARDS = GuardConfig()
TIER_GUARD = "tier_template"  # the refusal of a pair that differs in a tier template's column
REFUSALS = (*GUARD_ORDER, TIER_GUARD)  # by code: veto_many's codes, then TIER_GUARD


def semantic_groups(
    frame: pl.DataFrame,
    vectors: np.ndarray,
    *,
    id_column: str,
    text_column: str,
    threshold: float = DEFAULT_THRESHOLD,
    guards: GuardConfig = DEFAULT_GUARDS,
    k: int = 10,
    same_columns: Sequence[str] = (),
) -> pl.DataFrame:
    """Merge paraphrases among the exact representatives of `frame`.

    Rows merge only when their values in every one of `same_columns` are equal (nulls equal).

    `frame` carries the exact-dedup columns (`group_id`, `representative_id`, `dedup`,
    `similarity`); `vectors` holds one L2-normalised row per frame row whose `dedup` is "none",
    in frame order. A merged row gets `dedup = "semantic"`, `similarity` = cosine to its
    representative, and that representative's `representative_id` and `group_id`; its exact
    copies (still `dedup = "exact"`) follow it to the same representative and group. New columns
    `veto_guard` and `veto_id` name, for a row that had a neighbour above the threshold which a
    guard refused, the guard and that neighbour's id (its most similar refused neighbour).
    """
    positions = np.flatnonzero((frame["dedup"] == "none").to_numpy())  # rows with a vector
    if len(vectors) != len(positions):
        raise ValueError(
            f"semantic dedup needs one vector per exact representative: {len(positions)} rows "
            f"with dedup 'none', {len(vectors)} vectors"
        )
    partition = None
    if same_columns:  # one code per distinct tuple of values, for the rows with a vector
        partition = (frame.select(pl.struct(list(same_columns)).rank("dense")).to_series()
                     .to_numpy().astype(np.int64)[positions])
    # the clustering's arrays are handed on, not kept here: `_regrouped` frees them as it goes
    return _regrouped(
        frame,
        id_column,
        positions,
        *_cluster_in_buckets(
            _unit(vectors), frame[text_column], positions, threshold, guards, k, partition
        ),
    )


def _regrouped(
    frame: pl.DataFrame,
    id_column: str,
    positions: np.ndarray,
    leader: np.ndarray,
    sims: np.ndarray,
    vetoed_by: np.ndarray,
    vetoed_guard: list[str | None],
) -> pl.DataFrame:
    """`frame` with the clustering of its rows at `positions` applied (see `semantic_groups`)."""
    # integer positions throughout: gathers of string columns copy 16-byte views, not texts
    height = frame.height
    exact_rep = (  # each row's group's first row: its exact representative
        frame.select("group_id").with_row_index("__row")
        .select(pl.col("__row").first().over("group_id")).to_series().to_numpy().astype(np.int64)
    )  # fmt: skip
    follower = np.flatnonzero(leader != np.arange(len(leader)))
    home = np.arange(height)
    home[positions[follower]] = positions[leader[follower]]
    target = home[exact_rep]  # the representative each row's answer now comes from
    moved = pl.Series(target != exact_rep)  # semantic followers and their exact copies
    merged = np.zeros(height, bool)
    merged[positions[follower]] = True
    similarity = np.zeros(height)
    similarity[positions[follower]] = sims[follower]
    veto_at, veto_code, names = _veto_columns(height, positions, vetoed_by, vetoed_guard)
    del home, exact_rep, leader, sims, vetoed_by, vetoed_guard
    has_veto = pl.Series(veto_at >= 0)
    take = pl.Series(target)
    return frame.with_columns(
        pl.when(moved).then(pl.col(id_column).cast(pl.String).gather(take))
        .otherwise(pl.col("representative_id").cast(pl.String)).alias("representative_id"),
        pl.when(moved).then(pl.col("group_id").cast(pl.String).gather(take))
        .otherwise(pl.col("group_id").cast(pl.String)).alias("group_id"),
        pl.when(pl.Series(merged)).then(pl.lit("semantic"))
        .otherwise(pl.col("dedup").cast(pl.String)).alias("dedup"),
        pl.when(pl.Series(merged)).then(pl.Series(similarity))
        .otherwise(pl.col("similarity").cast(pl.Float64)).alias("similarity"),
        pl.when(has_veto).then(pl.Series(veto_code).replace_strict(
            dict(enumerate(names)), default=None, return_dtype=pl.String))
        .otherwise(pl.lit(None, dtype=pl.String)).alias("veto_guard"),
        pl.when(has_veto).then(pl.col(id_column).cast(pl.String).gather(
            pl.Series(np.maximum(veto_at, 0))))
        .otherwise(pl.lit(None, dtype=pl.String)).alias("veto_id"),
    )  # fmt: skip


def _veto_columns(
    height: int, positions: np.ndarray, vetoed_by: np.ndarray, vetoed_guard: list[str | None]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per frame row, the row of its refused neighbour (-1 if none) and the refusing guard's
    code in the sorted list of the guards that refused any row."""
    veto_at = np.full(height, -1, np.int64)
    veto_code = np.full(height, -1, np.int16)
    refused = np.flatnonzero(vetoed_by >= 0)
    names = sorted({vetoed_guard[i] for i in refused.tolist()} - {None})
    code_of = {name: code for code, name in enumerate(names)}
    veto_at[positions[refused]] = positions[vetoed_by[refused]]
    veto_code[positions[refused]] = [code_of[vetoed_guard[i]] for i in refused.tolist()]
    return veto_at, veto_code, names


def _unit(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of length 1 (normalised here only if a sample of rows is not)."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.size == 0:
        return x.reshape(0, x.shape[-1] if x.ndim == 2 else 1)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D (rows, dim), got shape {x.shape}")
    # a strided slice of a memory-mapped x would map most of the file (see dedup.mapped)
    sample = gather_rows(x, np.arange(0, len(x), max(1, len(x) // 4096)))
    if np.all(np.abs(np.einsum("ij,ij->i", sample, sample) - 1.0) < 2e-3):
        return x
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.maximum(norms, 1e-12)[:, None]


# Above BUCKET_ROWS representatives, rows are split by their nearest coarse centroid into
# buckets of about BUCKET_TARGET rows (none above BUCKET_MAX), and each bucket is searched and
# clustered on its own: memory holds one bucket's vectors, pairs and guard facts at a time, not
# all of them (at 10M rows, 7M vectors of 256 floats are 7 GB). Near-duplicates that fall in two
# buckets are not merged (recall, never precision: the guards and the anti-chaining rule are the
# same inside a bucket). Up to BUCKET_ROWS nothing changes.
BUCKET_ROWS = 1_500_000
BUCKET_TARGET = 500_000
BUCKET_MAX = 750_000
BUCKET_TRAIN_ROWS = 8_192  # k-means sample per bucket
ASSIGN_BLOCK = 65_536  # rows assigned to buckets at once
FACTS_CHUNK = 32_768  # texts whose facts are extracted at once (extract_many's peak is per call)
LOOP_CHUNK = 65_536  # rows of the clustering loop turned into Python lists at once


def _cluster(
    vectors: np.ndarray,
    texts: pl.Series | list[str],
    threshold: float,
    guards: GuardConfig,
    k: int,
    partition: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    """Greedy leader clustering over the guard-approved neighbour lists.

    With `partition` (a code per row), a pair whose codes differ is refused, as if by a guard
    named `TIER_GUARD`: every member then has its representative's code.

    Rows are visited by decreasing number of approved neighbours (ties in input order), so a
    row that many paraphrases resemble becomes a representative before its outliers do; each
    row joins its most similar representative among them, else becomes one.

    Returns, per row: its leader (itself if a representative), cosine to the leader, the most
    similar neighbour a guard refused (-1 if none) and that guard's name.
    """
    n = len(vectors)
    leader = np.arange(n)
    sims = np.zeros(n, np.float32)
    vetoed_by = np.full(n, -1, np.int64)
    vetoed_guard: list[str | None] = [None] * n
    nbr_ids, nbr_sims = neighbours(vectors, k, threshold)
    drop_pages(vectors)
    row, slot = np.nonzero(nbr_ids >= 0)
    if not len(row):
        return leader, sims, vetoed_by, vetoed_guard
    other = nbr_ids[row, slot].astype(np.int64)
    # facts only for rows with a candidate pair (either side)
    involved = np.flatnonzero(np.bincount(row, minlength=n) + np.bincount(other, minlength=n))
    local = np.full(n, -1, np.int64)
    local[involved] = np.arange(len(involved))
    facts = _facts_of(texts, involved, guards)
    del involved
    refused = veto_many(facts, local[row], local[other], guards)
    if partition is not None:  # another value in a column only a tier's template reads
        refused = np.where(partition[row] != partition[other], len(GUARD_ORDER), refused)
    approved = _approved(nbr_ids.shape, row, slot, other, refused, vetoed_by, vetoed_guard)
    del row, slot, other, refused, nbr_ids
    fact_of = local.tolist()
    del local
    _join(approved, nbr_sims, facts, fact_of, guards, leader, sims, vetoed_by, vetoed_guard)
    return leader, sims, vetoed_by, vetoed_guard


def _approved(
    shape: tuple[int, ...],
    row: np.ndarray,
    slot: np.ndarray,
    other: np.ndarray,
    refused: np.ndarray,
    vetoed_by: np.ndarray,
    vetoed_guard: list[str | None],
) -> np.ndarray:
    """The neighbour lists with the refused pairs struck (-1); each row's first refused
    neighbour and its guard are written to `vetoed_by` and `vetoed_guard`."""
    # the first refused neighbour of each row is its most similar one: lists are best first
    vetoed = refused >= 0
    first = np.unique(row[vetoed], return_index=True)[1]
    vetoed_rows = row[vetoed][first]
    vetoed_by[vetoed_rows] = other[vetoed][first]
    for i, code in zip(vetoed_rows.tolist(), refused[vetoed][first].tolist(), strict=True):
        vetoed_guard[i] = REFUSALS[code]
    approved = np.full(shape, -1, np.int32)
    approved[row[~vetoed], slot[~vetoed]] = other[~vetoed]
    return approved


def _join(
    approved: np.ndarray,
    nbr_sims: np.ndarray,
    facts: list[Facts],
    fact_of: list[int],
    guards: GuardConfig,
    leader: np.ndarray,
    sims: np.ndarray,
    vetoed_by: np.ndarray,
    vetoed_guard: list[str | None],
) -> None:
    """The leader loop of `_cluster`, writing into `leader`, `sims`, `vetoed_by` and
    `vetoed_guard`: each row joins its most similar representative whose group takes it."""
    degree = (approved >= 0).sum(axis=1)
    order = np.argsort(-degree, kind="stable")
    order = order[degree[order] > 0]  # rows without an approved neighbour stay alone
    del degree
    is_leader = bytearray(len(approved))  # set once a row has been visited as a representative
    groups: dict[int, Group] = {}
    with gc_paused():
        for start in range(0, len(order), LOOP_CHUNK):
            part = order[start : start + LOOP_CHUNK]
            for i, cands, cand_sims in zip(
                part.tolist(), approved[part].tolist(), nbr_sims[part].tolist(), strict=True
            ):
                for j, s in zip(cands, cand_sims, strict=True):
                    if j < 0 or not is_leader[j]:
                        continue
                    mine = facts[fact_of[i]]
                    group = groups.get(j)
                    if group is None:
                        group = groups[j] = Group(facts[fact_of[j]])
                    refused = group.refuses(mine, guards)
                    if refused is None:
                        group.add(mine)
                        leader[i], sims[i] = j, s
                        break
                    if vetoed_by[i] < 0:
                        vetoed_by[i], vetoed_guard[i] = j, refused
                else:
                    is_leader[i] = 1


def _cluster_in_buckets(
    vectors: np.ndarray,
    texts: pl.Series,
    positions: np.ndarray,
    threshold: float,
    guards: GuardConfig,
    k: int,
    partition: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None]]:
    """`_cluster` of vectors against texts[positions]: in one piece up to BUCKET_ROWS rows,
    else bucket by bucket (see BUCKET_ROWS), with the results in the same form. `partition`:
    a code per vector row (see `_cluster`)."""
    n = len(vectors)
    if n <= BUCKET_ROWS:
        return _cluster(vectors, texts.gather(positions), threshold, guards, k, partition)
    leader = np.arange(n)
    sims = np.zeros(n, np.float32)
    vetoed_by = np.full(n, -1, np.int64)
    vetoed_guard: list[str | None] = [None] * n
    for rows in _buckets(vectors, np.arange(n)):
        part = gather_rows(vectors, rows)
        lead, close, by, guard = _cluster(part, texts.gather(positions[rows]), threshold,
                                          guards, k,
                                          None if partition is None else partition[rows])
        del part
        leader[rows], sims[rows] = rows[lead], close
        hit = np.flatnonzero(by >= 0)
        vetoed_by[rows[hit]] = rows[by[hit]]
        for i in hit.tolist():
            vetoed_guard[int(rows[i])] = guard[i]
    return leader, sims, vetoed_by, vetoed_guard


def _buckets(vectors: np.ndarray, rows: np.ndarray) -> list[np.ndarray]:
    """`rows` (ascending) split by nearest spherical k-means centroid into buckets of at most
    BUCKET_MAX rows (a crowded bucket is split again; one k-means cannot split is cut in
    order), each ascending."""
    if len(rows) <= BUCKET_MAX:
        return [rows]
    count = -(-len(rows) // BUCKET_TARGET)
    rng = np.random.default_rng(SEED)
    sample = np.sort(rng.choice(len(rows), min(len(rows), count * BUCKET_TRAIN_ROWS),
                                replace=False))
    centroids = kmeans(gather_rows(vectors, rows[sample]), count)
    nearest = np.empty(len(rows), np.int32)
    for start in range(0, len(rows), ASSIGN_BLOCK):
        block = gather_rows(vectors, rows[start : start + ASSIGN_BLOCK])
        nearest[start : start + len(block)] = (block @ centroids.T).argmax(axis=1)
    parts = [rows[nearest == c] for c in range(len(centroids))]
    parts = [p for p in parts if len(p)]
    if len(parts) == 1:  # k-means put every row in one bucket: cut it in input order
        size = -(-len(rows) // count)
        return [rows[i : i + size] for i in range(0, len(rows), size)]
    return [bucket for part in parts for bucket in _buckets(vectors, part)]


def _facts_of(texts: pl.Series | list[str], rows: np.ndarray, guards: GuardConfig) -> list[Facts]:
    """`extract_many` of texts[rows], a chunk at a time, with equal field values shared.

    Most facts repeat across rows (no amount, the same action, the same product name): each
    distinct frozenset is kept once, so a row costs its own `Facts`, its words and the sets
    unique to it (its order number) instead of a fresh set per field (about 2.2 KB a row
    before, 0.5 KB after, on the bench_scale tickets). Values are equal either way, so every
    guard decides the same.
    """
    series = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.String)
    series = series.cast(pl.String).fill_null("")
    names = [f.name for f in dataclasses.fields(Facts)]
    shared: dict[object, object] = {}
    out: list[Facts] = []
    for start in range(0, len(rows), FACTS_CHUNK):
        chunk = extract_many(series.gather(rows[start : start + FACTS_CHUNK]).to_list(), guards)
        with gc_paused():
            for facts in chunk:
                for name in names:
                    value = getattr(facts, name)
                    if isinstance(value, frozenset):
                        same = shared.setdefault(value, value)
                        if same is not value:
                            object.__setattr__(facts, name, same)  # equal value, one copy
        out.extend(chunk)
        del chunk
    return out
