"""A run's logical date: the night a scheduled job is for (Airflow's `ds`), which is not the
wall clock of the machine that ran it. A backfill of three nights run in one afternoon is three
days in the ledger's views and the report."""

from __future__ import annotations

import datetime as dt
import re

# a run id that is a date ("2026-12-01"), starts with one ("2026-12-01-retry",
# "2026-12-01T02:00:00+00:00") or is Airflow's "<kind>__<logical date and time>"
_DATED_RUN_ID = re.compile(r"^(?:[A-Za-z_]+__)?(\d{4}-\d{2}-\d{2})(?=$|[T _.-])")


def date_of_run_id(run_id: str | None) -> dt.date | None:
    """The date a run id names (see `_DATED_RUN_ID`), or None."""
    match = _DATED_RUN_ID.match(run_id or "")
    if match is None:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:  # 2026-13-45: shaped like a date, not one
        return None


def logical_date(explicit: dt.date | None, run_id: str | None,
                 now: dt.datetime | None = None) -> dt.date:
    """`--date` if given, else the date the run id names, else today (UTC)."""
    if explicit is not None:
        return explicit
    return date_of_run_id(run_id) or (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
