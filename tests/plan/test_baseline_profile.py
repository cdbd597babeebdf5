"""Issue 20, point 11: the baseline (every row on the baseline model, online, uncompressed, no
dedup, no prompt cache) does not depend on the profile that answered, and the plan's baseline
follows the ledger's rule."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.ledger.pricing import PriceTable
from batchopt.tokens import count_tokens

SYSTEM = "Summarise the ticket in one sentence."


def _job(tmp_path: Path) -> Path:
    data = pipeline_dict(compress={"steps": [{"type": "whitespace"}]})
    # the second profile asks in its own words: its calls bill more prompt tokens
    data["profiles"]["anthropic"]["system"] = (
        "You are a careful support analyst. Read the customer's ticket below and summarise, "
        "in one plain sentence, what the customer wants and why.")
    return write_pipeline(tmp_path, data)


def _run(fake, path: Path, run_id: str, profile: str) -> pl.DataFrame:
    result = CliRunner().invoke(main, ["run", str(path), "--run-id", run_id, "--profile", profile],
                                env=fake_env(fake))
    assert result.exit_code == 0, result.output
    return pl.read_parquet(path.parent / "out" / "ledger" / "pipeline=tickets"
                           / f"run_id={run_id}" / "part.parquet").sort("row_id")


def test_the_same_night_on_two_profiles_has_one_baseline(fake, tmp_path):
    path = _job(tmp_path)
    mini = _run(fake, path, "n-openai", "openai")
    haiku = _run(fake, path, "n-anthropic", "anthropic")
    assert (haiku["input_tokens"].sum() > mini["input_tokens"].sum())  # the calls did differ
    columns = ["row_id", "baseline_input_tokens", "baseline_output_tokens", "baseline_cost_usd"]
    assert mini.select(columns).equals(haiku.select(columns))
    assert mini["baseline_cost_usd"].sum() == haiku["baseline_cost_usd"].sum() > 0


def test_the_baseline_counts_the_uncompressed_default_prompt_and_the_answer(fake, tmp_path):
    path = _job(tmp_path)
    ledger = _run(fake, path, "n", "anthropic")
    rows = pl.read_parquet(tmp_path / "data" / "tickets.parquet").sort("ticket_id")
    answers = dict(pl.read_parquet(tmp_path / "out" / "outputs.parquet")
                   .select("ticket_id", "summary").iter_rows())
    price = PriceTable.load().price("openai", "gpt-4o")
    for row, facts in zip(rows.iter_rows(named=True), ledger.iter_rows(named=True), strict=True):
        prompt = f"Subject: {row['subject']}\n\n{row['body']}"  # before whitespace compression
        assert facts["baseline_input_tokens"] == count_tokens(SYSTEM) + count_tokens(prompt)
        assert facts["baseline_output_tokens"] == count_tokens(answers[row["ticket_id"]])
        usd = (facts["baseline_input_tokens"] * price.input
               + facts["baseline_output_tokens"] * price.output) / 1e6
        assert abs(facts["baseline_cost_usd"] - usd) < 1e-15
    for facts in ledger.iter_rows(named=True):  # the levers still add up
        levers = sum(v for k, v in facts.items() if k.startswith("saved_"))
        assert abs(levers - (facts["baseline_cost_usd"] - facts["cost_usd"])) < 1e-12


def test_the_plans_baseline_is_the_ledgers_once_the_answers_are_known(fake, tmp_path):
    path = _job(tmp_path)
    for profile in ("openai", "anthropic"):
        ledger = _run(fake, path, f"n-{profile}", profile)
        plan = CliRunner().invoke(main, ["plan", str(path), "--profile", profile, "--json"],
                                  env=fake_env(fake))
        assert plan.exit_code == 0, plan.output
        estimate = json.loads(plan.stdout)
        assert estimate["cached"] == estimate["distinct"]  # every answer is known
        assert abs(estimate["baseline_usd"] - ledger["baseline_cost_usd"].sum()) < 1e-12
