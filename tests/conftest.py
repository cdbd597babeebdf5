"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from batchopt.fakeapi import FakeServer

# The same examples every run, so CI's verdict does not depend on the draw; widen locally with
# HYPOTHESIS_PROFILE=explore.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServer]:
    """One fake provider server on 127.0.0.1 for the whole test session."""
    with FakeServer() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeServer) -> Iterator[FakeServer]:
    """The session's fake server with zeroed stats, an empty log, no faults and no latency;
    a test may change its batch duration, which is put back after it."""
    batch_seconds = fake_server.batch_seconds
    fake_server.reset()
    fake_server.latency_ms = 0
    yield fake_server
    fake_server.reset()
    fake_server.latency_ms = 0
    fake_server.batch_seconds = batch_seconds


@pytest.fixture
def bfake(fake: FakeServer) -> FakeServer:
    """The fake server with batches that end 50 ms after creation."""
    fake.batch_seconds = 0.05
    return fake


# ---- skips that CI must see ---------------------------------------------------------------------
# A skipped test is listed by name with its reason at the end of every session. In CI, .ci/run
# sets BATCHOPT_MUST_RUN to the markers whose tests matter to users (the local model, the
# report in a browser, the Airflow DAG): such a test that skips fails instead, so a set-up that
# stops installing what they need cannot pass quietly.
MUST_RUN = frozenset(filter(None, os.environ.get("BATCHOPT_MUST_RUN", "").split(",")))


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    required = MUST_RUN & {mark.name for mark in item.iter_markers()}
    if report.skipped and required and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"marked {', '.join(sorted(required))}, which BATCHOPT_MUST_RUN says "
                           f"must run here, but skipped: {_skip_reason(report)}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        terminalreporter.section(f"skipped tests ({len(skipped)})")
        for report in skipped:
            terminalreporter.write_line(f"{report.nodeid}: {_skip_reason(report)}")
