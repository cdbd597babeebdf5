"""Prompt caching: rows after the first hit the provider's prompt cache on the fake server, and
are billed at the cached rates."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from batchopt.fakeapi import FakeServer, wire
from batchopt.fakeapi.answers import MESSAGE_OVERHEAD
from batchopt.fakeapi.prompt_cache import PromptCache
from batchopt.hashing import stable_hash
from batchopt.ledger.pricing import PriceTable
from batchopt.providers.anthropic import AnthropicProvider, cache_min_tokens
from batchopt.providers.base import ProviderSettings
from batchopt.providers.openai import OpenAIProvider
from batchopt.providers.sdk_batch import SDKBatchProvider
from batchopt.records import Request, Result, Usage
from batchopt.tokens import count_tokens

KEY = "sk-test-SECRETabcdefghijklmnop1234"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-3-5-haiku-latest"  # minimum 2048 tokens
CATEGORIES = ("billing", "hardware", "access", "network", "other")
USERS = [
    "My invoice for March was charged twice.",
    "The printer on floor 3 is jammed again.",
    "I cannot log in since the password reset.",
    "Wi-Fi drops every ten minutes in room 12.",
    "Please order a new desk chair for the new hire.",
]


def long_system() -> str:
    """Static instructions plus few-shot examples: well over 2,100 tokens, under 4,096."""
    lines = [
        "You are a support-ticket classifier for a mid-sized company. Read the ticket, decide "
        "which single category fits best, and answer with the category name only. Categories: "
        + ", ".join(CATEGORIES)
        + ". When two categories fit, prefer the one naming the root cause. Never invent a new "
        "category, never explain the choice, and never repeat the ticket.",
        "",
        "Examples:",
    ]
    for i in range(70):
        cat = CATEGORIES[i % len(CATEGORIES)]
        lines.append(
            f"Example {i + 1}: Ticket: 'Issue number {i * 37 % 101} reported by team "
            f"{chr(65 + i % 26)}{i}: something about the {cat} side stopped working after "
            f"the update on day {i % 28 + 1}.' Answer: {cat}"
        )
    return "\n".join(lines)


SYSTEM = long_system()


def settings(server: FakeServer, provider: str, model: str) -> ProviderSettings:
    base = server.openai_base_url if provider == "openai" else server.anthropic_base_url
    return ProviderSettings(provider=provider, model=model, base_url=base, api_key=KEY)


def make_provider(server: FakeServer, provider: str, model: str) -> SDKBatchProvider:
    s = settings(server, provider, model)
    return OpenAIProvider(s) if provider == "openai" else AnthropicProvider(s)


def requests(provider: str, model: str, system: str = SYSTEM, users: list[str] = USERS) -> list:
    return [
        Request(
            key=stable_hash({"p": provider, "m": model, "u": user, "s": system}),
            provider=provider,
            model=model,
            system=system,
            user=user,
            max_tokens=20,
        )
        for user in users
    ]


async def complete_all(prov: SDKBatchProvider, reqs: list[Request]) -> list[Result]:
    out = []
    for request in reqs:  # in order: each row must see the ones before it
        result = await prov.complete(request)
        assert result.ok, result.error
        out.append(result)
    return out


def test_the_static_prompt_is_long_enough() -> None:
    tokens = count_tokens(SYSTEM, ANTHROPIC_MODEL)
    assert 2100 <= tokens < 4096
    assert cache_min_tokens(ANTHROPIC_MODEL) == 2048
    assert cache_min_tokens("claude-sonnet-4-5") == 1024
    assert cache_min_tokens("claude-haiku-4-5-20251001") == 4096


# ---- OpenAI: automatic prefix caching ----------------------------------------------------------


def check_openai(results: list[Result], log: list[dict[str, Any]]) -> None:
    system_tokens = count_tokens(SYSTEM, OPENAI_MODEL)
    first, *rest = results
    assert first.usage.cached_input_tokens == 0 and first.usage.cache_write_tokens == 0
    assert first.usage.input_tokens > system_tokens
    for result in rest:
        cached = result.usage.cached_input_tokens
        assert 1024 <= cached <= system_tokens + MESSAGE_OVERHEAD
        assert cached % 128 == 0 and cached > system_tokens - 128
        assert result.usage.cache_write_tokens == 0
        assert result.usage.input_tokens > cached  # the total, cached tokens included
    by_id = {e["id"]: e for e in log}
    for result in results:
        entry = by_id[result.request_id or ""]
        assert entry["cached_tokens"] == result.usage.cached_input_tokens
        assert entry["input_tokens"] == result.usage.input_tokens


async def test_openai_rows_after_the_first_read_the_prefix_cache(fake: FakeServer) -> None:
    prov = make_provider(fake, "openai", OPENAI_MODEL)
    results = await complete_all(prov, requests("openai", OPENAI_MODEL))
    check_openai(results, fake.log())
    # the prompt is laid out static first: system message, then the user message
    messages = prov.to_payload(requests("openai", OPENAI_MODEL)[0])["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == SYSTEM
    await prov.aclose()


async def test_openai_cache_is_per_model_and_expires(fake: FakeServer) -> None:
    prov = make_provider(fake, "openai", OPENAI_MODEL)
    other = make_provider(fake, "openai", "gpt-4o")
    reqs = requests("openai", OPENAI_MODEL)
    await prov.complete(reqs[0])
    (fresh,) = await complete_all(other, requests("openai", "gpt-4o")[1:2])
    assert fresh.usage.cached_input_tokens == 0  # another model's cache
    cache = fake.state.prompt_cache
    real_clock = cache.clock
    try:
        cache.clock = lambda: real_clock() + 301  # past the 5-minute TTL
        (late,) = await complete_all(prov, reqs[1:2])
    finally:
        cache.clock = real_clock
    assert late.usage.cached_input_tokens == 0
    await prov.aclose()
    await other.aclose()


def test_openai_prefix_is_measured_on_the_messages_in_order() -> None:
    cache = PromptCache()
    model = OPENAI_MODEL
    first = [("system", SYSTEM), ("user", "alpha")]
    total = count_tokens(SYSTEM, model) + 20
    assert cache.openai_cached(model, first, total) == 0
    # a user message first: nothing in common with the stored prompt's start
    assert cache.openai_cached(model, [("user", "alpha"), ("system", SYSTEM)], total) == 0
    # half of the system text in common: about half of it is cached
    half = SYSTEM[: len(SYSTEM) // 2] + " and then something else entirely"
    got = cache.openai_cached(model, [("system", half), ("user", "beta")], total)
    expected = (count_tokens(SYSTEM[: len(SYSTEM) // 2], model) + 2) // 128 * 128
    assert got % 128 == 0 and abs(got - expected) <= 128 and got >= 1024
    # a short prompt is never cached
    assert cache.openai_cached(model, first, 1000) == 0


# ---- Anthropic: explicit cache_control breakpoints ---------------------------------------------


def check_anthropic(results: list[Result], model: str) -> None:
    prefix = count_tokens(SYSTEM, model) + MESSAGE_OVERHEAD
    first, *rest = results
    assert first.usage.cache_write_tokens == prefix
    assert first.usage.cached_input_tokens == 0
    for result in rest:
        assert result.usage.cached_input_tokens == prefix
        assert result.usage.cache_write_tokens == 0
    for result, user in zip(results, USERS, strict=True):
        total = prefix + count_tokens(user, model) + 2 * MESSAGE_OVERHEAD
        assert result.usage.input_tokens == total  # the whole prompt, our convention


@pytest.mark.parametrize("model", [ANTHROPIC_MODEL, "claude-sonnet-4-5"])
async def test_anthropic_first_row_writes_the_rest_read(fake: FakeServer, model: str) -> None:
    prov = make_provider(fake, "anthropic", model)
    reqs = requests("anthropic", model)
    payload = prov.to_payload(reqs[0])
    assert payload["system"] == [
        {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
    ]
    results = await complete_all(prov, reqs)
    check_anthropic(results, model)
    log = fake.log()
    assert [e["cache_write_tokens"] > 0 for e in log] == [True, False, False, False, False]
    assert [e["cache_read_tokens"] > 0 for e in log] == [False, True, True, True, True]
    assert [e["input_tokens"] for e in log] == [r.usage.input_tokens for r in results]
    await prov.aclose()


async def test_anthropic_wire_reports_only_the_tokens_after_the_breakpoint(
    fake: FakeServer,
) -> None:
    prov = make_provider(fake, "anthropic", ANTHROPIC_MODEL)
    reqs = requests("anthropic", ANTHROPIC_MODEL)
    cache = PromptCache()
    bodies = [prov.to_payload(r) for r in reqs[:2]]
    first = wire.anthropic_reply(bodies[0], "a", None, cache).payload["usage"]
    second = wire.anthropic_reply(bodies[1], "b", None, cache).payload["usage"]
    after = count_tokens(USERS[0], ANTHROPIC_MODEL) + 2 * MESSAGE_OVERHEAD
    assert first["input_tokens"] == after and first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"] > 2048
    assert second["cache_creation_input_tokens"] == 0
    await prov.aclose()


def test_anthropic_breakpoints_validated_and_longest_prefix_read() -> None:
    cache = PromptCache()
    mark = {"type": "ephemeral"}
    block = {"type": "text", "text": SYSTEM, "cache_control": mark}
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "system": [block],
        "messages": [{"role": "user", "content": "hi"}],
    }
    read, write = cache.anthropic_usage(body)
    assert read == 0 and write > 1024
    # a second breakpoint further on: the system prefix is read, the rest beyond it written
    doc = {"type": "text", "text": SYSTEM[:3000], "cache_control": mark}
    longer = {
        **body,
        "messages": [{"role": "user", "content": [doc, {"type": "text", "text": "q"}]}],
    }
    read2, write2 = cache.anthropic_usage(longer)
    assert read2 == write and write2 > 0
    assert cache.anthropic_usage(longer) == (read2 + write2, 0)
    too_many = {**body, "system": [dict(block, text=f"{i} {SYSTEM}") for i in range(5)]}
    with pytest.raises(wire.BadRequest, match="maximum of 4"):
        wire.anthropic_reply(too_many, "x", None, cache)
    bad = {**body, "system": [dict(block, cache_control={"type": "forever"})]}
    with pytest.raises(wire.BadRequest, match="ephemeral"):
        wire.anthropic_reply(bad, "y", None, cache)
    # without a cache (no cache_control effect), the usage is plain
    plain = wire.anthropic_reply(body, "z").payload["usage"]
    assert plain["cache_read_input_tokens"] == plain["cache_creation_input_tokens"] == 0


# ---- short static parts: no cache_control, nothing cached -------------------------------------


async def test_short_system_prompt_is_sent_plain_and_never_cached(fake: FakeServer) -> None:
    short = "You classify support tickets into one category."
    anth = make_provider(fake, "anthropic", ANTHROPIC_MODEL)
    reqs = requests("anthropic", ANTHROPIC_MODEL, system=short)
    assert anth.to_payload(reqs[0])["system"] == short
    oai = make_provider(fake, "openai", OPENAI_MODEL)
    results = await complete_all(anth, reqs) + await complete_all(
        oai, requests("openai", OPENAI_MODEL, system=short)
    )
    for result in results:
        assert result.usage.cached_input_tokens == result.usage.cache_write_tokens == 0
    # long enough for Haiku 3.5 (2048) is still too short for Haiku 4.5 (4096)
    haiku45 = AnthropicProvider(settings(fake, "anthropic", "claude-haiku-4-5"))
    req45 = requests("anthropic", "claude-haiku-4-5")[0]
    assert haiku45.to_payload(req45)["system"] == SYSTEM
    (plain,) = await complete_all(haiku45, [req45])
    assert plain.usage.cache_write_tokens == 0
    for prov in (anth, oai, haiku45):
        await prov.aclose()


def test_json_schema_instruction_stays_in_the_cached_system_block() -> None:
    prov = AnthropicProvider(
        ProviderSettings(provider="anthropic", model=ANTHROPIC_MODEL, api_key=KEY)
    )
    schema = {"type": "object", "properties": {"category": {"enum": list(CATEGORIES)}}}
    req = Request(
        key="k",
        provider="anthropic",
        model=ANTHROPIC_MODEL,
        system=SYSTEM,
        user="x",
        max_tokens=10,
        json_schema=schema,
    )
    (block,) = prov.to_payload(req)["system"]
    assert block["text"].startswith(SYSTEM) and "<json_schema>" in block["text"]
    assert block["cache_control"] == {"type": "ephemeral"}
    answer = wire.anthropic_reply(prov.to_payload(req), "s").payload["content"][0]["text"]
    assert answer.startswith("{") and '"category"' in answer  # the fake still finds the schema


# ---- pricing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"), [("openai", OPENAI_MODEL), ("anthropic", ANTHROPIC_MODEL)]
)
async def test_cached_rows_are_billed_at_the_cached_rates(
    fake: FakeServer, provider: str, model: str
) -> None:
    prov = make_provider(fake, provider, model)
    first, second = await complete_all(prov, requests(provider, model, users=[USERS[0]] * 2))
    await prov.aclose()
    table = PriceTable.load()
    price = table.price(provider, model)
    cost1, cost2 = table.cost(price, first.usage), table.cost(price, second.usage)
    assert first.usage.input_tokens == second.usage.input_tokens
    assert second.usage.cached_input_tokens > 1024
    # batchopt's price of each answer's usage is what the fake server billed for it, at its own
    # cache-read and cache-write rates
    billed = [e["cost_usd"] for e in fake.log()]
    assert [cost1, cost2] == pytest.approx(billed, rel=1e-12)
    assert cost2 < cost1
    plain = Usage(input_tokens=first.usage.input_tokens, output_tokens=first.usage.output_tokens)
    assert table.cost(price, second.usage) < table.cost(price, plain)


# ---- batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"), [("openai", OPENAI_MODEL), ("anthropic", ANTHROPIC_MODEL)]
)
async def test_batch_rows_report_the_same_cache_usage(
    bfake: FakeServer, provider: str, model: str
) -> None:
    prov = make_provider(bfake, provider, model)
    reqs = requests(provider, model)
    batch_id = await prov.submit_batch(reqs, {"run": "cache"})
    deadline = time.monotonic() + 10
    while not (await prov.poll_batch(batch_id)).done and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    by_key = {}
    async for row in prov.fetch_batch_results(batch_id, reqs):
        by_key[row.key] = row.result
    results = [by_key[r.key] for r in reqs]
    assert all(r is not None and r.ok for r in results)
    log = [e for e in bfake.log() if e["wire"] == f"{provider}-batch"]
    if provider == "openai":
        check_openai(results, log)  # type: ignore[arg-type]
    else:
        check_anthropic(results, model)  # type: ignore[arg-type]
    await prov.aclose()
