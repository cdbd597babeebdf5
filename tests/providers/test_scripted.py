"""The in-memory scripted provider: its replies, its record of calls, its batch interface, its
place in the registry, and the online executor driven by it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from batchopt.errors import TerminalProviderError, TransientProviderError
from batchopt.execute.cache import ResponseCache
from batchopt.execute.online import OnlineExecutor, OnlineSettings
from batchopt.providers.base import ProviderSettings
from batchopt.providers.batching import supports_batch
from batchopt.providers.registry import create_provider, traits_of
from batchopt.providers.scripted import (
    ScriptedBatchProvider,
    ScriptedProvider,
    answer,
    fail_terminally,
    fail_transiently,
    stand_ins,
)
from batchopt.records import Request, Result, Usage


def _request(i: int, user: str | None = None, tokens: int = 0) -> Request:
    return Request(key=f"k{i}", provider="openai", model="gpt-4o-mini", system="Be brief.",
                   user=user or f"question {i}", max_tokens=16, estimated_input_tokens=tokens)


def _complete(provider: ScriptedProvider, request: Request) -> Result:
    return asyncio.run(provider.complete(request))


def test_answer_gives_the_usage_asked_for_or_a_realistic_one() -> None:
    given = ScriptedProvider(answer("Two words.", input_tokens=40, output_tokens=5,
                                    cached_input_tokens=8))
    result = _complete(given, _request(0))
    assert result.ok and result.text == "Two words." and result.key == "k0"
    assert result.usage == Usage(40, 5, 8, 0)
    assert result.request_id == "scripted-1"
    counted = _complete(ScriptedProvider(answer("one two three")), _request(1, tokens=33))
    assert counted.usage == Usage(33, 3)
    words = _complete(ScriptedProvider(answer(lambda r: r.user.upper())), _request(2, "a b c"))
    assert words.text == "A B C" and words.usage == Usage(5, 3)  # "Be brief. a b c"


def test_a_mapping_answers_by_key_or_user_text_and_fails_the_rest() -> None:
    canned = Result(key="", text="canned", usage=Usage(7, 2))
    provider = ScriptedProvider({"k0": "by key", "question 1": canned,
                                 "k2": TerminalProviderError("refused", status=400)})
    assert _complete(provider, _request(0)).text == "by key"
    assert _complete(provider, _request(1)).usage == Usage(7, 2)
    with pytest.raises(TerminalProviderError, match="refused"):
        _complete(provider, _request(2))
    with pytest.raises(TerminalProviderError, match="no reply scripted for request k3"):
        _complete(provider, _request(3))
    defaulted = ScriptedProvider({"k0": "x"}, default=answer("fallback"))
    assert _complete(defaulted, _request(9)).text == "fallback"
    assert provider.keys == ["k0", "k1", "k2", "k3"]


def test_transient_failures_count_per_request_then_answer() -> None:
    provider = ScriptedProvider(fail_transiently(2, answer("late"), status=429, retry_after=1.5))
    for _ in range(2):
        with pytest.raises(TransientProviderError) as failed:
            _complete(provider, _request(0))
        assert failed.value.status == 429 and failed.value.retry_after == 1.5
    assert _complete(provider, _request(0)).text == "late"
    with pytest.raises(TransientProviderError):
        _complete(provider, _request(1))  # another request has its own count
    assert provider.keys == ["k0", "k0", "k0", "k1"]


def test_terminal_failures_always_fail() -> None:
    provider = ScriptedProvider(fail_terminally("context too long", status=400))
    for _ in range(2):
        with pytest.raises(TerminalProviderError, match="context too long") as failed:
            _complete(provider, _request(0))
        assert failed.value.status == 400


def test_it_declares_traits_and_a_payload_round_trip() -> None:
    traits = ScriptedProvider.traits("any")
    assert traits.api_key_env is None and traits.base_url_env is None
    assert not traits.capabilities.batch and ScriptedBatchProvider.traits("m").capabilities.batch
    provider = ScriptedProvider()
    assert provider.to_payload(_request(0))["user"] == "question 0"
    raw = {"text": "hi", "usage": {"input_tokens": 3, "output_tokens": 1}, "id": "r1"}
    assert provider.from_payload(_request(0), raw) == Result(
        key="k0", text="hi", usage=Usage(3, 1), request_id="r1")


def test_stand_ins_build_the_stand_in_for_the_providers_named_and_the_real_one_otherwise(
) -> None:
    provider = ScriptedProvider()
    settings = ProviderSettings(provider="openai", model="gpt-4o-mini", api_key="unused")
    built: list[ProviderSettings] = []

    def factory(given: ProviderSettings) -> ScriptedProvider:
        built.append(given)
        return ScriptedProvider()

    make = stand_ins({"openai": provider, "anthropic": factory})
    assert make(settings) is make(settings) is provider
    anthropic = ProviderSettings(provider="anthropic", model="claude-3-5-haiku-20241022")
    assert isinstance(make(anthropic), ScriptedProvider) and built == [anthropic]
    assert type(stand_ins({"anthropic": factory})(settings)).__name__ == "OpenAIProvider"
    assert type(create_provider(settings)).__name__ == "OpenAIProvider"  # nothing global
    assert traits_of("openai", "gpt-4o-mini").api_key_env == "OPENAI_API_KEY"


def _execute(provider: ScriptedProvider, requests: list[Request], persist=None,
             **settings: object) -> dict[str, Result]:
    executor = OnlineExecutor(provider, OnlineSettings(**settings), persist or (lambda _: None))
    return asyncio.run(executor.run(requests))


def test_the_executor_retries_transient_failures() -> None:
    provider = ScriptedProvider({"k0": fail_transiently(2, answer("ok", input_tokens=9,
                                                                  output_tokens=1))},
                                default=answer("fine"))
    results = _execute(provider, [_request(0), _request(1)], max_attempts=3)
    assert results["k0"].ok and results["k0"].attempts == 3
    assert results["k0"].usage.input_tokens == 9
    assert results["k1"].ok and results["k1"].attempts == 1
    assert provider.keys.count("k0") == 3 and provider.keys.count("k1") == 1


def test_the_executor_stops_on_a_terminal_failure() -> None:
    provider = ScriptedProvider({"k0": fail_terminally("bad request")}, default=answer())
    saved: list[Result] = []
    results = _execute(provider, [_request(0), _request(1)], saved.extend, max_attempts=5)
    assert results["k0"].status == "failed" and "bad request" in (results["k0"].error or "")
    assert provider.keys.count("k0") == 1
    assert [r.key for r in saved] == ["k1"]
    # a refused key stops the sending: nothing after it is sent
    refused = ScriptedProvider(fail_terminally("invalid api key", status=401))
    results = _execute(refused, [_request(i) for i in range(4)], concurrency=1)
    assert refused.keys == ["k0"] and results["k3"].error == "not sent: scripted: invalid api key"


def test_an_answer_in_the_cache_is_never_sent_again(tmp_path: Path) -> None:
    provider = ScriptedProvider(answer("cached", input_tokens=12, output_tokens=1))
    requests = [_request(i) for i in range(3)]
    cache = ResponseCache(tmp_path / "cache")
    try:
        _execute(provider, requests, cache.put_many)
        again = [request for request in requests if cache.get(request.key) is None]
        assert again == [] and len(provider.calls) == 3
        assert cache.get("k1").usage == Usage(12, 1)  # type: ignore[union-attr]
    finally:
        cache.close()


def test_the_batch_interface_answers_in_memory() -> None:
    provider = ScriptedBatchProvider({"k1": fail_terminally("too long")},
                                     default=answer("batched"), polls=1)
    assert supports_batch(provider)
    requests = [_request(0), _request(1)]

    async def go() -> tuple[list[str], list, list[str]]:
        batch_id = await provider.submit_batch(requests, {"run": "r1"})
        states = [(await provider.poll_batch(batch_id)).state for _ in range(2)]
        rows = [row async for row in provider.fetch_batch_results(batch_id, requests)]
        found = await provider.find_batches({"run": "r1"})
        assert await provider.find_batches({"run": "r2"}) == []
        return states, rows, found

    states, rows, found = asyncio.run(go())
    assert states == ["pending", "ended"] and found == ["scripted-batch-1"]
    assert [(row.key, row.kind) for row in rows] == [("k0", "succeeded"), ("k1", "errored")]
    assert rows[0].result is not None and rows[0].result.text == "batched"
    assert "too long" in (rows[1].error or "") and provider.keys == ["k0", "k1"]
