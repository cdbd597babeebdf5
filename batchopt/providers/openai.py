"""OpenAI chat completions, also for OpenAI-compatible servers (vLLM, llama.cpp, Ollama).

The SDK plumbing (key, client per event loop, the call through the SDK's generic `post`, error
mapping) is in `batchopt.providers.sdk_common`; this module holds the OpenAI wire format.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from batchopt.errors import ConfigError, TerminalProviderError
from batchopt.providers.base import Capabilities, ProviderSettings
from batchopt.providers.sdk_common import SDKProvider, apply_params, json_object
from batchopt.records import Request, Result, Usage

PIP_REQUIREMENT = "openai[aiohttp]"


def _sdk() -> ModuleType:
    try:
        import openai
    except ImportError:
        raise ConfigError(
            f"provider 'openai' needs the openai package: pip install '{PIP_REQUIREMENT}'"
        ) from None
    return openai


class OpenAIProvider(SDKProvider):
    """Chat completions through the `openai` SDK; one attempt per call, SDK retries off."""

    name = "openai"
    capabilities = Capabilities(json_schema=True, prompt_cache=True)
    api_key_env = "OPENAI_API_KEY"
    _path = "/chat/completions"

    def __init__(self, settings: ProviderSettings) -> None:
        sdk = _sdk()
        super().__init__(settings, sdk, sdk.OpenAIError)

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
        return apply_params(payload, request.params)

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
            parsed=json_object(text) if request.json_schema is not None else None,
        )

    def _build_client(self) -> Any:
        return self._sdk.AsyncOpenAI(**self._client_options())
