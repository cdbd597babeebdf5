"""Requests-per-minute and tokens-per-minute pacing for one model.

Each `acquire` reserves the next free slot on two schedules (one request, `tokens` tokens) and
sleeps until both are due, so requests go out evenly at the limit instead of bursting a minute's
worth at once (what provider limits, enforced over short windows, punish). Written by hand because
aiolimiter's bucket cannot take an amount larger than its capacity, which a long prompt under a
per-second bucket would be.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    """Paces calls to at most `rpm` requests and `tpm` tokens per minute (None: no limit)."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._clock = clock
        self._next_request = 0.0
        self._next_token = 0.0
        self._paused_until = 0.0

    def reserve(self, tokens: int = 0) -> float:
        """Reserve a slot for one request of `tokens` tokens; return the seconds to wait."""
        now = self._clock()
        start = max(now, self._paused_until)
        if self.rpm is not None:
            start = max(start, self._next_request)
        if self.tpm is not None:
            start = max(start, self._next_token)
        if self.rpm is not None:
            self._next_request = start + 60.0 / self.rpm
        if self.tpm is not None:
            self._next_token = start + 60.0 * max(tokens, 0) / self.tpm
        return start - now

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until a request of `tokens` tokens may go out."""
        delay = self.reserve(tokens)
        if delay > 0:
            await asyncio.sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every later request back by `seconds` (after a 429 that says retry-after)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
