"""What the provider fault tests share: a small pipeline against the fake server, and `check`,
which holds a finished run to batchopt's guarantees and counts what it checked in `tally`.

The guarantees (see /work/shared/DESIGN.md): no paid response is lost, no request is paid
twice, every row is once in the outputs and once in the ledger, a failed row says why, and the
ledger's cost is what the server billed, at the server's own prices (its `cost_usd`, never
batchopt's price table). The one exception is written into each test:
an answer the server billed but batchopt never received (`unavoidable` re-sends, counted from
the billing log and asserted exactly).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from faults.tally import add
from helpers import fake_env, pipeline_dict, write_pipeline  # tests/ (its conftest's folder)

from batchopt.config.pipeline import load_pipeline
from batchopt.fakeapi import FakeServer
from batchopt.providers.sdk_common import USAGE_MISSING
from batchopt.run.runner import RunOptions, RunPending, RunSummary, run_pipeline

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-20241022"}
STRONG = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-5"}
SUMMARY_WORDS = 20  # the fake answers "Summary: " and the first 20 words of the prompt


def tickets(n: int, duplicates: int = 2) -> list[dict[str, str]]:
    """`n` distinct tickets, then `duplicates` exact copies of the first ones (dedup followers:
    rows that share their representative's answer and its fate)."""
    rows = [
        {"ticket_id": f"T{i:03d}", "subject": "Order", "body": f"Where is order #{5000 + i}? {w}"}
        for i, w in enumerate(["It is late.", "Box damaged.", "Wrong colour.", "Never came."] * n)
    ][:n]
    copies = [dict(rows[i % n], ticket_id=f"D{i:03d}") for i in range(duplicates)]
    return rows + copies


def make_pipeline(
    tmp_path: Path,
    provider: str,
    *,
    n: int = 8,
    duplicates: int = 2,
    mode: str = "online",
    concurrency: int = 4,
    max_attempts: int = 4,
    timeout_s: float = 10,
    max_tokens: int = 64,
    max_failed_share: float | None = None,
    routing: dict[str, Any] | None = None,
    **execution: Any,
) -> Path:
    """A pipeline over `tickets(n, duplicates)` with one profile, `provider`, on its cheap model
    (and `strong`, its strong model, for a cascade's `routing`)."""
    profile = {"provider": provider, "model": MODELS[provider], "max_tokens": max_tokens,
               "concurrency": concurrency, "max_attempts": max_attempts, "timeout_s": timeout_s}
    data = pipeline_dict(
        default_profile="cheap",
        profiles={"cheap": profile, "strong": {**profile, "model": STRONG[provider]}},
        execution={"mode": mode, "poll_seconds": 0.05, **execution},
    )
    if max_failed_share is not None:
        data["max_failed_share"] = max_failed_share
    if routing is not None:
        data["routing"] = routing
    path = write_pipeline(tmp_path, data)
    pl.DataFrame(tickets(n, duplicates)).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def run(path: Path, fake: FakeServer, run_id: str, **options: Any) -> RunSummary | RunPending:
    """One `run_pipeline` call on `path` against `fake`."""
    return run_pipeline(
        load_pipeline(path), RunOptions(run_id=run_id, **options), env=fake_env(fake)
    )


def expected_answer(ticket: dict[str, str]) -> str:
    """The fake's full answer to a ticket's prompt (a cut answer is a prefix of it)."""
    prompt = f"Subject: {ticket['subject']}\n\n{ticket['body']}"
    return "Summary: " + " ".join(prompt.split()[:SUMMARY_WORDS])


def billed_cost(entry: dict[str, Any]) -> float:
    """What the server billed for its billing-log `entry`, at its own price list (batch rows at
    the batch price; prompt-cache reads and writes at their rates)."""
    cost = entry["cost_usd"]
    assert cost is not None, f"the fake server has no price for {entry['model']}"
    return float(cost)


@dataclass
class Checked:
    """A checked run: its ledger and outputs, the billing log, and the re-sends found."""

    ledger: pl.DataFrame
    outputs: pl.DataFrame
    log: list[dict[str, Any]]
    resent: int


def read_ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(
        tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}" / "part.parquet"
    )


def check(
    fake: FakeServer,
    tmp_path: Path,
    outcome: RunSummary | RunPending | int,
    run_id: str,
    *,
    fault: str,
    exit_code: int = 0,
    failed: int = 0,
    error_words: tuple[str, ...] = (),
    unavoidable: int = 0,
    retries: int | None = None,
    exact_usage: bool = True,
    tokens: bool = True,
) -> Checked:
    """Hold the run `run_id` to the guarantees; count what was checked in `tally`.

    `outcome` is what `run` returned, or the exit code of a CLI run.

    `failed`: how many groups (distinct requests) end failed, each with an error holding one of
    `error_words`; `unavoidable`: how many billed answers batchopt could not have received (the
    billing log must show exactly that many requests paid a second time); `retries`: how many
    attempts beyond the first the online rows took in all (None: not checked);
    `exact_usage`: the ledger's cost is the billing log's to float precision (False when the
    provider did not report usage and batchopt estimated it: then to the cent and within 5%);
    `tokens`: so are its token columns (a cascade's rows carry every call's tokens)."""
    add("provider_faults_tried")
    assert not isinstance(outcome, RunPending), outcome
    exit_seen = outcome if isinstance(outcome, int) else outcome.exit_code
    rows = pl.read_parquet(tmp_path / "data" / "tickets.parquet")
    ids = set(rows["ticket_id"])
    ledger = read_ledger(tmp_path, run_id)
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    log = fake.log()
    hashes = Counter(e["request_hash"] for e in log)
    resent = sum(n - 1 for n in hashes.values())
    add("provider_rows_checked", rows.height)
    lost = len(ids - set(outputs["ticket_id"])) + len(ids - set(ledger["row_id"]))
    add("provider_rows_lost", lost)
    add("provider_rows_paid_twice", max(0, resent - unavoidable))
    add("provider_unavoidable_resends", min(resent, unavoidable))

    assert exit_seen == exit_code, outcome
    stats = fake.stats()  # every fault injected was met: a test whose fault never fired fails
    assert stats["pending_faults"] == stats["pending_batch_faults"] == 0, stats
    # every row once in the outputs and once in the ledger
    assert outputs.height == ledger.height == rows.height
    assert set(outputs["ticket_id"]) == set(ledger["row_id"]) == ids
    assert outputs["ticket_id"].n_unique() == ledger["row_id"].n_unique() == rows.height
    # a row answered holds its own ticket's answer (a cut one is a prefix of it), a failed row
    # holds none and says why
    by_id = {r["ticket_id"]: r for r in rows.iter_rows(named=True)}
    answers = dict(zip(outputs["ticket_id"], outputs["summary"], strict=True))
    for row in ledger.iter_rows(named=True):
        answer = answers[row["row_id"]]
        if row["status"] == "ok":
            assert answer and expected_answer(by_id[row["row_id"]]).startswith(answer), row
            assert row["error"] in (None, USAGE_MISSING), row
        else:
            assert row["status"] == "failed" and answer is None, row
            assert row["error"] and any(w in row["error"] for w in error_words), row["error"]
            assert row["mode"] == "failed" and row["cost_usd"] == 0, row
    reps = ledger.filter(pl.col("dedup") == "none")
    assert (reps["status"] == "failed").sum() == failed, reps.select("row_id", "error")
    if retries is not None:
        online = reps.filter(pl.col("mode").is_in(["online", "failed"]))
        assert online["attempts"].sum() == online.height + retries
    # nothing paid twice but the answers batchopt never got
    assert resent == unavoidable, [e for e in log if hashes[e["request_hash"]] > 1]
    # the ledger's cost is the server's billing, priced; the lost answers are billed to the
    # user but cannot be in the ledger (batchopt never saw them): the first of each pair
    kept = _delivered(log)
    lost_usd = sum(billed_cost(e) for e in log) - sum(billed_cost(e) for e in kept)
    add("provider_lost_micro_usd", round(lost_usd * 1e6))
    spent = float(ledger["cost_usd"].sum())
    billed = sum(billed_cost(e) for e in kept)
    if exact_usage:
        assert abs(spent - billed) < 1e-9, (spent, billed)
    if exact_usage and tokens:
        for column, field in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                              ("cached_input_tokens", "cache_read_tokens"),
                              ("cache_write_tokens", "cache_write_tokens")):
            assert ledger[column].sum() == sum(e[field] for e in kept), column
    if not exact_usage:
        assert round(spent, 2) == round(billed, 2) and abs(spent - billed) <= 0.05 * billed
    return Checked(ledger, outputs, log, resent)


def _delivered(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The billing log without the earlier entries of a request paid more than once (the
    answers lost on the way; the last one is the one batchopt kept)."""
    last = {e["request_hash"]: i for i, e in enumerate(log)}
    return [e for i, e in enumerate(log) if last[e["request_hash"]] == i]
