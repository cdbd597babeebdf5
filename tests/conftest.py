"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchopt.providers.fake import FakeServer


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeServer]:
    """One fake provider server on 127.0.0.1 for the whole test session."""
    with FakeServer() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeServer) -> Iterator[FakeServer]:
    """The session's fake server with zeroed stats, an empty log, no faults and no latency."""
    fake_server.reset()
    fake_server.latency_ms = 0
    yield fake_server
    fake_server.reset()
    fake_server.latency_ms = 0
