"""An OpenAI-compatible endpoint without a batch API (a llama.cpp server): a batch run finds out
on its first call and says so, exit 2, before anything is paid (issue 21). Before, it retried
three rounds of 404 and ended exit 1 with every row failed."""

from __future__ import annotations

from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main


def test_a_batch_run_against_an_endpoint_without_a_batch_api_stops_at_once(fake, tmp_path,
                                                                           monkeypatch):
    for name, value in fake_env(fake).items():
        monkeypatch.setenv(name, value)
    data = pipeline_dict(execution={"mode": "batch", "poll_seconds": 0.1})
    # a path the server does not serve: every batch endpoint answers 404
    no_batches = fake.openai_base_url.rstrip("/") + "/no-batch-api"
    data["profiles"]["openai"]["base_url"] = no_batches
    path = write_pipeline(tmp_path, data)
    args = ["run", str(path), "--run-id", "x", "--quiet"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2, done.output
    assert f"the endpoint {no_batches} has no batch API" in done.output
    assert "--mode online" in done.output
    assert fake.stats()["requests"] == 0 and fake.stats()["batches_created"] == 0
    assert not (tmp_path / "out" / "outputs.parquet").exists()
    # a sensor sees it too: exit 2 (a person must act), not "ready" (which re-runs the 2)
    status = CliRunner().invoke(main, ["status", str(path), "--run-id", "x"])
    assert status.exit_code == 2 and "stopped:" in status.output, status.output
    assert "has no batch API" in status.output and "rejected" in status.output
    # the next invocation clears it: sent online (this endpoint serves no chat either, so its
    # rows fail), the run finishes and the sensor sees that run's own exit code
    online = CliRunner().invoke(main, [*args, "--mode", "online"])
    assert online.exit_code == 1, online.output
    after = CliRunner().invoke(main, ["status", str(path), "--run-id", "x"])
    assert after.exit_code == 1 and "finished" in after.output, after.output
