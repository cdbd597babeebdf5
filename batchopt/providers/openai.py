"""OpenAI chat completions, also for OpenAI-compatible servers (vLLM, llama.cpp, Ollama).

The call goes through the official SDK's generic `post` with a plain dict body and a plain
dict answer (`cast_to=object`): the SDK still does auth, timeouts, connection pooling and error
mapping, but skips its typed request transform and response models, which cost about half the
client CPU at a thousand calls a second.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import os
import re
import time
from dataclasses import replace
from types import ModuleType
from typing import Any

from batchopt.errors import ConfigError, TerminalProviderError, TransientProviderError
from batchopt.providers.base import Capabilities, Provider, ProviderSettings
from batchopt.records import Request, Result, Usage

PIP_REQUIREMENT = "openai[aiohttp]"
# Servers such as vLLM or llama.cpp ignore the key, but the SDK insists on one.
PLACEHOLDER_KEY = "not-needed"
_TRANSIENT_STATUSES = {408, 409, 429}
_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]{8,}")


def _sdk() -> ModuleType:
    try:
        import openai
    except ImportError:
        raise ConfigError(
            f"provider 'openai' needs the openai package: pip install '{PIP_REQUIREMENT}'"
        ) from None
    return openai


class OpenAIProvider(Provider):
    """Chat completions through the `openai` SDK; one attempt per call, SDK retries off."""

    name = "openai"
    capabilities = Capabilities(json_schema=True, prompt_cache=True)

    def __init__(self, settings: ProviderSettings) -> None:
        self._sdk = _sdk()
        self.settings = settings
        self._api_key = settings.api_key or os.environ.get("OPENAI_API_KEY")
        if not self._api_key:
            if not settings.base_url:
                raise ConfigError(
                    "provider 'openai' has no API key: set OPENAI_API_KEY or the profile's key"
                )
            self._api_key = PLACEHOLDER_KEY
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def to_payload(self, request: Request) -> dict[str, Any]:
        """The chat completions body; `request.params` override it (a None value drops a key)."""
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.user})
        payload: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema, "strict": False},
            }
        if "max_completion_tokens" in request.params:  # reasoning models reject max_tokens
            payload.pop("max_tokens")
        for key, value in request.params.items():
            if value is None:
                payload.pop(key, None)
            else:
                payload[key] = value
        return payload

    def from_payload(self, request: Request, raw: dict[str, Any]) -> Result:
        """A `Result` from a chat completion body; TerminalProviderError if it has no answer."""
        if not isinstance(raw, dict):
            raise TerminalProviderError(f"openai {request.model}: the response is not JSON")
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise TerminalProviderError(f"openai {request.model}: the response has no choices")
        choice = choices[0]
        message = choice.get("message") or {}
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        usage = raw.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return Result(
            key=request.key,
            text=text,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
                cached_input_tokens=int(details.get("cached_tokens") or 0),
                cache_write_tokens=int(details.get("cache_write_tokens") or 0),
            ),
            status="ok",
            finish_reason=choice.get("finish_reason"),
            request_id=raw.get("id"),
            parsed=_parse_object(text) if request.json_schema is not None else None,
        )

    async def complete(self, request: Request) -> Result:
        """One POST /chat/completions; raises Transient/TerminalProviderError on failure."""
        payload = self.to_payload(request)
        client = self._client_for_running_loop()
        start = time.perf_counter()
        try:
            raw = await client.post("/chat/completions", body=payload, cast_to=object)
        except self._sdk.OpenAIError as exc:
            raise self._error(exc, request.model) from None
        latency_ms = (time.perf_counter() - start) * 1000
        return replace(self.from_payload(request, raw), latency_ms=latency_ms)

    async def aclose(self) -> None:
        """Close the HTTP client (only valid on the loop that used it)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()

    def _client_for_running_loop(self) -> Any:
        # An aiohttp session belongs to one event loop; a new loop (a second asyncio.run) gets
        # a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._build_client()
            self._loop = loop
        return self._client

    def _build_client(self) -> Any:
        sdk, settings = self._sdk, self.settings
        return sdk.AsyncOpenAI(
            api_key=self._api_key,
            base_url=settings.base_url,
            max_retries=0,
            timeout=settings.timeout_s,
            http_client=_http_client(sdk, settings),
        )

    def _error(self, exc: Exception, model: str) -> Exception:
        """The batchopt error for an SDK exception; the message never carries the key."""
        sdk = self._sdk
        where = f"openai {model}"
        if isinstance(exc, sdk.APITimeoutError):
            return TransientProviderError(f"{where}: timed out after {self.settings.timeout_s:g}s")
        if isinstance(exc, sdk.APIConnectionError):
            return TransientProviderError(f"{where}: connection failed: {self._clean(exc)}")
        if isinstance(exc, sdk.APIStatusError):
            status = int(exc.status_code)
            message = f"{where}: HTTP {status}: {self._clean(exc)}"
            if status in _TRANSIENT_STATUSES or status >= 500:
                retry_after = retry_after_seconds(exc.response.headers)
                return TransientProviderError(message, status=status, retry_after=retry_after)
            return TerminalProviderError(message, status=status)
        return TerminalProviderError(f"{where}: {type(exc).__name__}: {self._clean(exc)}")

    def _clean(self, exc: Exception) -> str:
        return scrub(upstream_message(exc), [self._api_key, self.settings.api_key])


def _http_client(sdk: ModuleType, settings: ProviderSettings) -> Any:
    size = max(1, settings.concurrency)
    # The SDK's own httpx2.Limits class, so this module imports nothing but the SDK.
    limits = type(sdk.DEFAULT_CONNECTION_LIMITS)(
        max_connections=size, max_keepalive_connections=size
    )
    try:
        return sdk.DefaultAioHttpClient(limits=limits, timeout=settings.timeout_s)
    except (AttributeError, RuntimeError):  # an older SDK, or aiohttp is not installed
        return sdk.DefaultAsyncHttpxClient(limits=limits, timeout=settings.timeout_s)


def _parse_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


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
