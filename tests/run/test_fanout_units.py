"""Fan-out, field by field (issue 20): what `group_results` makes of each group's final result,
what `ledger_facts` gives each member row of a group (the representative carries the call and
its money, a follower reuses it for nothing), the output table's columns and types, and the
summary's sums (`LedgerTotals`). Milliseconds: no run, no server."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from batchopt.dedup.crossrun import PastAnswer
from batchopt.records import Request, Result, Usage
from batchopt.run.fanout import LedgerTotals, group_results, ledger_facts, output_table

TOKENS = ["input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens"]
OTHER = [f"other_{c}" for c in TOKENS]


def _request(key: str, *, provider: str = "openai", model: str = "gpt-4o-mini",
             max_tokens: int = 100, estimated: int = 0, counter: str = "") -> Request:
    return Request(key=key, provider=provider, model=model, system="s", user=f"u {key}",
                   max_tokens=max_tokens, estimated_input_tokens=estimated,
                   token_counter=counter)


def _estimate(request: Request) -> float:
    """A stand-in price: 1 cent per max_tokens unit (only passed through)."""
    return request.max_tokens / 100


PAID_USAGE = Usage(input_tokens=1200, output_tokens=40, cached_input_tokens=1024,
                   cache_write_tokens=64)


def _groups() -> pl.DataFrame:
    requests = {
        "g_paid": _request("k_paid", provider="anthropic", model="claude-haiku", max_tokens=300,
                           estimated=1180, counter="exact:anthropic"),
        "g_cache": _request("k_cache", max_tokens=200, estimated=50, counter="estimate:chars"),
        "g_past": _request("k_past", max_tokens=100, estimated=60),
        "g_failed": _request("k_failed", max_tokens=400, estimated=30),
        "g_unbilled": _request("k_unbilled", max_tokens=500),
        "g_skipped": _request("k_skipped", max_tokens=600),
    }
    results = {
        # bought by this very run (run-7) before a cut-off, read back from the cache as its
        # own spend (`rounds` sets from_cache False): a paid call, no cache hit
        "k_paid": Result(key="k_paid", text='{"category": "refund"}', usage=PAID_USAGE,
                         request_id="req_1", latency_ms=812.5, attempts=2,
                         parsed={"category": "refund"}, mode="batch", batch_id="batch_7",
                         retry_reason="expired", paid_run_id="run-7"),
        # a cache hit keeps the usage, latency and batch of the call that bought it
        "k_cache": Result(key="k_cache", text="plain answer", usage=Usage(90, 12, 0, 0),
                          request_id="req_0", latency_ms=300.0, attempts=0, from_cache=True,
                          mode="batch", batch_id="batch_0", paid_run_id="run-monday",
                          retry_reason="expired"),
        "k_past": Result(key="k_past", text="reused", usage=Usage(70, 9), attempts=0,
                         latency_ms=200.0, from_cache=True, paid_run_id="run-paid",
                         parsed={}),
        # a failure the provider billed: one prompt token read
        "k_failed": Result(key="k_failed", text=None, usage=Usage(1, 0), status="failed",
                           error="HTTP 500", request_id="req_f", latency_ms=50.0, attempts=3),
        # a failure with no prompt tokens billed (output tokens alone do not make a bill)
        "k_unbilled": Result(key="k_unbilled", text="partial", usage=Usage(0, 7),
                             status="failed", error="timeout", attempts=4, latency_ms=9.0),
        "k_skipped": Result(key="k_skipped", text=None, status="skipped", attempts=0,
                            error="empty input"),
    }
    past = {"k_past": PastAnswer(row_id="R-old", run_id="run-last-week", request_key="k_x",
                                 similarity=0.93)}
    routes = {"g_paid": ("strong", "long; escalated to strong: judge said no"),
              "g_cache": ("cheap", "short")}
    others = {"g_paid": {"other_input_tokens": 500, "other_cached_input_tokens": 256,
                         "other_cache_write_tokens": 32, "other_output_tokens": 20,
                         "unconfirmed_usd": 0.125}}
    return group_results(requests, results, _estimate, past, routes,
                         tried_first={"g_paid": 0.0375}, escalated={"g_paid"},
                         overflow={"g_paid": "truncated", "g_skipped": "skipped"},
                         others=others)


def _by_group(frame: pl.DataFrame) -> dict[str, dict]:
    return {row["group_id"]: row for row in frame.to_dicts()}


def test_group_results_paid_group_carries_its_call_and_its_money():
    g = _by_group(_groups())["g_paid"]
    assert g == {
        "group_id": "g_paid", "tier": "strong",
        "route_reason": "long; escalated to strong: judge said no",
        "provider": "anthropic", "model": "claude-haiku", "escalated": True,
        "earlier_attempts_usd": 0.0375,
        "answer": '{"category": "refund"}', "parsed_json": '{"category": "refund"}',
        "group_mode": "batch", "status": "ok", "error": None, "request_id": "req_1",
        "batch_id": "batch_7", "retry_reason": "expired", "latency_ms": 812.5, "attempts": 2,
        "input_tokens": 1200, "output_tokens": 40, "cached_input_tokens": 1024,
        "cache_write_tokens": 64,
        "baseline_input_tokens": 1200, "baseline_output_tokens": 40,
        "baseline_latency_ms": 812.5, "estimated_cost_usd": 3.0,
        "estimated_input_tokens": 1180, "token_counter": "exact:anthropic",
        "cached_from_run": None,  # not a cache hit: no earlier run named
        "past_row_id": None, "past_similarity": None, "overflow": "truncated",
        "other_input_tokens": 500, "other_cached_input_tokens": 256,
        "other_cache_write_tokens": 32, "other_output_tokens": 20, "unconfirmed_usd": 0.125,
    }


def test_group_results_cache_hit_costs_nothing_but_keeps_the_baseline():
    g = _by_group(_groups())["g_cache"]
    # nothing billed this run: no usage, latency, batch, retry or estimate; the mode says cache
    assert g["group_mode"] == "cache" and g["status"] == "ok"
    assert [g[c] for c in TOKENS] == [0, 0, 0, 0]
    assert (g["latency_ms"], g["batch_id"], g["retry_reason"]) == (0.0, None, None)
    assert g["estimated_cost_usd"] == 0.0
    # the naive way would have paid the call again: the cached call's usage and latency
    assert (g["baseline_input_tokens"], g["baseline_output_tokens"]) == (90, 12)
    assert g["baseline_latency_ms"] == 300.0
    assert g["cached_from_run"] == "run-monday"
    assert (g["past_row_id"], g["past_similarity"]) == (None, None)
    assert (g["answer"], g["parsed_json"]) == ("plain answer", None)
    assert (g["request_id"], g["attempts"]) == ("req_0", 0)
    assert (g["tier"], g["route_reason"], g["escalated"]) == ("cheap", "short", False)
    assert (g["estimated_input_tokens"], g["token_counter"]) == (50, "estimate:chars")
    assert g["earlier_attempts_usd"] == 0.0 and g["unconfirmed_usd"] == 0.0
    assert [g[c] for c in OTHER] == [0, 0, 0, 0] and g["overflow"] is None


def test_group_results_cross_run_reuse_names_the_earlier_run_and_row():
    g = _by_group(_groups())["g_past"]
    # the PastAnswer names the run and row reused (not the run that first paid for the cache)
    assert (g["cached_from_run"], g["past_row_id"], g["past_similarity"]) == (
        "run-last-week", "R-old", 0.93)
    assert g["group_mode"] == "cache" and g["answer"] == "reused"
    assert g["parsed_json"] is None  # an empty parsed object is no JSON output
    assert [g[c] for c in TOKENS] == [0, 0, 0, 0]
    assert (g["tier"], g["route_reason"]) == (None, None)
    assert g["token_counter"] is None  # no counter named: null, not ""


def test_group_results_failed_and_skipped_groups():
    groups = _by_group(_groups())
    failed = groups["g_failed"]
    # billed (a prompt token read): its usage is carried, priced like any call
    assert failed["group_mode"] == "failed" and failed["status"] == "failed"
    assert [failed[c] for c in TOKENS] == [1, 0, 0, 0]
    assert (failed["answer"], failed["parsed_json"], failed["error"]) == (None, None, "HTTP 500")
    assert (failed["latency_ms"], failed["attempts"], failed["request_id"]) == (50.0, 3, "req_f")
    assert failed["estimated_cost_usd"] == 4.0 and failed["cached_from_run"] is None
    unbilled = groups["g_unbilled"]
    # no prompt token billed: nothing carried, though the result reports output tokens
    assert unbilled["group_mode"] == "failed"
    assert [unbilled[c] for c in TOKENS] == [0, 0, 0, 0]
    assert unbilled["answer"] is None  # a failed result's text is no answer
    assert unbilled["baseline_output_tokens"] == 7 and unbilled["attempts"] == 4
    skipped = groups["g_skipped"]
    assert (skipped["group_mode"], skipped["status"], skipped["error"]) == (
        "skipped", "skipped", "empty input")
    assert skipped["overflow"] == "skipped" and skipped["attempts"] == 0


def test_group_results_column_types_hold_when_every_value_is_null():
    requests = {"g": _request("k")}
    results = {"k": Result(key="k", text=None, status="failed", attempts=1)}
    frame = group_results(requests, results, lambda r: 0.0)
    assert dict(frame.schema) == {
        "group_id": pl.String, "tier": pl.String, "route_reason": pl.String,
        "provider": pl.String, "model": pl.String, "escalated": pl.Boolean,
        "earlier_attempts_usd": pl.Float64, "answer": pl.String, "parsed_json": pl.String,
        "group_mode": pl.String, "status": pl.String, "error": pl.String,
        "request_id": pl.String, "batch_id": pl.String, "retry_reason": pl.String,
        "latency_ms": pl.Float64, "attempts": pl.Int64,
        "input_tokens": pl.Int64, "output_tokens": pl.Int64, "cached_input_tokens": pl.Int64,
        "cache_write_tokens": pl.Int64, "baseline_input_tokens": pl.Int64,
        "baseline_output_tokens": pl.Int64, "baseline_latency_ms": pl.Float64,
        "estimated_cost_usd": pl.Float64, "estimated_input_tokens": pl.Int64,
        "token_counter": pl.String, "cached_from_run": pl.String, "past_row_id": pl.String,
        "past_similarity": pl.Float64, "overflow": pl.String,
        **{c: pl.Int64 for c in OTHER}, "unconfirmed_usd": pl.Float64,
    }
    row = frame.row(0, named=True)
    assert (row["escalated"], row["earlier_attempts_usd"], row["unconfirmed_usd"]) == (
        False, 0.0, 0.0)
    assert (row["tier"], row["overflow"], row["cached_from_run"]) == (None, None, None)


# ---- ledger_facts: one fact row per input row -------------------------------------------------

CONSTANTS = {"run_id": "run-7", "pipeline": "tickets",
             "run_at": datetime(2026, 12, 7, tzinfo=UTC), "row_limit": None,
             "config_hash": "cfg1"}


def _rows(**extra: list) -> pl.DataFrame:
    """Members of g_paid (its representative 11, an exact and a semantic follower), of g_past
    (its representative answered by an earlier run's row), of g_failed, of g_past again (a
    follower) and of the skipped group (two empty inputs: one request, one follower)."""
    return pl.DataFrame({
        "ticket_id": [11, 12, 13, 21, 31, 32, 41, 22, 42],
        "group_id": ["g_paid", "g_paid", "g_paid", "g_past", "g_failed", "g_failed",
                     "g_skipped", "g_past", "g_skipped"],
        "representative_id": ["11", "11", "11", "21", "31", "31", "41", "21", "41"],
        "dedup": ["none", "exact", "semantic", "none", "none", "exact", "none", "exact",
                  "exact"],
        "similarity": [None, 1.0, 0.97, None, None, 1.0, None, 1.0, 1.0],
        "veto_guard": [None, None, None, None, None, None, "amounts", None, None],
        "veto_id": [None, None, None, None, None, None, "31", None, None],
        **extra,
    })


def _facts(rows: pl.DataFrame, groups: pl.DataFrame | None = None) -> pl.DataFrame:
    if groups is None:
        groups = _groups()
    groups = groups.with_columns(baseline_output_tokens=pl.col("output_tokens") + 5)
    return ledger_facts(rows, groups, "ticket_id", CONSTANTS)


def _facts_by_row(frame: pl.DataFrame) -> dict[str, dict]:
    return {row["row_id"]: row for row in frame.to_dicts()}


def test_ledger_facts_representative_pays_and_followers_reuse_for_nothing():
    facts = _facts_by_row(_facts(_rows(compression_tokens_saved=[100, 100, 80, 0, 5, 5, 0, 0, 0])))
    rep, exact, semantic = facts["11"], facts["12"], facts["13"]
    assert {k: rep[k] for k in (
        "group_id", "representative_id", "dedup", "similarity", "cached_from_run", "mode",
        "escalated", "earlier_attempts_usd", *TOKENS, *OTHER, "unconfirmed_usd", "latency_ms",
        "attempts", "request_id", "estimated_cost_usd", "batch_id", "retry_reason",
        "compression_tokens_saved", "baseline_input_tokens", "baseline_output_tokens",
        "estimated_input_tokens", "status", "tier", "provider", "model")} == {
        "group_id": "g_paid", "representative_id": "11", "dedup": "none", "similarity": None,
        "cached_from_run": None, "mode": "batch", "escalated": True,
        "earlier_attempts_usd": 0.0375,
        "input_tokens": 1200, "cached_input_tokens": 1024, "cache_write_tokens": 64,
        "output_tokens": 40, "other_input_tokens": 500, "other_cached_input_tokens": 256,
        "other_cache_write_tokens": 32, "other_output_tokens": 20, "unconfirmed_usd": 0.125,
        "latency_ms": 812.5, "attempts": 2, "request_id": "req_1", "estimated_cost_usd": 3.0,
        "batch_id": "batch_7", "retry_reason": "expired", "compression_tokens_saved": 100,
        "baseline_input_tokens": 1300, "baseline_output_tokens": 45,
        "estimated_input_tokens": 1180, "status": "ok", "tier": "strong",
        "provider": "anthropic", "model": "claude-haiku",
    }
    for follower, dedup, similarity, saved in ((exact, "exact", 1.0, 100),
                                               (semantic, "semantic", 0.97, 80)):
        assert {k: follower[k] for k in (
            "representative_id", "dedup", "similarity", "cached_from_run", "mode", "escalated",
            "earlier_attempts_usd", *TOKENS, *OTHER, "unconfirmed_usd", "latency_ms",
            "attempts", "request_id", "estimated_cost_usd", "batch_id", "retry_reason",
            "compression_tokens_saved", "baseline_input_tokens", "baseline_output_tokens",
            "estimated_input_tokens", "status", "tier")} == {
            "representative_id": "11", "dedup": dedup, "similarity": similarity,
            "cached_from_run": None, "mode": "dedup", "escalated": False,
            "earlier_attempts_usd": 0.0, **dict.fromkeys(TOKENS + OTHER, 0),
            "unconfirmed_usd": 0.0, "latency_ms": 0.0, "attempts": 0, "request_id": None,
            "estimated_cost_usd": 0.0, "batch_id": None, "retry_reason": None,
            "compression_tokens_saved": 0,
            # the naive way would have sent the follower's own uncompressed prompt
            "baseline_input_tokens": 1200 + saved, "baseline_output_tokens": 45,
            # answered by its group's request: that request's offline count
            "estimated_input_tokens": 1180, "status": "ok", "tier": "strong",
        }
    # the run's constants on every row
    for row in facts.values():
        assert {k: row[k] for k in CONSTANTS} == CONSTANTS


def test_ledger_facts_cross_run_reuse_and_failures():
    facts = _facts_by_row(_facts(_rows()))
    past = facts["21"]
    # a representative answered by an earlier run's near-duplicate names that row and run
    assert (past["representative_id"], past["similarity"], past["cached_from_run"]) == (
        "R-old", 0.93, "run-last-week")
    assert past["mode"] == "cache" and past["input_tokens"] == 0
    assert past["baseline_input_tokens"] == 70  # no compression column: the call's usage
    assert past["compression_tokens_saved"] == 0
    # a failed group's follower is failed too (not "dedup"), and pays nothing
    assert (facts["31"]["mode"], facts["31"]["input_tokens"], facts["31"]["attempts"]) == (
        "failed", 1, 3)
    assert (facts["32"]["mode"], facts["32"]["input_tokens"], facts["32"]["attempts"]) == (
        "failed", 0, 0)
    assert facts["32"]["representative_id"] == "31" and facts["32"]["similarity"] == 1.0
    assert facts["32"]["error"] == "HTTP 500" and facts["32"]["status"] == "failed"
    skipped = facts["41"]
    assert (skipped["mode"], skipped["veto_guard"], skipped["veto_id"]) == (
        "skipped", "amounts", "31")
    # a follower of a cache hit or of an earlier run's answer is a dedup row, no cache hit
    follower = facts["22"]
    assert (follower["mode"], follower["cached_from_run"], follower["representative_id"]) == (
        "dedup", None, "21")
    assert follower["similarity"] == 1.0 and follower["baseline_input_tokens"] == 70
    # a follower of an empty input is skipped too: not sent, not a dedup saving
    assert (facts["42"]["mode"], facts["42"]["status"], facts["42"]["attempts"]) == (
        "skipped", "skipped", 0)
    assert list(facts) == ["11", "12", "13", "21", "31", "32", "41", "22", "42"]  # input order


def test_ledger_facts_baseline_prompt_is_the_rows_own_when_counted():
    rows = _rows(baseline_prompt_tokens=[1500, 1500, 1490, 75, 33, 33, 0, 75, 0],
                 compression_tokens_saved=[100, 100, 80, 0, 5, 5, 0, 0, 0])
    facts = _facts_by_row(_facts(rows))
    assert [facts[r]["baseline_input_tokens"] for r in facts] == [
        1500, 1500, 1490, 75, 33, 33, 0, 75, 0]
    assert [facts[r]["compression_tokens_saved"] for r in facts] == [
        100, 0, 0, 0, 5, 0, 0, 0, 0]


def test_ledger_facts_types_and_optional_columns():
    rows = _rows(compression_tokens_saved=pl.Series([1, None, 2, 3, 4, 5, 6, 7, 8],
                                                       dtype=pl.Int32))
    groups = _groups().drop([*OTHER, "unconfirmed_usd"])
    facts = _facts(rows, groups)
    for c in (*TOKENS, "attempts", "compression_tokens_saved", "baseline_input_tokens",
              "baseline_output_tokens", "estimated_input_tokens"):
        assert facts.schema[c] == pl.Int64, c
    for c in ("latency_ms", "earlier_attempts_usd", "estimated_cost_usd"):
        assert facts.schema[c] == pl.Float64, c
    assert facts.schema["row_id"] == pl.String and facts["row_id"][0] == "11"
    assert facts.schema["escalated"] == pl.Boolean
    # other calls' columns only where the groups have them
    assert not set(OTHER) & set(facts.columns) and "unconfirmed_usd" not in facts.columns
    # a null saving counts as none (the follower's baseline is the call's usage alone)
    assert facts["compression_tokens_saved"].to_list() == [1, 0, 0, 3, 4, 0, 6, 0, 0]
    assert facts["baseline_input_tokens"].to_list()[:3] == [1201, 1200, 1202]


def test_ledger_facts_row_whose_group_is_missing_counts_no_prompt():
    rows = _rows().head(1).with_columns(group_id=pl.lit("g_unknown"))
    facts = _facts(rows)
    assert facts["estimated_input_tokens"].to_list() == [0]


# ---- output_table -------------------------------------------------------------------------------


def test_output_table_answer_status_and_typed_properties():
    groups = _groups()
    rows = _rows().select("ticket_id", "group_id", pl.lit("x").alias("subject"))
    schema = {"type": "object", "properties": {"category": {"type": "string"},
                                               'odd name': {"type": "integer"}}}
    out = output_table(rows, groups, ["ticket_id", "subject"], "summary", schema,
                       status_column="summary_status")
    assert out.columns == ["ticket_id", "subject", "summary", "summary_status",
                           "summary_category", 'summary_odd name']
    assert out["summary"].to_list() == ['{"category": "refund"}'] * 3 + [
        "reused", None, None, None, "reused", None]
    assert out["summary_status"].to_list() == ["ok"] * 4 + [
        "failed", "failed", "skipped", "ok", "skipped"]
    assert out["summary_category"].to_list() == ["refund"] * 3 + [None] * 6
    assert out.schema['summary_odd name'] == pl.Int64
    # a property name that is no identifier is looked up by its name
    odd = pl.DataFrame({"group_id": ["g"], "answer": ["a"],
                        "parsed_json": ['{"odd name": 7, "category": "c"}'],
                        "status": ["ok"]})
    one = output_table(pl.DataFrame({"id": [1], "group_id": ["g"]}), odd, ["id"], "summary",
                       schema)
    assert one.row(0) == (1, "a", "c", 7)


def test_output_table_finds_properties_whatever_their_name():
    """A property named in any language, or with quotes in its name, gets its value: the
    answer's parsed JSON (ASCII-escaped, as `group_results` writes it) is looked up by name."""
    names = {"catégorie": "string", "カテゴリ": "string", 'say "hi"': "integer",
             "it's": "boolean", "a b": "number"}
    parsed = {"catégorie": "remboursement", "カテゴリ": "返金", 'say "hi"': 3, "it's": True,
              "a b": 2.5}
    groups = group_results(
        {"g": _request("k")}, {"k": Result(key="k", text="t", usage=Usage(5, 5), parsed=parsed)},
        _estimate)
    schema = {"type": "object", "properties": {n: {"type": t} for n, t in names.items()}}
    out = output_table(pl.DataFrame({"id": [1], "group_id": ["g"]}), groups, ["id"], "out",
                       schema)
    assert out.row(0, named=True) == {"id": 1, "out": "t", **{f"out_{n}": v
                                                              for n, v in parsed.items()}}


def test_output_table_keeps_every_input_row_in_order():
    """One output row per input row, in the input's order, even a row whose group has no
    result row (its answer is null)."""
    rows = pl.DataFrame({"id": [3, 1, 2, 4], "group_id": ["g_past", "g_gone", "g_paid",
                                                         "g_past"]})
    out = output_table(rows, _groups(), ["id"], "answer", None, status_column="st")
    assert out.to_dict(as_series=False) == {
        "id": [3, 1, 2, 4], "answer": ["reused", None, '{"category": "refund"}', "reused"],
        "st": ["ok", None, "ok", "ok"]}


@pytest.mark.parametrize("schema", [None, {}, {"type": "array", "properties": {"a": {}}},
                                    {"type": "object"}])
def test_output_table_without_object_properties_has_the_answer_only(schema):
    rows = _rows().select("ticket_id", "group_id")
    out = output_table(rows, _groups(), ["ticket_id"], "answer", schema)
    assert out.columns == ["ticket_id", "answer"]
    assert out.height == 9 and out["answer"][3] == "reused"


# ---- LedgerTotals -------------------------------------------------------------------------------


def _ledger(**columns: list) -> pl.DataFrame:
    return pl.DataFrame(columns)


def test_ledger_totals_add_up_chunk_by_chunk():
    first = _ledger(
        status=["ok", "ok", "failed", "ok", "ok"],
        dedup=["none", "exact", "none", "semantic", "none"],
        mode=["online", "dedup", "failed", "dedup", "cache"],
        tier=["cheap", "cheap", "strong", "cheap", "cheap"],
        escalated=[True, False, False, False, False], input_tokens=[100, 0, 7, 0, 0],
        cached_input_tokens=[64, 0, 0, 0, 0], output_tokens=[20, 0, 0, 0, 0],
        cost_usd=[0.25, 0.0, 0.125, 0.0, 0.0], baseline_cost_usd=[0.5, 0.5, 0.125, 0.5, 0.5])
    second = _ledger(
        status=["ok", "unverified: budget"], dedup=["none", "none"], mode=["cache", "batch"],
        tier=["strong", "strong"], escalated=[False, True], input_tokens=[0, 40],
        cached_input_tokens=[0, 8], output_tokens=[0, 3], cost_usd=[0.0, 0.0625],
        baseline_cost_usd=[0.75, 1.0])
    totals = LedgerTotals()
    assert (totals.rows, totals.cost_usd, dict(totals.paid_by_tier)) == (0, 0.0, {})
    totals.add(first)
    totals.add(second)
    assert (totals.rows, totals.failed, totals.exact, totals.semantic, totals.cache_hits) == (
        7, 1, 1, 1, 2)
    assert dict(totals.paid_by_tier) == {"cheap": 2, "strong": 3}
    assert totals.escalated == 2
    assert (totals.input_tokens, totals.cached_input_tokens, totals.output_tokens) == (
        147, 72, 23)
    assert totals.cost_usd == 0.4375 and totals.baseline_cost_usd == 3.875
    for name in ("rows", "failed", "exact", "semantic", "cache_hits", "escalated",
                 "input_tokens", "cached_input_tokens", "output_tokens"):
        assert type(getattr(totals, name)) is int, name
    assert type(totals.cost_usd) is float and type(totals.baseline_cost_usd) is float


def test_ledger_totals_start_at_zero():
    totals = LedgerTotals()
    assert (totals.rows, totals.failed, totals.exact, totals.semantic, totals.cache_hits,
            totals.escalated, totals.input_tokens, totals.cached_input_tokens,
            totals.output_tokens, totals.cost_usd, totals.baseline_cost_usd) == (
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0)
    assert LedgerTotals().paid_by_tier is not totals.paid_by_tier  # not shared
