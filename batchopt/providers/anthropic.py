"""Anthropic Messages through the official SDK.

Structured output: when `request.json_schema` is set, the system prompt gets an instruction
with the schema between `<json_schema>` and `</json_schema>` tags (`schema_instruction`), which
works on every model; the answer's JSON is parsed leniently (code fences and surrounding prose
are tolerated) into `Result.parsed`, and the caller validates it.

`finish_reason` is normalised to the OpenAI words: `end_turn`/`stop_sequence` become "stop" and
`max_tokens` becomes "length"; others (`refusal`, `tool_use`, ...) pass through.

The SDK plumbing (key, client per event loop, the call through the SDK's generic `post`, error
mapping) is in `batchopt.providers.sdk_common`; this module holds the Anthropic wire format.
"""

from __future__ import annotations

import json
import re
from types import ModuleType
from typing import Any

from batchopt.errors import ConfigError, TerminalProviderError
from batchopt.providers.base import Capabilities, ProviderSettings
from batchopt.providers.sdk_common import SDKProvider, apply_params, json_object
from batchopt.records import Request, Result, Usage

PIP_REQUIREMENT = "anthropic[aiohttp]"
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
        value = json_object(candidate)
        if value is not None:
            return value
    return None


class AnthropicProvider(SDKProvider):
    """Messages through the `anthropic` SDK; one attempt per call, SDK retries off."""

    name = "anthropic"
    capabilities = Capabilities(json_schema=True, prompt_cache=True)
    api_key_env = "ANTHROPIC_API_KEY"
    _path = "/v1/messages"

    def __init__(self, settings: ProviderSettings) -> None:
        sdk = _sdk()
        super().__init__(settings, sdk, sdk.AnthropicError)

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
        return apply_params(payload, request.params)

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

    def _build_client(self) -> Any:
        return self._sdk.AsyncAnthropic(**self._client_options())
