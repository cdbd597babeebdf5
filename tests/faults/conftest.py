"""Fixtures of the fault tests, the `slow_faults` selection, and the summary line.

Tests marked `slow_faults` (the long sweeps) are deselected unless asked for by marker:

    .venv/bin/python -m pytest -q -m slow_faults tests/faults

At the end of a session that ran any fault test, one summary line says how many faults were
tried and what they cost, e.g. "kill points 60 (...), rows checked 3840, rows lost 0, rows paid
twice 0, in-flight re-sent 23 (max 6 at one kill, concurrency 8), ...".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kill_kit import ForkServer, Tally

_TALLY = pytest.StashKey[Tally]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow_faults" in (config.getoption("markexpr") or ""):
        return
    # deselected, not skipped: the session's list of skipped tests stays for real skips
    kept = [item for item in items if "slow_faults" not in item.keywords]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if "slow_faults" in i.keywords])
        items[:] = kept


@pytest.fixture(scope="session")
def kill_tally(request: pytest.FixtureRequest) -> Tally:
    """The session's record of kills and overlapping runs tried, printed at the end."""
    return request.config.stash.setdefault(_TALLY, Tally())


@pytest.fixture(scope="session")
def fork_server() -> Iterator[ForkServer]:
    """Forks `batchopt run` children from one process that has imported the SDKs."""
    server = ForkServer()
    yield server
    server.close()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    tally = config.stash.get(_TALLY, None)
    if tally is None:
        return
    lines = tally.summary()
    if lines:
        terminalreporter.section("faults tried")
        for line in lines:
            terminalreporter.write_line(line)


# ---- the shared `tally` counters: the provider faults' line, then any other suite's --------
# (a plugin object of its own, so this module's pytest_terminal_summary above stays as it is)


class _TallyLines:
    """Prints what `tally` counted: test_provider_faults.py's summary line, then one line with
    any other counter (e.g. "bad inputs tried")."""

    @staticmethod
    def pytest_terminal_summary(terminalreporter) -> None:
        from faults import tally

        counts = dict(tally.COUNTS)
        lines = []
        if counts.get("provider_faults_tried"):
            lost_usd = counts.get("provider_lost_micro_usd", 0) / 1e6
            lines.append(
                f"provider faults tried {counts['provider_faults_tried']:,}, rows checked "
                f"{counts.get('provider_rows_checked', 0):,}, rows lost "
                f"{counts.get('provider_rows_lost', 0):,}, rows paid twice "
                f"{counts.get('provider_rows_paid_twice', 0):,} (unavoidable re-sends "
                f"{counts.get('provider_unavoidable_resends', 0):,}: ${lost_usd:.6f} billed, "
                "never received)"
            )
        others = {k: v for k, v in counts.items() if not k.startswith("provider_")}
        if others:
            lines.append(", ".join(f"{name} {n:,}" for name, n in sorted(others.items())))
        if lines:
            terminalreporter.section("fault tally")
            for line in lines:
                terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("faults-tally-lines"):
        config.pluginmanager.register(_TallyLines(), "faults-tally-lines")
