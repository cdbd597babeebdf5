"""The fake server's answer oracle: per-model quality, determinism, logprobs and stats."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import openai
import pytest

from batchopt.errors import TransientProviderError
from batchopt.fakeapi import FakeServer
from batchopt.fakeapi.logprobs import token_bytes, token_logprobs
from batchopt.fakeapi.oracle import OracleItem, _MatchIndex, parse_oracle
from batchopt.hashing import stable_hash
from batchopt.providers.anthropic import AnthropicProvider
from batchopt.providers.base import ProviderSettings
from batchopt.providers.batching import BatchProvider
from batchopt.providers.openai import OpenAIProvider
from batchopt.providers.sdk_batch import SDKBatchProvider
from batchopt.records import Request, Result

MODELS = {"cheap": {"easy": 0.97, "hard": 0.35}, "strong": {"easy": 1.0, "hard": 0.98}}
THRESHOLD = -0.5
CONFIDENT = (-0.05, -0.001)


def make_items(n: int, hard_every: int = 5) -> list[dict[str, Any]]:
    """`n` items, one in `hard_every` hard (so 80% easy by default), two wrong answers each."""
    return [
        {
            "match": f"Question {i:05d}:",
            "answer": f"The capital of region {i} is Town{i}.",
            "wrong": ["I don't know.", f"The capital of region {i} is Town{i + 1}."],
            "difficulty": "hard" if i % hard_every == 0 else "easy",
        }
        for i in range(n)
    ]


def question(i: int) -> str:
    return f"Question {i:05d}: what is the capital of region {i}?"


def request(model: str, user: str, wire: str = "openai", **kwargs: Any) -> Request:
    fields: dict[str, Any] = {"system": "Answer briefly.", "max_tokens": 60, **kwargs}
    key = stable_hash({"wire": wire, "model": model, "user": user, **fields})
    return Request(key=key, provider=wire, model=model, user=user, **fields)


def provider(server: FakeServer, wire: str = "openai", model: str = "cheap") -> SDKBatchProvider:
    base = server.openai_base_url if wire == "openai" else server.anthropic_base_url
    settings = ProviderSettings(
        provider=wire, model=model, base_url=base, api_key="sk-test", concurrency=32
    )
    return OpenAIProvider(settings) if wire == "openai" else AnthropicProvider(settings)


async def complete_all(prov: SDKBatchProvider, requests: Sequence[Request]) -> list[Result]:
    gate = asyncio.Semaphore(32)

    async def one(req: Request) -> Result:
        async with gate:
            return await prov.complete(req)

    return await asyncio.gather(*(one(r) for r in requests))


async def run_batch(prov: BatchProvider, requests: Sequence[Request]) -> dict[str, Result]:
    batch_id = await prov.submit_batch(requests, {})
    deadline = time.monotonic() + 20
    while not (await prov.poll_batch(batch_id)).done:
        assert time.monotonic() < deadline, "the batch never ended"
        await asyncio.sleep(0.02)
    rows = [row async for row in prov.fetch_batch_results(batch_id, requests)]
    assert {row.kind for row in rows} == {"succeeded"}
    return {row.key: row.result for row in rows if row.key and row.result}


def verdict(item: dict[str, Any], text: str | None) -> str:
    if text == item["answer"]:
        return "right"
    assert text in item["wrong"], f"{text!r} is neither the answer nor a wrong one"
    return "wrong"


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def within(measured: float, target: float, n: int) -> bool:
    """`measured` is within 3 binomial standard deviations (and at least 3 points) of `target`."""
    return abs(measured - target) <= max(0.03, 3 * math.sqrt(target * (1 - target) / n))


# ---- quality per model and difficulty --------------------------------------------------------


async def test_measured_accuracy_follows_each_models_setting(fake: FakeServer) -> None:
    items = make_items(200)
    fake.set_oracle(items, MODELS)
    prov = provider(fake)
    accuracy: dict[tuple[str, str], float] = {}
    for model in MODELS:
        results = await complete_all(prov, [request(model, question(i)) for i in range(200)])
        for difficulty in ("easy", "hard"):
            picked = [
                verdict(item, res.text)
                for item, res in zip(items, results, strict=True)
                if item["difficulty"] == difficulty
            ]
            accuracy[model, difficulty] = picked.count("right") / len(picked)
    print("measured accuracy (200 items):", accuracy)
    for (model, difficulty), measured in accuracy.items():
        n = 160 if difficulty == "easy" else 40
        assert within(measured, MODELS[model][difficulty], n), (model, difficulty, measured)
    assert accuracy["cheap", "hard"] < accuracy["strong", "hard"] - 0.4
    await prov.aclose()


def test_accuracy_over_many_items_is_close_to_the_setting() -> None:
    items = make_items(20_000)
    oracle = parse_oracle({"items": items, "models": MODELS})
    for model, targets in MODELS.items():
        for difficulty, target in targets.items():
            chosen = [i for i, item in enumerate(items) if item["difficulty"] == difficulty]
            right = sum(oracle.decide(model, question(i)).kind == "right" for i in chosen)
            assert abs(right / len(chosen) - target) < 0.015, (model, difficulty)


async def test_unknown_models_use_the_default_accuracy(fake: FakeServer) -> None:
    items = make_items(60, hard_every=2)
    fake.set_oracle(items, MODELS, default_accuracy={"easy": 1.0, "hard": 0.0})
    prov = provider(fake)
    results = await complete_all(prov, [request("other", question(i)) for i in range(60)])
    for item, res in zip(items, results, strict=True):
        assert verdict(item, res.text) == ("right" if item["difficulty"] == "easy" else "wrong")
    # Without a default, an unknown model is always right.
    fake.set_oracle(items, MODELS)
    results = await complete_all(prov, [request("other", question(i)) for i in range(60)])
    assert [r.text for r in results] == [item["answer"] for item in items]
    await prov.aclose()


async def test_wrong_answers_are_spread_over_the_list(fake: FakeServer) -> None:
    wrong = ["I don't know.", "I cannot help with that.", "Maybe Lyon."]
    items = [{"match": f"[q{i}]", "answer": "Paris", "wrong": wrong} for i in range(90)]
    items.append({"match": "[bare]", "answer": "Paris"})  # no wrong answers listed
    fake.set_oracle(items, {"bad": {"easy": 0.0}})
    prov = provider(fake, model="bad")
    results = await complete_all(prov, [request("bad", f"[q{i}] capital?") for i in range(90)])
    counts = {w: sum(r.text == w for r in results) for w in wrong}
    assert sum(counts.values()) == 90 and min(counts.values()) >= 15, counts
    (bare,) = await complete_all(prov, [request("bad", "[bare] capital?")])
    assert bare.text == "I don't know."
    await prov.aclose()


async def test_first_matching_item_wins_and_others_are_answered_as_before(
    fake: FakeServer,
) -> None:
    items = make_items(40)
    items.insert(0, {"match": "region 7?", "answer": "Seven first"})
    fake.set_oracle(items, {"cheap": {"easy": 1.0, "hard": 1.0}})
    prov = provider(fake)
    first, plain = await complete_all(
        prov, [request("cheap", question(7)), request("cheap", "no question here at all")]
    )
    assert first.text == "Seven first"
    assert plain.text == "Summary: no question here at all"
    await prov.aclose()


def test_the_match_index_agrees_with_a_linear_scan() -> None:
    rng = random.Random(7)
    alphabet = "abcde "
    matches = ["".join(rng.choices(alphabet, k=rng.randint(2, 9))) for _ in range(400)]
    index = _MatchIndex(matches)
    assert not index.linear
    for _ in range(2000):
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 40)))
        expected = next((i for i, m in enumerate(matches) if m in text), None)
        assert index.find(text) == expected, text


# ---- determinism: online and batch -----------------------------------------------------------


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_same_request_same_answer_online_and_in_a_batch(bfake: FakeServer, wire: str) -> None:
    items = make_items(40, hard_every=2)
    bfake.set_oracle(items, MODELS)
    prov = provider(bfake, wire)
    requests = [request("cheap", question(i), wire) for i in range(40)]
    online = await complete_all(prov, requests)
    again = await complete_all(prov, requests)
    assert [r.text for r in online] == [r.text for r in again]
    batch = await run_batch(prov, requests)
    assert [batch[r.key].text for r in requests] == [r.text for r in online]
    assert [batch[r.key].usage for r in requests] == [r.usage for r in online]
    verdicts = [verdict(item, r.text) for item, r in zip(items, online, strict=True)]
    assert {"right", "wrong"} <= set(verdicts)  # hard items at 0.35: both happen
    for i, kind in enumerate(verdicts):
        assert bfake.oracle_verdict("cheap", question(i))[0] == kind
    await prov.aclose()


# ---- logprobs ---------------------------------------------------------------------------------


async def test_logprobs_separate_right_from_wrong(fake: FakeServer) -> None:
    items = make_items(200)
    fake.set_oracle(items, MODELS)
    prov = provider(fake)
    requests = [request("cheap", question(i), params={"logprobs": True}) for i in range(200)]
    results = await complete_all(prov, requests)
    means: dict[str, list[float]] = {"right": [], "wrong": []}
    for item, res in zip(items, results, strict=True):
        assert res.token_logprobs is not None
        assert len(res.token_logprobs) == res.usage.output_tokens > 0
        assert all(lp <= 0 for lp in res.token_logprobs)
        means[verdict(item, res.text)].append(mean(res.token_logprobs))
    right_above = sum(m > THRESHOLD for m in means["right"]) / len(means["right"])
    wrong_below = sum(m < THRESHOLD for m in means["wrong"]) / len(means["wrong"])
    print(
        f"threshold {THRESHOLD}: right above {right_above:.1%} of {len(means['right'])}, "
        f"wrong below {wrong_below:.1%} of {len(means['wrong'])}"
    )
    assert right_above >= 0.9 and wrong_below >= 0.75
    # Not a perfect signal: some wrong answers are confident somewhere in a larger sample.
    assert max(means["wrong"]) > -0.7 or min(means["right"]) < -0.2
    await prov.aclose()


def test_logprob_separation_over_many_items() -> None:
    items = make_items(20_000)
    oracle = parse_oracle({"items": items, "models": MODELS})
    means: dict[str, list[float]] = {"right": [], "wrong": []}
    for i in range(len(items)):
        decided = oracle.decide("cheap", question(i))
        assert decided.text is not None
        count = len(token_bytes(decided.text, "cheap"))
        means[decided.kind].append(mean(token_logprobs(decided, "cheap", decided.text, count)))
    right, wrong = means["right"], means["wrong"]
    right_above = sum(m > THRESHOLD for m in right) / len(right)
    right_above_02 = sum(m > -0.2 for m in right) / len(right)
    wrong_below = sum(m < THRESHOLD for m in wrong) / len(wrong)
    assert 0.94 <= right_above <= 0.99 and 0.93 <= right_above_02 <= 0.97
    assert 0.87 <= wrong_below <= 0.93  # most wrong answers are unsure, not all


async def test_right_and_unmatched_answers_are_confident_token_by_token(fake: FakeServer) -> None:
    items = make_items(100)
    fake.set_oracle(items, {"strong": {"easy": 1.0, "hard": 1.0}})
    prov = provider(fake, model="strong")
    requests = [request("strong", question(i), params={"logprobs": True}) for i in range(100)]
    requests.append(request("strong", "unmatched question", params={"logprobs": True}))
    results = await complete_all(prov, requests)
    confident = [
        r.token_logprobs is not None and all(-0.05 <= lp <= -0.001 for lp in r.token_logprobs)
        for r in results
    ]
    assert confident[-1] and results[-1].text == "Summary: unmatched question"
    assert 0.9 <= sum(confident[:-1]) / 100 < 1.0  # a few right answers are unsure
    await prov.aclose()


async def test_logprobs_on_the_wire_and_only_when_asked(fake: FakeServer) -> None:
    fake.set_oracle(make_items(10), MODELS)
    client = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    body: dict[str, Any] = {
        "model": "cheap",
        "messages": [{"role": "user", "content": question(1)}],
        "max_tokens": 50,
    }
    plain = await client.chat.completions.create(**body)
    assert plain.choices[0].logprobs is None
    reply = await client.chat.completions.create(**body, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and reply.usage is not None
    assert len(content) == reply.usage.completion_tokens
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    assert (
        b"".join(bytes(t.bytes or []) for t in content).decode() == plain.choices[0].message.content
    )
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.token in {t.token for t in entry.top_logprobs}
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        assert math.fsum(math.exp(t.logprob) for t in entry.top_logprobs) <= 1.0 + 1e-9
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        await client.chat.completions.create(**body, top_logprobs=2)
    await client.close()


async def test_provider_parses_logprobs_online_and_from_a_batch(bfake: FakeServer) -> None:
    items = make_items(30, hard_every=2)
    bfake.set_oracle(items, MODELS)
    prov = provider(bfake)
    requests = [request("cheap", question(i), params={"logprobs": True}) for i in range(30)]
    online = await complete_all(prov, requests)
    batch = await run_batch(prov, requests)
    for req, res in zip(requests, online, strict=True):
        assert res.token_logprobs is not None and len(res.token_logprobs) > 0
        assert batch[req.key].token_logprobs == res.token_logprobs
    without = await prov.complete(request("cheap", question(1)))
    assert without.token_logprobs is None
    await prov.aclose()


async def test_anthropic_returns_no_logprobs(fake: FakeServer) -> None:
    items = make_items(10)
    fake.set_oracle(items, MODELS)
    prov = provider(fake, "anthropic")
    res = await prov.complete(request("cheap", question(3), "anthropic"))
    assert res.token_logprobs is None
    assert verdict(items[3], res.text) in {"right", "wrong"}
    await prov.aclose()


# ---- JSON answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_json_requests_get_json_answers_as_is(fake: FakeServer, wire: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    items = [
        {"match": "[json]", "answer": '{"city": "Paris"}'},
        {"match": "[text]", "answer": "Paris"},
    ]
    fake.set_oracle(items)
    prov = provider(fake, wire)
    as_is, built = await complete_all(
        prov,
        [
            request("cheap", "[json] capital?", wire, json_schema=schema),
            request("cheap", "[text] capital?", wire, json_schema=schema),
        ],
    )
    assert as_is.text == '{"city": "Paris"}' and as_is.parsed == {"city": "Paris"}
    assert built.parsed is not None and set(built.parsed) == {"city"}
    assert built.parsed["city"] != "Paris"  # a non-JSON answer gives way to the schema's
    (plain,) = await complete_all(prov, [request("cheap", "[text] capital?", wire)])
    assert plain.text == "Paris"
    await prov.aclose()


# ---- control: endpoints, reset, stats ----------------------------------------------------------


def http(server: FakeServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_oracle_endpoints_and_reset(fake: FakeServer) -> None:
    prov = provider(fake, model="bad")
    spec = {"items": [{"match": "[q]", "answer": "right", "wrong": ["nope"]}], "models": {}}
    status, body = http(fake, "POST", "/_fake/oracle", spec)
    assert status == 200 and body["items"] == 1 and body["by_difficulty"] == {"easy": 1}
    assert (await prov.complete(request("bad", "[q] ?"))).text == "right"

    spec["models"] = {"bad": {"easy": 0.0}}
    assert http(fake, "POST", "/_fake/oracle", spec)[0] == 200
    assert (await prov.complete(request("bad", "[q] ?"))).text == "nope"
    assert http(fake, "GET", "/_fake/oracle")[1]["models"] == {"bad": {"easy": 0.0}}

    assert http(fake, "DELETE", "/_fake/oracle")[0] == 200
    assert http(fake, "GET", "/_fake/oracle")[1] == {"set": False}
    assert (await prov.complete(request("bad", "[q] ?"))).text == "Summary: [q] ?"

    fake.set_oracle(spec["items"], spec["models"])
    assert (await prov.complete(request("bad", "[q] ?"))).text == "nope"
    assert http(fake, "POST", "/_fake/reset", {})[0] == 200
    assert (await prov.complete(request("bad", "[q] ?"))).text == "Summary: [q] ?"
    assert fake.state.oracle is None

    for bad in (
        {"items": [{"match": "", "answer": "x"}]},
        {"items": [{"match": "a", "answer": "x", "colour": "red"}]},
        {"items": [], "models": {"m": {"easy": 1.5}}},
        {"items": "nope"},
        {"items": [], "extra": 1},
    ):
        status, body = http(fake, "POST", "/_fake/oracle", bad)
        assert status == 400 and body["error"], bad
    with pytest.raises(ValueError, match="accuracy"):
        fake.set_oracle([], {"m": {"hard": -0.1}})
    await prov.aclose()


async def test_stats_count_verdicts_of_paid_answers(bfake: FakeServer) -> None:
    items = make_items(40, hard_every=2)
    bfake.set_oracle(items, MODELS)
    prov = provider(bfake)
    requests = [request("cheap", question(i)) for i in range(40)]
    online = await complete_all(prov, requests)
    await prov.complete(request("cheap", "not a known question"))
    bfake.set_faults([{"status": 500}])
    with pytest.raises(TransientProviderError):
        await prov.complete(request("cheap", question(0)))  # failed: not paid, not counted
    right = sum(verdict(item, r.text) == "right" for item, r in zip(items, online, strict=True))
    stats = bfake.stats()
    assert stats["oracle"] == {"right": right, "wrong": 40 - right, "unmatched": 1}
    assert stats["oracle_by_model"]["cheap"] == stats["oracle"]
    assert stats["by_model"]["cheap"]["requests"] == 41

    await run_batch(prov, requests)  # batch rows count too
    stats = bfake.stats()
    assert stats["oracle"] == {"right": 2 * right, "wrong": 80 - 2 * right, "unmatched": 1}
    assert sum(stats["oracle"].values()) == stats["requests"] == 81
    log = bfake.log()
    assert [e["oracle"] for e in log if e["wire"] == "openai-batch"].count("right") == right
    bfake.reset()
    assert bfake.stats()["oracle"] == {"right": 0, "wrong": 0, "unmatched": 0}
    await prov.aclose()


def test_items_parse_with_defaults() -> None:
    oracle = parse_oracle({"items": [{"match": "m", "answer": "a"}]})
    assert oracle.items == [OracleItem("m", "a", (), "easy")]
    assert oracle.accuracy("anyone", "easy") == 1.0
