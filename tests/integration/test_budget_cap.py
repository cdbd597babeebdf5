"""`budget.max_usd` is a hard cap on what one run id spends, across all its invocations: each send
first reserves its most (prompt tokens plus max_tokens at the tier's price), so what the ledger
and the provider's bill say never passes the cap; a cascade the budget stops keeps the answers
already paid for ("unverified: budget"), in the outputs and the ledger, and a later invocation
does not replace them with null."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.errors import EXIT_BUDGET, BudgetExceededError
from batchopt.ledger.pricing import PriceTable
from batchopt.records import Usage
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline
from batchopt.tokens import count_tokens

SHORT = "Where is my order?"
LONG = ("My order arrived with the wrong colour, the box was damaged, the invoice shows the "
        "wrong address and the tracking page still says it is in transit, what now?")
# These tests are about the in-flight cap: no escalation is expected up front (the pre-send
# check counts the plan's escalations, 20% by default, and would refuse the runs outright).
CASCADE = {"strategy": "cascade", "tiers": ["cheap", "strong"],
           "validators": [{"type": "finish_reason"}, {"type": "refusal"}],
           "assume_escalation": 0.0}
PRICES = PriceTable.load()
CHEAP_MAX, STRONG_MAX = 16, 64


def _pipeline(tmp_path: Path, max_usd: float, n_short: int = 6, n_long: int = 4,
              concurrency: int = 2, routing: dict | None = None, **extra: object) -> Path:
    data = pipeline_dict(routing=routing or CASCADE, budget={"max_usd": max_usd}, **extra)
    data["profiles"]["cheap"] = {"provider": "openai", "model": "gpt-4o-mini",
                                 "max_tokens": CHEAP_MAX, "concurrency": concurrency,
                                 "timeout_s": 10}
    data["profiles"]["strong"] = {"provider": "openai", "model": "gpt-4o",
                                  "max_tokens": STRONG_MAX, "concurrency": concurrency,
                                  "timeout_s": 10}
    path = write_pipeline(tmp_path, data)
    bodies = [f"{SHORT} #{100 + i}" for i in range(n_short)]
    bodies += [f"{LONG} #{200 + i}" for i in range(n_long)]
    rows = [{"ticket_id": f"T{i:02d}", "subject": "Order", "body": body}
            for i, body in enumerate(bodies)]
    pl.DataFrame(rows).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _run(path: Path, fake, run_id: str):
    env = fake_env(fake, "sk-test-budget-01", "sk-ant-test-budget-02")
    return run_pipeline(load_pipeline(path), RunOptions(run_id=run_id), env=env)


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def _billed(fake) -> float:
    """What the fake server billed, at its own prices."""
    return fake.bill()["total_usd"]


def _most(model: str, max_tokens: int, body: str) -> float:
    """A generous bound on one request's most: its prompt (system + template, a few tokens of
    chat framing) and max_tokens of output."""
    prompt = count_tokens("Summarise the ticket in one sentence.", model) + count_tokens(
        f"Subject: Order\n\n{body}", model) + 12
    return PRICES.cost(PRICES.price("openai", model), Usage(prompt, max_tokens))


def _first_round(n_short: int, n_long: int) -> float:
    return (n_short * _most("gpt-4o-mini", CHEAP_MAX, f"{SHORT} #100")
            + n_long * _most("gpt-4o-mini", CHEAP_MAX, f"{LONG} #200"))


def test_one_run_id_invoked_again_and_again_never_passes_the_cap(fake, tmp_path):
    # Room for the cheap round and about one and a half strong escalations.
    cap = _first_round(6, 4) + 1.5 * _most("gpt-4o", STRONG_MAX, f"{LONG} #200")
    path = _pipeline(tmp_path, cap)
    first = _run(path, fake, "again")
    assert isinstance(first, RunSummary) and first.exit_code == EXIT_BUDGET
    sent = len(fake.log())
    strong = sum(e["model"] == "gpt-4o" for e in fake.log())
    assert 1 <= strong < 4  # some escalations fit, not all
    assert _ledger(tmp_path, "again")["cost_usd"].sum() <= cap
    assert _billed(fake) <= cap
    for _ in range(3):  # later invocations of the same run id: the cap is spent, nothing goes out
        again = _run(path, fake, "again")
        assert isinstance(again, RunSummary) and again.exit_code == EXIT_BUDGET
        assert len(fake.log()) == sent
        ledger = _ledger(tmp_path, "again")
        assert ledger["cost_usd"].sum() <= cap
        assert ledger["cost_usd"].sum() == pytest.approx(first.cost_usd)
        assert _billed(fake) <= cap
        outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
        assert outputs["summary"].null_count() == 0


def test_a_later_invocation_whose_first_round_would_pass_the_cap_refuses_it(fake, tmp_path):
    cap = _first_round(6, 4) + 0.5 * _most("gpt-4o", STRONG_MAX, f"{LONG} #200")
    path = _pipeline(tmp_path, cap)
    assert _run(path, fake, "grow").exit_code == EXIT_BUDGET
    sent = len(fake.log())
    # more rows, same run id: what this run already paid counts, the new rows do not fit
    more = [{"ticket_id": f"N{i:02d}", "subject": "Order", "body": f"{SHORT} #{300 + i}"}
            for i in range(80)]
    rows = pl.read_parquet(tmp_path / "data" / "tickets.parquet")
    pl.concat([rows, pl.DataFrame(more)]).write_parquet(tmp_path / "data" / "tickets.parquet")
    with pytest.raises(BudgetExceededError, match="already spent by earlier invocations"):
        _run(path, fake, "grow")
    assert len(fake.log()) == sent and _billed(fake) <= cap


def test_eight_requests_in_flight_never_pass_the_cap(fake, tmp_path):
    fake.latency_ms = 30  # answers take a while: the reservations are what holds sends back
    strong = _most("gpt-4o", STRONG_MAX, f"{LONG} #200")
    cap = _first_round(0, 24) + 5.5 * strong
    path = _pipeline(tmp_path, cap, n_short=0, n_long=24, concurrency=8)
    summary = _run(path, fake, "wide")
    assert isinstance(summary, RunSummary) and summary.exit_code == EXIT_BUDGET
    sent_strong = sum(e["model"] == "gpt-4o" for e in fake.log())
    assert 1 <= sent_strong < 24
    assert _billed(fake) <= cap
    assert _ledger(tmp_path, "wide")["cost_usd"].sum() <= cap


def test_a_cascade_stopped_by_the_budget_keeps_its_first_tier_answers(fake, tmp_path):
    cap = _first_round(6, 4) + 0.0001  # the cheap round fits, no escalation does
    path = _pipeline(tmp_path, cap)
    summary = _run(path, fake, "keep")
    assert isinstance(summary, RunSummary) and summary.exit_code == EXIT_BUDGET
    assert all(e["model"] == "gpt-4o-mini" for e in fake.log()) and len(fake.log()) == 10
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert outputs["summary"].null_count() == 0  # every row was paid for: none is null
    long_rows = outputs["body"].str.starts_with(LONG)
    assert (outputs.filter(long_rows)["summary_status"] == "unverified: budget").all()
    assert (outputs.filter(~long_rows)["summary_status"] == "ok").all()
    ledger = _ledger(tmp_path, "keep")
    unverified = ledger.filter(pl.col("status") == "unverified: budget")
    assert sorted(unverified["row_id"]) == [f"T{i:02d}" for i in range(6, 10)]
    assert (unverified["model"] == "gpt-4o-mini").all() and (unverified["cost_usd"] > 0).all()
    assert summary.failed_rows == 0
    before = outputs

    again = _run(path, fake, "keep")  # nothing more is sent, nothing written turns null
    assert isinstance(again, RunSummary) and again.exit_code == EXIT_BUDGET
    assert len(fake.log()) == 10
    after = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert after["summary"].to_list() == before["summary"].to_list()
    assert after["summary_status"].to_list() == before["summary_status"].to_list()
    assert _ledger(tmp_path, "keep")["cost_usd"].sum() <= cap


def test_a_budget_stop_leaves_the_baseline_of_every_paid_row(fake, tmp_path):
    cap = _first_round(6, 4) + 0.0001
    summary = _run(_pipeline(tmp_path, cap), fake, "base")
    assert isinstance(summary, RunSummary) and summary.exit_code == EXIT_BUDGET
    assert summary.baseline_cost_usd > summary.cost_usd > 0  # gpt-4o baseline, paid on mini
    assert summary.saving_usd > 0
    ledger = _ledger(tmp_path, "base")
    assert (ledger["baseline_cost_usd"] > 0).all()


def test_batch_mode_submits_only_what_the_budget_can_hold(fake, tmp_path):
    fake.batch_seconds = 0.0
    discount = PRICES.price("openai", "gpt-4o-mini").batch_discount
    cap = _first_round(6, 4) * (1 - discount) + 0.0001  # the cheap batch fits, no escalation
    path = _pipeline(tmp_path, cap, execution={"mode": "batch", "poll_seconds": 0.05})
    summary = _run(path, fake, "bat")
    assert isinstance(summary, RunSummary) and summary.exit_code == EXIT_BUDGET
    assert fake.stats()["batches_created"] == 1  # the strong tier's batch was never submitted
    ledger = _ledger(tmp_path, "bat")
    assert ledger["cost_usd"].sum() <= cap
    assert (ledger.filter(pl.col("row_id").is_in([f"T{i:02d}" for i in range(6, 10)]))["status"]
            == "unverified: budget").all()
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert outputs["summary"].null_count() == 0


def test_a_judge_call_the_budget_cannot_pay_for_leaves_the_answer_unverified(fake, tmp_path):
    routing = {"strategy": "cascade", "tiers": ["cheap", "strong"],
               "validators": [{"type": "refusal"}, {"type": "judge", "tier": "strong"}],
               "assume_escalation": 0.0}
    cap = 0.00005  # not one judge call (gpt-4o, 100+ prompt tokens and max_tokens)
    # The pre-send check counts the judge calls (as `plan` does) and would refuse the run; the
    # in-flight stop is reached when the cheap answers are in the response cache (paid by an
    # earlier run without the judge; test_plan_judge holds the refusal), so the pre-send check
    # has nothing to price.
    path = _pipeline(tmp_path, 1.0, routing={**routing, "validators": [{"type": "refusal"}]})
    first = _run(path, fake, "cheap")
    assert isinstance(first, RunSummary) and first.exit_code == 0
    path = _pipeline(tmp_path, cap, routing=routing)
    summary = _run(path, fake, "judge")
    assert isinstance(summary, RunSummary) and summary.exit_code == EXIT_BUDGET
    assert all(e["model"] == "gpt-4o-mini" for e in fake.log())
    ledger = _ledger(tmp_path, "judge")
    assert (ledger["status"] == "unverified: budget").all()
    assert ledger["cost_usd"].sum() <= cap
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert outputs["summary"].null_count() == 0
    assert (outputs["summary_status"] == "unverified: budget").all()


def test_a_paid_answer_its_checks_rejected_keeps_its_text_when_the_budget_stops(fake, tmp_path):
    """A JSON cascade: gpt-4o-mini's invalid answers would go up to gpt-4o, but the budget holds
    only the cheap round. Those answers were paid for: their text stays in the outputs, their
    status says failed, and no row the run paid for is null."""
    schema = {"type": "object", "properties": {"topic": {"type": "string",
                                                          "enum": ["order", "refund"]}},
              "required": ["topic"], "additionalProperties": False}
    routing = {**CASCADE, "validators": [{"type": "json_schema"}]}
    cap = _first_round(6, 4) + 0.0001
    path = _pipeline(tmp_path, cap, routing=routing,
                     prompt={**pipeline_dict()["prompt"], "json_schema": schema})
    fake.set_quality(invalid_share={"gpt-4o-mini": 0.5})
    summary = _run(path, fake, "invalid")
    assert isinstance(summary, RunSummary) and summary.exit_code == EXIT_BUDGET
    assert {e["model"] for e in fake.log()} == {"gpt-4o-mini"} and len(fake.log()) == 10
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    rejected = outputs.filter(pl.col("summary_status") == "failed")
    assert rejected.height > 0, "the fake should have flawed some answers"
    assert outputs["summary"].null_count() == 0  # every row was paid for: none is null
    ledger = _ledger(tmp_path, "invalid")
    assert ledger["cost_usd"].sum() <= cap
    assert (ledger.filter(pl.col("status") == "failed")["cost_usd"] > 0).all()
