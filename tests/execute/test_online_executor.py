"""The online executor against the in-memory scripted provider (the SDK paths are tested
against the fake server in test_provider_*.py and test_run_e2e.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from batchopt.errors import TerminalProviderError, TransientProviderError
from batchopt.execute.online import OnlineExecutor, OnlineSettings
from batchopt.providers.base import Provider
from batchopt.providers.scripted import ScriptedProvider, answer, in_turn
from batchopt.records import Request, Result, Usage


def _request(i: int, schema: dict[str, Any] | None = None) -> Request:
    return Request(key=f"k{i}", provider="stub", model="m", system="", user=f"u{i}",
                   max_tokens=8, json_schema=schema)


def _scripted(script: dict[str, list[Exception]] | None = None, answer_text: str = "ok",
              delay: float = 0.0) -> ScriptedProvider:
    """Each key's scripted exceptions in turn, then `answer_text`, with 3 + 2 tokens of usage."""
    reply = answer(answer_text, input_tokens=3, output_tokens=2)
    turns = {key: in_turn(errors, reply) for key, errors in (script or {}).items()}
    return ScriptedProvider(turns, default=reply, delay=delay)


def _run(provider: Provider, requests: list[Request], **settings: Any) -> tuple[dict, list]:
    saved: list[Result] = []
    executor = OnlineExecutor(provider, OnlineSettings(**settings), saved.extend)
    return asyncio.run(executor.run(requests)), saved


def test_transient_errors_are_retried_and_counted() -> None:
    provider = _scripted({"k0": [TransientProviderError("429", status=429, retry_after=0.01),
                                        TransientProviderError("503", status=503, retry_after=0)]})
    results, saved = _run(provider, [_request(0), _request(1)], max_attempts=3)
    assert results["k0"].ok and results["k0"].attempts == 3
    assert results["k1"].attempts == 1
    assert provider.keys.count("k0") == 3
    assert {r.key for r in saved} == {"k0", "k1"}


def test_terminal_errors_are_not_retried() -> None:
    provider = _scripted({"k0": [TerminalProviderError("bad request", status=400)]})
    results, saved = _run(provider, [_request(0)], max_attempts=5)
    assert results["k0"].status == "failed" and "bad request" in results["k0"].error
    assert provider.keys == ["k0"]
    assert saved == []


def test_attempts_run_out_and_the_row_fails() -> None:
    errors = [TransientProviderError("503", status=503, retry_after=0) for _ in range(5)]
    provider = _scripted({"k0": errors})
    results, _ = _run(provider, [_request(0)], max_attempts=2)
    assert results["k0"].status == "failed" and results["k0"].attempts == 2
    assert provider.keys == ["k0", "k0"]


def test_auth_failure_stops_sending_the_rest() -> None:
    script = {f"k{i}": [TerminalProviderError("401 unauthorized", status=401)] for i in range(20)}
    provider = _scripted(script)
    results, _ = _run(provider, [_request(i) for i in range(20)], concurrency=1)
    assert all(r.status == "failed" for r in results.values())
    assert len(provider.calls) == 1
    assert results["k5"].error.startswith("not sent: 401")


def test_timeout_is_transient_and_bounded() -> None:
    provider = _scripted(delay=0.5)
    results, _ = _run(provider, [_request(0)], timeout_s=0.05, max_attempts=2)
    assert results["k0"].status == "failed" and "no answer within 0.05 s" in results["k0"].error
    assert len(provider.calls) == 2


def test_concurrency_is_bounded() -> None:
    provider = _scripted(delay=0.01)
    results, _ = _run(provider, [_request(i) for i in range(30)], concurrency=4)
    assert len(results) == 30 and provider.max_in_flight == 4


def test_structured_answers_are_validated_and_kept_when_billed() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    good, saved = _run(_scripted(answer_text='{"n": 3}'), [_request(0, schema)])
    assert good["k0"].ok and good["k0"].parsed == {"n": 3}
    bad, saved = _run(_scripted(answer_text='{"n": "three"}'), [_request(0, schema)])
    assert bad["k0"].status == "failed" and "at n:" in bad["k0"].error
    assert saved and saved[0].status == "failed"  # paid for, so persisted
    broken, _ = _run(_scripted(answer_text="not json"), [_request(0, schema)])
    assert broken["k0"].error.startswith("answer is not JSON")


def test_response_cache_round_trip_and_never_evicts(tmp_path) -> None:
    from batchopt.execute.cache import ResponseCache

    cache = ResponseCache(tmp_path / "c")
    result = Result(key="k", text="answer", usage=Usage(10, 3, cached_input_tokens=4),
                    request_id="req-1", latency_ms=12.5, parsed={"a": 1})
    cache.put(result)
    cache.close()
    again = ResponseCache(tmp_path / "c").get("k")
    assert again is not None and again.from_cache and again.attempts == 0
    assert (again.text, again.usage, again.request_id, again.parsed) == (
        "answer", Usage(10, 3, cached_input_tokens=4), "req-1", {"a": 1})
    assert ResponseCache(tmp_path / "c")._cache.eviction_policy == "none"
    assert ResponseCache(tmp_path / "off", enabled=False).get("k") is None
