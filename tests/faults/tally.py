"""Counters the fault suites share, for the session's summary line (see `conftest.py` here).

    from tally import add      # or: from faults import tally
    add("provider_faults", 1)

One dict for the whole session, however this module was imported: imported both as `tally`
and as `faults.tally` (pytest's rootdir import modes differ on that), the second copy finds
the first one's dict, so no count is split between two copies.
"""

from __future__ import annotations

import sys


def _shared() -> dict[str, int]:
    for name in ("tally", "faults.tally", "tests.faults.tally"):
        other = sys.modules.get(name)
        if other is not None and other is not sys.modules.get(__name__):
            found = getattr(other, "COUNTS", None)
            if isinstance(found, dict):
                return found
    return {}


COUNTS: dict[str, int] = _shared()


def add(name: str, n: int = 1) -> None:
    """Add `n` to the counter `name` (created at 0)."""
    COUNTS[name] = COUNTS.get(name, 0) + n


def get(name: str) -> int:
    """The counter `name` (0 if never added to)."""
    return COUNTS.get(name, 0)
