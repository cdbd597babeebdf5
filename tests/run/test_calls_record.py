"""The billed-calls record (issue 20, point 4): every call a run id sent is recorded once, as
billed; the ledger's tokens and cost, the summary and the budget sum it, and they equal the fake
server's bill. A call sent whose answer never came shows as `sent_unconfirmed`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from faults.provider_helpers import billed_cost, make_pipeline
from faults.provider_helpers import run as run_tickets
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.ledger.store import connect
from batchopt.run.runner import RunObserver, RunOptions, RunSummary, run_pipeline

SHORT = "Where is my order?"
LONG = "My order arrived damaged, the invoice is wrong and tracking says in transit, what now?"
JUDGED = {"strategy": "cascade", "tiers": ["cheap", "strong"],
          "validators": [{"type": "refusal"}, {"type": "judge", "tier": "strong"}]}


def _pipeline(tmp_path: Path, fake) -> Path:
    """Ten tickets, two of them exact copies; the judge (gpt-4o) passes the short tickets'
    answers and fails the long ones', which go up to gpt-4o."""
    bodies = [f"{SHORT} #{100 + i}" for i in range(5)] + [f"{LONG} #{200 + i}" for i in range(3)]
    rows = [{"ticket_id": f"T{i:02d}", "subject": "Order", "body": b} for i, b in enumerate(bodies)]
    rows += [dict(rows[0], ticket_id="D00"), dict(rows[5], ticket_id="D05")]
    items = [{"match": f"#{100 + i}", "answer": "yes", "difficulty": "easy"} for i in range(5)]
    items += [{"match": f"#{200 + i}", "answer": "no", "difficulty": "easy"} for i in range(3)]
    fake.set_oracle(items, models={"gpt-4o": {"easy": 1.0}, "gpt-4o-mini": {"easy": 1.0}})
    data = pipeline_dict(routing=JUDGED)
    data["profiles"]["cheap"] = {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 32,
                                 "concurrency": 2, "timeout_s": 10}
    data["profiles"]["strong"] = {"provider": "openai", "model": "gpt-4o", "max_tokens": 32,
                                  "concurrency": 2, "timeout_s": 10}
    path = write_pipeline(tmp_path, data)
    pl.DataFrame(rows).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _run(path: Path, fake, run_id: str, observer: RunObserver | None = None):
    return run_pipeline(load_pipeline(path), RunOptions(run_id=run_id), env=fake_env(fake),
                        observer=observer)


def _folder(tmp_path: Path, run_id: str) -> Path:
    return tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"


def _by_model(entries: list[dict], field: str, key: str = "model") -> Counter[str]:
    totals: Counter[str] = Counter()
    for entry in entries:
        totals[entry[key]] += entry[field]
    return totals


def _holds_against_the_bill(tmp_path: Path, fake, summary: RunSummary, run_id: str) -> None:
    """Ledger, calls table, summary and budget all equal the fake's bill, per model."""
    log = fake.log()
    ledger = pl.read_parquet(_folder(tmp_path, run_id) / "part.parquet")
    calls = pl.read_parquet(_folder(tmp_path, run_id) / "calls.parquet")
    confirmed = calls.filter(pl.col("status") == "confirmed")
    assert confirmed.height == len(log) and set(calls["status"]) == {"confirmed"}
    for column, field in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                          ("cached_input_tokens", "cache_read_tokens")):
        per_model = dict(confirmed.group_by("model").agg(pl.col(column).sum()).iter_rows())
        assert per_model == dict(_by_model(log, field)), column
        assert ledger[column].sum() == sum(e[field] for e in log), column
    billed = sum(billed_cost(e) for e in log)
    assert float(ledger["cost_usd"].sum()) == pytest.approx(billed, rel=1e-9)
    assert float(confirmed["cost_usd"].sum()) == pytest.approx(billed, rel=1e-9)
    # the summary is the ledger's sums
    assert summary.input_tokens == ledger["input_tokens"].sum()
    assert summary.output_tokens == ledger["output_tokens"].sum()
    assert summary.cost_usd == pytest.approx(billed, rel=1e-9)
    assert summary.sent == len(log)
    # the DuckDB view over the calls files says the same per model
    with connect(tmp_path / "out" / "ledger") as con:
        rows = con.execute("select model, sum(input_tokens) from calls where run_id = ? "
                           "group by model", [run_id]).fetchall()
    assert dict(rows) == dict(_by_model(log, "input_tokens"))


def test_a_judged_cascade_ledger_and_calls_add_up_to_the_bill_per_model(fake, tmp_path):
    summary = _run(_pipeline(tmp_path, fake), fake, "j1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    log = fake.log()
    assert Counter(e["model"] for e in log) == {"gpt-4o-mini": 8, "gpt-4o": 8 + 3}
    _holds_against_the_bill(tmp_path, fake, summary, "j1")
    calls = pl.read_parquet(_folder(tmp_path, "j1") / "calls.parquet")
    assert Counter(calls["kind"]) == {"first": 8, "judge": 8, "escalation": 3}
    # a kept row's bill holds its judge call; an escalated row's its cheap answer and judge call
    ledger = pl.read_parquet(_folder(tmp_path, "j1") / "part.parquet")
    reps = ledger.filter(pl.col("dedup") == "none")
    for row in reps.iter_rows(named=True):
        mine = calls.filter(pl.col("group_id") == row["group_id"])
        assert mine.height == (3 if row["escalated"] else 2)
        assert row["input_tokens"] == mine["input_tokens"].sum()
        assert row["cost_usd"] == pytest.approx(mine["cost_usd"].sum(), rel=1e-9)
    # followers cost nothing
    assert (ledger.filter(pl.col("dedup") != "none")["input_tokens"] == 0).all()


class _StopAfterFirstTier(RunObserver):
    """Stands in for a kill once the first tier is answered: the judge calls never go out."""

    def __init__(self) -> None:
        self.rounds = 0

    def sending(self, total: int) -> None:
        self.rounds += 1
        if self.rounds == 2:
            raise KeyboardInterrupt


def test_a_resumed_cascade_summary_equals_the_ledger_and_both_invocations_bill(fake, tmp_path):
    path = _pipeline(tmp_path, fake)
    with pytest.raises(KeyboardInterrupt):
        _run(path, fake, "r1", observer=_StopAfterFirstTier())
    assert Counter(e["model"] for e in fake.log()) == {"gpt-4o-mini": 8}
    summary = _run(path, fake, "r1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    # the first tier's answers were paid by this run id's first invocation: paid, not "cached"
    assert summary.cache_hits == 0
    _holds_against_the_bill(tmp_path, fake, summary, "r1")
    # another run id over the same cache pays nothing new for the first tier: those are hits
    fake.reset()
    again = _run(path, fake, "r2")
    assert isinstance(again, RunSummary) and fake.log() == [] and again.sent == 0
    assert again.cache_hits == 8 and again.cost_usd == 0


def test_an_online_call_cut_mid_flight_is_sent_unconfirmed_with_its_estimate(fake, tmp_path):
    # the first call is billed by the server, but its answer comes after the client gave up
    fake.set_faults([{"kind": "timeout", "delay_ms": 2500, "count": 1}])
    path = make_pipeline(tmp_path, "openai", n=4, duplicates=0, concurrency=1, max_attempts=1,
                         timeout_s=1, max_failed_share=1.0)
    first = run_tickets(path, fake, "u1")
    assert isinstance(first, RunSummary) and first.failed_rows == 1
    ledger = pl.read_parquet(_folder(tmp_path, "u1") / "part.parquet")
    calls = pl.read_parquet(_folder(tmp_path, "u1") / "calls.parquet")
    lost = calls.filter(pl.col("status") == "sent_unconfirmed")
    assert lost.height == 1 and lost["estimated_usd"][0] > 0
    cut = ledger.filter(pl.col("status") == "failed")
    assert cut["cost_usd"][0] == 0  # nothing confirmed ...
    assert cut["unconfirmed_usd"][0] == pytest.approx(lost["estimated_usd"][0])  # ... but sent
    assert (ledger.filter(pl.col("status") == "ok")["unconfirmed_usd"] == 0).all()
    # held against the invoice: the server billed 4 calls, the ledger confirms 3 and shows 1
    assert len(fake.log()) == 4 and calls.height == 4
    # the budget counts the unconfirmed call (maybe billed) on top of what was confirmed
    from types import SimpleNamespace

    from batchopt.execute.state import RunState, run_dir
    from batchopt.run.budget import Budget
    from batchopt.run.calls import CallsRecord

    state = RunState.open(run_dir(tmp_path / "out" / "cache", "tickets", "u1"))
    try:
        record = CallsRecord(None, state)  # type: ignore[arg-type]
        no_cap = SimpleNamespace(pipeline=SimpleNamespace(config=SimpleNamespace(budget=None)))
        assert Budget(no_cap, record).before == pytest.approx(  # type: ignore[arg-type]
            float(calls.filter(pl.col("status") == "confirmed")["cost_usd"].sum())
            + lost["estimated_usd"][0])
    finally:
        state.close()
    # resumed, the row is sent again: a new call; the first stays unconfirmed (maybe billed)
    second = run_tickets(path, fake, "u1")
    assert isinstance(second, RunSummary) and second.failed_rows == 0
    calls = pl.read_parquet(_folder(tmp_path, "u1") / "calls.parquet")
    assert Counter(calls["status"]) == {"confirmed": 4, "sent_unconfirmed": 1}
    ledger = pl.read_parquet(_folder(tmp_path, "u1") / "part.parquet")
    row = ledger.filter(pl.col("row_id") == cut["row_id"][0])
    assert row["status"][0] == "ok" and row["unconfirmed_usd"][0] == pytest.approx(
        lost["estimated_usd"][0])
    assert second.sent == 5


def test_a_batch_still_out_is_sent_unconfirmed_until_collected(fake, tmp_path):
    from batchopt.execute.state import RunState, run_dir
    from batchopt.run.runner import RunPending

    fake.batch_seconds = 2.0
    path = make_pipeline(tmp_path, "openai", n=4, duplicates=1, mode="batch")
    pending = run_tickets(path, fake, "b1", wait=False)
    assert isinstance(pending, RunPending)
    state = RunState.open(run_dir(tmp_path / "out" / "cache", "tickets", "b1"))
    try:
        out = state.calls()
    finally:
        state.close()
    assert [(c["mode"], c["status"]) for c in out] == [("batch", "sent_unconfirmed")] * 4
    done = run_tickets(path, fake, "b1")  # waits, collects: the same calls, confirmed
    assert isinstance(done, RunSummary) and done.exit_code == 0
    calls = pl.read_parquet(_folder(tmp_path, "b1") / "calls.parquet")
    assert Counter(calls["status"]) == {"confirmed": 4} and done.sent == len(fake.log()) == 4
    assert float(calls["cost_usd"].sum()) == pytest.approx(
        sum(billed_cost(e) for e in fake.log()), rel=1e-9)
