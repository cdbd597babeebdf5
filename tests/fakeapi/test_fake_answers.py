"""The fake server answers like a model on structured jobs (issue point 8): JSON values drawn
per row from the schema, a configurable share of invalid or wrong answers per model, and a
judge that says yes or no, so that a cascade with validators can be rehearsed."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import polars as pl
import pytest
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.config.routing_validators import DEFAULT_JUDGE_PROMPT
from batchopt.fakeapi import FakeServer
from batchopt.fakeapi.answers import json_answer
from batchopt.fakeapi.quality import INVALID, WRONG, Quality, parse_quality
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "topic": {"type": "string", "enum": ["damage", "delivery", "billing", "other"]},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "urgent": {"type": "boolean"},
    },
    "required": ["sentiment", "topic", "stars", "urgent"],
}
CHEAP, STRONG = "gpt-4o-mini", "gpt-4o"


def review(i: int) -> str:
    return f"Review {i}: the parcel came on day {i % 9} and the box looked {i % 4} times worse."


def chat(server: FakeServer, model: str, user: str, schema: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": user}]}
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "review", "schema": schema},
        }
    req = urllib.request.Request(
        server.openai_base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["choices"][0]["message"]["content"]


def judge_message(question: str, answer: str) -> str:
    return DEFAULT_JUDGE_PROMPT.replace("{prompt}", question).replace("{answer}", answer)


def valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def test_enum_answers_are_drawn_per_row_and_stable_across_servers(fake: FakeServer) -> None:
    first = [json.loads(chat(fake, CHEAP, review(i), SCHEMA)) for i in range(40)]
    assert all(valid(json.dumps(a)) for a in first)
    assert len({a["sentiment"] for a in first}) == 3 and len({a["topic"] for a in first}) == 4
    assert len({a["stars"] for a in first}) > 1 and len({a["urgent"] for a in first}) == 2
    with FakeServer() as other:  # another instance: the same answers, and the same again
        second = [json.loads(chat(other, CHEAP, review(i), SCHEMA)) for i in range(40)]
        assert json.loads(chat(other, CHEAP, review(3), SCHEMA)) == second[3]
    assert first == second
    # the row's "true" values do not depend on the model (no flaws set)
    assert json.loads(chat(fake, STRONG, review(7), SCHEMA)) == first[7]
    assert json_answer(SCHEMA, review(7)) == json.dumps(first[7], separators=(",", ":"))


def test_invalid_share_makes_that_share_of_one_models_answers_fail_the_schema(
    fake: FakeServer,
) -> None:
    fake.set_quality(invalid_share={CHEAP: 0.3})
    cheap = [chat(fake, CHEAP, review(i), SCHEMA) for i in range(200)]
    failing = sum(not valid(a) for a in cheap)
    assert 0.22 * 200 <= failing <= 0.38 * 200
    quality = Quality({CHEAP: 0.3})
    expected = [quality.flaw(CHEAP, review(i), structured=True) == INVALID for i in range(200)]
    assert [not valid(a) for a in cheap] == expected  # exactly the rows the share draws
    assert all(valid(chat(fake, STRONG, review(i), SCHEMA)) for i in range(50))  # others: 0
    fake.reset()
    assert all(valid(chat(fake, CHEAP, review(i), SCHEMA)) for i in range(50))  # reset: 0


def test_the_judge_says_yes_to_right_answers_and_no_to_deliberately_wrong_ones(
    fake: FakeServer,
) -> None:
    fake.set_quality(wrong_share={CHEAP: 0.4})
    quality = Quality(wrong_share={CHEAP: 0.4})
    seen = {WRONG: 0, None: 0}
    for i in range(60):
        answer = chat(fake, CHEAP, review(i), SCHEMA)
        truth = chat(fake, STRONG, review(i), SCHEMA)
        flaw = quality.flaw(CHEAP, review(i), structured=True)
        seen[flaw] += 1
        assert valid(answer)  # wrong, yet valid: only the judge can tell
        if flaw == WRONG:
            a, t = json.loads(answer), json.loads(truth)
            assert a["sentiment"] != t["sentiment"] and a["topic"] != t["topic"]
        else:
            assert answer == truth
        verdict = chat(fake, STRONG, judge_message(review(i), answer))
        assert verdict == ("no" if flaw == WRONG else "yes")
        assert chat(fake, STRONG, judge_message(review(i), truth)) == "yes"
    assert seen[WRONG] > 10 and seen[None] > 10


def test_the_judge_rejects_an_extra_share_and_the_oracle_wins_over_it(fake: FakeServer) -> None:
    fake.set_quality(judge_reject_share=0.5)
    said = [chat(fake, CHEAP, judge_message(review(i), "{}")) for i in range(100)]
    assert set(said) == {"yes", "no"} and 30 <= said.count("no") <= 70
    fake.set_oracle([{"match": "Review 1:", "answer": "no"}])
    assert chat(fake, CHEAP, judge_message(review(1), "{}")) == "no"
    assert chat(fake, CHEAP, "Review 1: no schema, no judge") == "no"


def test_quality_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        Quality({"m": 1.5})
    with pytest.raises(ValueError, match="more than 1"):
        Quality({"m": 0.6}, {"m": 0.6})
    with pytest.raises(ValueError, match="unknown keys"):
        parse_quality({"invalid": {}})
    assert Quality({"*": 0.2}).share({"*": 0.2}, "any-model") == 0.2


# ---- whole cascade runs against the fake --------------------------------------------------------


def _pipeline(tmp_path: Path, validators: list[dict[str, Any]], rows: int) -> Path:
    data = pipeline_dict(routing={"strategy": "cascade", "tiers": ["cheap", "strong"],
                                  "validators": validators})
    data["prompt"]["template"] = "{{ body }}"
    data["prompt"]["json_schema"] = SCHEMA
    for name, model in (("cheap", CHEAP), ("strong", STRONG)):
        data["profiles"][name] = {"provider": "openai", "model": model, "max_tokens": 200,
                                  "concurrency": 8, "timeout_s": 10}
    path = write_pipeline(tmp_path, data)
    tickets = [{"ticket_id": f"T{i:03d}", "subject": "Review", "body": review(i)}
               for i in range(rows)]
    pl.DataFrame(tickets).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _run(path: Path, fake: FakeServer, run_id: str) -> tuple[RunSummary, pl.DataFrame]:
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id=run_id), env=fake_env(fake))
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = pl.read_parquet(path.parent / "out" / "ledger" / "pipeline=tickets"
                             / f"run_id={run_id}" / "part.parquet")
    return summary, ledger


def test_a_cascade_escalates_exactly_the_answers_made_invalid(fake: FakeServer, tmp_path) -> None:
    fake.set_quality(invalid_share={CHEAP: 0.3})
    rows = 60
    summary, ledger = _run(_pipeline(tmp_path, [{"type": "json_schema"}], rows), fake, "inv")
    quality = Quality({CHEAP: 0.3})
    invalid = sorted(f"T{i:03d}" for i in range(rows)
                     if quality.flaw(CHEAP, review(i), structured=True) == INVALID)
    assert 8 <= len(invalid) <= 28
    up = ledger.filter(pl.col("escalated"))
    assert sorted(up["row_id"]) == invalid
    assert up["route_reason"].str.contains("json_schema").all()
    assert summary.escalated == len(invalid) and summary.failed_rows == 0


def test_a_cascade_with_a_judge_and_no_wrong_answers_escalates_nothing_and_saves(
    fake: FakeServer, tmp_path
) -> None:
    validators = [{"type": "json_schema"}, {"type": "judge", "tier": "cheap"}]
    summary, ledger = _run(_pipeline(tmp_path, validators, 20), fake, "judge0")
    assert summary.escalated == 0 and (ledger["tier"] == "cheap").all()
    assert summary.saving_usd > 0 and summary.cost_usd < summary.baseline_cost_usd


def test_a_cascade_with_a_judge_escalates_the_wrong_answers(fake: FakeServer, tmp_path) -> None:
    fake.set_quality(wrong_share={CHEAP: 0.25})
    rows = 40
    validators = [{"type": "json_schema"}, {"type": "judge", "tier": "cheap"}]
    summary, ledger = _run(_pipeline(tmp_path, validators, rows), fake, "judge1")
    quality = Quality(wrong_share={CHEAP: 0.25})
    wrong = sorted(f"T{i:03d}" for i in range(rows)
                   if quality.flaw(CHEAP, review(i), structured=True) == WRONG)
    assert wrong and sorted(ledger.filter(pl.col("escalated"))["row_id"]) == wrong
    assert ledger.filter(pl.col("escalated"))["route_reason"].str.contains("judge").all()
    assert summary.saving_usd > 0


def _http(server: FakeServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_quality_endpoint_sets_reads_and_drops_the_settings(fake: FakeServer) -> None:
    status, answer = _http(fake, "POST", "/_fake/quality", {"invalid_share": {CHEAP: 1.0}})
    assert status == 200 and answer["invalid_share"] == {CHEAP: 1.0}
    assert not valid(chat(fake, CHEAP, review(1), SCHEMA))
    assert _http(fake, "GET", "/_fake/quality")[1]["invalid_share"] == {CHEAP: 1.0}
    status, answer = _http(fake, "POST", "/_fake/quality", {"wrong_share": {CHEAP: 2}})
    assert status == 400 and "from 0 to 1" in answer["error"]
    assert _http(fake, "DELETE", "/_fake/quality")[0] == 200
    assert valid(chat(fake, CHEAP, review(1), SCHEMA))
