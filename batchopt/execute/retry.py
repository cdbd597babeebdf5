"""Which failures are retried, and how long to wait between attempts (tenacity)."""

from __future__ import annotations

import random
from collections.abc import Callable

from tenacity import RetryCallState, wait_random_exponential

from batchopt.errors import TransientProviderError

_backoff = wait_random_exponential(multiplier=0.5, max=30)


def wait_for(retry_state: RetryCallState) -> float:
    """Honour the provider's retry-after when it gave one; else exponential backoff with jitter."""
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, TransientProviderError) and error.retry_after is not None:
        return max(0.0, min(error.retry_after, 300.0))
    return _backoff(retry_state)


def first_wait(error: TransientProviderError) -> float:
    """The wait after a first failure: its retry-after, else a short jittered backoff."""
    if error.retry_after is not None:
        return max(0.0, min(error.retry_after, 300.0))
    return random.uniform(0.0, 0.5)


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientProviderError)


def retry_after_hook(pause: Callable[[float], None]) -> Callable[[RetryCallState], None]:
    """A tenacity `before_sleep` hook that pauses the model's rate limiter on a retry-after."""

    def hook(retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, TransientProviderError) and error.retry_after:
            pause(error.retry_after)

    return hook
