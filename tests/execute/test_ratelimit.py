from __future__ import annotations

from batchopt.execute.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rpm_spaces_requests_evenly() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=120, clock=clock)
    waits = [limiter.reserve() for _ in range(4)]
    assert waits == [0.0, 0.5, 1.0, 1.5]


def test_tpm_spaces_by_tokens_and_the_stricter_limit_wins() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=6000, tpm=6000, clock=clock)
    assert limiter.reserve(100) == 0.0
    assert limiter.reserve(100) == 1.0  # 100 tokens at 100 tokens/s
    assert limiter.reserve(10) == 2.0


def test_unlimited_never_waits_and_pause_holds_everyone_back() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    assert limiter.reserve(10**9) == 0.0
    limiter.pause(2.5)
    assert limiter.reserve() == 2.5
    clock.now += 3
    assert limiter.reserve() == 0.0
