"""The batch interface of the SDK providers (OpenAI Batch API, Anthropic Message Batches).

A caller submits a list of requests once (`submit_batch`), polls (`poll_batch`) until the state
is no longer "pending", then reads the rows (`fetch_batch_results`). Fitting requests into
`batch_limits` is the caller's job (`split_for_limits` does it), as is remembering what it sent:
rows that never ran can be missing from the results altogether (an expired OpenAI batch).

States: `pending` (validating, in progress, finalizing, cancelling), `ended` (every row ran),
`expired` (the window closed first; the rows that ran have results), `cancelled` (the rows that
ran before the cancel have results), `failed` (the batch was rejected; no results, see `error`).

custom_id: a request's `key` when it fits both providers' rules (`^[a-zA-Z0-9_-]{1,64}$`;
batchopt keys are 32 hex characters), else "h" plus a 32-hex-digit hash of the key
(`custom_id_for`), so a custom_id always leads back to its request.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from batchopt.errors import TerminalProviderError, TransientProviderError
from batchopt.hashing import stable_hash
from batchopt.records import Request, Result

BatchState = Literal["pending", "ended", "failed", "expired", "cancelled"]
RowKind = Literal["succeeded", "errored", "expired", "canceled"]
RESULT_STATES: frozenset[str] = frozenset({"ended", "expired", "cancelled"})
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class BatchesUnverified(TransientProviderError):
    """`find_batches` saw batches that may be the one looked for but cannot tell yet (they are
    still running, so what they hold cannot be read): neither adopt nor give the submission
    up; look again later. `verified` holds the ids it could confirm meanwhile (newest first),
    `unverified` those it could not."""

    def __init__(self, provider: str, verified: Sequence[str], unverified: Sequence[str]) -> None:
        super().__init__(
            f"{provider} batch: {len(unverified)} running batch(es) may hold these requests "
            f"({', '.join(unverified)}); they can be checked once they end"
        )
        self.verified = list(verified)
        self.unverified = list(unverified)


@dataclass(frozen=True)
class BatchLimits:
    """The most one batch may hold: requests, and bytes of serialised requests."""

    max_requests: int
    max_bytes: int


# Decimal megabytes: the stricter reading of the providers' "200 MB" / "256 MB".
OPENAI_LIMITS = BatchLimits(max_requests=50_000, max_bytes=200_000_000)
ANTHROPIC_LIMITS = BatchLimits(max_requests=100_000, max_bytes=256_000_000)


@dataclass(frozen=True)
class BatchStatus:
    """Where a batch stands; counts are the provider's (zero until it reports them)."""

    batch_id: str
    state: BatchState
    raw_status: str
    total: int = 0
    succeeded: int = 0
    errored: int = 0
    error: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    results_url: str | None = None

    @property
    def done(self) -> bool:
        """Whether the batch will change no more."""
        return self.state != "pending"

    @property
    def has_results(self) -> bool:
        """Whether `fetch_batch_results` can be called (it may still yield no rows)."""
        return self.state in RESULT_STATES


@dataclass(frozen=True)
class BatchRow:
    """One row of a batch's results.

    `key` is the request's key (None when the custom_id matches none of the requests given);
    `result` is set for a succeeded row only, `error` says why any other row has none.
    """

    custom_id: str
    kind: RowKind
    key: str | None
    result: Result | None = None
    error: str | None = None


class BatchProvider(ABC):
    """What a provider with a batch API implements, next to `Provider`."""

    batch_limits: BatchLimits

    @abstractmethod
    def batch_line_bytes(self, request: Request) -> int:
        """The bytes `request` adds to a batch, as counted against `batch_limits.max_bytes`."""

    @abstractmethod
    async def submit_batch(self, requests: Sequence[Request], tag: dict[str, str]) -> str:
        """Create one batch of `requests`; return its id. ValueError if it breaks the limits."""

    @abstractmethod
    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """The batch's current status."""

    @abstractmethod
    def fetch_batch_results(
        self, batch_id: str, requests: Iterable[Request]
    ) -> AsyncIterator[BatchRow]:
        """The rows of a batch that has results, in the provider's order.

        `requests` are those submitted (their keys map custom_ids back). Raises
        TransientProviderError when the download breaks off or yields fewer rows than the
        provider counted, so a caller never mistakes a cut download for a complete one.
        """

    @abstractmethod
    async def find_batches(
        self, tag: dict[str, str], *, keys: Sequence[str] = (), since: float | None = None
    ) -> list[str]:
        """Ids of the batches `submit_batch(requests, tag)` may have created, newest first.

        A provider whose batches carry metadata matches every item of `tag`; one whose batches
        carry none (Anthropic) recognises the batch by what it holds: created from `since`
        (the epoch time the submission began) on, with exactly one request per key of `keys`
        (the requests' keys; their custom_ids are `custom_id_for(key)`), and finds nothing
        without them. Raises `BatchesUnverified` when a batch that may be the one cannot be
        checked yet.
        """

    @abstractmethod
    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to stop the batch; rows already done keep their results."""


def supports_batch(provider: object) -> bool:
    """Whether `provider` implements the batch interface."""
    return isinstance(provider, BatchProvider)


def custom_id_for(key: str) -> str:
    """The custom_id sent for a request key (see the module docstring)."""
    return key if _CUSTOM_ID.match(key) else "h" + stable_hash(key)


def split_for_limits(
    requests: Sequence[Request], limits: BatchLimits, line_bytes: Callable[[Request], int]
) -> list[list[Request]]:
    """`requests` in order, cut into as few consecutive chunks as fit `limits`.

    ValueError if one request alone is larger than `limits.max_bytes`.
    """
    chunks: list[list[Request]] = []
    current: list[Request] = []
    size = 0
    for request in requests:
        n = line_bytes(request)
        if n > limits.max_bytes:
            raise ValueError(
                f"request {request.key} is {n} bytes: more than a batch holds ({limits.max_bytes})"
            )
        if current and (len(current) >= limits.max_requests or size + n > limits.max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(request)
        size += n
    if current:
        chunks.append(current)
    return chunks


def check_batch(custom_ids: Sequence[str], total_bytes: int, limits: BatchLimits) -> None:
    """ValueError unless the batch is non-empty, within `limits` and its custom_ids unique."""
    if not custom_ids:
        raise ValueError("a batch needs at least one request")
    if len(custom_ids) > limits.max_requests:
        raise ValueError(
            f"{len(custom_ids)} requests: a batch holds at most {limits.max_requests}; "
            "split with split_for_limits"
        )
    if total_bytes > limits.max_bytes:
        raise ValueError(
            f"{total_bytes} bytes: a batch holds at most {limits.max_bytes}; "
            "split with split_for_limits"
        )
    if len(set(custom_ids)) != len(custom_ids):
        raise ValueError("a batch cannot hold two requests with the same key")


class RowMapper:
    """Turns result lines into `BatchRow`s, mapping custom_ids back to the requests sent."""

    def __init__(
        self,
        requests: Iterable[Request],
        from_payload: Callable[[Request, dict[str, Any]], Result],
    ) -> None:
        self._requests = {custom_id_for(r.key): r for r in requests}
        self._from_payload = from_payload

    def succeeded(self, custom_id: str, body: Any) -> BatchRow:
        """A succeeded row: `body` is the answer as the online API would have sent it."""
        request = self._requests.get(custom_id)
        if request is None:
            return self.failed(custom_id, "errored", "")
        try:
            result = self._from_payload(request, body)
        except TerminalProviderError as exc:
            return BatchRow(custom_id, "errored", request.key, None, str(exc))
        return BatchRow(custom_id, "succeeded", request.key, result)

    def failed(self, custom_id: str, kind: RowKind, error: str) -> BatchRow:
        """A row without an answer."""
        request = self._requests.get(custom_id)
        if request is None:
            return BatchRow(custom_id, "errored", None, None, "custom_id matches no request given")
        return BatchRow(custom_id, kind, request.key, None, error or kind)
