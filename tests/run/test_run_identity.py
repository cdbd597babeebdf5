"""A run id is one run (issue 21): invoking it again goes on with it only with the same
configuration, night and cache folder; anything else is refused before any spend, exit 2, with
what to do. Before, a fresh cache folder on a used run id paid every answer again and replaced
the ledger of what was paid the first time."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.config.pipeline import load_pipeline
from batchopt.errors import ConfigError
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline


def _run(path, fake, **options):
    return run_pipeline(load_pipeline(path), RunOptions(**options), env=fake_env(fake))


def _part(tmp_path, run_id):
    return (tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
            / "part.parquet")


def test_a_fresh_cache_folder_on_a_used_run_id_is_refused_before_any_spend(fake, tmp_path):
    path = write_pipeline(tmp_path, pipeline_dict())
    assert _run(path, fake, run_id="night").exit_code == 0
    paid, ledger = fake.stats()["requests"], _part(tmp_path, "night").read_bytes()
    with pytest.raises(ConfigError, match=r"was started with the cache folder .*out/cache.*"
                                          r"--cache-dir .* or a new --run-id"):
        _run(path, fake, run_id="night", cache_dir=tmp_path / "cache2")
    assert fake.stats()["requests"] == paid  # nothing sent
    assert _part(tmp_path, "night").read_bytes() == ledger  # nothing rewritten
    # the cache folder it ran with goes on with it (a finished run: read back, nothing sent)
    again = _run(path, fake, run_id="night")
    assert isinstance(again, RunSummary) and again.finished_at and fake.stats()["requests"] == paid


def test_a_ledger_without_an_identity_and_no_state_for_it_is_refused(fake, tmp_path):
    path = write_pipeline(tmp_path, pipeline_dict())
    assert _run(path, fake, run_id="old").exit_code == 0
    (_part(tmp_path, "old").parent / "run.json").unlink()  # as a ledger written before it
    shutil.rmtree(tmp_path / "out" / "cache")
    paid = fake.stats()["requests"]
    with pytest.raises(ConfigError, match="already has a ledger .* has no state for it"):
        _run(path, fake, run_id="old")
    assert fake.stats()["requests"] == paid


def test_another_configuration_on_a_used_run_id_is_refused_with_exit_2(fake, tmp_path,
                                                                      monkeypatch):
    for name, value in fake_env(fake).items():
        monkeypatch.setenv(name, value)
    path = write_pipeline(tmp_path, pipeline_dict())
    args = ["run", str(path), "--quiet", "--run-id", "night"]
    assert CliRunner().invoke(main, args).exit_code == 0
    paid = fake.stats()["requests"]
    data = yaml.safe_load(path.read_text())
    data["profiles"]["openai"]["max_tokens"] = 64
    path.write_text(yaml.safe_dump(data))
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2, refused.output
    assert "started with another configuration" in refused.output
    assert "use a new --run-id" in refused.output
    assert fake.stats()["requests"] == paid
    assert CliRunner().invoke(main, [*args[:-1], "night-64"]).exit_code == 0  # a new run id runs


def test_a_run_keeps_the_night_it_was_started_for(fake, tmp_path):
    path = write_pipeline(tmp_path, pipeline_dict())
    night = dt.date(2026, 11, 30)
    assert _run(path, fake, run_id="tickets-1", date=night).exit_code == 0
    # invoked again without --date (a later day): still that night's run
    _part(tmp_path, "tickets-1").unlink()  # its ledger is written again from the cache
    assert _run(path, fake, run_id="tickets-1").exit_code == 0
    ledger = pl.read_parquet(_part(tmp_path, "tickets-1"))
    assert ledger["logical_date"].unique().to_list() == [night]
    recorded = json.loads((_part(tmp_path, "tickets-1").parent / "run.json").read_text())
    assert recorded["logical_date"] == "2026-11-30"
    with pytest.raises(ConfigError, match="is for 2026-11-30; --date 2026-12-01 names another"):
        _run(path, fake, run_id="tickets-1", date=dt.date(2026, 12, 1))
