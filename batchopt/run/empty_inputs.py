"""Rows with nothing to send: the `input.on_empty` policy.

A row is *empty* when every column the prompt templates read (the pipeline's template and any
tier's own, the id column aside) is null or blank (only whitespace) as read from the input: the
prompt would be the template's fixed text and nothing about the row. Such a row is never sent:

- `skip` (the default): it gets its own group (no dedup with any other row), no request, no
  cost; the outputs have it with a null answer, the ledger with status and mode `skipped` and
  `EMPTY_REASON` as its error. It does not count as a failed row.
- `fail`: the run stops before anything is sent (exit 2), naming up to `SHOWN_IDS` rows.

A row with some template columns set and others null is not empty: it is sent, the nulls
rendering as "" (`batchopt.prompts.template`), unless one of them is in `input.required`: a row
with a required column null or blank has nothing to send either (a review's product name
without its text).
"""

from __future__ import annotations

import polars as pl

from batchopt.errors import InputError
from batchopt.hashing import stable_hash
from batchopt.prompts.request_table import RequestTable
from batchopt.records import Request

EMPTY_COLUMN = "__empty_input"
EMPTY_REASON = ("skipped: empty input (every template field, or a required one, is null or "
                "blank; input.on_empty)")
SHOWN_IDS = 5


def template_columns(variables: list[str], columns: list[str], id_column: str) -> list[str]:
    """The input columns the templates read, in order, the id column aside."""
    return [c for c in dict.fromkeys(variables) if c in columns and c != id_column]


def _blank(frame: pl.DataFrame, name: str) -> pl.Expr:
    column = pl.col(name)
    if frame.schema[name] == pl.String:
        return column.is_null() | (column.str.strip_chars() == "")
    return column.is_null()


def empty_expr(frame: pl.DataFrame, columns: list[str], required: list[str] = ()) -> pl.Expr:
    """True where every one of `columns` is null or (a text) only whitespace, or any of
    `required` is; False for every row when there are neither (a template that reads no column
    is never empty)."""
    blank = pl.all_horizontal([_blank(frame, c) for c in columns]) if columns else pl.lit(False)
    if required:
        blank = blank | pl.any_horizontal([_blank(frame, c) for c in required])
    return blank


def check_empty(
    frame: pl.DataFrame, columns: list[str], id_column: str, policy: str,
    required: list[str] = (),
) -> pl.DataFrame:
    """`frame` with a boolean `EMPTY_COLUMN` (skip), or an InputError naming the empty rows
    (fail). `required` (input.required): columns a row cannot be sent without."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"input.required: column '{missing[0]}' is not in the input (it has: "
                         f"{', '.join(c for c in frame.columns if not c.startswith('__'))})")
    marked = frame.with_columns(empty_expr(frame, columns, required).alias(EMPTY_COLUMN))
    if policy == "fail":
        empty = marked.filter(pl.col(EMPTY_COLUMN))
        if empty.height:
            ids = empty[id_column].cast(pl.String).head(SHOWN_IDS).to_list()
            more = f" (and {empty.height - len(ids):,} more)" if empty.height > len(ids) else ""
            raise InputError(
                f"input.on_empty: fail: {empty.height:,} row(s) have nothing to send (every "
                f"template field null or blank: {', '.join(columns)}"
                + (f"; or a required one: {', '.join(required)}" if required else "")
                + f"): ids "
                f"{', '.join(ids)}{more}; set input.on_empty to skip to leave them unsent"
            )
    return marked


def isolate_empty(rows: pl.DataFrame, id_column: str) -> pl.DataFrame:
    """Give each empty row its own group (after exact dedup): no other row is answered by it,
    and it answers no other row."""
    empty = pl.col(EMPTY_COLUMN)
    if not rows[EMPTY_COLUMN].any():
        return rows
    own = pl.col(id_column).cast(pl.String)
    ids = rows.filter(empty)[id_column].cast(pl.String).to_list()
    keys = {i: stable_hash(f"empty input\0{i}") for i in ids}
    return rows.with_columns(
        pl.when(empty).then(own.replace_strict(keys, default=None, return_dtype=pl.String))
        .otherwise(pl.col("group_id")).alias("group_id"),
        pl.when(empty).then(own).otherwise(pl.col("representative_id"))
        .alias("representative_id"),
        pl.when(empty).then(pl.lit("none")).otherwise(pl.col("dedup")).alias("dedup"),
        pl.when(empty).then(pl.lit(None, dtype=pl.Float64)).otherwise(pl.col("similarity"))
        .alias("similarity"),
    )


def empty_groups(rows: pl.DataFrame) -> set[str]:
    """The group ids of the empty rows (one row each, after `isolate_empty`)."""
    return set(rows.filter(pl.col(EMPTY_COLUMN))["group_id"].to_list())


def drop_empty(
    requests: RequestTable, groups: set[str]
) -> tuple[RequestTable, dict[str, tuple[Request, str]]]:
    """(the requests without the empty groups', those groups' requests and why)."""
    if not groups:
        return requests, {}
    places = []
    for group in groups:
        try:
            places.append(requests._index_of(group))
        except KeyError:
            continue  # no request (none was made for it)
    places.sort()
    skipped = {requests.group_at(p): (requests.request_at(p), EMPTY_REASON) for p in places}
    return requests.revise({}, places), skipped
