"""Dedup keys on what is sent: a tier whose profile has its own template sends the group
representative's rendering for every member, so rows share an answer only when every tier's
rendering agrees (exact dedup), and semantic dedup never merges rows that differ in a column
only a tier's template reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.dedup.exact import exact_groups
from batchopt.dedup.semantic import TIER_GUARD, semantic_groups
from batchopt.plan.estimate import plan_run
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

BODY = "Please refund order #10233, it arrived broken."
DEFAULT = "Subject: {{ subject }}\n\n{{ body }}"  # does not read `customer`


def _pipeline(tmp_path: Path, rows: list[dict[str, str]], tier_template: str,
              **extra: object) -> Path:
    data = pipeline_dict(**extra)
    data["prompt"]["template"] = DEFAULT
    data["profiles"]["openai"]["template"] = tier_template
    path = write_pipeline(tmp_path, data)
    pl.DataFrame(rows).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _rows(*customers: str, bodies: list[str] | None = None) -> list[dict[str, str]]:
    bodies = bodies or [BODY] * len(customers)
    return [{"ticket_id": f"T{i}", "subject": "Refund", "body": body, "customer": customer}
            for i, (customer, body) in enumerate(zip(customers, bodies, strict=True), 1)]


def _run(path: Path, fake, run_id: str):
    return run_pipeline(load_pipeline(path), RunOptions(run_id=run_id), env=fake_env(fake))


def _answers(tmp_path: Path) -> dict[str, str]:
    out = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    return dict(zip(out["ticket_id"], out["summary"], strict=True))


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def test_a_tier_template_reading_another_column_keeps_rows_apart(fake, tmp_path):
    path = _pipeline(tmp_path, _rows("alice", "bob"), "Customer: {{ customer }}\n\n{{ body }}")
    summary = _run(path, fake, "c1")
    assert isinstance(summary, RunSummary)
    answers = _answers(tmp_path)
    # the fake answers "Summary: " + the first words of the user message it was sent
    assert answers["T1"].startswith("Summary: Customer: alice")
    assert answers["T2"].startswith("Summary: Customer: bob")
    assert len(fake.log()) == 2
    assert (_ledger(tmp_path, "c1")["dedup"] == "none").all()


def test_the_plan_counts_the_requests_the_run_sends(fake, tmp_path):
    path = _pipeline(tmp_path, _rows("alice", "bob", "alice"),
                     "Customer: {{ customer }}\n\n{{ body }}")
    estimate = plan_run(load_pipeline(path), RunOptions(), env=fake_env(fake))
    assert estimate.distinct == 2  # alice's two rows are one request, bob's another
    _run(path, fake, "p1")
    assert len(fake.log()) == estimate.distinct
    ledger = _ledger(tmp_path, "p1").sort("row_id")
    assert ledger["dedup"].to_list() == ["none", "none", "exact"]


def test_a_tier_template_reading_no_other_column_keeps_the_saving(fake, tmp_path):
    path = _pipeline(tmp_path, _rows("alice", "bob"), "VARIANT {{ subject }}: {{ body }}")
    _run(path, fake, "s1")
    assert len(fake.log()) == 1
    answers = _answers(tmp_path)
    assert answers["T1"] == answers["T2"]
    assert answers["T1"].startswith("Summary: VARIANT Refund:")
    assert _ledger(tmp_path, "s1").sort("row_id")["dedup"].to_list() == ["none", "exact"]


def test_exact_groups_key_on_every_rendering():
    frame = pl.DataFrame({
        "id": ["a", "b", "c", "d"],
        "prompt_user": ["same", "same ", "same", "other"],
        "__v": ["x alice", "x  alice", "x bob", "x alice"],
    })
    plain = exact_groups(frame, "id", "prompt_user")
    assert plain["dedup"].to_list() == ["none", "exact", "exact", "none"]
    keyed = exact_groups(frame, "id", "prompt_user", key_columns=["__v"])
    assert keyed["dedup"].to_list() == ["none", "exact", "none", "none"]
    assert keyed["representative_id"].to_list() == ["a", "a", "c", "d"]
    # one text column alone keys as before (group ids of earlier runs stay valid)
    assert exact_groups(frame, "id", "prompt_user", key_columns=[])["group_id"].to_list() \
        == plain["group_id"].to_list()


def _exact(frame: pl.DataFrame) -> pl.DataFrame:
    return exact_groups(frame, "id", "text", enabled=False)


def test_semantic_groups_never_merge_rows_that_differ_in_a_tier_column():
    frame = pl.DataFrame({"id": ["a", "b", "c"], "text": ["refund it", "refund it!", "refund"],
                          "customer": ["alice", "bob", "alice"]})
    vectors = np.array([[1.0, 0.0], [1.0, 0.001], [1.0, 0.002]], dtype=np.float32)
    merged = semantic_groups(_exact(frame), vectors, id_column="id", text_column="text",
                             threshold=0.9)
    assert merged["dedup"].to_list().count("semantic") == 2  # without the rule: one group
    kept = semantic_groups(_exact(frame), vectors, id_column="id", text_column="text",
                           threshold=0.9, same_columns=["customer"])
    groups = dict(zip(kept["id"], kept["representative_id"], strict=True))
    assert groups["a"] == groups["c"] != groups["b"]
    assert kept.filter(pl.col("id") == "b")["veto_guard"].item() == TIER_GUARD


def test_semantic_dedup_in_a_run_keeps_other_customers_apart(fake, tmp_path):
    bodies = ["Please refund order #10233, it arrived broken.",
              "Please refund my order #10233, it arrived broken."]
    semantic = {"semantic": {"enabled": True, "backend": "model2vec", "threshold": 0.8}}
    template = "Customer: {{ customer }}\n\n{{ body }}"
    same = _pipeline(tmp_path / "same", _rows("alice", "alice", bodies=bodies), template,
                     dedup=semantic)
    _run(same, fake, "m1")
    ledger = _ledger(tmp_path / "same", "m1").sort("row_id")
    assert ledger["dedup"].to_list() == ["none", "semantic"]  # the paraphrase does merge
    assert len(fake.log()) == 1
    fake.reset()
    apart = _pipeline(tmp_path / "apart", _rows("alice", "bob", bodies=bodies), template,
                      dedup=semantic)
    _run(apart, fake, "m2")
    ledger = _ledger(tmp_path / "apart", "m2").sort("row_id")
    assert ledger["dedup"].to_list() == ["none", "none"]
    assert ledger["veto_guard"].to_list()[1] == TIER_GUARD
    answers = _answers(tmp_path / "apart")
    assert answers["T1"].startswith("Summary: Customer: alice")
    assert answers["T2"].startswith("Summary: Customer: bob")
    assert len(fake.log()) == 2


def test_no_answer_from_an_earlier_run_for_another_customer(fake, tmp_path):
    semantic = {"semantic": {"enabled": True, "backend": "model2vec", "threshold": 0.8}}
    template = "Customer: {{ customer }}\n\n{{ body }}"
    path = _pipeline(tmp_path, _rows("alice"), template, dedup=semantic)
    _run(path, fake, "d1")
    assert len(fake.log()) == 1
    rows = _rows("bob", bodies=["Please refund my order #10233, it arrived broken."])
    pl.DataFrame(rows).write_parquet(tmp_path / "data" / "tickets.parquet")
    _run(path, fake, "d2")
    assert len(fake.log()) == 2  # sent again: the earlier answer was alice's
    assert _answers(tmp_path)["T1"].startswith("Summary: Customer: bob")
