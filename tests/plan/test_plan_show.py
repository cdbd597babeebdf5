"""`batchopt plan --show N`: the first N distinct requests exactly as a run then sends them."""

from __future__ import annotations

import json

import polars as pl
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main


def test_plan_show_prints_the_requests_the_run_sends(tmp_path, fake):
    path = write_pipeline(tmp_path, pipeline_dict())
    runner = CliRunner(env={**fake_env(fake), "HF_HUB_OFFLINE": "1"})
    shown = runner.invoke(main, ["plan", str(path), "--show", "3", "--json"])
    assert shown.exit_code == 0, shown.output
    requests = json.loads(shown.stdout)["shown"]
    assert len(requests) == 3
    assert len({r["group_id"] for r in requests}) == 3
    for request in requests:
        assert request["tier"] == "openai" and request["model"] == "gpt-4o-mini"
        assert request["system"] == "Summarise the ticket in one sentence."
        assert request["user"].startswith("Subject: ")

    text = runner.invoke(main, ["plan", str(path), "--show", "1"])
    assert text.exit_code == 0, text.output
    assert "--- request 1 of 1 · group " in text.stdout
    assert "[system]\nSummarise the ticket in one sentence.\n[user]\n" in text.stdout
    assert requests[0]["user"] in text.stdout

    run = runner.invoke(main, ["run", str(path), "--run-id", "r1", "--quiet"])
    assert run.exit_code == 0, run.output
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=r1"
                             / "part.parquet")
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    answers = dict(outputs.select("ticket_id", "summary").iter_rows())
    for request in requests:
        rows = ledger.filter(pl.col("group_id") == request["group_id"])["row_id"].to_list()
        assert rows, request["group_id"]
        # the fake server answers "Summary: " + the first words of the user message it received
        head = " ".join(request["user"].split()[:4])
        assert all(answers[row].startswith(f"Summary: {head}") for row in rows), (head, rows)


def test_plan_without_show_prints_no_request(tmp_path):
    path = write_pipeline(tmp_path, pipeline_dict())
    out = CliRunner(env={"HF_HUB_OFFLINE": "1"}).invoke(main, ["plan", str(path)])
    assert out.exit_code == 0, out.output
    assert "--- request" not in out.stdout
