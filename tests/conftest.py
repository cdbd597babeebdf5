"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from batchopt.providers.fake import FakeServer

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
