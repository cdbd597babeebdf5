"""Outputs and ledger are written a chunk of rows at a time and committed together at the end:
the files are the same whichever the chunk size, and nothing is at either path before commit."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from helpers import fake_env, pipeline_dict, write_pipeline

import batchopt.run.fanout as fanout
from batchopt.config.pipeline import load_pipeline
from batchopt.io.writer import ParquetParts
from batchopt.run.runner import RunOptions, run_pipeline

# what differs between two runs of the same job: when, and how long each call took
_TIMING = ["run_at", "latency_ms", "baseline_latency_ms", "request_id"]


def _tickets(n: int) -> pl.DataFrame:
    bodies = [f"Where is order #{5000 + i % 13}?" for i in range(n)]  # 13 distinct, rest exact
    return pl.DataFrame({"ticket_id": [f"T{i:03d}" for i in range(n)],
                         "subject": ["Order"] * n, "body": bodies})


def _run(fake, folder: Path, chunk_rows: int, monkeypatch: pytest.MonkeyPatch):
    data = pipeline_dict()
    data["prompt"]["json_schema"] = {
        "type": "object",
        "properties": {"category": {"type": "string", "enum": ["refund", "login", "other"]}},
        "required": ["category"],
    }
    path = write_pipeline(folder, data)
    _tickets(40).write_parquet(folder / "data" / "tickets.parquet")
    monkeypatch.setattr(fanout, "FAN_OUT_ROWS", chunk_rows)
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="night"), env=fake_env(fake))
    return summary, pl.read_parquet(summary.output_path), pl.read_parquet(summary.ledger_path)


def test_chunked_outputs_and_ledger_match_one_chunk(fake, tmp_path, monkeypatch):
    whole, whole_out, whole_ledger = _run(fake, tmp_path / "whole", 1000, monkeypatch)
    parts, parts_out, parts_ledger = _run(fake, tmp_path / "parts", 7, monkeypatch)

    assert pq.ParquetFile(parts.output_path).num_row_groups == 6  # 40 rows, 7 at a time
    assert pq.ParquetFile(parts.ledger_path).num_row_groups == 6
    assert pq.ParquetFile(whole.output_path).num_row_groups == 1
    assert parts_out.equals(whole_out)
    assert parts_out["summary_category"].null_count() == 0
    assert parts_ledger.drop(_TIMING).equals(whole_ledger.drop(_TIMING))
    assert (parts_ledger["dedup"] == "exact").sum() == 27
    # the summary is added up chunk by chunk; it matches the ledger it wrote
    assert parts.rows == whole.rows == parts_ledger.height == 40
    assert parts.exact_duplicates == whole.exact_duplicates == 27
    assert parts.cost_usd == pytest.approx(float(parts_ledger["cost_usd"].sum()))
    assert parts.cost_usd == pytest.approx(whole.cost_usd)
    assert parts.baseline_cost_usd == pytest.approx(whole.baseline_cost_usd)
    assert parts.input_tokens == whole.input_tokens == int(parts_ledger["input_tokens"].sum())
    assert parts.tiers == whole.tiers == {"openai": 13}
    assert [p.name for p in parts.output_path.parent.iterdir() if p.name.startswith(".")] == []


def test_nothing_is_at_the_path_until_commit(tmp_path):
    target = tmp_path / "out.parquet"
    with ParquetParts(target) as parts:
        parts.write(pl.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
        parts.write(pl.DataFrame({"a": [3], "b": [None]}))  # an all-null column is cast
        assert not target.exists()
        parts.commit()
    assert pl.read_parquet(target).to_dict(as_series=False) == {"a": [1, 2, 3],
                                                               "b": ["x", "y", None]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_an_error_before_commit_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.parquet"
    pl.DataFrame({"a": [0]}).write_parquet(target)
    with pytest.raises(RuntimeError, match="stage failed"), ParquetParts(target) as parts:
        parts.write(pl.DataFrame({"a": [1, 2]}))
        raise RuntimeError("stage failed")
    assert pl.read_parquet(target)["a"].to_list() == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]


def test_no_rows_still_writes_the_columns(tmp_path):
    target = tmp_path / "out.parquet"
    with ParquetParts(target) as parts:
        parts.commit(empty=pl.DataFrame({"a": [1]}, schema={"a": pl.Int32}))
    assert pl.read_parquet(target).schema == pl.Schema({"a": pl.Int32})


TYPED_SCHEMA = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "minimum": 3},
        "amount": {"type": ["number", "null"], "minimum": 12.5},
        "refund": {"anyOf": [{"type": "integer", "minimum": 7}, {"type": "null"}]},
        "urgent": {"type": "boolean"},
        "note": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["count", "amount", "refund", "urgent", "note", "tags"],
}


def test_schema_outputs_get_the_column_types_the_schema_declares(fake, tmp_path):
    """Point 12b: an `amount` declared number-or-null is a Float64 column, not text."""
    data = pipeline_dict()
    data["prompt"]["json_schema"] = TYPED_SCHEMA
    data["profiles"]["openai"]["max_tokens"] = 512  # room for the whole object
    path = write_pipeline(tmp_path, data)
    _tickets(5).write_parquet(tmp_path / "data" / "tickets.parquet")
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="typed"), env=fake_env(fake))
    assert summary.failed_rows == 0
    out = pl.read_parquet(summary.output_path)
    assert {name: out.schema[f"summary_{name}"] for name in TYPED_SCHEMA["properties"]} == {
        "count": pl.Int64, "amount": pl.Float64, "refund": pl.Int64, "urgent": pl.Boolean,
        "note": pl.String, "tags": pl.String,
    }
    # the fake draws each row's values within the schema's bounds (a stable hash of the row)
    assert all(isinstance(v, int) and v >= 3 for v in out["summary_count"])
    assert all(isinstance(v, float) and v >= 12.5 for v in out["summary_amount"])
    assert all(isinstance(v, int) and v >= 7 for v in out["summary_refund"])
    assert all(isinstance(v, bool) for v in out["summary_urgent"])
    assert out["summary_count"].n_unique() > 1  # rows differ
    assert all(isinstance(v, str) and v for v in out["summary_note"])
    assert all(v.startswith("[") for v in out["summary_tags"])  # JSON text


def test_schema_property_types_and_values_that_do_not_fit():
    assert fanout.property_dtype({"type": ["number", "null"]}) == pl.Float64
    assert fanout.property_dtype({"anyOf": [{"type": "null"}, {"type": "boolean"}]}) == pl.Boolean
    assert fanout.property_dtype({"type": ["integer", "number"]}) == pl.Float64
    assert fanout.property_dtype({"type": ["integer", "string"]}) == pl.String
    assert fanout.property_dtype({"type": "object"}) == pl.String
    assert fanout.property_dtype({"enum": ["a", "b"]}) == pl.String
    groups = pl.DataFrame({
        "group_id": ["g1", "g2", "g3"],
        "answer": ["a", "b", None],
        "parsed_json": ['{"n": 3, "x": 2, "b": true}', '{"n": 4.0, "x": null, "b": "yes"}',
                        None],
    })
    rows = pl.DataFrame({"id": ["1", "2", "3"], "group_id": ["g1", "g2", "g3"]})
    schema = {"type": "object", "properties": {"n": {"type": "integer"},
                                               "x": {"type": ["number", "null"]},
                                               "b": {"type": "boolean"}}}
    out = fanout.output_table(rows, groups, ["id"], "out", schema)
    assert out.schema["out_n"] == pl.Int64 and out["out_n"].to_list() == [3, 4, None]
    assert out.schema["out_x"] == pl.Float64 and out["out_x"].to_list() == [2.0, None, None]
    assert out.schema["out_b"] == pl.Boolean and out["out_b"].to_list() == [True, None, None]
