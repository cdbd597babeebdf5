"""OpenAI chat completions, also for OpenAI-compatible servers (vLLM, llama.cpp, Ollama), and
the OpenAI Batch API for them.

The SDK plumbing (key, client per event loop, the call through the SDK's generic `post`, error
mapping) is in `batchopt.providers.sdk_common`; this module holds the OpenAI wire format.

Batches: the requests go up as one JSONL file (`purpose=batch`), one line per request
(`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`), and the batch
carries the caller's tag as `metadata`, which `find_batches` matches. One batch holds one model
(the API rejects a file that mixes models). Results come from the output file (status 200) and
the error file (other statuses, and rows the API reports as expired or cancelled).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from functools import partial
from types import ModuleType
from typing import Any

from batchopt.errors import ConfigError, TerminalProviderError
from batchopt.hashing import stable_hash
from batchopt.providers.base import (
    Capabilities,
    PromptCacheRules,
    ProviderSettings,
    ProviderTraits,
)
from batchopt.providers.batching import (
    OPENAI_LIMITS,
    BatchRow,
    BatchStatus,
    RowMapper,
    check_batch,
    custom_id_for,
)
from batchopt.providers.framing import CHAT_FRAMING
from batchopt.providers.sdk_batch import SDKBatchProvider
from batchopt.providers.sdk_common import apply_params, json_object
from batchopt.records import Request, Result, Usage
from batchopt.tokens import count_in_encoding, count_tokens, encoding_name_for, is_exact_for

PIP_REQUIREMENT = "openai[aiohttp]"
BATCH_ENDPOINT = "/v1/chat/completions"
_STATES = {
    "validating": "pending",
    "in_progress": "pending",
    "finalizing": "pending",
    "cancelling": "pending",
    "completed": "ended",
    "failed": "failed",
    "expired": "expired",
    "cancelled": "cancelled",
}
# Error-file codes of rows that never ran.
_NOT_RUN = {"batch_expired": "expired", "batch_cancelled": "canceled"}


def openai_sdk() -> ModuleType:
    """The `openai` SDK module (imported here only; ConfigError naming the package if absent)."""
    try:
        import openai
    except ImportError:
        raise ConfigError(
            f"provider 'openai' needs the openai package: pip install '{PIP_REQUIREMENT}'"
        ) from None
    return openai


OPENAI_CACHE_MIN_TOKENS = 1024


class OpenAIProvider(SDKBatchProvider):
    """Chat completions through the `openai` SDK; one attempt per call, SDK retries off."""

    name = "openai"
    capabilities = Capabilities(batch=True, json_schema=True, prompt_cache=True,
                                fine_tuning=True)
    batch_limits = OPENAI_LIMITS
    api_key_env = "OPENAI_API_KEY"
    _path = "/chat/completions"

    @classmethod
    def traits(cls, model: str) -> ProviderTraits:
        return ProviderTraits(
            capabilities=cls.capabilities,
            api_key_env=cls.api_key_env,
            base_url_env="OPENAI_BASE_URL",
            default_base_url="https://api.openai.com/v1",
            # OpenAI caches a prefix from 1024 tokens on and reports it in steps of 128.
            prompt_cache=PromptCacheRules(min_tokens=OPENAI_CACHE_MIN_TOKENS, step_tokens=128),
            framing=CHAT_FRAMING,
        )

    @classmethod
    def exact_tokens(cls, model: str, endpoint: str | None = None
                     ) -> tuple[str, Callable[[str], int]] | None:
        """The model's own encoding (bpe-openai), for the models `tokens.is_exact_for`."""
        if not is_exact_for(model):
            return None
        encoding = encoding_name_for(model)
        return f"exact:{encoding}", partial(count_in_encoding, encoding=encoding)

    def __init__(self, settings: ProviderSettings) -> None:
        sdk = openai_sdk()
        super().__init__(settings, sdk, sdk.OpenAIError)

    def caches_prefix(self, request: Request) -> bool:
        # OpenAI caches a prompt's prefix from 1024 tokens on, by itself; the system message
        # is the part every row shares.
        return bool(request.system) and count_tokens(request.system, request.model) >= (
            OPENAI_CACHE_MIN_TOKENS
        )

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
            token_logprobs=_token_logprobs(choice.get("logprobs")),
        )

    def _build_client(self) -> Any:
        return self._sdk.AsyncOpenAI(**self._client_options())

    # ---- Batch API ----------------------------------------------------------------------------

    def batch_line(self, request: Request) -> bytes:
        """The JSONL line (newline included) that carries `request` in a batch input file."""
        line = {
            "custom_id": custom_id_for(request.key),
            "method": "POST",
            "url": BATCH_ENDPOINT,
            "body": self.to_payload(request),
        }
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def batch_line_bytes(self, request: Request) -> int:
        """The size of `request`'s line in the input file."""
        return len(self.batch_line(request))

    async def submit_batch(self, requests: Sequence[Request], tag: dict[str, str]) -> str:
        """Upload the input file, create the batch with `tag` as metadata; return its id."""
        lines = [self.batch_line(r) for r in requests]
        data = b"".join(lines)
        check_batch([custom_id_for(r.key) for r in requests], len(data), self.batch_limits)
        models = {r.model for r in requests}
        if len(models) > 1:
            raise ValueError(f"an OpenAI batch holds one model, not {sorted(models)}")
        metadata = _metadata(tag)
        client = self._client_for_running_loop()
        name = f"batchopt-{stable_hash(data, 16)}.jsonl"
        upload = await self._first_batch_call(
            client.files.create(
                file=(name, data), purpose="batch", timeout=self._upload_timeout(len(data))
            )
        )
        batch = await self._batch_call(
            client.batches.create(
                input_file_id=upload.id,
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                metadata=metadata,
            )
        )
        return str(batch.id)

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """The batch's status; `error` joins the API's `errors.data[].message`."""
        client = self._client_for_running_loop()
        batch = await self._batch_call(client.batches.retrieve(batch_id))
        counts = batch.request_counts
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        messages = [e.message or e.code or "" for e in errors]
        return BatchStatus(
            batch_id=batch.id,
            state=_STATES.get(batch.status, "pending"),  # type: ignore[arg-type]
            raw_status=batch.status,
            total=counts.total if counts else 0,
            succeeded=counts.completed if counts else 0,
            errored=counts.failed if counts else 0,
            error="; ".join(m for m in messages if m) or None,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
        )

    async def fetch_batch_results(
        self, batch_id: str, requests: Iterable[Request]
    ) -> AsyncIterator[BatchRow]:
        """The rows of the output file, then of the error file."""
        status = await self._status_with_results(batch_id)
        rows = RowMapper(requests, self.from_billed)
        seen = 0
        for file_id in (status.output_file_id, status.error_file_id):
            if not file_id:
                continue
            async for line in self._file_lines(file_id):
                seen += 1
                yield self._batch_row(rows, line)
        self._check_count("results", seen, status.succeeded + status.errored)

    async def find_batches(
        self, tag: dict[str, str], *, keys: Sequence[str] = (), since: float | None = None
    ) -> list[str]:
        """Ids of batches whose metadata holds every item of `tag`, newest first (the tag is
        enough: `keys` and `since` are not needed)."""
        client = self._client_for_running_loop()
        found = []
        async for batch in self._guarded(aiter(client.batches.list(limit=100)), "batch list"):
            metadata = batch.metadata or {}
            if all(metadata.get(k) == v for k, v in tag.items()):
                found.append(str(batch.id))
        return found

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the API to cancel; the batch goes `cancelling`, then `cancelled`."""
        client = self._client_for_running_loop()
        await self._batch_call(client.batches.cancel(batch_id))

    async def _file_lines(self, file_id: str) -> AsyncIterator[str]:
        client = self._client_for_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            download = client.files.with_streaming_response.content(file_id)
            response = await self._batch_call(stack.enter_async_context(download))
            async for line in self._guarded(aiter(response.iter_lines()), "results download"):
                if line.strip():
                    yield line

    def _batch_row(self, rows: RowMapper, line: str) -> BatchRow:
        try:
            item = json.loads(line)
        except ValueError:
            raise self._broken("results download", "a line is not JSON") from None
        custom_id = str(item.get("custom_id"))
        response = item.get("response") or {}
        error = item.get("error")
        if isinstance(error, dict):
            kind = _NOT_RUN.get(str(error.get("code")), "errored")
            return rows.failed(custom_id, kind, self._row_error(error))  # type: ignore[arg-type]
        status = response.get("status_code")
        body = response.get("body")
        if status == 200:
            return rows.succeeded(custom_id, body)
        inner = body.get("error") if isinstance(body, dict) else None
        detail = self._row_error(inner) if isinstance(inner, dict) else "no error body"
        return rows.failed(custom_id, "errored", f"HTTP {status}: {detail}")

    def _row_error(self, error: dict[str, Any]) -> str:
        return self._row_message(error.get("message") or error.get("code") or "error")


def _token_logprobs(logprobs: Any) -> tuple[float, ...] | None:
    """`logprobs.content[*].logprob` of a choice, or None when the answer carries none."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return None
    values = []
    for entry in content:
        value = entry.get("logprob") if isinstance(entry, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        values.append(float(value))
    return tuple(values)


def _metadata(tag: dict[str, str]) -> dict[str, str]:
    """`tag` checked against the API's metadata limits (16 pairs, 64/512 characters)."""
    if len(tag) > 16:
        raise ValueError("a batch tag holds at most 16 items")
    for key, value in tag.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError("batch tag keys and values must be strings")
        if len(key) > 64 or len(value) > 512:
            raise ValueError(f"batch tag {key[:64]!r}: keys up to 64, values up to 512 characters")
    return dict(tag)
