"""A run's logical date (issue 21): `--date`, else the date its run id names, else today. It fills
`${date}` in the YAML, is written to the ledger, and is the day the views and the report count
the run on, so a backfill of three nights run in one afternoon is three days."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.config.pipeline import load_pipeline
from batchopt.dates import date_of_run_id, logical_date
from batchopt.ledger.store import connect
from batchopt.report import data as report_data

NIGHTS = ("2026-11-28", "2026-11-29", "2026-11-30")


@pytest.mark.parametrize(("run_id", "day"), [
    ("2026-12-01", "2026-12-01"),
    ("2026-12-01-retry", "2026-12-01"),
    ("2026-12-01T02:00:00+00:00", "2026-12-01"),
    ("scheduled__2026-12-01T00:00:00+00:00", "2026-12-01"),
    ("backfill__2026-02-28T00:00:00+00:00", "2026-02-28"),
    ("2026-13-45", None),  # shaped like a date, not one
    ("20261201", None),
    ("night-2026-12-01", None),  # a date inside a name is not the run's date
    ("tickets-1", None),
    (None, None),
])
def test_the_date_a_run_id_names(run_id, day):
    assert date_of_run_id(run_id) == (dt.date.fromisoformat(day) if day else None)


def test_date_given_beats_the_run_id_which_beats_today():
    now = dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    assert logical_date(dt.date(2026, 1, 2), "2026-12-01", now) == dt.date(2026, 1, 2)
    assert logical_date(None, "2026-12-01", now) == dt.date(2026, 12, 1)
    assert logical_date(None, "tickets-1", now) == dt.date(2026, 12, 8)  # today in UTC


def test_date_in_the_yaml_is_the_logical_date(tmp_path):
    data = pipeline_dict()
    data["input"]["path"] = "data/day=${date}"
    path = write_pipeline(tmp_path, data)
    loaded = load_pipeline(path, env={}, date=dt.date(2026, 12, 1))
    assert loaded.config.input.path == "data/day=2026-12-01"
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert load_pipeline(path, env={}).config.input.path == f"data/day={today}"


def _backfill_pipeline(tmp_path: Path) -> Path:
    data = pipeline_dict()
    data["input"]["path"] = "data/day=${date}"
    data["output"]["path"] = "out/day=${date}/outputs.parquet"
    path = write_pipeline(tmp_path, data, tickets=False)
    for n, night in enumerate(NIGHTS):
        folder = tmp_path / "data" / f"day={night}"
        folder.mkdir(parents=True)
        pl.DataFrame([{"ticket_id": f"N{n}-{i}", "subject": "Order",
                       "body": f"Night {night}: where is order #{n * 10 + i}?"}
                      for i in range(n + 2)]).write_parquet(folder / "part.parquet")
    return path


def test_a_backfill_by_date_is_three_days_in_the_views_and_the_report(fake, tmp_path,
                                                                       monkeypatch):
    for name, value in fake_env(fake).items():
        monkeypatch.setenv(name, value)
    path = _backfill_pipeline(tmp_path)
    for n, night in enumerate(NIGHTS):  # one afternoon, three nights
        done = CliRunner().invoke(main, ["run", str(path), "--quiet", "--date", night,
                                         "--run-id", f"backfill-{n}"])
        assert done.exit_code == 0, done.output
        outputs = pl.read_parquet(tmp_path / "out" / f"day={night}" / "outputs.parquet")
        assert outputs.height == n + 2  # that night's partition, and only it

    ledger_dir = tmp_path / "out" / "ledger"
    con = connect(ledger_dir)
    trend = con.sql("SELECT CAST(day AS VARCHAR) AS day, runs, rows FROM daily_trend "
                    "ORDER BY day").fetchall()
    assert trend == [(night, 1, n + 2) for n, night in enumerate(NIGHTS)]
    dates = con.sql("SELECT run_id, CAST(logical_date AS VARCHAR) FROM ledger "
                    "GROUP BY ALL ORDER BY run_id").fetchall()
    assert dates == [(f"backfill-{n}", night) for n, night in enumerate(NIGHTS)]

    report = report_data.load(ledger_dir, "backfill-2")
    assert report.by_day["day"].to_list() == list(NIGHTS)
    assert report.by_day["runs"].to_list() == [1, 1, 1]


def test_a_dated_run_id_is_its_night(fake, tmp_path, monkeypatch):
    for name, value in fake_env(fake).items():
        monkeypatch.setenv(name, value)
    path = _backfill_pipeline(tmp_path)
    done = CliRunner().invoke(main, ["run", str(path), "--quiet", "--run-id", NIGHTS[1]])
    assert done.exit_code == 0, done.output
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets"
                             / f"run_id={NIGHTS[1]}" / "part.parquet")
    assert ledger.height == 3 and ledger["logical_date"].to_list() == [dt.date(2026, 11, 29)] * 3


def test_the_plans_last_run_is_the_newest_night_not_the_newest_backfill(fake, tmp_path,
                                                                       monkeypatch):
    from batchopt.ledger.history import read_history

    for name, value in fake_env(fake).items():
        monkeypatch.setenv(name, value)
    path = _backfill_pipeline(tmp_path)
    for night in (NIGHTS[2], NIGHTS[0]):  # the latest night first, then a backfill of an older
        done = CliRunner().invoke(main, ["run", str(path), "--quiet", "--run-id", night])
        assert done.exit_code == 0, done.output
    history = read_history(tmp_path / "out" / "ledger", "tickets")
    assert history.last_run is not None and history.last_run.run_id == NIGHTS[2]
