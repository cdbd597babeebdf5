"""The batch wire layer: the providers' batch methods, through the real SDKs, against the fake."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchopt.errors import TerminalProviderError, TransientProviderError
from batchopt.fakeapi import FakeServer
from batchopt.hashing import stable_hash
from batchopt.providers.anthropic import AnthropicProvider
from batchopt.providers.base import ProviderSettings
from batchopt.providers.batching import (
    ANTHROPIC_LIMITS,
    OPENAI_LIMITS,
    BatchLimits,
    BatchProvider,
    BatchRow,
    custom_id_for,
    split_for_limits,
    supports_batch,
)
from batchopt.providers.local import LocalProvider
from batchopt.providers.openai import OpenAIProvider
from batchopt.providers.sdk_batch import SDKBatchProvider
from batchopt.records import Request

KEY = "sk-proj-SECRETabcdefghijklmnop1234"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}
SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["topic", "urgent"],
}
WIRES = ["openai", "anthropic"]


def make_provider(server: FakeServer, wire: str, **kwargs: Any) -> SDKBatchProvider:
    base = server.openai_base_url if wire == "openai" else server.anthropic_base_url
    settings = ProviderSettings(
        provider=wire, model=MODELS[wire], base_url=base, api_key=KEY, **kwargs
    )
    return OpenAIProvider(settings) if wire == "openai" else AnthropicProvider(settings)


def make_requests(wire: str, n: int, **kwargs: Any) -> list[Request]:
    """`n` distinct requests with keys shaped like batchopt's (32 hex digits)."""
    fields: dict[str, Any] = {"system": "Summarise the ticket.", "max_tokens": 40}
    fields.update(kwargs)
    return [
        Request(
            key=stable_hash({"wire": wire, "i": i, **fields}),
            provider=wire,
            model=MODELS[wire],
            user=f"ticket {i}: the printer on floor {i} is jammed again",
            **fields,
        )
        for i in range(n)
    ]


async def wait_done(provider: BatchProvider, batch_id: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = await provider.poll_batch(batch_id)
        if status.done or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.02)


async def collect(rows: AsyncIterator[BatchRow], into: list[BatchRow] | None = None) -> list:
    out = [] if into is None else into
    async for row in rows:
        out.append(row)
    return out


def batch_paid(server: FakeServer, wire: str) -> dict[str, int]:
    return server.stats()["by_wire"][f"{wire}-batch"]


# ---- the happy path --------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_batch_answers_equal_online_answers_and_are_paid_once(
    bfake: FakeServer, wire: str
) -> None:
    bfake.batch_seconds = 0.3  # long enough to see it pending first
    prov = make_provider(bfake, wire)
    plain = make_requests(wire, 3)
    structured = make_requests(wire, 1, json_schema=SCHEMA, system="Classify.")
    odd_key = Request(
        key="row 7 / not a hex key, and far longer than sixty-four characters ........",
        provider=wire,
        model=MODELS[wire],
        system="",
        user="an odd key still maps back",
        max_tokens=30,
    )
    requests = [*plain, *structured, odd_key]
    batch_id = await prov.submit_batch(requests, {"run": "r1"})
    first = await prov.poll_batch(batch_id)
    assert first.state == "pending" and not first.done and not first.has_results
    status = await wait_done(prov, batch_id)
    assert (status.state, status.total, status.succeeded, status.errored) == ("ended", 5, 5, 0)

    rows = await collect(prov.fetch_batch_results(batch_id, requests))
    assert sorted(r.key for r in rows) == sorted(r.key for r in requests)
    assert {r.kind for r in rows} == {"succeeded"} and all(r.error is None for r in rows)
    stats = bfake.stats()
    assert stats["batches_created"] == 1 and stats["batch_requests"] == 5
    assert batch_paid(bfake, wire)["requests"] == 5
    assert stats["by_wire"][wire]["requests"] == 0  # nothing went online yet

    by_key = {r.key: r.result for r in rows}
    for request in requests:
        online = await prov.complete(request)
        batch = by_key[request.key]
        assert batch is not None
        assert batch.text == online.text and batch.text
        assert batch.usage == online.usage and batch.usage.output_tokens > 0
        assert batch.finish_reason == online.finish_reason
        assert batch.parsed == online.parsed
    assert by_key[structured[0].key].parsed is not None  # type: ignore[union-attr]
    assert by_key[odd_key.key].text == "Summary: an odd key still maps back"  # type: ignore[union-attr]

    # The same bodies hash the same online and in the batch.
    log = bfake.log()
    batch_hashes = sorted(e["request_hash"] for e in log if e["wire"] == f"{wire}-batch")
    online_hashes = sorted(e["request_hash"] for e in log if e["wire"] == wire)
    assert batch_hashes == online_hashes and len(set(batch_hashes)) == 5

    again = await collect(prov.fetch_batch_results(batch_id, requests))
    assert sorted(r.key for r in again) == sorted(r.key for r in rows)
    assert batch_paid(bfake, wire)["requests"] == 5
    assert sum(1 for e in bfake.log() if e["wire"] == f"{wire}-batch") == 5
    await prov.aclose()


@pytest.mark.parametrize("wire", WIRES)
async def test_stats_settle_an_ended_batch_nobody_polled(bfake: FakeServer, wire: str) -> None:
    prov = make_provider(bfake, wire)
    await prov.submit_batch(make_requests(wire, 2), {})
    assert batch_paid(bfake, wire)["requests"] == 0
    await asyncio.sleep(0.1)
    paid = batch_paid(bfake, wire)
    assert paid["requests"] == 2 and paid["input_tokens"] > 0 and paid["output_tokens"] > 0
    assert bfake.stats()["requests"] == 2  # batch rows count in the totals too
    await prov.aclose()


# ---- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_expired_batch_keeps_the_rows_that_ran(bfake: FakeServer, wire: str) -> None:
    prov = make_provider(bfake, wire)
    requests = make_requests(wire, 4)
    bfake.set_faults([{"batch": "expire", "done_share": 0.5}])
    batch_id = await prov.submit_batch(requests, {})
    status = await wait_done(prov, batch_id)
    assert status.state == "expired" and status.has_results and status.succeeded == 2
    rows = await collect(prov.fetch_batch_results(batch_id, requests))
    ran = {r.key for r in rows if r.kind == "succeeded"}
    assert ran == {requests[0].key, requests[1].key}
    expired = sorted(r.key or "" for r in rows if r.kind == "expired")
    if wire == "openai":
        assert expired == []  # rows that never ran are in neither file
        assert len(rows) == 2
    else:
        assert expired == sorted([requests[2].key, requests[3].key])
        assert all(r.result is None for r in rows if r.kind == "expired")
    assert batch_paid(bfake, wire)["requests"] == 2
    await prov.aclose()


@pytest.mark.parametrize("wire", WIRES)
async def test_errored_rows_carry_the_reason_and_are_not_paid(bfake: FakeServer, wire: str) -> None:
    prov = make_provider(bfake, wire)
    requests = make_requests(wire, 5)
    bad = make_requests(wire, 1, params={"max_tokens": 0})[0]  # the API rejects this body
    bfake.set_faults([{"batch": "errors", "rows": 2, "message": "row exploded"}])
    batch_id = await prov.submit_batch([bad, *requests], {})
    status = await wait_done(prov, batch_id)
    assert status.state == "ended" and status.succeeded == 3 and status.errored == 3
    rows = {r.key: r for r in await collect(prov.fetch_batch_results(batch_id, [bad, *requests]))}
    assert rows[bad.key].kind == "errored" and "max_tokens" in (rows[bad.key].error or "")
    for request in requests[-2:]:  # the last rows that ran
        assert rows[request.key].kind == "errored"
        assert "row exploded" in (rows[request.key].error or "")
        assert rows[request.key].result is None
    assert [rows[r.key].kind for r in requests[:3]] == ["succeeded"] * 3
    paid = batch_paid(bfake, wire)
    assert paid["requests"] == 3 and paid["failed_requests"] == 3
    await prov.aclose()


async def test_openai_invalid_batch_fails_with_the_api_errors(bfake: FakeServer) -> None:
    prov = make_provider(bfake, "openai")
    requests = make_requests("openai", 2)
    bfake.set_faults([{"batch": "invalid", "message": "bad file, sorry"}])
    batch_id = await prov.submit_batch(requests, {})
    status = await wait_done(prov, batch_id)
    assert status.state == "failed" and status.raw_status == "failed"
    assert status.error == "bad file, sorry" and not status.has_results
    with pytest.raises(TerminalProviderError, match="bad file, sorry"):
        await collect(prov.fetch_batch_results(batch_id, requests))
    assert bfake.stats()["batches_created"] == 1 and batch_paid(bfake, "openai")["requests"] == 0
    await prov.aclose()


async def test_openai_fake_validates_the_input_file(bfake: FakeServer) -> None:
    client = openai.AsyncOpenAI(base_url=bfake.openai_base_url, api_key="x", max_retries=0)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    other = {**line, "custom_id": "b", "body": {**body, "model": "gpt-4o"}}
    lines = [json.dumps(line), json.dumps(line), "not json", json.dumps(other)]
    upload = await client.files.create(
        file=("in.jsonl", "\n".join(lines).encode()), purpose="batch"
    )
    created = await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert created.status == "validating"
    batch = await client.batches.retrieve(created.id)
    assert batch.status == "failed" and batch.errors is not None and batch.errors.data
    codes = [(e.code, e.line) for e in batch.errors.data]
    assert ("duplicate_custom_id", 2) in codes and ("invalid_json_line", 3) in codes
    assert ("mismatched_model", None) in codes
    with pytest.raises(openai.BadRequestError):
        await client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    await client.close()


async def test_anthropic_invalid_batch_is_refused_at_create(bfake: FakeServer) -> None:
    prov = make_provider(bfake, "anthropic")
    bfake.set_faults([{"batch": "invalid"}])
    with pytest.raises(TerminalProviderError) as caught:
        await prov.submit_batch(make_requests("anthropic", 2), {})
    assert caught.value.status == 400 and KEY not in str(caught.value)
    assert bfake.stats()["batches_created"] == 0
    await prov.aclose()


@pytest.mark.parametrize("wire", WIRES)
async def test_a_results_download_that_breaks_off_is_transient(
    bfake: FakeServer, wire: str
) -> None:
    prov = make_provider(bfake, wire)
    requests = make_requests(wire, 6)
    bfake.set_faults([{"batch": "truncate_results"}])
    batch_id = await prov.submit_batch(requests, {})
    await wait_done(prov, batch_id)
    partial: list[BatchRow] = []
    with pytest.raises(TransientProviderError, match="broke off") as caught:
        await collect(prov.fetch_batch_results(batch_id, requests), partial)
    assert "rows of the" not in str(caught.value)  # the dropped connection, not the count check
    assert 0 < len(partial) < 6
    rows = await collect(prov.fetch_batch_results(batch_id, requests))  # `times` was 1
    assert len(rows) == 6 and {r.kind for r in rows} == {"succeeded"}
    assert batch_paid(bfake, wire)["requests"] == 6
    await prov.aclose()


async def test_a_short_but_clean_download_is_transient_too(bfake: FakeServer) -> None:
    prov = make_provider(bfake, "openai")
    requests = make_requests("openai", 3)
    batch_id = await prov.submit_batch(requests, {})
    status = await wait_done(prov, batch_id)
    stored = bfake._app.batches.file(status.output_file_id)
    assert stored is not None
    stored.data = b"".join(stored.data.splitlines(keepends=True)[:2])  # a line lost, no error
    with pytest.raises(TransientProviderError, match="2 rows of the 3"):
        await collect(prov.fetch_batch_results(batch_id, requests))
    await prov.aclose()


@pytest.mark.parametrize("wire", WIRES)
async def test_shuffled_rows_map_back_by_custom_id(bfake: FakeServer, wire: str) -> None:
    prov = make_provider(bfake, wire)
    requests = make_requests(wire, 8)
    bfake.set_faults([{"batch": "shuffle"}])
    batch_id = await prov.submit_batch(requests, {})
    await wait_done(prov, batch_id)
    rows = await collect(prov.fetch_batch_results(batch_id, requests))
    assert [r.key for r in rows] != [r.key for r in requests]
    users = {r.key: r.user for r in requests}
    for row in rows:
        assert row.result is not None and row.key is not None
        assert row.result.key == row.key
        assert row.result.text == "Summary: " + users[row.key]
    await prov.aclose()


async def test_upload_delay_past_the_timeout_leaves_no_batch(bfake: FakeServer) -> None:
    for wire in WIRES:
        prov = make_provider(bfake, wire, timeout_s=0.2)
        bfake.set_faults([{"batch": "upload_delay", "delay_ms": 600}])
        with pytest.raises(TransientProviderError, match="timed out"):
            await prov.submit_batch(make_requests(wire, 2), {"run": "slow"})
        await prov.aclose()
    await asyncio.sleep(0.8)  # past the delay: a handler that was not cancelled would be done
    assert bfake.stats()["batches_created"] == 0
    prov = make_provider(bfake, "openai")
    assert await prov.find_batches({"run": "slow"}) == []
    await prov.aclose()


async def test_a_batch_whose_create_answer_timed_out_is_found_by_tag(bfake: FakeServer) -> None:
    prov = make_provider(bfake, "openai", timeout_s=0.3)
    tag = {"pipeline": "tickets", "run": "r9", "chunk": "0"}
    bfake.set_faults([{"batch": "ack_delay", "delay_ms": 1000}])
    with pytest.raises(TransientProviderError):
        await prov.submit_batch(make_requests("openai", 2), tag)
    (adopted,) = await prov.find_batches(tag)
    status = await wait_done(prov, adopted)
    assert status.state == "ended" and status.succeeded == 2
    await prov.aclose()


# ---- listing, tags, cancel -------------------------------------------------------------------


async def test_openai_find_batches_matches_every_tag_item_newest_first(bfake: FakeServer) -> None:
    prov = make_provider(bfake, "openai")
    reqs = make_requests("openai", 1)
    a0 = await prov.submit_batch(reqs, {"run": "a", "chunk": "0"})
    a1 = await prov.submit_batch(reqs, {"run": "a", "chunk": "1"})
    b0 = await prov.submit_batch(reqs, {"run": "b", "chunk": "0"})
    assert await prov.find_batches({"run": "a"}) == [a1, a0]
    assert await prov.find_batches({"run": "a", "chunk": "1"}) == [a1]
    assert await prov.find_batches({"chunk": "0"}) == [b0, a0]
    assert await prov.find_batches({"run": "zzz"}) == []
    await prov.aclose()


async def test_fake_lists_pages_like_the_real_apis(bfake: FakeServer) -> None:
    oai = openai.AsyncOpenAI(base_url=bfake.openai_base_url, api_key="x", max_retries=0)
    claude = anthropic.AsyncAnthropic(base_url=bfake.anthropic_base_url, api_key="x", max_retries=0)
    ids: dict[str, list[str]] = {}
    for wire in WIRES:
        prov = make_provider(bfake, wire)
        ids[wire] = [await prov.submit_batch(make_requests(wire, 1), {}) for _ in range(5)]
        await prov.aclose()
    page = await oai.batches.list(limit=2)
    assert [b.id for b in page.data] == ids["openai"][::-1][:2] and page.has_more
    assert [b.id async for b in oai.batches.list(limit=2)] == ids["openai"][::-1]
    first = await claude.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == ids["anthropic"][::-1][:2] and first.has_more
    assert [b.id async for b in claude.messages.batches.list(limit=2)] == ids["anthropic"][::-1]
    await oai.close()
    await claude.close()


async def test_anthropic_find_batches_finds_nothing(bfake: FakeServer) -> None:
    prov = make_provider(bfake, "anthropic")
    await prov.submit_batch(make_requests("anthropic", 1), {"run": "a"})
    assert await prov.find_batches({"run": "a"}) == []
    await prov.aclose()


@pytest.mark.parametrize("wire", WIRES)
async def test_cancel_stops_the_batch_and_nothing_is_paid(bfake: FakeServer, wire: str) -> None:
    bfake.batch_seconds = 30
    prov = make_provider(bfake, wire)
    requests = make_requests(wire, 3)
    batch_id = await prov.submit_batch(requests, {})
    await prov.cancel_batch(batch_id)
    status = await wait_done(prov, batch_id)
    assert status.state == "cancelled" and status.has_results and status.succeeded == 0
    rows = await collect(prov.fetch_batch_results(batch_id, requests))
    if wire == "openai":
        assert rows == []
    else:
        assert sorted(r.kind for r in rows) == ["canceled"] * 3
    await prov.cancel_batch(batch_id)  # cancelling an ended batch changes nothing
    assert batch_paid(bfake, wire)["requests"] == 0
    await prov.aclose()


@pytest.mark.parametrize("wire", WIRES)
async def test_unknown_batch_is_terminal_and_reset_forgets_batches(
    bfake: FakeServer, wire: str
) -> None:
    prov = make_provider(bfake, wire)
    batch_id = await prov.submit_batch(make_requests(wire, 1), {})
    bfake.reset()
    assert bfake.stats()["batches_created"] == 0
    with pytest.raises(TerminalProviderError) as caught:
        await prov.poll_batch(batch_id)
    assert caught.value.status == 404 and KEY not in str(caught.value)
    await prov.aclose()


async def test_fetch_before_the_end_is_refused(bfake: FakeServer) -> None:
    bfake.batch_seconds = 30
    for wire in WIRES:
        prov = make_provider(bfake, wire)
        requests = make_requests(wire, 1)
        batch_id = await prov.submit_batch(requests, {})
        with pytest.raises(TerminalProviderError, match="no results"):
            await collect(prov.fetch_batch_results(batch_id, requests))
        await prov.aclose()


# ---- checks before anything is sent ----------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
async def test_submit_refuses_what_the_api_would(bfake: FakeServer, wire: str) -> None:
    prov = make_provider(bfake, wire)
    requests = make_requests(wire, 3)
    prov.batch_limits = BatchLimits(max_requests=2, max_bytes=10**6)
    with pytest.raises(ValueError, match="at most 2"):
        await prov.submit_batch(requests, {})
    prov.batch_limits = BatchLimits(max_requests=10, max_bytes=100)
    with pytest.raises(ValueError, match="bytes"):
        await prov.submit_batch(requests, {})
    del prov.batch_limits
    with pytest.raises(ValueError, match="same key"):
        await prov.submit_batch([requests[0], requests[0]], {})
    with pytest.raises(ValueError, match="at least one"):
        await prov.submit_batch([], {})
    if wire == "openai":
        mixed = [requests[0], replace(requests[1], model="gpt-4o")]
        with pytest.raises(ValueError, match="one model"):
            await prov.submit_batch(mixed, {})
        with pytest.raises(ValueError, match="16"):
            await prov.submit_batch(requests, {str(i): "x" for i in range(17)})
        with pytest.raises(ValueError, match="512"):
            await prov.submit_batch(requests, {"k": "x" * 513})
    assert bfake.stats()["batches_created"] == 0
    await prov.aclose()


def test_line_bytes_are_what_is_sent(fake: FakeServer) -> None:
    oai = make_provider(fake, "openai")
    request = make_requests("openai", 1)
    line = oai.batch_line(request[0])  # type: ignore[attr-defined]
    assert oai.batch_line_bytes(request[0]) == len(line) and line.endswith(b"\n")
    parsed = json.loads(line)
    assert parsed["body"] == oai.to_payload(request[0])
    assert parsed["custom_id"] == request[0].key and parsed["url"] == "/v1/chat/completions"
    claude = make_provider(fake, "anthropic")
    item = claude.batch_item(request[0])  # type: ignore[attr-defined]
    assert claude.batch_line_bytes(request[0]) == len(json.dumps(item, separators=(",", ":"))) + 1


# ---- pure helpers ----------------------------------------------------------------------------


def test_limits_and_capabilities() -> None:
    assert BatchLimits(50_000, 200_000_000) == OPENAI_LIMITS
    assert BatchLimits(100_000, 256_000_000) == ANTHROPIC_LIMITS
    assert OpenAIProvider.capabilities.batch and AnthropicProvider.capabilities.batch
    assert not LocalProvider.capabilities.batch and not issubclass(LocalProvider, BatchProvider)
    settings = ProviderSettings(provider="openai", model="m", base_url="http://x/v1")
    assert supports_batch(OpenAIProvider(settings))


def test_custom_ids_fit_both_providers_and_are_stable() -> None:
    rule = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
    hex_key = stable_hash("anything")
    assert custom_id_for(hex_key) == hex_key
    for key in ["a.b", "x" * 65, "", "ключ", "spaces here"]:
        mapped = custom_id_for(key)
        assert rule.match(mapped) and mapped == custom_id_for(key) and mapped != key
    assert custom_id_for("a.b") != custom_id_for("a,b")


def _reqs(sizes: list[int]) -> list[Request]:
    return [
        Request(key=f"k{i}", provider="p", model="m", system="", user="x" * n, max_tokens=1)
        for i, n in enumerate(sizes)
    ]


def _size(request: Request) -> int:
    return len(request.user)


def test_split_for_limits_cuts_by_count_and_by_bytes() -> None:
    by_count = split_for_limits(_reqs([1] * 5), BatchLimits(2, 100), _size)
    assert [len(c) for c in by_count] == [2, 2, 1]
    by_bytes = split_for_limits(_reqs([4, 4, 4, 1, 9]), BatchLimits(10, 9), _size)
    assert [[_size(r) for r in c] for c in by_bytes] == [[4, 4], [4, 1], [9]]
    assert split_for_limits([], BatchLimits(1, 1), _size) == []
    with pytest.raises(ValueError, match="k1"):
        split_for_limits(_reqs([1, 10]), BatchLimits(5, 9), _size)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=50), max_size=60),
    max_requests=st.integers(min_value=1, max_value=8),
    max_bytes=st.integers(min_value=50, max_value=200),
)
def test_split_for_limits_properties(sizes: list[int], max_requests: int, max_bytes: int) -> None:
    requests = _reqs(sizes)
    chunks = split_for_limits(requests, BatchLimits(max_requests, max_bytes), _size)
    assert [r for c in chunks for r in c] == requests  # nothing lost, order kept
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_requests
        assert sum(map(_size, chunk)) <= max_bytes
    for chunk, following in zip(chunks, chunks[1:], strict=False):  # greedy: each cut is forced
        full = len(chunk) == max_requests
        assert full or sum(map(_size, chunk)) + _size(following[0]) > max_bytes


# ---- fault parsing and the command line ------------------------------------------------------


def test_batch_faults_are_validated(fake: FakeServer) -> None:
    for bad in (
        {"batch": "melt"},
        {"batch": "expire", "done_share": 2},
        {"batch": "errors", "rows": 0},
        {"batch": "upload_delay"},
        {"batch": "shuffle", "status": 500},
    ):
        with pytest.raises(ValueError):
            fake.set_faults([bad])
    fake.set_faults([{"batch": ["shuffle", "errors"], "count": 2}, {"status": 503}])
    stats = fake.stats()
    assert stats["pending_batch_faults"] == 2 and stats["pending_faults"] == 1


def test_batch_seconds_command_line_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchopt.fakeapi import __main__ as cli
    from batchopt.fakeapi.quality import Quality

    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "serve", lambda **kwargs: seen.update(kwargs))
    cli.main(["--port", "0", "--batch-seconds", "2.5"])
    assert seen == {"port": 0, "latency_ms": 0.0, "batch_seconds": 2.5, "quality": Quality()}
    cli.main(["--port", "0", "--invalid-share", "gpt-4o-mini=0.1", "--wrong-share", "*=0.2"])
    assert seen["quality"] == Quality({"gpt-4o-mini": 0.1}, {"*": 0.2})
    cli.main(["--port", "0"])
    assert seen["batch_seconds"] == 1.0
