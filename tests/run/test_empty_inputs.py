"""Null and empty inputs (`input.on_empty`): never sent as the word "None", never paid for.

The fake server answers "Summary: <the user message's first words>", so an answer shows what
was sent; its stats count every request it received.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline, write_tickets

from batchopt.cli.main import main
from batchopt.run.empty_inputs import EMPTY_REASON

ROWS = [
    {"ticket_id": "T1", "subject": "Refund", "body": "Please refund order #10233."},
    {"ticket_id": "T2", "subject": None, "body": None},  # null text
    {"ticket_id": "T3", "subject": "  ", "body": " \n\t "},  # blank text
    {"ticket_id": "T4", "subject": "Login", "body": "I cannot log in since Monday."},
    {"ticket_id": "T5", "subject": None, "body": "My parcel 88 is late."},  # one null field
    {"ticket_id": "T6", "subject": "", "body": None},  # blank and null
]
EMPTY = ["T2", "T3", "T6"]


def _pipeline(tmp_path: Path, on_empty: str | None = None, **extra) -> Path:
    data = pipeline_dict(**extra)
    data["prompt"]["template"] = "Subject: {{ subject }}\nReview:\n{{ body }}"
    if on_empty is not None:
        data["input"]["on_empty"] = on_empty
    path = write_pipeline(tmp_path, data)
    write_tickets(tmp_path / "data" / "tickets.parquet", ROWS)
    return path


def _invoke(args: list[str], fake) -> object:
    return CliRunner().invoke(main, args, env=fake_env(fake))


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet").sort("row_id")


@pytest.mark.parametrize("on_empty", [None, "skip"])
def test_null_and_blank_rows_are_skipped_not_sent_and_not_paid(fake, tmp_path, on_empty):
    path = _pipeline(tmp_path, on_empty)
    result = _invoke(["run", str(path), "--run-id", "r1"], fake)
    assert result.exit_code == 0, result.output  # max_failed_share 0: skipped is not failed
    assert fake.stats()["requests"] == 3  # T1, T4, T5 only
    assert "3 row(s) skipped: empty input (input.on_empty: skip" in result.output

    out = pl.read_parquet(tmp_path / "out" / "outputs.parquet").sort("ticket_id")
    answers = dict(zip(out["ticket_id"].to_list(), out["summary"].to_list(), strict=True))
    assert [answers[i] for i in EMPTY] == [None, None, None]
    sent = [a for i, a in answers.items() if i not in EMPTY]
    assert all(a and "None" not in a for a in sent), sent
    assert answers["T5"].startswith("Summary: Subject: Review: My parcel")  # null subject: ""

    ledger = _ledger(tmp_path, "r1")
    assert ledger.height == len(ROWS)
    skipped = ledger.filter(pl.col("row_id").is_in(EMPTY))
    for row in skipped.iter_rows(named=True):
        assert (row["status"], row["mode"], row["dedup"], row["cost_usd"],
                row["baseline_cost_usd"], row["attempts"], row["input_tokens"]) == (
            "skipped", "skipped", "none", 0.0, 0.0, 0, 0), row
        assert row["error"] == EMPTY_REASON and row["overflow"] is None
    assert skipped["group_id"].n_unique() == 3  # T2 and T6 render alike: not deduplicated
    others = ledger.filter(~pl.col("row_id").is_in(EMPTY))
    assert (others["status"] == "ok").all() and (others["cost_usd"] > 0).all()


def test_a_null_field_among_others_is_sent_without_the_word_none(fake, tmp_path):
    from batchopt.config.pipeline import load_pipeline
    from batchopt.run.runner import RunOptions, prepare

    path = _pipeline(tmp_path)
    plan = prepare(load_pipeline(path), RunOptions(), env={"OPENAI_API_KEY": "sk-x"})
    users = {r["ticket_id"]: r["prompt_user"] for r in plan.rows.iter_rows(named=True)}
    assert users["T5"] == "Subject: \nReview:\nMy parcel 88 is late."
    assert all("None" not in plan.requests[g].user for g in plan.requests)
    assert len(plan.requests) == 3 and len(plan.empty) == 3
    assert {why for _, why in plan.skipped.values()} == {EMPTY_REASON}


def test_fail_exits_2_naming_the_rows_and_sends_nothing(fake, tmp_path):
    path = _pipeline(tmp_path, "fail")
    result = _invoke(["run", str(path), "--run-id", "r1"], fake)
    assert result.exit_code == 2, result.output
    assert "input.on_empty: fail: 3 row(s) have nothing to send" in result.output
    assert "(every template field null or blank: body, subject)" in result.output
    assert "ids T2, T3, T6;" in result.output
    assert fake.stats()["requests"] == 0 and fake.stats()["batches_created"] == 0
    assert not (tmp_path / "out" / "outputs.parquet").exists()
    assert not (tmp_path / "out" / "ledger").exists()


def test_fail_names_at_most_five_ids(fake, tmp_path):
    path = _pipeline(tmp_path, "fail")
    write_tickets(tmp_path / "data" / "tickets.parquet",
                  [*ROWS, *({"ticket_id": f"E{i}", "subject": None, "body": ""}
                            for i in range(5))])
    result = _invoke(["run", str(path)], fake)
    assert result.exit_code == 2, result.output
    assert "8 row(s) have nothing to send" in result.output
    assert "ids T2, T3, T6, E0, E1 (and 3 more)" in result.output
    assert fake.stats()["requests"] == 0


def test_fail_with_no_empty_row_runs(fake, tmp_path):
    path = _pipeline(tmp_path, "fail")
    write_tickets(tmp_path / "data" / "tickets.parquet", [ROWS[0], ROWS[3], ROWS[4]])
    result = _invoke(["run", str(path)], fake)
    assert result.exit_code == 0, result.output
    assert fake.stats()["requests"] == 3


def test_plan_counts_the_skipped_rows_as_not_sent(fake, tmp_path):
    path = _pipeline(tmp_path)
    result = _invoke(["plan", str(path)], fake)
    assert result.exit_code == 0, result.output
    assert "to send            3 " in result.output
    assert "3 row(s) skipped: empty input" in result.output
    data = json.loads(_invoke(["plan", str(path), "--json"], fake).output)
    assert (data["rows"], data["to_send"], data["empty_skipped"]) == (6, 3, 3)
    assert fake.stats()["requests"] == 0


def test_a_template_reading_no_column_is_never_empty(fake, tmp_path):
    path = _pipeline(tmp_path)
    data = pipeline_dict()
    data["prompt"]["template"] = "Say hello."
    path.write_text(json.dumps(data))
    result = _invoke(["run", str(path)], fake)
    assert result.exit_code == 0, result.output
    assert fake.stats()["requests"] == 1  # one prompt for every row (exact dedup)



def test_semantic_dedup_leaves_the_empty_rows_out(fake, tmp_path):
    path = _pipeline(tmp_path, dedup={"semantic": {"enabled": True}})
    rows = [*ROWS, {"ticket_id": "T7", "subject": "Refund", "body": "Please refund order 10233"}]
    write_tickets(tmp_path / "data" / "tickets.parquet", rows)
    result = _invoke(["run", str(path), "--run-id", "r1"], fake)
    assert result.exit_code == 0, result.output
    ledger = _ledger(tmp_path, "r1")
    skipped = ledger.filter(pl.col("row_id").is_in(EMPTY))
    assert (skipped["status"] == "skipped").all() and (skipped["dedup"] == "none").all()
    assert skipped["representative_id"].to_list() == EMPTY  # each answers for itself only
    others = ledger.filter(~pl.col("row_id").is_in(EMPTY))
    assert (others["status"] == "ok").all()
    assert not others["representative_id"].is_in(EMPTY).any()
    assert fake.stats()["requests"] == others.filter(pl.col("dedup") == "none").height
    again = _invoke(["run", str(path), "--run-id", "r2"], fake)  # across runs: still skipped
    assert again.exit_code == 0, again.output
    assert (_ledger(tmp_path, "r2").filter(pl.col("row_id").is_in(EMPTY))["status"]
            == "skipped").all()


def test_batch_mode_leaves_the_empty_rows_out_of_the_batch(bfake, tmp_path):
    path = _pipeline(tmp_path, execution={"mode": "batch", "poll_seconds": 0.05})
    result = _invoke(["run", str(path), "--run-id", "r1"], bfake)
    assert result.exit_code == 0, result.output
    assert bfake.stats()["batch_requests"] == 3 and bfake.stats()["requests"] == 3
    ledger = _ledger(tmp_path, "r1")
    assert ledger.filter(pl.col("row_id").is_in(EMPTY))["mode"].to_list() == ["skipped"] * 3
    assert (ledger.filter(~pl.col("row_id").is_in(EMPTY))["mode"] == "batch").all()


def test_a_required_column_blank_makes_the_row_empty(fake, tmp_path):
    """input.required: a review's subject without its body has nothing to send either."""
    rows = [*ROWS, {"ticket_id": "T7", "subject": "Delivery", "body": None},
            {"ticket_id": "T8", "subject": "Delivery", "body": "  "}]
    path = _pipeline(tmp_path, input={"path": "data/tickets.parquet", "id_column": "ticket_id",
                                      "required": ["body"]})
    write_tickets(tmp_path / "data" / "tickets.parquet", rows)
    result = _invoke(["run", str(path), "--run-id", "r1"], fake)
    assert result.exit_code == 0, result.output
    assert fake.stats()["requests"] == 3  # T1, T4, T5: T7 and T8 have no body
    skipped = _ledger(tmp_path, "r1").filter(pl.col("status") == "skipped")
    assert sorted(skipped["row_id"]) == ["T2", "T3", "T6", "T7", "T8"]
    assert (skipped["cost_usd"] == 0).all()

    data = json.loads(json.dumps(pipeline_dict()))
    data["prompt"]["template"] = "Subject: {{ subject }}\nReview:\n{{ body }}"
    data["input"].update(required=["body"], on_empty="fail")
    write_pipeline(tmp_path / "f", data)
    write_tickets(tmp_path / "f" / "data" / "tickets.parquet", rows)
    failed = _invoke(["run", str(tmp_path / "f" / "pipeline.yaml"), "--run-id", "r1"], fake)
    assert failed.exit_code == 2, failed.output
    assert "5 row(s) have nothing to send" in failed.output
    assert "or a required one: body" in failed.output and "T7, T8" in failed.output


def test_a_required_column_the_input_lacks_is_exit_2(fake, tmp_path):
    path = _pipeline(tmp_path, input={"path": "data/tickets.parquet", "id_column": "ticket_id",
                                      "required": ["bdy"]})
    result = _invoke(["run", str(path), "--run-id", "r1"], fake)
    assert result.exit_code == 2, result.output
    assert "bdy" in result.output
    assert fake.stats()["requests"] == 0
