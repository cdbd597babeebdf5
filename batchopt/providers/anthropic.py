"""Anthropic Messages through the official SDK.

Structured output: when `request.json_schema` is set, the system prompt gets an instruction
with the schema between `<json_schema>` and `</json_schema>` tags (`schema_instruction`), which
works on every model; the answer's JSON is parsed leniently (code fences and surrounding prose
are tolerated) into `Result.parsed`, and the caller validates it.

`finish_reason` is normalised to the OpenAI words: `end_turn`/`stop_sequence` become "stop" and
`max_tokens` becomes "length"; others (`refusal`, `tool_use`, ...) pass through.

As in `batchopt.providers.openai`, the call goes through the SDK's generic `post` with a plain
dict body and answer, which skips the typed transform and response models.
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

PIP_REQUIREMENT = "anthropic[aiohttp]"
PLACEHOLDER_KEY = "not-needed"
_TRANSIENT_STATUSES = {408, 409, 429}
_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]{8,}")
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


def _sdk() -> ModuleType:
    try:
        import anthropic
    except ImportError:
        raise ConfigError(
            f"provider 'anthropic' needs the anthropic package: pip install '{PIP_REQUIREMENT}'"
        ) from None
    return anthropic


def schema_instruction(schema: dict[str, Any]) -> str:
    """The system-prompt text asking for a JSON object that validates against `schema`."""
    return (
        "Answer with a single JSON object that validates against the JSON schema below. "
        "Output only that JSON object: no prose, no code fences.\n"
        f"<json_schema>\n{json.dumps(schema, ensure_ascii=False, sort_keys=True)}\n</json_schema>"
    )


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in `text` (bare, in a code fence, or amid prose), or None."""
    candidates = [text.strip()]
    fenced = _FENCE.search(text)
    if fenced:
        candidates.append(fenced.group(1))
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


class AnthropicProvider(Provider):
    """Messages through the `anthropic` SDK; one attempt per call, SDK retries off."""

    name = "anthropic"
    capabilities = Capabilities(json_schema=True, prompt_cache=True)

    def __init__(self, settings: ProviderSettings) -> None:
        self._sdk = _sdk()
        self.settings = settings
        self._api_key = settings.api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not self._api_key:
            if not settings.base_url:
                raise ConfigError(
                    "provider 'anthropic' has no API key: "
                    "set ANTHROPIC_API_KEY or the profile's key"
                )
            self._api_key = PLACEHOLDER_KEY
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def to_payload(self, request: Request) -> dict[str, Any]:
        """The Messages body; `request.params` override it (a None value drops a key)."""
        system = request.system
        if request.json_schema is not None:
            instruction = schema_instruction(request.json_schema)
            system = f"{system}\n\n{instruction}" if system else instruction
        payload: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": "user", "content": request.user}],
            "temperature": request.temperature,
        }
        if system:
            payload["system"] = system
        for key, value in request.params.items():
            if value is None:
                payload.pop(key, None)
            else:
                payload[key] = value
        return payload

    def from_payload(self, request: Request, raw: dict[str, Any]) -> Result:
        """A `Result` from a Messages body; TerminalProviderError if it has no content."""
        if not isinstance(raw, dict):
            raise TerminalProviderError(f"anthropic {request.model}: the response is not JSON")
        content = raw.get("content")
        if not isinstance(content, list):
            raise TerminalProviderError(f"anthropic {request.model}: the response has no content")
        text = "".join(
            block.get("text") or ""
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
        usage = raw.get("usage") or {}
        cache_read = int(usage.get("cache_read_input_tokens") or 0)
        cache_write = int(usage.get("cache_creation_input_tokens") or 0)
        stop_reason = raw.get("stop_reason")
        return Result(
            key=request.key,
            text=text,
            usage=Usage(
                input_tokens=int(usage.get("input_tokens") or 0) + cache_read + cache_write,
                output_tokens=int(usage.get("output_tokens") or 0),
                cached_input_tokens=cache_read,
                cache_write_tokens=cache_write,
            ),
            status="ok",
            finish_reason=_STOP_REASONS.get(stop_reason, stop_reason),
            request_id=raw.get("id"),
            parsed=parse_json_object(text) if request.json_schema is not None else None,
        )

    async def complete(self, request: Request) -> Result:
        """One POST /v1/messages; raises Transient/TerminalProviderError on failure."""
        payload = self.to_payload(request)
        client = self._client_for_running_loop()
        start = time.perf_counter()
        try:
            raw = await client.post("/v1/messages", body=payload, cast_to=object)
        except self._sdk.AnthropicError as exc:
            raise self._error(exc, request.model) from None
        latency_ms = (time.perf_counter() - start) * 1000
        return replace(self.from_payload(request, raw), latency_ms=latency_ms)

    async def aclose(self) -> None:
        """Close the HTTP client (only valid on the loop that used it)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()

    def _client_for_running_loop(self) -> Any:
        # An aiohttp session belongs to one event loop; a new loop gets a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._build_client()
            self._loop = loop
        return self._client

    def _build_client(self) -> Any:
        sdk, settings = self._sdk, self.settings
        return sdk.AsyncAnthropic(
            api_key=self._api_key,
            base_url=settings.base_url,
            max_retries=0,
            timeout=settings.timeout_s,
            http_client=_http_client(sdk, settings),
        )

    def _error(self, exc: Exception, model: str) -> Exception:
        """The batchopt error for an SDK exception; the message never carries the key."""
        sdk = self._sdk
        where = f"anthropic {model}"
        if isinstance(exc, sdk.APITimeoutError):
            return TransientProviderError(f"{where}: timed out after {self.settings.timeout_s:g}s")
        if isinstance(exc, sdk.APIConnectionError):
            return TransientProviderError(f"{where}: connection failed: {self._clean(exc)}")
        if isinstance(exc, sdk.APIStatusError):
            status = int(exc.status_code)
            message = f"{where}: HTTP {status}: {self._clean(exc)}"
            if status in _TRANSIENT_STATUSES or status >= 500:  # 529 is "overloaded"
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
