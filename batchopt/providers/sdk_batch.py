"""What the SDK providers' batch implementations share: error mapping for batch calls and for
downloads that break off, and the row-count check that catches a short download.

Like `sdk_common`, this module imports no SDK: it works with the module its subclass passes in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from batchopt.errors import (
    NoBatchAPIError,
    ProviderError,
    TerminalProviderError,
    TransientProviderError,
)
from batchopt.providers.batching import BatchProvider, BatchStatus
from batchopt.providers.sdk_common import SDKProvider, scrub

T = TypeVar("T")
WHERE = "batch"
_NO_SUCH_ENDPOINT = (404, 405)
# Uploads get the profile's timeout plus a second per megabyte: a 200 MB file is not one call.
_UPLOAD_BYTES_PER_SECOND = 1_000_000


class SDKBatchProvider(SDKProvider, BatchProvider):
    """An SDK provider with a batch API; subclasses implement the `BatchProvider` methods."""

    async def _batch_call(self, call: Awaitable[T]) -> T:
        """Await one SDK call; SDK errors become Transient/TerminalProviderError."""
        try:
            return await call
        except self._sdk_error as exc:
            raise self._error(exc, WHERE) from None

    async def _first_batch_call(self, call: Awaitable[T]) -> T:
        """The first call of a batch's creation: an endpoint that answers it 404 or 405 has no
        batch API (an OpenAI-compatible server without one), which no retry or later round
        mends: NoBatchAPIError (exit 2) names the endpoint and what to do."""
        try:
            return await self._batch_call(call)
        except TerminalProviderError as exc:
            if exc.status not in _NO_SUCH_ENDPOINT:
                raise
            raise NoBatchAPIError(
                f"{self.name} batch: the endpoint {self.settings.base_url} has no batch API "
                f"({exc}); run this profile online: --mode online, or execution.mode: online"
            ) from None

    async def _status_with_results(self, batch_id: str) -> BatchStatus:
        """The batch's status; TerminalProviderError when it has no results to read."""
        status = await self.poll_batch(batch_id)
        if not status.has_results:
            raise TerminalProviderError(
                f"{self.name} batch {batch_id} has no results ({status.raw_status})"
                + (f": {status.error}" if status.error else "")
            )
        return status

    def _upload_timeout(self, size: int) -> float:
        return self.settings.timeout_s + size / _UPLOAD_BYTES_PER_SECOND

    async def _guarded(self, stream: AsyncIterator[T], what: str) -> AsyncIterator[T]:
        """`stream`'s items; a failure while reading becomes a TransientProviderError."""
        iterator = aiter(stream)
        while True:
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            # A connection lost mid-body: newer SDKs (anthropic 2.17) wrap it in their own
            # APIConnectionError, older ones let the HTTP client's error through (below).
            except self._sdk.APIConnectionError as exc:
                raise self._broken(what, f"{type(exc).__name__}: {self._clean(exc)}") from None
            except self._sdk_error as exc:
                raise self._error(exc, WHERE) from None
            except ProviderError:
                raise
            # The SDKs do not wrap their HTTP client's errors once the body is streaming
            # (a dropped connection surfaces as the client's own ReadError), nor a cut last line.
            except Exception as exc:
                raise self._broken(what, f"{type(exc).__name__}: {self._clean(exc)}") from None
            yield item

    def _check_count(self, what: str, seen: int, expected: int) -> None:
        """TransientProviderError when a download yielded fewer rows than the provider counted."""
        if seen < expected:
            raise self._broken(what, f"{seen} rows of the {expected} the provider reported")

    def _row_message(self, text: object) -> str:
        """A row's error text from the provider: one line, at most 300 characters, no key."""
        line = " ".join(str(text).split())
        line = line[:300] + ("..." if len(line) > 300 else "")
        return scrub(line, [self._api_key, self.settings.api_key])

    def _broken(self, what: str, detail: str) -> TransientProviderError:
        return TransientProviderError(f"{self.name} {WHERE}: {what} broke off: {detail}")
