"""`batchopt dedup`: look before paying."""

from __future__ import annotations

import polars as pl
import pytest
from click.testing import CliRunner

from batchopt.cli.main import main


def _input(tmp_path):
    rows = [
        {"id": "a", "text": "Please refund order #10233, the kettle arrived broken."},
        {"id": "b", "text": "Please  refund order #10233, the kettle arrived broken. "},
        {"id": "c", "text": "Please refund order #10234, the kettle arrived broken."},
        {"id": "d", "text": "I want my money back for order #10233, the kettle came broken."},
        {"id": "e", "text": "How do I change my password?"},
    ]
    path = tmp_path / "in.parquet"
    pl.DataFrame(rows).write_parquet(path)
    return path


def test_exact_only(tmp_path):
    out = tmp_path / "groups.parquet"
    result = CliRunner().invoke(main, ["dedup", str(_input(tmp_path)), "--id-column", "id",
                                       "--text-column", "text", "--no-semantic", "--out", str(out)])
    assert result.exit_code == 0, result.output
    groups = pl.read_parquet(out)
    assert groups.columns == ["id", "group_id", "representative_id", "dedup", "similarity",
                              "veto_guard", "veto_id"]
    assert dict(zip(groups["id"], groups["dedup"], strict=True)) == {
        "a": "none", "b": "exact", "c": "none", "d": "none", "e": "none"}
    assert "exact duplicates 1" in result.output


def test_semantic_keeps_another_order_apart(tmp_path):
    pytest.importorskip("sentence_transformers")
    out = tmp_path / "groups.parquet"
    result = CliRunner().invoke(main, ["dedup", str(_input(tmp_path)), "--id-column", "id",
                                       "--text-column", "text", "--threshold", "0.75",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    groups = pl.read_parquet(out)
    rep = dict(zip(groups["id"], groups["representative_id"], strict=True))
    assert rep["b"] == "a" and rep["c"] == "c" and rep["e"] == "e"
    vetoed = groups.filter(pl.col("id") == "c")
    assert vetoed["veto_guard"].item() is not None and vetoed["veto_id"].item() == "a"


def test_missing_column_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["dedup", str(_input(tmp_path)), "--id-column", "id",
                                       "--text-column", "body", "--out", str(tmp_path / "g.pq")])
    assert result.exit_code == 2 and "missing column(s) 'body'" in result.output
    assert not (tmp_path / "g.pq").exists()
