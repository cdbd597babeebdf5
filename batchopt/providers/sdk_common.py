"""What the SDK-backed providers (`openai`, `anthropic`) share.

`SDKProvider` holds the plumbing: the API key (or a placeholder for a keyless server), one SDK
client per event loop, the call itself and the mapping of SDK exceptions to
`TransientProviderError` / `TerminalProviderError`. A subclass passes in its SDK module, so this
module imports neither SDK, and supplies the payload mapping, the request path and the client.

The call goes through the SDK's generic `post` with a plain dict body and a plain dict answer
(`cast_to=object`): the SDK still does auth, timeouts, connection pooling and error mapping, but
skips its typed request transform and response models, which cost about half the client CPU at
a thousand calls a second.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import re
import time
from abc import abstractmethod
from dataclasses import replace
from types import ModuleType
from typing import Any

from batchopt.errors import ConfigError, TerminalProviderError, TransientProviderError
from batchopt.providers.base import Provider, ProviderSettings
from batchopt.providers.framing import MESSAGE_TOKENS, REPLY_TOKENS
from batchopt.records import Request, Result, Usage
from batchopt.tokens import count_tokens

# Servers such as vLLM or llama.cpp ignore the key, but the SDKs insist on one.
PLACEHOLDER_KEY = "not-needed"
_TRANSIENT_STATUSES = {408, 409, 429}
# The note an answer without `usage` carries in `Result.error` (its status stays ok).
USAGE_MISSING = "the response had no usage: tokens counted offline"
_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]{8,}")


class SDKProvider(Provider):
    """A provider that calls an HTTP API through its official SDK; SDK retries off.

    Subclasses set `name`, `api_key_env` (the environment variable read when the profile has no
    key) and `_path` (what `complete` posts to), and implement `to_payload`, `from_payload` and
    `_build_client`.
    """

    api_key_env: str = ""
    _path: str = ""

    def __init__(self, settings: ProviderSettings, sdk: ModuleType, sdk_error: type) -> None:
        """`sdk` is the imported SDK module; `sdk_error` the base class of its exceptions."""
        self._sdk = sdk
        self._sdk_error = sdk_error
        self.settings = settings
        self._api_key = settings.api_key or os.environ.get(self.api_key_env)
        if not self._api_key:
            if not settings.base_url:
                raise ConfigError(
                    f"provider '{self.name}' has no API key: "
                    f"set {self.api_key_env} or the profile's key"
                )
            self._api_key = PLACEHOLDER_KEY
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def complete(self, request: Request) -> Result:
        """One POST to `_path`; raises Transient/TerminalProviderError on failure."""
        payload = self.to_payload(request)
        client = self._client_for_running_loop()
        start = time.perf_counter()
        try:
            raw = await client.post(self._path, body=payload, cast_to=object)
        except self._sdk_error as exc:
            raise self._error(exc, request.model) from None
        except json.JSONDecodeError as exc:  # the SDK does not wrap a 200 whose body is cut
            raise self._not_json(request.model, f"{exc.msg} at byte {exc.pos}") from None
        if not isinstance(raw, dict):  # what the SDK returns for a body not labelled JSON
            raise self._not_json(request.model, f"{str(raw)[:80]!r}")
        latency_ms = (time.perf_counter() - start) * 1000
        return replace(self.from_billed(request, raw), latency_ms=latency_ms)

    def from_billed(self, request: Request, raw: dict[str, Any]) -> Result:
        """`from_payload` for an answer the provider billed: one whose response carries no
        `usage` (some proxies and compatible servers drop it) gets its tokens counted offline
        and says so in `error` (its status stays ok), rather than costing $0 in the ledger."""
        result = self.from_payload(request, raw)
        if isinstance(raw, dict) and not isinstance(raw.get("usage"), dict):
            usage = offline_usage(request.model, payload_texts(self.to_payload(request)),
                                  result.text or "")
            result = replace(result, usage=usage, error=USAGE_MISSING)
        return result

    async def aclose(self) -> None:
        """Close the HTTP client (only valid on the loop that used it)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()

    @abstractmethod
    def _build_client(self) -> Any:
        """A new async SDK client; `_client_options` gives the arguments every one takes."""

    def _client_options(self) -> dict[str, Any]:
        """Key, base URL, timeout, SDK retries off and a pooled HTTP client sized to concurrency."""
        return {
            "api_key": self._api_key,
            "base_url": self.settings.base_url,
            "max_retries": 0,
            "timeout": self.settings.timeout_s,
            "http_client": http_client(self._sdk, self.settings),
        }

    def _client_for_running_loop(self) -> Any:
        # An aiohttp session belongs to one event loop; a new loop (a second asyncio.run) gets
        # a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._build_client()
            self._loop = loop
        return self._client

    def _error(self, exc: Exception, model: str) -> Exception:
        """The batchopt error for an SDK exception; the message never carries the key."""
        sdk = self._sdk
        where = f"{self.name} {model}"
        if isinstance(exc, sdk.APITimeoutError):
            return TransientProviderError(f"{where}: timed out after {self.settings.timeout_s:g}s")
        if isinstance(exc, sdk.APIConnectionError):
            return TransientProviderError(f"{where}: connection failed: {self._clean(exc)}")
        if isinstance(exc, sdk.APIStatusError):
            status = int(exc.status_code)
            message = f"{where}: HTTP {status}: {self._clean(exc)}"
            # 5xx includes Anthropic's 529 "overloaded".
            if status in _TRANSIENT_STATUSES or status >= 500:
                retry_after = retry_after_seconds(exc.response.headers)
                return TransientProviderError(message, status=status, retry_after=retry_after)
            return TerminalProviderError(message, status=status)
        return TerminalProviderError(f"{where}: {type(exc).__name__}: {self._clean(exc)}")

    def _not_json(self, model: str, detail: str) -> TransientProviderError:
        # A proxy's error page or a body cut on the way: worth another attempt, like a dropped
        # connection (if the provider billed the lost answer, the retry pays again; no client
        # can tell).
        return TransientProviderError(
            f"{self.name} {model}: the response body is not a JSON object: {detail}"
        )

    def _clean(self, exc: Exception) -> str:
        return scrub(upstream_message(exc), [self._api_key, self.settings.api_key])


def http_client(sdk: ModuleType, settings: ProviderSettings) -> Any:
    """The SDK's aiohttp client (its httpx one when aiohttp is missing), pooled to concurrency."""
    size = max(1, settings.concurrency)
    # The SDK's own httpx Limits class, so this module imports nothing but what it is given.
    limits = type(sdk.DEFAULT_CONNECTION_LIMITS)(
        max_connections=size, max_keepalive_connections=size
    )
    try:
        return sdk.DefaultAioHttpClient(limits=limits, timeout=settings.timeout_s)
    except (AttributeError, RuntimeError):  # an older SDK, or aiohttp is not installed
        return sdk.DefaultAsyncHttpxClient(limits=limits, timeout=settings.timeout_s)


def apply_params(payload: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """`payload` with `params` laid over it (a None value drops a key); changes it in place."""
    for key, value in params.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return payload


def json_object(text: str) -> dict[str, Any] | None:
    """`text` parsed when it is exactly one JSON object, else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def offline_usage(model: str, messages: list[str], answer: str) -> Usage:
    """The usage of an answer whose response carried none, counted offline: the messages sent,
    with the chat framing, and the answer. The call was billed all the same; an estimate is
    closer to the bill than zero."""
    sent = [text for text in messages if text]
    return Usage(
        input_tokens=sum(count_tokens(t, model) + MESSAGE_TOKENS for t in sent) + REPLY_TOKENS,
        output_tokens=count_tokens(answer, model) if answer else 0,
    )


def payload_texts(payload: dict[str, Any]) -> list[str]:
    """The texts a chat payload sends, one per message (the system prompt first, if any), in
    either wire format: string contents or lists of blocks with a `text`."""
    def text(content: Any) -> str:
        if isinstance(content, list):
            return "".join(str(b.get("text") or "") for b in content if isinstance(b, dict))
        return content if isinstance(content, str) else ""

    messages = payload.get("messages") or []
    texts = [text(payload.get("system"))] if payload.get("system") else []
    return texts + [text(m.get("content")) for m in messages if isinstance(m, dict)]


def upstream_message(exc: Exception) -> str:
    """The provider's own error message (from the JSON body when there is one), one line."""
    body = getattr(exc, "body", None)
    message: Any = None
    if isinstance(body, dict):
        inner = body.get("error")
        message = inner.get("message") if isinstance(inner, dict) else body.get("message")
    if not isinstance(message, str) or not message:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    line = " ".join(str(message).split())
    return line[:300] + ("..." if len(line) > 300 else "")


def scrub(text: str, secrets: list[str | None]) -> str:
    """`text` without any of `secrets` nor anything shaped like an sk- key."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
        if secret and len(secret) >= 16:  # a masked echo ("sk-****...wxyz1234") shows the tail
            text = re.sub(r"\S*" + re.escape(secret[-8:]), "[redacted]", text)
    return _KEY_LIKE.sub(r"\1...[redacted]", text)


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            seconds = _http_date_seconds(value) if scale == 1.0 else None
        if seconds is not None and math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _http_date_seconds(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()
