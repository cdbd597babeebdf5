"""pytest plugin for scripts/mutation.py: run a mutant's tests fastest first (by the durations
mutmut recorded in ./mutants/mutmut-stats.json), so that with `-x` a killed mutant dies in its
cheapest test instead of after the slow run-level ones. No effect where that file is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    stats = Path("mutmut-stats.json")
    if not stats.exists():
        return
    durations = json.loads(stats.read_text(encoding="utf-8")).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, 0.0))
