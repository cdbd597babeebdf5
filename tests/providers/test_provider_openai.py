"""OpenAIProvider: pure payload mapping, and real calls through the SDK to the fake server."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from batchopt.errors import ConfigError, TerminalProviderError, TransientProviderError
from batchopt.fakeapi import FakeServer
from batchopt.providers.base import ProviderSettings
from batchopt.providers.openai import OpenAIProvider
from batchopt.providers.registry import create_provider
from batchopt.providers.sdk_common import retry_after_seconds, scrub
from batchopt.records import Request, Usage
from batchopt.tokens import count_tokens

KEY = "sk-proj-SECRETabcdefghijklmnop1234"
SCHEMA = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["topic", "urgent"],
}


def settings(base_url: str | None = "http://127.0.0.1:9/v1", **kwargs: Any) -> ProviderSettings:
    return ProviderSettings(
        provider="openai", model="gpt-4o-mini", base_url=base_url, api_key=KEY, **kwargs
    )


def request(**kwargs: Any) -> Request:
    fields: dict[str, Any] = {
        "key": "k1",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "system": "You classify tickets.",
        "user": "The printer on floor 3 is jammed",
        "max_tokens": 50,
    }
    fields.update(kwargs)
    return Request(**fields)


def provider(server: FakeServer, **kwargs: Any) -> OpenAIProvider:
    return OpenAIProvider(settings(server.openai_base_url, **kwargs))


# ---- to_payload / from_payload, no I/O ---------------------------------------------------------


def test_to_payload_plain() -> None:
    payload = OpenAIProvider(settings()).to_payload(request(temperature=0.3))
    assert payload == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You classify tickets."},
            {"role": "user", "content": "The printer on floor 3 is jammed"},
        ],
        "max_tokens": 50,
        "temperature": 0.3,
    }


def test_to_payload_without_system_with_schema_and_params() -> None:
    req = request(
        system="",
        json_schema=SCHEMA,
        params={"seed": 7, "temperature": None, "max_completion_tokens": 99},
    )
    payload = OpenAIProvider(settings()).to_payload(req)
    assert payload["messages"] == [{"role": "user", "content": req.user}]
    assert payload["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": False},
    }
    assert payload["seed"] == 7
    assert "temperature" not in payload  # None drops a key
    assert "max_tokens" not in payload and payload["max_completion_tokens"] == 99


def test_from_payload_maps_usage_and_parses_json() -> None:
    raw = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "message": {"role": "assistant", "content": '{"topic": "printer"}'},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 120,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    }
    result = OpenAIProvider(settings()).from_payload(request(json_schema=SCHEMA), raw)
    assert result.key == "k1" and result.ok and result.request_id == "chatcmpl-1"
    assert result.text == '{"topic": "printer"}' and result.finish_reason == "stop"
    assert result.usage == Usage(input_tokens=120, output_tokens=7, cached_input_tokens=100)
    assert result.parsed == {"topic": "printer"}


def test_from_payload_tolerates_bad_json_and_missing_usage() -> None:
    raw = {"id": "x", "choices": [{"message": {"content": "not json"}, "finish_reason": "length"}]}
    prov = OpenAIProvider(settings())
    result = prov.from_payload(request(json_schema=SCHEMA), raw)
    assert result.parsed is None and result.text == "not json" and result.usage == Usage()
    assert prov.from_payload(request(), {**raw, "usage": None}).parsed is None


@pytest.mark.parametrize("raw", [{"choices": []}, {"error": "x"}, "<html>", None])
def test_from_payload_without_choices_is_terminal(raw: Any) -> None:
    with pytest.raises(TerminalProviderError, match="openai gpt-4o-mini"):
        OpenAIProvider(settings()).from_payload(request(), raw)


def test_retry_after_and_scrub_helpers() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None
    assert KEY not in scrub(f"bad key {KEY}", [KEY])
    assert "sk-live-abcdefghijklmnop" not in scrub("key sk-live-abcdefghijklmnop", [])


def test_missing_key_without_base_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIProvider(ProviderSettings(provider="openai", model="gpt-4o"))
    # An OpenAI-compatible local server needs no key.
    OpenAIProvider(ProviderSettings(provider="openai", model="m", base_url="http://127.0.0.1:1"))


def test_missing_sdk_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    with pytest.raises(ConfigError, match=r"pip install 'openai\[aiohttp\]'"):
        OpenAIProvider(settings())


# ---- real SDK calls to the fake server --------------------------------------------------------


async def test_complete_against_the_fake_server(fake: FakeServer) -> None:
    prov = provider(fake)
    result = await prov.complete(request())
    (entry,) = fake.log()
    assert result.ok and result.key == "k1"
    assert result.text == "Summary: The printer on floor 3 is jammed"
    assert result.finish_reason == "stop"
    assert result.request_id == entry["id"]
    assert result.usage.input_tokens == entry["input_tokens"] > 0
    assert result.usage.output_tokens == count_tokens(result.text or "", "gpt-4o-mini")
    assert result.latency_ms > 0 and result.parsed is None
    await prov.aclose()


async def test_max_tokens_cut_gives_length(fake: FakeServer) -> None:
    prov = provider(fake)
    result = await prov.complete(request(max_tokens=3))
    assert result.finish_reason == "length" and result.usage.output_tokens == 3
    await prov.aclose()


async def test_json_schema_result_is_parsed_and_valid(fake: FakeServer) -> None:
    prov = provider(fake)
    result = await prov.complete(request(json_schema=SCHEMA, max_tokens=200))
    assert result.parsed is not None
    jsonschema.validate(result.parsed, SCHEMA)
    assert result.parsed == json.loads(result.text or "")
    truncated = await prov.complete(request(json_schema=SCHEMA, max_tokens=3))
    assert truncated.finish_reason == "length" and truncated.parsed is None  # no raise
    await prov.aclose()


@pytest.mark.parametrize(
    ("fault", "retry_after"),
    [
        ({"status": 429, "retry_after": 0.05}, 0.05),
        ({"status": 429, "retry_after_ms": 250}, 0.25),
        ({"status": 408}, None),
        ({"status": 409}, None),
        ({"status": 500}, None),
        ({"status": 503, "retry_after": 2}, 2.0),
    ],
)
async def test_transient_faults(fake: FakeServer, fault: dict, retry_after: float | None) -> None:
    prov = provider(fake)
    fake.set_faults([fault])
    with pytest.raises(TransientProviderError) as caught:
        await prov.complete(request())
    assert caught.value.status == fault["status"]
    assert caught.value.retry_after == retry_after
    assert f"openai gpt-4o-mini: HTTP {fault['status']}" in str(caught.value)
    assert (await prov.complete(request())).ok  # one fault, one failed attempt: no SDK retry
    assert fake.stats()["failed_requests"] == 1
    await prov.aclose()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_terminal_faults(fake: FakeServer, status: int) -> None:
    prov = provider(fake)
    fake.set_faults([{"status": status}])
    with pytest.raises(TerminalProviderError) as caught:
        await prov.complete(request())
    assert not isinstance(caught.value, TransientProviderError)
    assert caught.value.status == status
    await prov.aclose()


async def test_unauthorized_message_never_holds_the_key(fake: FakeServer) -> None:
    prov = provider(fake)
    fake.set_faults([{"status": 401}])  # the fake echoes the presented key, as some upstreams do
    with pytest.raises(TerminalProviderError) as caught:
        await prov.complete(request())
    message = str(caught.value)
    assert KEY not in message and "SECRET" not in message
    assert "\n" not in message
    assert message.startswith("openai gpt-4o-mini: HTTP 401: Incorrect API key")
    await prov.aclose()


async def test_slow_answer_past_timeout_is_transient(fake: FakeServer) -> None:
    prov = provider(fake, timeout_s=0.2)
    fake.set_faults([{"delay_ms": 3000}])
    with pytest.raises(TransientProviderError, match="timed out") as caught:
        await prov.complete(request())
    assert caught.value.status is None
    await prov.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_transient() -> None:
    prov = OpenAIProvider(settings(f"http://127.0.0.1:{_closed_port()}/v1", timeout_s=2))
    with pytest.raises(TransientProviderError, match="openai gpt-4o-mini"):
        await prov.complete(request())
    await prov.aclose()


async def test_many_concurrent_calls_share_a_small_pool(fake: FakeServer) -> None:
    prov = provider(fake, concurrency=4)
    results = await asyncio.gather(
        *(prov.complete(request(key=f"k{i}", user=f"ticket {i}")) for i in range(60))
    )
    assert [r.key for r in results] == [f"k{i}" for i in range(60)]
    assert fake.stats()["requests"] == 60
    assert len({e["request_hash"] for e in fake.log()}) == 60
    await prov.aclose()


def test_one_provider_across_event_loops(fake: FakeServer) -> None:
    prov = provider(fake)
    first = asyncio.run(prov.complete(request()))
    second = asyncio.run(prov.complete(request()))
    assert first.text == second.text and fake.stats()["requests"] == 2


# ---- registry ----------------------------------------------------------------------------------


def test_registry_builds_providers_and_rejects_unknown_names() -> None:
    from batchopt.providers.anthropic import AnthropicProvider

    assert isinstance(create_provider(settings()), OpenAIProvider)
    anthropic_settings = ProviderSettings(provider="anthropic", model="m", api_key="k")
    assert isinstance(create_provider(anthropic_settings), AnthropicProvider)
    with pytest.raises(ConfigError, match="unknown provider 'bedrock'"):
        create_provider(ProviderSettings(provider="bedrock", model="m"))


def test_registry_builds_the_local_provider() -> None:
    local = pytest.importorskip("batchopt.providers.local")
    prov = create_provider(ProviderSettings(provider="local", model="smollm2"))
    assert isinstance(prov, local.LocalProvider)


def test_registry_import_is_cheap_and_sdks_stay_in_their_modules() -> None:
    code = (
        "import sys, batchopt.providers.registry, batchopt.fakeapi;"
        "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    root = Path(__file__).resolve().parents[2] / "batchopt"
    pattern = re.compile(r"^\s*(?:import|from)\s+(openai|anthropic)\b", re.MULTILINE)
    for path in root.rglob("*.py"):
        for sdk in pattern.findall(path.read_text(encoding="utf-8")):
            assert path == root / "providers" / f"{sdk}.py", f"{path} imports {sdk}"
