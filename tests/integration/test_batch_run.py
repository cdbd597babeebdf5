"""Batch runs end to end: both providers' batch APIs through the SDKs against the fake server,
runs that survive a kill and overlapping schedulers, partial results, and batch prices."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.errors import EXIT_PENDING, ConfigError
from batchopt.execute.state import RunLock
from batchopt.run.runner import RunOptions, RunPending, RunSummary, run_pipeline
from batchopt.run.status import run_status

BATCHOPT = Path(sys.executable).parent / "batchopt"


def _tickets(n: int) -> list[dict[str, str]]:
    return [{"ticket_id": f"T{i:03d}", "subject": "Order", "body": f"Where is order #{7000 + i}?"}
            for i in range(n)]


def _pipeline(tmp_path: Path, n: int = 12, **execution: object) -> Path:
    data = pipeline_dict(execution={"mode": "batch", "poll_seconds": 0.1, **execution})
    path = write_pipeline(tmp_path, data)
    pl.DataFrame(_tickets(n)).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _env(fake) -> dict[str, str]:
    return fake_env(fake, "sk-test-batch-0001", "sk-ant-test-batch-0002")


def _run(path: Path, fake, **options: object) -> RunSummary | RunPending:
    return run_pipeline(load_pipeline(path), RunOptions(**options), env=_env(fake))


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def _paid(fake, wire: str) -> list[str]:
    return [e["request_hash"] for e in fake.log() if e["wire"] == wire]


# A negotiated contract, the same on both sides: the pipeline's `pricing.models` and the fake
# server's rates. Its batch discount is not a half, so `online * discount` and
# `online * (1 - discount)` differ.
CONTRACT = {"input": 0.12, "output": 0.50, "cached_input": 0.06, "cache_write": 0.15}
CONTRACT_DISCOUNT = 0.3


@pytest.mark.parametrize("contract", [False, True], ids=["list-price", "contract"])
@pytest.mark.parametrize("profile", ["openai", "anthropic"])
def test_batch_run_end_to_end_at_the_batch_price(fake, tmp_path, profile, contract):
    fake.batch_seconds = 0.3
    path = _pipeline(tmp_path)
    model = load_pipeline(path).config.profiles[profile].model
    if contract:
        data = yaml.safe_load(path.read_text())
        data["pricing"] = {"models": {model: {**CONTRACT, "batch_discount": CONTRACT_DISCOUNT}}}
        path.write_text(yaml.safe_dump(data))
        fake.set_prices({model: {**CONTRACT, "batch": 1 - CONTRACT_DISCOUNT}})
    summary = _run(path, fake, profile=profile, run_id="b1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    stats = fake.stats()
    assert stats["batches_created"] == 1 and stats["batch_requests"] == 12
    assert _paid(fake, profile) == [] and len(set(_paid(fake, f"{profile}-batch"))) == 12

    ledger = _ledger(tmp_path, "b1")
    assert (ledger["mode"] == "batch").all() and ledger["batch_id"].n_unique() == 1
    # the ledger is what the fake server billed, at its own batch prices: per row and in all
    log, bill = fake.log(), fake.bill()
    assert bill["online_usd"] == 0 and bill["unpriced"] == []
    assert sorted(ledger["cost_usd"]) == pytest.approx(sorted(e["cost_usd"] for e in log),
                                                      rel=1e-9, abs=1e-15)
    assert abs(ledger["cost_usd"].sum() - bill["batch_usd"]) < 1e-12
    billed = bill["by_model"][model]["batch"]
    assert ledger["input_tokens"].sum() == billed["input_tokens"]
    assert ledger["output_tokens"].sum() == billed["output_tokens"]
    # saved by batch: what the same tokens cost online, at the fake's online price
    prices = fake.state.prices
    online = sum(prices.cost(e["model"], e["input_tokens"], e["output_tokens"]) for e in log)
    assert abs(ledger["saved_batch_usd"].sum() - (online - bill["batch_usd"])) < 1e-12
    assert ledger["saved_batch_usd"].min() > 0


def test_no_wait_returns_pending_and_a_later_call_collects(fake, tmp_path):
    fake.batch_seconds = 1.0
    path = _pipeline(tmp_path)
    loaded = load_pipeline(path)
    first = _run(path, fake, run_id="night", wait=False)
    assert isinstance(first, RunPending) and first.exit_code == EXIT_PENDING
    assert len(first.batches) == 1 and first.batches[0].batch_id
    assert not (tmp_path / "out" / "outputs.parquet").exists()
    report = run_status(loaded, RunOptions(run_id="night"), env=_env(fake))
    assert report.state == "pending" and report.exit_code == EXIT_PENDING
    assert report.statuses[first.batches[0].batch_id].state == "pending"

    again = _run(path, fake, run_id="night", wait=False)  # still out: nothing new is sent
    assert isinstance(again, RunPending) and fake.stats()["batches_created"] == 1
    time.sleep(1.1)
    report = run_status(loaded, RunOptions(run_id="night"), env=_env(fake))
    assert report.state == "ready" and report.exit_code == 0  # ended: the next run collects
    with RunLock(tmp_path / "out" / "cache" / "tickets" / "runs" / "night", "night"):
        report = run_status(loaded, RunOptions(run_id="night"), env=_env(fake))
        assert report.state == "running" and report.exit_code == EXIT_PENDING
    done = _run(path, fake, run_id="night", wait=False)
    assert isinstance(done, RunSummary) and done.exit_code == 0
    assert fake.stats()["batches_created"] == 1 and len(fake.log()) == 12
    assert pl.read_parquet(tmp_path / "out" / "outputs.parquet")["summary"].null_count() == 0
    report = run_status(loaded, RunOptions(run_id="night"), env=_env(fake))
    assert report.state == "finished" and report.exit_code == 0
    with pytest.raises(ConfigError, match="no run 'nope'"):
        run_status(loaded, RunOptions(run_id="nope"), env=_env(fake))


def _cli(path: Path, *args: str) -> list[str]:
    return [str(BATCHOPT), "run", str(path), "--quiet", *args]


def _recorded_batch_ids(state: Path) -> list[str]:
    if not state.exists():
        return []
    try:
        with sqlite3.connect(state) as db:
            rows = db.execute("SELECT batch_id FROM submissions").fetchall()
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return []
    return [batch_id for (batch_id,) in rows if batch_id]


def test_a_run_killed_after_submitting_submits_nothing_again(fake, tmp_path):
    fake.batch_seconds = 3.0
    path = _pipeline(tmp_path, n=30)
    env = _env(fake)
    state = tmp_path / "out" / "cache" / "tickets" / "runs" / "k1" / "state.sqlite"
    child = subprocess.Popen(_cli(path, "--run-id", "k1"), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not _recorded_batch_ids(state) and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert fake.stats()["batches_created"] == 1 and len(_recorded_batch_ids(state)) == 1

    done = subprocess.run(_cli(path, "--run-id", "k1"), env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert fake.stats()["batches_created"] == 1  # collected, not submitted again
    hashes = _paid(fake, "openai-batch")
    assert len(hashes) == len(set(hashes)) == 30
    ledger = _ledger(tmp_path, "k1")
    assert (ledger["mode"] == "batch").all() and ledger["batch_id"].to_list() == [
        _recorded_batch_ids(state)[0]] * 30


def test_two_runs_on_one_run_id_submit_once(fake, tmp_path):
    fake.batch_seconds = 1.5
    path = _pipeline(tmp_path)
    env = _env(fake)
    children = [subprocess.Popen(_cli(path, "--run-id", "same"), env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for _ in range(2)]
    outcomes = sorted((c.wait(timeout=120), c.stderr.read()) for c in children)
    assert [code for code, _ in outcomes] == [0, EXIT_PENDING], outcomes
    message = outcomes[1][1]
    assert "being advanced by batchopt pid" in message and "nothing was sent" in message
    assert fake.stats()["batches_created"] == 1 and len(fake.log()) == 12


@pytest.mark.parametrize("mode", ["batch", "auto"])
def test_an_expired_batch_keeps_its_done_rows_and_retries_the_rest(fake, tmp_path, mode):
    fake.batch_seconds = 0.2
    fake.set_faults([{"batch": "expire", "done_share": 0.5}])
    path = _pipeline(tmp_path, mode=mode)
    summary = _run(path, fake, run_id="x1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = _ledger(tmp_path, "x1")
    first_batch = ledger.filter(pl.col("retry_reason").is_null())
    retried = ledger.filter(pl.col("retry_reason").is_not_null())
    assert first_batch.height == 6 and retried.height == 6
    assert retried["retry_reason"].str.starts_with("expired in ").all()
    hashes = [e["request_hash"] for e in fake.log()]
    assert len(hashes) == len(set(hashes)) == 12  # every row paid once
    if mode == "batch":
        assert fake.stats()["batches_created"] == 2
        assert (retried["mode"] == "batch").all() and (retried["attempts"] == 2).all()
        assert retried["batch_id"].n_unique() == 1
        assert retried["batch_id"][0] != first_batch["batch_id"][0]
    else:  # auto: what the batch left goes online
        assert fake.stats()["batches_created"] == 1
        assert (retried["mode"] == "online").all() and len(_paid(fake, "openai")) == 6
    assert (first_batch["mode"] == "batch").all()


def test_rows_that_error_in_every_round_fail_and_say_why(fake, tmp_path):
    fake.batch_seconds = 0.2
    fake.set_faults([{"batch": "errors", "rows": 2, "message": "row exploded"}])
    path = _pipeline(tmp_path, batch_rounds=1)
    summary = _run(path, fake, run_id="e1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 1
    failed = _ledger(tmp_path, "e1").filter(pl.col("status") == "failed")
    assert failed.height == 2 and failed["error"].str.contains("row exploded").all()
    assert (failed["cost_usd"] == 0).all()


def test_a_create_call_that_times_out_is_adopted_by_its_tag(fake, tmp_path):
    fake.batch_seconds = 0.3
    fake.set_faults([{"batch": "ack_delay", "delay_ms": 3000}])
    data = pipeline_dict(execution={"mode": "batch", "poll_seconds": 0.1})
    data["profiles"]["openai"]["timeout_s"] = 1
    path = write_pipeline(tmp_path, data)
    pl.DataFrame(_tickets(8)).write_parquet(tmp_path / "data" / "tickets.parquet")
    summary = _run(path, fake, run_id="a1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    assert fake.stats()["batches_created"] == 1 and len(fake.log()) == 8


def test_mode_choices_and_their_errors(fake, tmp_path):
    fake.batch_seconds = 0.2
    path = _pipeline(tmp_path, mode="auto", deadline_hours=2)  # too soon for a batch
    summary = _run(path, fake, run_id="o1")
    assert isinstance(summary, RunSummary)
    assert fake.stats()["batches_created"] == 0
    assert (_ledger(tmp_path, "o1")["mode"] == "online").all()
    data = pipeline_dict(execution={"mode": "batch"})
    data["profiles"]["local"] = {"provider": "local", "model": "smollm2"}
    local = write_pipeline(tmp_path / "l", data)
    with pytest.raises(ConfigError, match="execution.mode batch: profile 'local'.*no batch API"):
        run_pipeline(load_pipeline(local), RunOptions(profile="local"), env=_env(fake))
    online = _run(path, fake, run_id="o2", mode="online")
    assert isinstance(online, RunSummary) and fake.stats()["batches_created"] == 0


def test_requests_beyond_one_batch_are_split_to_the_providers_limits(fake, tmp_path, monkeypatch):
    from batchopt.providers.batching import BatchLimits
    from batchopt.providers.openai import OpenAIProvider

    monkeypatch.setattr(OpenAIProvider, "batch_limits", BatchLimits(max_requests=5,
                                                                    max_bytes=10**9))
    fake.batch_seconds = 0.2
    path = _pipeline(tmp_path)
    summary = _run(path, fake, run_id="s1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    assert fake.stats()["batches_created"] == 3  # 12 requests, 5 a batch
    ledger = _ledger(tmp_path, "s1")
    assert sorted(ledger.group_by("batch_id").len()["len"].to_list()) == [2, 5, 5]


def test_status_command_exit_codes(fake, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from batchopt.cli.main import main

    fake.batch_seconds = 0.2
    path = _pipeline(tmp_path)
    for name, value in _env(fake).items():
        monkeypatch.setenv(name, value)
    unknown = CliRunner().invoke(main, ["status", str(path), "--run-id", "never"])
    assert unknown.exit_code == 2 and "no run 'never'" in unknown.output
    assert isinstance(_run(path, fake, run_id="st"), RunSummary)
    done = CliRunner().invoke(main, ["status", str(path), "--run-id", "st"])
    assert done.exit_code == 0 and "finished" in done.output and "round 1" in done.output


def _another_runs_batch_under_this_run_id(fake, tmp_path: Path, fault: str) -> str:
    """Another run with the run id "night" (its own cache and ledger folders) leaves a batch out
    at the provider; this run's next create call meets `fault` (delayed 3 s, its timeout 1 s).
    Returns the other run's batch id."""
    fake.batch_seconds = 2.0
    path = _pipeline(tmp_path, n=8)
    other = _run(path, fake, run_id="night", wait=False, cache_dir=tmp_path / "other-cache",
                 ledger=tmp_path / "other-ledger")
    assert isinstance(other, RunPending)
    (theirs,) = [s.batch_id for s in other.batches]
    fake.batch_seconds = 0.3
    fake.set_faults([{"batch": fault, "delay_ms": 3000}])
    data = yaml.safe_load(path.read_text())
    data["profiles"]["openai"]["timeout_s"] = 1
    path.write_text(yaml.safe_dump(data))
    assert theirs is not None
    return theirs


def test_a_batch_found_by_its_tag_is_adopted_only_if_this_run_state_made_it(fake, tmp_path):
    """Another run with the same run id (its own cache and ledger folders) has a batch out
    under the same tag; this run's create call times out: it must find its own batch, not take
    the other's (which it would mark collected with answers it never asked for)."""
    theirs = _another_runs_batch_under_this_run_id(fake, tmp_path, "ack_delay")
    mine = _run(tmp_path / "pipeline.yaml", fake, run_id="night")
    assert isinstance(mine, RunSummary) and mine.exit_code == 0
    assert fake.stats()["batches_created"] == 2
    ledger = _ledger(tmp_path, "night")
    assert theirs not in ledger["batch_id"].to_list()
    state = tmp_path / "out" / "cache" / "tickets" / "runs" / "night" / "state.sqlite"
    assert theirs not in _recorded_batch_ids(state)


def test_another_runs_batch_under_this_run_ids_tag_is_named_not_adopted(fake, tmp_path):
    """This run's upload breaks off (no batch was made); another run with the same run id (its
    own cache and ledger folders) has a batch out under the same tag: the lost submission names
    it, and its rows go out again in a batch of this run's own."""
    theirs = _another_runs_batch_under_this_run_id(fake, tmp_path, "upload_delay")
    mine = _run(tmp_path / "pipeline.yaml", fake, run_id="night")
    assert isinstance(mine, RunSummary) and mine.exit_code == 0
    state = tmp_path / "out" / "cache" / "tickets" / "runs" / "night" / "state.sqlite"
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT state, batch_id, error FROM submissions").fetchall()
    lost = [error for kind, _, error in rows if kind == "lost"]
    assert len(lost) == 1 and theirs in lost[0] and "not adopted" in lost[0], rows
    assert theirs not in _ledger(tmp_path, "night")["batch_id"].to_list()
