"""`batchopt plan` learns from past runs of the same configuration only (the ledger's
`config_hash`), and its "last run" line says what the ledger says that run spent, judge calls
and earlier attempts included (issue 20, point 5)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.plan.estimate import plan_run
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

CHEAP_MAX = 16  # the fake's answers are longer: finish_reason escalates every cheap answer


def _pipeline(tmp_path: Path, validators: list[dict], cheap_max: int = CHEAP_MAX) -> Path:
    data = pipeline_dict(routing={"strategy": "cascade", "tiers": ["cheap", "strong"],
                                  "validators": validators})
    data["profiles"]["cheap"] = {"provider": "openai", "model": "gpt-4o-mini",
                                 "max_tokens": cheap_max, "concurrency": 2, "timeout_s": 10}
    data["profiles"]["strong"] = {"provider": "openai", "model": "gpt-4o", "max_tokens": 64,
                                  "concurrency": 2, "timeout_s": 10}
    path = write_pipeline(tmp_path, data)
    pl.DataFrame([{"ticket_id": f"T{i:02d}", "subject": "Order",
                   "body": f"My parcel number {i} arrived late and the box was open, what now?"}
                  for i in range(8)]).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def test_history_of_another_configuration_is_ignored(tmp_path, fake):
    escalating = [{"type": "finish_reason"}]
    path = _pipeline(tmp_path, escalating)
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="r1"), env=fake_env(fake))
    assert isinstance(summary, RunSummary) and summary.escalated == 8
    ledger = _ledger(tmp_path, "r1")
    assert ledger["config_hash"].n_unique() == 1 and ledger["config_hash"][0]

    same = plan_run(load_pipeline(path), RunOptions(), {})
    assert same.escalation_share == 1.0
    assert same.escalation_source.startswith("past runs of this configuration")
    assert same.last_run is not None and same.last_run.run_id == "r1"

    # the same pipeline with one more validator: another configuration, r1 says nothing of it
    other = plan_run(load_pipeline(_pipeline(tmp_path, [*escalating, {"type": "refusal"}])),
                     RunOptions(), {})
    assert other.escalation_share == 0.2
    assert other.escalation_source.startswith("assumed")
    assert other.last_run is None
    assert all(t.output_source == "max_tokens" for t in other.tiers)


def test_last_run_spent_is_the_ledgers_total_with_judge_calls(tmp_path, fake):
    fake.set_oracle([{"match": f"number {i}", "answer": "no" if i % 2 else "yes",
                      "difficulty": "easy"} for i in range(8)],
                    models={"gpt-4o": {"easy": 1.0}, "gpt-4o-mini": {"easy": 1.0}})
    path = _pipeline(tmp_path, [{"type": "refusal"}, {"type": "judge", "tier": "strong"}],
                     cheap_max=64)
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="j1"), env=fake_env(fake))
    assert isinstance(summary, RunSummary)
    ledger = _ledger(tmp_path, "j1")
    assert ledger["earlier_attempts_usd"].sum() > 0  # judge calls and escalated cheap answers
    estimate = plan_run(load_pipeline(path), RunOptions(), {})
    assert estimate.last_run is not None
    assert estimate.last_run.spent_usd == ledger["cost_usd"].sum()


def test_answer_lengths_come_from_the_answers_not_a_rows_calls(tmp_path, fake):
    """A ledger row's tokens are all its calls' (judge verdict, the cheap answer below an
    escalated one); the plan's expected answer length per model is the mean of the answers that
    model gave, as billed."""
    from batchopt.ledger.history import read_history

    path = _pipeline(tmp_path, [{"type": "finish_reason"},
                                {"type": "judge", "tier": "strong"}], cheap_max=64)
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="a1"), env=fake_env(fake))
    assert isinstance(summary, RunSummary)
    judge_calls = [e for e in fake.log() if e["model"] == "gpt-4o" and e["output_tokens"] <= 2]
    assert judge_calls, "the judge should have been asked"
    history = read_history(tmp_path / "out" / "ledger", "tickets")
    mini = [e["output_tokens"] for e in fake.log() if e["model"] == "gpt-4o-mini"]
    mean, count = history.output_tokens[("openai", "gpt-4o-mini")]
    assert count == len(mini) and mean == sum(mini) / len(mini)
