"""How money and a row limit read in the printouts: the plan's, the run summary's and the
progress lines' (the CLI imports them from here)."""

from __future__ import annotations

__all__ = ["limit_note", "usd"]


def usd(value: float) -> str:
    """Dollars to 4 decimals under $1, else to cents, with thousands separators."""
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def limit_note(limit: int, rows: int) -> str:
    """What `--limit` did, for the summary, the plan and the dedup report: a trial on the first
    rows must not read as the whole job."""
    if rows < limit:
        return f"all {rows:,} rows of the input (fewer than --limit {limit})"
    return f"first {limit:,} rows of the input (--limit {limit})"
