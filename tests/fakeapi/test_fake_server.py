"""The fake provider server, driven by the real OpenAI and Anthropic SDKs."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import anthropic
import bpe_openai
import jsonschema
import openai
import pytest

from batchopt.fakeapi import FakeServer

MODEL = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"


def count_tokens(text: str, model: str) -> int:
    """Tokens by tiktoken's o200k_base, the encoding of gpt-4o-mini (and the fake's stand-in for
    Claude): counted here, not with batchopt's counter, which the fake is a check on."""
    assert model in (MODEL, CLAUDE)
    return len(bpe_openai.get_encoding("o200k_base").encode(text))

SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {
        "Person": {
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 2}, "age": {"type": "integer"}},
            "required": ["name", "age"],
        }
    },
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "score": {"type": "number", "minimum": 3, "maximum": 4},
        "count": {"type": "integer", "exclusiveMinimum": 10},
        "urgent": {"type": "boolean"},
        "label": {"enum": ["bug", "feature"]},
        "due": {"type": "string", "format": "date"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "owner": {"$ref": "#/$defs/Person"},
        "note": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        "meta": {"type": "object", "properties": {"level": {"type": "integer", "maximum": -5}}},
    },
    "required": ["title", "score", "count", "urgent", "label", "tags", "owner", "meta"],
    "additionalProperties": False,
}


def oai(server: FakeServer, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=server.openai_base_url, api_key="sk-test", max_retries=0, **kwargs
    )


def claude(server: FakeServer, **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=server.anthropic_base_url, api_key="sk-ant-test", max_retries=0, **kwargs
    )


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    assert condition()


def http(server: FakeServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_openai_wire_answer_usage_stats_and_log(fake: FakeServer) -> None:
    client = oai(fake)
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You summarise."},
            *user("  The printer\n on   floor 3\tis jammed again  "),
        ],
        max_tokens=100,
    )
    reply = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    text = reply.choices[0].message.content
    assert text == "Summary: The printer on floor 3 is jammed again"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == count_tokens(text, MODEL)
    assert reply.usage.prompt_tokens_details.cached_tokens == 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    stats = fake.stats()
    assert stats["requests"] == 1
    assert stats["input_tokens"] == reply.usage.prompt_tokens
    assert stats["output_tokens"] == reply.usage.completion_tokens
    assert stats["by_wire"]["openai"]["requests"] == 1
    assert stats["by_model"][MODEL]["output_tokens"] == reply.usage.completion_tokens
    (entry,) = fake.log()
    assert entry["wire"] == "openai" and entry["model"] == MODEL and entry["id"] == reply.id
    assert entry["input_tokens"] == reply.usage.prompt_tokens
    await client.close()


async def test_anthropic_wire_answer_usage_and_stats(fake: FakeServer) -> None:
    client = claude(fake)
    raw = await client.messages.with_raw_response.create(
        model=CLAUDE, max_tokens=100, system="Be brief.", messages=user("Reset my password please")
    )
    message = await raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].text == "Summary: Reset my password please"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == count_tokens(message.content[0].text, CLAUDE)
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    stats = fake.stats()
    assert stats["by_wire"]["anthropic"] == {
        "requests": 1,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
        "failed_requests": 0,
        "abandoned_requests": 0,
    }
    assert fake.log()[0]["wire"] == "anthropic"
    await client.close()


async def test_input_tokens_come_from_the_tokenizer(fake: FakeServer) -> None:
    client = oai(fake)
    short, long = "hello", "hello there, a much longer message about supercalifragilistic things"
    a = await client.chat.completions.create(model=MODEL, messages=user(short), max_tokens=50)
    b = await client.chat.completions.create(model=MODEL, messages=user(long), max_tokens=50)
    assert a.usage is not None and b.usage is not None
    expected = count_tokens(long, MODEL) - count_tokens(short, MODEL)
    assert b.usage.prompt_tokens - a.usage.prompt_tokens == expected
    await client.close()


async def test_content_parts_and_long_prompts_are_counted(fake: FakeServer) -> None:
    client = oai(fake)
    long = "lorem ipsum dolor sit amet " * 2000  # past the size the fake memoises
    parts = [{"type": "text", "text": "first part"}, {"type": "text", "text": long}]
    a = await client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=50)
    b = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": parts}], max_tokens=50
    )
    assert a.usage is not None and b.usage is not None
    joined = "first part\n" + long
    assert b.usage.prompt_tokens - a.usage.prompt_tokens == count_tokens(joined, MODEL) - 1
    assert b.choices[0].message.content == "Summary: first part " + " ".join(long.split()[:18])
    await client.close()


async def test_stats_add_up_over_both_wires(fake: FakeServer) -> None:
    o, a = oai(fake), claude(fake)
    r1 = await o.chat.completions.create(model=MODEL, messages=user("one two"), max_tokens=20)
    r2 = await a.messages.create(model=CLAUDE, max_tokens=20, messages=user("three four"))
    assert r1.usage is not None
    stats = fake.stats()
    assert stats["requests"] == 2
    assert stats["input_tokens"] == r1.usage.prompt_tokens + r2.usage.input_tokens
    assert stats["output_tokens"] == r1.usage.completion_tokens + r2.usage.output_tokens
    assert set(stats["by_model"]) == {MODEL, CLAUDE}
    status, over_http = http(fake, "GET", "/_fake/stats")
    assert status == 200 and over_http["requests"] == 2
    status, log = http(fake, "GET", "/_fake/log")
    assert [e["wire"] for e in log] == ["openai", "anthropic"]
    assert http(fake, "POST", "/_fake/reset", {})[0] == 200
    assert fake.stats()["requests"] == 0 and fake.log() == []
    await o.close()
    await a.close()


async def test_answers_and_request_hashes_are_deterministic(fake: FakeServer) -> None:
    client = oai(fake)
    same = {"model": MODEL, "messages": user("alpha beta gamma"), "max_tokens": 30}
    first = await client.chat.completions.create(**same)
    second = await client.chat.completions.create(**same)
    other = await client.chat.completions.create(**{**same, "max_tokens": 31})
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.id != second.id
    hashes = [e["request_hash"] for e in fake.log()]
    assert hashes[0] == hashes[1] != hashes[2]
    assert other.choices[0].message.content == first.choices[0].message.content
    await client.close()


async def test_max_tokens_cuts_the_answer(fake: FakeServer) -> None:
    o, a = oai(fake), claude(fake)
    text = "one two three four five six seven eight nine ten eleven twelve"
    cut = await o.chat.completions.create(model=MODEL, messages=user(text), max_tokens=4)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 4
    assert "Summary: one two three four".startswith(cut.choices[0].message.content or "x")
    newer = await o.chat.completions.create(
        model=MODEL, messages=user(text), max_completion_tokens=3
    )
    assert newer.choices[0].finish_reason == "length"
    assert newer.usage is not None and newer.usage.completion_tokens == 3
    message = await a.messages.create(model=CLAUDE, max_tokens=2, messages=user(text))
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 2
    await o.close()
    await a.close()


async def test_openai_json_schema_answer_validates(fake: FakeServer) -> None:
    client = oai(fake)
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=user("Printer jammed on floor three again today"),
        max_tokens=500,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": False},
        },
    )
    value = json.loads(reply.choices[0].message.content or "")
    jsonschema.validate(value, SCHEMA)
    assert value["label"] == "bug"
    assert value["owner"]["name"]
    assert value["title"] == "Printer jamm"  # user words, cut to maxLength
    await client.close()


async def test_anthropic_json_schema_in_system_tags_or_output_config(fake: FakeServer) -> None:
    client = claude(fake)
    system = f"Extract.\n<json_schema>\n{json.dumps(SCHEMA)}\n</json_schema>"
    tagged = await client.messages.create(
        model=CLAUDE, max_tokens=500, system=system, messages=user("Printer jammed")
    )
    jsonschema.validate(json.loads(tagged.content[0].text), SCHEMA)
    configured = await client.messages.create(
        model=CLAUDE,
        max_tokens=500,
        messages=user("Printer jammed"),
        output_config={"format": {"type": "json_schema", "schema": SCHEMA}},
    )
    jsonschema.validate(json.loads(configured.content[0].text), SCHEMA)
    plain = await client.messages.create(model=CLAUDE, max_tokens=500, messages=user("Hi"))
    assert plain.content[0].text == "Summary: Hi"
    await client.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_openai_faults(fake: FakeServer, status: int, error: type[Exception]) -> None:
    client = oai(fake)
    fake.set_faults([{"status": status, "retry_after": 0.05}])
    with pytest.raises(error) as caught:
        await client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=5)
    assert caught.value.status_code == status  # type: ignore[attr-defined]
    assert caught.value.response.headers["retry-after"] == "0.05"  # type: ignore[attr-defined]
    assert caught.value.body["type"]  # type: ignore[attr-defined]  # OpenAI error shape
    await client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=5)
    stats = fake.stats()
    assert stats["requests"] == 1 and stats["failed_requests"] == 1
    assert len(fake.log()) == 1
    await client.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, anthropic.AuthenticationError),
        (429, anthropic.RateLimitError),
        (500, anthropic.InternalServerError),
        (529, anthropic.OverloadedError),
    ],
)
async def test_anthropic_faults(fake: FakeServer, status: int, error: type[Exception]) -> None:
    client = claude(fake)
    fake.set_faults([{"status": status}])
    with pytest.raises(error) as caught:
        await client.messages.create(model=CLAUDE, max_tokens=5, messages=user("x"))
    body = caught.value.body  # type: ignore[attr-defined]
    assert body["type"] == "error" and body["error"]["type"]
    assert fake.stats()["by_wire"]["anthropic"]["failed_requests"] == 1
    assert fake.stats()["requests"] == 0
    await client.close()


async def test_fault_count_and_order_span_both_wires(fake: FakeServer) -> None:
    o, a = oai(fake), claude(fake)
    fake.set_faults([{"status": 500, "count": 2}, {"status": 429}])
    with pytest.raises(openai.InternalServerError):
        await o.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=5)
    with pytest.raises(anthropic.InternalServerError):
        await a.messages.create(model=CLAUDE, max_tokens=5, messages=user("x"))
    with pytest.raises(openai.RateLimitError):
        await o.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=5)
    await a.messages.create(model=CLAUDE, max_tokens=5, messages=user("x"))
    assert fake.stats()["failed_requests"] == 3 and fake.stats()["requests"] == 1
    await o.close()
    await a.close()


async def test_faults_over_http_and_delete(fake: FakeServer) -> None:
    client = oai(fake)
    status, answer = http(fake, "POST", "/_fake/faults", [{"status": 503, "count": 3}])
    assert status == 200 and answer["pending"] == 3
    assert http(fake, "GET", "/_fake/faults", None)[1]["pending"] == 3
    assert http(fake, "DELETE", "/_fake/faults")[0] == 200
    await client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=5)
    assert fake.stats()["failed_requests"] == 0
    bad = http(fake, "POST", "/_fake/faults", [{"status": 200}])
    assert bad[0] == 400 and "status" in bad[1]["error"]
    assert http(fake, "POST", "/_fake/faults", [{"oops": 1}])[0] == 400
    await client.close()


async def test_delay_fault_and_latency_cause_client_timeouts(fake: FakeServer) -> None:
    client = oai(fake, timeout=0.2)
    fake.set_faults([{"delay_ms": 2000}])
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=5)
    fake.latency_ms = 2000
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=5)
    fake.latency_ms = 0
    reply = await client.chat.completions.create(model=MODEL, messages=user("x"), max_tokens=5)
    assert reply.choices[0].message.content == "Summary: x"
    # The timed-out calls were cancelled server-side: abandoned, never paid.
    await wait_until(lambda: fake.stats()["abandoned_requests"] == 2)
    assert fake.stats()["requests"] == 1 and len(fake.log()) == 1
    await client.close()


PROMPT = "Please summarise this message about a refund that never arrived at my address"


async def _both(fake: FakeServer, fault: dict[str, Any], timeout: float = 10.0) -> list[Any]:
    """One call per wire under `fault` (queued again before each): the answer or the error."""
    o, a = oai(fake, timeout=timeout), claude(fake, timeout=timeout)
    calls = [
        lambda: o.post("/chat/completions", cast_to=object, body={
            "model": MODEL, "messages": user(PROMPT), "max_tokens": 50}),
        lambda: a.post("/v1/messages", cast_to=object, body={
            "model": CLAUDE, "messages": user(PROMPT), "max_tokens": 50}),
    ]
    outcomes: list[Any] = []
    for call in calls:
        fake.set_faults([fault])
        try:
            outcomes.append(await call())
        except Exception as exc:  # what the SDK raised is the outcome under test
            outcomes.append(exc)
    await o.close()
    await a.close()
    return outcomes


async def test_reset_and_malformed_faults_are_not_billed(fake: FakeServer) -> None:
    for outcome in await _both(fake, {"kind": "reset"}):
        assert isinstance(outcome, openai.APIConnectionError | anthropic.APIConnectionError)
    for outcome in await _both(fake, {"kind": "malformed"}):
        assert isinstance(outcome, json.JSONDecodeError)  # a 200 "JSON" body that is HTML
    stats = fake.stats()
    assert stats["requests"] == 0 and stats["failed_requests"] == 4 and fake.log() == []


async def test_truncated_and_timeout_faults_are_billed_but_never_delivered(
    fake: FakeServer,
) -> None:
    for outcome in await _both(fake, {"kind": "truncated"}):
        assert isinstance(outcome, json.JSONDecodeError)  # the body stops mid-document
    for outcome in await _both(fake, {"kind": "timeout", "delay_ms": 1000}, timeout=0.2):
        assert isinstance(outcome, openai.APITimeoutError | anthropic.APITimeoutError)
    log = fake.log()
    assert [e["wire"] for e in log] == ["openai", "anthropic"] * 2
    assert all(e["output_tokens"] > 0 for e in log)
    assert fake.stats()["abandoned_requests"] == 0  # paid before the client hung up


async def test_no_usage_fault_answers_without_usage_and_bills_as_usual(fake: FakeServer) -> None:
    plain = await _both(fake, {"delay_ms": 1})
    bare = await _both(fake, {"kind": "no_usage"})
    for full, without in zip(plain, bare, strict=True):
        assert "usage" in full and "usage" not in without
        assert {k: v for k, v in full.items() if k not in ("id", "created", "usage")} == {
            k: v for k, v in without.items() if k not in ("id", "created")
        }
    log = fake.log()
    assert [e["output_tokens"] for e in log[2:]] == [e["output_tokens"] for e in log[:2]]


async def test_max_tokens_fault_cuts_the_answer_and_bills_what_it_kept(fake: FakeServer) -> None:
    full_oai, full_claude = await _both(fake, {"delay_ms": 1})
    cut_oai, cut_claude = await _both(fake, {"kind": "max_tokens"})
    assert cut_oai["choices"][0]["finish_reason"] == "length"
    assert cut_claude["stop_reason"] == "max_tokens"
    cut_text = cut_oai["choices"][0]["message"]["content"]
    assert full_oai["choices"][0]["message"]["content"].startswith(cut_text)
    assert cut_oai["usage"]["completion_tokens"] == count_tokens(cut_text, MODEL)
    assert cut_oai["usage"]["completion_tokens"] <= full_oai["usage"]["completion_tokens"] // 2
    assert cut_claude["usage"]["output_tokens"] <= full_claude["usage"]["output_tokens"] // 2
    assert full_claude["content"][0]["text"].startswith(cut_claude["content"][0]["text"])
    billed = [e["output_tokens"] for e in fake.log()[2:]]
    assert billed == [cut_oai["usage"]["completion_tokens"], cut_claude["usage"]["output_tokens"]]


@pytest.mark.parametrize("status", [502, 529])
async def test_502_and_529_bursts_on_both_wires(fake: FakeServer, status: int) -> None:
    outcomes = await _both(fake, {"status": status})
    assert [o.status_code for o in outcomes] == [status, status]
    assert fake.stats()["failed_requests"] == 2 and fake.log() == []


def test_kind_faults_are_checked() -> None:
    from batchopt.fakeapi.faults import parse_faults

    assert parse_faults([{"kind": "reset", "count": 2}])[1].kind == "reset"
    for bad in ({"kind": "nope"}, {"kind": "timeout"}, {"kind": "reset", "status": 500}):
        with pytest.raises(ValueError):
            parse_faults([bad])


async def test_invalid_requests_are_rejected_and_not_paid(fake: FakeServer) -> None:
    status, body = http(fake, "POST", "/v1/chat/completions", {"messages": user("x")})
    assert status == 400 and "model" in body["error"]["message"]
    status, body = http(fake, "POST", "/v1/messages", {"model": CLAUDE, "messages": user("x")})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    stats = fake.stats()
    assert stats["requests"] == 0 and stats["failed_requests"] == 2


def test_binds_loopback_only(fake: FakeServer) -> None:
    assert fake.url == f"http://127.0.0.1:{fake.port}"
    assert fake.openai_base_url == fake.url + "/v1"
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_runs_as_a_separate_process() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchopt.fakeapi", "--port", str(port), "--latency-ms", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"fake server listening on http://127.0.0.1:{port}"
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0
        )
        reply = client.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=9)
        assert reply.choices[0].message.content == "Summary: hi"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fake/stats", timeout=10) as resp:
            assert json.loads(resp.read())["requests"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
