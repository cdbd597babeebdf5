"""Issue 20, point 9: re-running a finished run id reads its ledger and says so; it never
rewrites it. The same run id on another job (another --limit) runs, but keeps what the ledger
recorded of the calls made in an earlier invocation."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.cli.progress import print_summary
from batchopt.config.pipeline import load_pipeline
from batchopt.run.runner import RunOptions, RunPending, RunSummary, run_pipeline

PART = Path("out") / "ledger" / "pipeline=tickets"


def _files(tmp_path: Path, run_id: str) -> dict[str, tuple[int, bytes]]:
    """(mtime in ns, bytes) of the outputs and of the run's ledger part."""
    paths = [tmp_path / "out" / "outputs.parquet", tmp_path / PART / f"run_id={run_id}"
             / "part.parquet"]
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def _invoke(fake, path: Path, *args: str):
    return CliRunner().invoke(main, ["run", str(path), *args], env=fake_env(fake))


def _line(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(start))


def test_a_finished_run_invoked_again_reads_its_ledger_and_rewrites_nothing(fake, tmp_path):
    path = write_pipeline(tmp_path)
    first = _invoke(fake, path, "--run-id", "night")
    assert first.exit_code == 0, first.output
    sent = fake.stats()["requests"]
    before = _files(tmp_path, "night")
    ledger = pl.read_parquet(tmp_path / PART / "run_id=night" / "part.parquet")

    again = _invoke(fake, path, "--run-id", "night")
    assert again.exit_code == first.exit_code, again.output
    assert fake.stats()["requests"] == sent  # nothing sent
    assert _files(tmp_path, "night") == before  # byte-identical, not even rewritten
    assert "finished at" in again.stdout and "nothing sent, nothing rewritten" in again.stdout
    for start in ("cost ", "tokens ", "rows "):
        assert _line(again.stdout, start) == _line(first.stdout, start)
    assert "spent $0" not in again.stdout
    assert _line(again.stdout, "cost ").startswith(
        f"cost               ${ledger['cost_usd'].sum():.4f}")


def test_a_finished_batch_run_invoked_again_by_cron_rewrites_nothing(bfake, tmp_path):
    data = pipeline_dict(execution={"mode": "batch", "poll_seconds": 0.05})
    path = write_pipeline(tmp_path, data)
    options = RunOptions(run_id="cron", wait=False)
    env = fake_env(bfake)
    summary = run_pipeline(load_pipeline(path), options, env=env)
    for _ in range(200):  # cron: the same command until the run is done
        if not isinstance(summary, RunPending):
            break
        summary = run_pipeline(load_pipeline(path), options, env=env)
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    before, created = _files(tmp_path, "cron"), bfake.stats()["batches_created"]

    again = run_pipeline(load_pipeline(path), options, env=env)
    assert isinstance(again, RunSummary) and True
    assert (again.cost_usd, again.baseline_cost_usd, again.rows, again.input_tokens) == (
        summary.cost_usd, summary.baseline_cost_usd, summary.rows, summary.input_tokens)
    assert _files(tmp_path, "cron") == before
    assert bfake.stats()["batches_created"] == created


def test_another_limit_on_a_finished_run_keeps_what_its_ledger_recorded(fake, tmp_path):
    path = write_pipeline(tmp_path)
    assert _invoke(fake, path, "--run-id", "r1", "--limit", "1").exit_code == 0
    part = tmp_path / PART / "run_id=r1" / "part.parquet"
    was = pl.read_parquet(part).filter(pl.col("row_id") == "T1")
    assert was["attempts"].to_list() == [1]

    more = _invoke(fake, path, "--run-id", "r1", "--limit", "4")
    assert more.exit_code == 0, more.output
    assert "--limit changed" in more.stdout and "nothing rewritten" not in more.stdout
    now = pl.read_parquet(part)
    assert now.height == 4
    t1 = now.filter(pl.col("row_id") == "T1")
    assert t1["attempts"].to_list() == [1]  # paid in the first invocation: not reset to 0
    assert t1["estimated_cost_usd"].to_list() == was["estimated_cost_usd"].to_list()
    assert t1["request_id"].to_list() == was["request_id"].to_list()


def test_a_changed_input_on_a_finished_run_id_runs_again(fake, tmp_path):
    path = write_pipeline(tmp_path)
    assert _invoke(fake, path, "--run-id", "n").exit_code == 0
    rows = pl.read_parquet(tmp_path / "data" / "tickets.parquet")
    extra = {"ticket_id": "T5", "subject": "New", "body": "A new ticket."}
    pl.concat([rows, pl.DataFrame([extra])]).write_parquet(tmp_path / "data" / "tickets.parquet")
    sent = fake.stats()["requests"]
    again = _invoke(fake, path, "--run-id", "n")
    assert again.exit_code == 0 and "nothing rewritten" not in again.stdout
    assert fake.stats()["requests"] == sent + 1
    assert pl.read_parquet(tmp_path / PART / "run_id=n" / "part.parquet").height == 5


def test_a_summary_with_a_cost_never_says_spent_nothing(tmp_path, capsys):
    # a resumed run whose answers were all paid in an earlier invocation sent nothing now
    summary = RunSummary(
        run_id="r", pipeline="p", profile="openai", provider="openai", model="gpt-4o-mini",
        rows=4, distinct_requests=3, exact_duplicates=1, semantic_duplicates=0, cache_hits=0,
        sent=0, failed_rows=0, input_tokens=87, cached_input_tokens=0, output_tokens=36,
        cost_usd=0.0762, baseline_cost_usd=0.2, output_path=tmp_path / "o",
        ledger_path=tmp_path / "l")
    print_summary(summary)
    out = capsys.readouterr().out
    assert "cost               $0.0762" in out and "spent $0" not in out
