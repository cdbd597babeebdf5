"""Anthropic Messages through the official SDK.

Structured output: when `request.json_schema` is set, the system prompt gets an instruction
with the schema between `<json_schema>` and `</json_schema>` tags (`schema_instruction`), which
works on every model; the answer's JSON is parsed leniently (code fences and surrounding prose
are tolerated) into `Result.parsed`, and the caller validates it.

`finish_reason` is normalised to the OpenAI words: `end_turn`/`stop_sequence` become "stop" and
`max_tokens` becomes "length"; others (`refusal`, `tool_use`, ...) pass through.

The SDK plumbing (key, client per event loop, the call through the SDK's generic `post`, error
mapping) is in `batchopt.providers.sdk_common`; this module holds the Anthropic wire format.

Prompt caching: the system prompt (instructions, few-shot examples, the JSON schema) is the
static part of every row, sent first and byte-identical. When it is long enough for the model
to cache (`cache_min_tokens`, Anthropic's documented minimums, counted with
`batchopt.tokens.count_tokens`), it is sent as one text block with `cache_control:
{"type": "ephemeral"}`, so rows after the first read it from the cache; shorter system prompts
go as a plain string. `usage` maps to `Usage` with `input_tokens` = the whole prompt (the API's
`input_tokens` counts only what follows the last breakpoint), `cached_input_tokens` = cache
reads, `cache_write_tokens` = cache writes.

Message Batches: one create call carries every request as `{"custom_id", "params"}`, where
`params` is exactly the online Messages body. A message batch has no metadata, nor any other
field a caller can set and read back while it runs, so `find_batches` recognises a batch by
what it holds instead: it lists the batches created around the time the submission began
(newest first, `ADOPT_CLOCK_SLACK_S` either side for clocks that disagree, up to the longest a
create call can take), keeps those with one request per key, and reads an ended one's results
to check that its custom_ids are exactly the keys'. One still running cannot be read yet:
`BatchesUnverified` says so, and the caller waits rather than create the batch a second time.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import aclosing
from functools import lru_cache
from types import ModuleType
from typing import Any

from batchopt.errors import ConfigError, TerminalProviderError
from batchopt.providers.base import (
    Capabilities,
    PromptCacheRules,
    ProviderSettings,
    ProviderTraits,
)
from batchopt.providers.batching import (
    ANTHROPIC_LIMITS,
    BatchesUnverified,
    BatchRow,
    BatchStatus,
    RowMapper,
    check_batch,
    custom_id_for,
)
from batchopt.providers.framing import MESSAGE_TOKENS, REPLY_TOKENS
from batchopt.providers.sdk_batch import SDKBatchProvider
from batchopt.providers.sdk_common import apply_params, json_object
from batchopt.records import Request, Result, Usage
from batchopt.tokens import ChatFraming, count_tokens

PIP_REQUIREMENT = "anthropic[aiohttp]"
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)
EPHEMERAL = {"type": "ephemeral"}
# The fewest prefix tokens Anthropic caches, per model family (first matching name prefix wins;
# 1024 otherwise), from Anthropic's prompt-caching documentation.
_CACHE_MINIMUMS = (
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-5", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-sonnet-4-6", 2048),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
)
_DEFAULT_CACHE_MINIMUM = 1024
# find_batches: how far this machine's clock and the API's may disagree about a batch's creation.
ADOPT_CLOCK_SLACK_S = 120.0
_LIST_PAGE = 100


def cache_min_tokens(model: str) -> int:
    """The fewest prompt-prefix tokens Anthropic caches for `model`."""
    lowered = model.lower()
    for prefix, minimum in _CACHE_MINIMUMS:
        if lowered.startswith(prefix):
            return minimum
    return _DEFAULT_CACHE_MINIMUM


@lru_cache(maxsize=64)
def _system_tokens(system: str, model: str) -> int:
    # memoised: every row of a run shares its system prompt
    return count_tokens(system, model)


def system_cacheable(system: str, model: str) -> bool:
    """Whether `system` is long enough for Anthropic to cache it for `model`."""
    return bool(system) and _system_tokens(system, model) >= cache_min_tokens(model)


def system_field(system: str, model: str) -> str | list[dict[str, Any]]:
    """The `system` value: one cache-marked text block if `system` is long enough to be cached
    for `model`, else the plain string."""
    if not system_cacheable(system, model):
        return system
    return [{"type": "text", "text": system, "cache_control": dict(EPHEMERAL)}]


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


# Messages framed as OpenAI's are; JSON is asked for in the system prompt, billed as its text.
ANTHROPIC_FRAMING = ChatFraming(MESSAGE_TOKENS, REPLY_TOKENS, schema_instruction)


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


class AnthropicProvider(SDKBatchProvider):
    """Messages through the `anthropic` SDK; one attempt per call, SDK retries off."""

    name = "anthropic"
    capabilities = Capabilities(batch=True, json_schema=True, prompt_cache=True)
    batch_limits = ANTHROPIC_LIMITS
    api_key_env = "ANTHROPIC_API_KEY"
    _path = "/v1/messages"

    @classmethod
    def traits(cls, model: str) -> ProviderTraits:
        return ProviderTraits(
            capabilities=cls.capabilities,
            api_key_env=cls.api_key_env,
            base_url_env="ANTHROPIC_BASE_URL",
            default_base_url="https://api.anthropic.com",
            # Anthropic bills the request that writes the cache at the cache-write price.
            prompt_cache=PromptCacheRules(min_tokens=cache_min_tokens(model), writes_billed=True),
            framing=ANTHROPIC_FRAMING,
        )

    def __init__(self, settings: ProviderSettings) -> None:
        sdk = _sdk()
        super().__init__(settings, sdk, sdk.AnthropicError)

    @staticmethod
    def _system(request: Request) -> str:
        return ANTHROPIC_FRAMING.sent_system(request.system, request.json_schema)

    def caches_prefix(self, request: Request) -> bool:
        return system_cacheable(self._system(request), request.model)

    def to_payload(self, request: Request) -> dict[str, Any]:
        """The Messages body; `request.params` override it (a None value drops a key)."""
        system = self._system(request)
        payload: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": [{"role": "user", "content": request.user}],
            "temperature": request.temperature,
        }
        if system:
            payload["system"] = system_field(system, request.model)
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

    # ---- Message Batches ----------------------------------------------------------------------

    def batch_item(self, request: Request) -> dict[str, Any]:
        """The entry that carries `request` in a batch's `requests` list."""
        return {"custom_id": custom_id_for(request.key), "params": self.to_payload(request)}

    def batch_line_bytes(self, request: Request) -> int:
        """The size of `request`'s entry in the create body, with the comma after it."""
        item = json.dumps(self.batch_item(request), ensure_ascii=False, separators=(",", ":"))
        return len(item.encode()) + 1

    async def submit_batch(self, requests: Sequence[Request], tag: dict[str, str]) -> str:
        """Create the batch; return its id. `tag` is not sent: a message batch has no metadata."""
        items = [self.batch_item(r) for r in requests]
        size = sum(self.batch_line_bytes(r) for r in requests)
        check_batch([item["custom_id"] for item in items], size, self.batch_limits)
        client = self._client_for_running_loop()
        batch = await self._first_batch_call(
            client.messages.batches.create(requests=items, timeout=self._upload_timeout(size))
        )
        return str(batch.id)

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        """The batch's status; an ended batch is `cancelled` if a cancel was asked for, else
        `expired` if any row expired, else `ended`."""
        client = self._client_for_running_loop()
        batch = await self._batch_call(client.messages.batches.retrieve(batch_id))
        counts = batch.request_counts
        if batch.processing_status != "ended":
            state = "pending"
        elif batch.cancel_initiated_at is not None:
            state = "cancelled"
        elif counts.expired:
            state = "expired"
        else:
            state = "ended"
        total = _request_total(counts)
        return BatchStatus(
            batch_id=batch.id,
            state=state,  # type: ignore[arg-type]
            raw_status=batch.processing_status,
            total=total,
            succeeded=counts.succeeded,
            errored=counts.errored,
            results_url=batch.results_url,
        )

    async def fetch_batch_results(
        self, batch_id: str, requests: Iterable[Request]
    ) -> AsyncIterator[BatchRow]:
        """Every row of an ended batch (the API lists expired and canceled rows too)."""
        status = await self._status_with_results(batch_id)
        rows = RowMapper(requests, self.from_billed)
        client = self._client_for_running_loop()
        lines = await self._batch_call(client.messages.batches.results(batch_id))
        seen = 0
        async for line in self._guarded(aiter(lines), "results download"):
            seen += 1
            yield self._batch_row(rows, line.to_dict(mode="json"))
        self._check_count("results", seen, status.total)

    async def find_batches(
        self, tag: dict[str, str], *, keys: Sequence[str] = (), since: float | None = None
    ) -> list[str]:
        """Ids of the ended batches, created from `since` on, that hold exactly one request per
        key of `keys` (newest first); [] without `keys` and `since` (`tag` is not sent: see the
        module docstring). BatchesUnverified if a batch of that many requests created then is
        still running (what it holds cannot be read until it ends)."""
        if not keys or since is None:
            return []
        wanted = {custom_id_for(key) for key in keys}
        earliest = since - ADOPT_CLOCK_SLACK_S
        # the create call was sent at `since` at the earliest and gave up after its timeout
        latest = since + self._upload_timeout(self.batch_limits.max_bytes) + ADOPT_CLOCK_SLACK_S
        verified: list[str] = []
        running: list[str] = []
        client = self._client_for_running_loop()
        listing = self._guarded(
            aiter(client.messages.batches.list(limit=_LIST_PAGE)), "batch list"
        )
        async with aclosing(listing):
            async for batch in listing:  # newest first: stop at the first one older than needed
                created = batch.created_at.timestamp()
                if created < earliest:
                    break
                if created > latest or _request_total(batch.request_counts) != len(keys):
                    continue
                if batch.processing_status != "ended":
                    running.append(str(batch.id))
                elif await self._holds_exactly(str(batch.id), wanted):
                    verified.append(str(batch.id))
        if running:
            raise BatchesUnverified(self.name, verified, running)
        return verified

    async def _holds_exactly(self, batch_id: str, wanted: set[str]) -> bool:
        """Whether the ended batch's results carry each custom_id of `wanted` once and nothing
        else; stops reading at the first that does not belong. TransientProviderError if the
        download breaks off or comes back short."""
        client = self._client_for_running_loop()
        lines = await self._batch_call(client.messages.batches.results(batch_id))
        seen: set[str] = set()
        try:
            async with aclosing(self._guarded(aiter(lines), "results download")) as rows:
                async for line in rows:
                    custom_id = str(line.custom_id)
                    if custom_id not in wanted or custom_id in seen:
                        return False
                    seen.add(custom_id)
        finally:
            await lines.close()
        # every row seen belongs and the batch counts len(wanted) rows: fewer is a cut download
        self._check_count("results", len(seen), len(wanted))
        return True

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the API to cancel; the batch goes `canceling`, then `ended`."""
        client = self._client_for_running_loop()
        await self._batch_call(client.messages.batches.cancel(batch_id))

    def _batch_row(self, rows: RowMapper, line: dict[str, Any]) -> BatchRow:
        custom_id = str(line.get("custom_id"))
        result = line.get("result") or {}
        kind = result.get("type")
        if kind == "succeeded":
            return rows.succeeded(custom_id, result.get("message"))
        if kind in ("expired", "canceled"):
            return rows.failed(custom_id, kind, kind)
        response = result.get("error") or {}
        error = response.get("error") if isinstance(response, dict) else None
        error = error if isinstance(error, dict) else {}
        detail = f"{error.get('type') or 'error'}: {error.get('message') or 'no message'}"
        return rows.failed(custom_id, "errored", self._row_message(detail))


def _request_total(counts: Any) -> int:
    """How many requests a message batch holds, from its `request_counts`."""
    return int(
        counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
    )
