"""AnthropicProvider: pure payload mapping, and real calls through the SDK to the fake server."""

from __future__ import annotations

import json
import sys
from typing import Any

import jsonschema
import pytest

from batchopt.errors import ConfigError, TerminalProviderError, TransientProviderError
from batchopt.fakeapi import FakeServer
from batchopt.providers.anthropic import AnthropicProvider, parse_json_object, schema_instruction
from batchopt.providers.base import ProviderSettings
from batchopt.records import Request, Usage
from batchopt.tokens import count_tokens

KEY = "sk-ant-api03-SECRETabcdefghijklmnop"
MODEL = "claude-3-5-haiku-latest"
SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string"},
        "priority": {"enum": ["high", "low"]},
        "steps": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["topic", "priority", "steps"],
}


def settings(base_url: str | None = "http://127.0.0.1:9", **kwargs: Any) -> ProviderSettings:
    return ProviderSettings(
        provider="anthropic", model=MODEL, base_url=base_url, api_key=KEY, **kwargs
    )


def request(**kwargs: Any) -> Request:
    fields: dict[str, Any] = {
        "key": "k1",
        "provider": "anthropic",
        "model": MODEL,
        "system": "You classify tickets.",
        "user": "My login fails since yesterday",
        "max_tokens": 50,
    }
    fields.update(kwargs)
    return Request(**fields)


def provider(server: FakeServer, **kwargs: Any) -> AnthropicProvider:
    return AnthropicProvider(settings(server.anthropic_base_url, **kwargs))


# ---- to_payload / from_payload, no I/O ---------------------------------------------------------


def test_to_payload_plain_and_without_system() -> None:
    prov = AnthropicProvider(settings())
    assert prov.to_payload(request(temperature=0.5)) == {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "My login fails since yesterday"}],
        "temperature": 0.5,
        "system": "You classify tickets.",
    }
    payload = prov.to_payload(request(system="", params={"top_k": 5, "temperature": None}))
    assert "system" not in payload and "temperature" not in payload
    assert payload["top_k"] == 5


def test_to_payload_puts_the_schema_in_the_system_prompt() -> None:
    prov = AnthropicProvider(settings())
    payload = prov.to_payload(request(json_schema=SCHEMA))
    assert payload["system"].startswith("You classify tickets.\n\n")
    assert payload["system"].endswith(schema_instruction(SCHEMA))
    tagged = payload["system"].split("<json_schema>")[1].split("</json_schema>")[0]
    assert json.loads(tagged) == SCHEMA
    alone = prov.to_payload(request(system="", json_schema=SCHEMA))
    assert alone["system"] == schema_instruction(SCHEMA)


def test_from_payload_counts_every_prompt_token() -> None:
    raw = {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
        "stop_reason": "max_tokens",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
        },
    }
    result = AnthropicProvider(settings()).from_payload(request(), raw)
    assert result.text == "Hello there" and result.request_id == "msg_1"
    assert result.finish_reason == "length"
    assert result.usage == Usage(
        input_tokens=1210, output_tokens=4, cached_input_tokens=1000, cache_write_tokens=200
    )
    assert result.parsed is None


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "refusal"),
    ],
)
def test_stop_reasons_are_normalised(stop: str, finish: str) -> None:
    raw = {"content": [], "stop_reason": stop, "usage": None}
    assert AnthropicProvider(settings()).from_payload(request(), raw).finish_reason == finish


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('Here it is: {"a": {"b": 2}} hope it helps', {"a": {"b": 2}}),
        ("[1, 2]", None),
        ('{"a": ', None),
        ("", None),
    ],
)
def test_parse_json_object(text: str, parsed: dict | None) -> None:
    assert parse_json_object(text) == parsed
    raw = {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
    result = AnthropicProvider(settings()).from_payload(request(json_schema=SCHEMA), raw)
    assert result.parsed == parsed  # never raises on bad JSON


@pytest.mark.parametrize("raw", [{"type": "error"}, "<html>", None])
def test_from_payload_without_content_is_terminal(raw: Any) -> None:
    with pytest.raises(TerminalProviderError, match=f"anthropic {MODEL}"):
        AnthropicProvider(settings()).from_payload(request(), raw)


def test_missing_key_or_sdk_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicProvider(ProviderSettings(provider="anthropic", model=MODEL))
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ConfigError, match=r"pip install 'anthropic\[aiohttp\]'"):
        AnthropicProvider(settings())


# ---- real SDK calls to the fake server --------------------------------------------------------


async def test_complete_against_the_fake_server(fake: FakeServer) -> None:
    prov = provider(fake)
    result = await prov.complete(request())
    (entry,) = fake.log()
    assert entry["wire"] == "anthropic"
    assert result.ok and result.text == "Summary: My login fails since yesterday"
    assert result.finish_reason == "stop" and result.request_id == entry["id"]
    assert result.usage.input_tokens == entry["input_tokens"] > 0
    assert result.usage.output_tokens == count_tokens(result.text or "", MODEL)
    assert result.latency_ms > 0
    cut = await prov.complete(request(max_tokens=2))
    assert cut.finish_reason == "length" and cut.usage.output_tokens == 2
    await prov.aclose()


async def test_json_schema_round_trip(fake: FakeServer) -> None:
    prov = provider(fake)
    result = await prov.complete(request(json_schema=SCHEMA, max_tokens=300))
    assert result.parsed is not None
    jsonschema.validate(result.parsed, SCHEMA)
    assert result.parsed["priority"] in ("high", "low")  # drawn per row by the fake
    again = await prov.complete(request(json_schema=SCHEMA, max_tokens=300))
    assert again.parsed == result.parsed  # and the same for the same request
    await prov.aclose()


@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        ({"status": 429, "retry_after": 0.05}, 0.05),
        ({"status": 500}, None),
        ({"status": 503}, None),
        ({"status": 529}, None),
    ],
)
async def test_transient_faults(fake: FakeServer, fault: dict, retry_after: float | None) -> None:
    prov = provider(fake)
    fake.set_faults([fault])
    with pytest.raises(TransientProviderError) as caught:
        await prov.complete(request())
    assert caught.value.status == fault["status"]
    assert caught.value.retry_after == retry_after
    assert str(caught.value).startswith(f"anthropic {MODEL}: HTTP {fault['status']}")
    assert (await prov.complete(request())).ok
    await prov.aclose()


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_terminal_faults(fake: FakeServer, status: int) -> None:
    prov = provider(fake)
    fake.set_faults([{"status": status}])
    with pytest.raises(TerminalProviderError) as caught:
        await prov.complete(request())
    assert not isinstance(caught.value, TransientProviderError)
    assert caught.value.status == status
    message = str(caught.value)
    assert KEY not in message and "SECRET" not in message and "\n" not in message
    await prov.aclose()


async def test_slow_answer_past_timeout_is_transient(fake: FakeServer) -> None:
    prov = provider(fake, timeout_s=0.2)
    fake.set_faults([{"delay_ms": 3000}])
    with pytest.raises(TransientProviderError, match="timed out"):
        await prov.complete(request())
    await prov.aclose()
