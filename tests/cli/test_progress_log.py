"""Progress in a log: when stderr is not a terminal, a run writes a line per stage and at least
one every $BATCHOPT_PROGRESS_SECONDS, with requests done, rate and spend while sending."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import PROGRESS_LINE, fake_env, pipeline_dict, write_pipeline, write_tickets

from batchopt.cli.main import main
from batchopt.cli.progress import RichObserver
from batchopt.cli.progress_log import LogProgress, clock_time, progress_seconds, usd
from batchopt.errors import ConfigError
from batchopt.execute.state import Submission
from batchopt.providers.batching import BatchStatus

SEND = re.compile(r"send: (\d+)/(\d+) requests \([\d.,]+/s\) · spent (\$[\d.,]+)$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(stream: io.StringIO) -> list[str]:
    return [PROGRESS_LINE.sub("", line) for line in stream.getvalue().splitlines()]


def test_a_stage_longer_than_the_interval_gets_a_heartbeat():
    clock, out = FakeClock(), io.StringIO()
    log = LogProgress(out, 10.0, clock=clock, heartbeat=False)
    log.stage("semantic dedup")
    clock.now += 4
    assert log.tick() == pytest.approx(6.0) and _lines(out) == ["semantic dedup: started"]
    clock.now += 7
    assert log.tick() == 10.0
    assert _lines(out)[-1] == "semantic dedup: running for 11s"
    assert out.getvalue().splitlines()[-1].startswith("[   11s] ")
    clock.now += 65
    log.tick()
    assert _lines(out)[-1] == "semantic dedup: running for 1m16s"


def test_sending_lines_count_requests_and_spend():
    clock, out = FakeClock(), io.StringIO()
    log = LogProgress(out, 10.0, clock=clock, heartbeat=False)
    log.stage("send")
    log.sending(4)
    for _ in range(3):
        log.answered()
    log.spent(0.25)
    log.spent(0.0125)
    clock.now += 10
    log.tick()
    assert _lines(out) == ["send: 4 requests to send",
                           "send: 3/4 requests (0.3/s) · spent $0.2625"]
    log.answered()
    log.stage("write")  # the sending that ended is summed up before the next stage
    assert _lines(out)[-2:] == ["send: 4/4 requests (0.4/s) · spent $0.2625", "write: started"]
    log.close()
    log.close()
    assert len(_lines(out)) == 4


def test_the_heartbeat_thread_writes_while_a_stage_is_silent():
    out = io.StringIO()
    log = LogProgress(out, 0.05)
    log.stage("load model")
    time.sleep(0.4)
    log.close()
    beats = [line for line in _lines(out) if line.startswith("load model: running for")]
    assert beats, out.getvalue()
    written = len(out.getvalue())
    time.sleep(0.15)
    assert len(out.getvalue()) == written  # closed: the thread has stopped


def test_interval_from_the_environment():
    assert progress_seconds({}) == 10.0
    assert progress_seconds({"BATCHOPT_PROGRESS_SECONDS": "0.2"}) == 0.2
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(ConfigError, match="BATCHOPT_PROGRESS_SECONDS"):
            progress_seconds({"BATCHOPT_PROGRESS_SECONDS": bad})
    assert [clock_time(s) for s in (0.4, 59.9, 61, 3599, 3725)] == [
        "0s", "59s", "1m01s", "59m59s", "1h02m"]


def test_batch_waiting_lines_are_written_in_a_log():
    sub = Submission(tag="t1", round=1, provider="openai", model="gpt-4o-mini", requests=8,
                     batch_id="batch_1", state="pending", raw_status="in_progress", error=None,
                     created_at=0.0, ended_at=None)
    status = BatchStatus("batch_1", "pending", "in_progress", total=8, succeeded=3)
    out = io.StringIO()
    observer = RichObserver(interval=60.0, stream=out)
    observer.batches([sub], {"batch_1": status})
    observer.close()
    assert _lines(out) == ["waiting: batch_1 in_progress 3/8"]
    quiet = io.StringIO()
    silent = RichObserver(enabled=False, stream=quiet)
    silent.stage("read")
    silent.batches([sub], {"batch_1": status})
    silent.close()
    assert quiet.getvalue() == ""


def _job(tmp_path: Path) -> Path:
    data = pipeline_dict()
    # dear enough that the spend shows in four decimals
    data["pricing"] = {"models": {"gpt-4o-mini": {"input": 100.0, "output": 200.0}}}
    path = write_pipeline(tmp_path, data, tickets=False)
    write_tickets(tmp_path / "data" / "tickets.parquet", [
        {"ticket_id": f"T{i}", "subject": "s", "body": f"ticket number {i}"} for i in range(40)])
    return path


def test_a_run_logged_to_a_file_shows_its_progress(fake, tmp_path):
    path = _job(tmp_path)
    fake.latency_ms = 150  # 40 requests, 4 at a time: about 1.5 s of sending
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:  # a file, as under cron
        done = subprocess.run(
            [sys.executable, "-m", "batchopt.cli.main", "run", str(path), "--run-id", "logged"],
            env=fake_env(fake, BATCHOPT_PROGRESS_SECONDS="0.2"), stdout=subprocess.PIPE,
            stderr=stderr, text=True, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    assert all(PROGRESS_LINE.match(line) for line in text.splitlines()), text
    lines = [PROGRESS_LINE.sub("", line) for line in text.splitlines()]
    for stage in ("read", "render", "dedup", "write"):
        assert f"{stage}: started" in lines
    assert "send: 40 requests to send" in lines
    sends = [SEND.match(line) for line in lines]
    progress = [(int(m[1]), int(m[2]), m[3]) for m in sends if m]
    assert len(progress) >= 3, text  # periodic lines while sending, then the last one
    assert [d for d, _, _ in progress] == sorted(d for d, _, _ in progress)
    assert progress[-1][:2] == (40, 40)
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=logged"
                             / "part.parquet")
    assert progress[-1][2] == usd(ledger["cost_usd"].sum()) != "$0.0000"
    last = max(i for i, match in enumerate(sends) if match)
    assert lines[last + 1] == "write: started"  # the last send line closes the sending
    assert "[" not in done.stdout and "rows               40" in done.stdout


def test_quiet_writes_no_progress(fake, tmp_path):
    result = CliRunner().invoke(main, ["run", str(_job(tmp_path)), "--quiet"],
                                env={**fake_env(fake), "BATCHOPT_PROGRESS_SECONDS": "0.01"})
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    logged = CliRunner().invoke(main, ["run", str(_job(tmp_path)), "--run-id", "again"],
                                env=fake_env(fake))  # CliRunner's stderr is not a terminal
    assert logged.exit_code == 0 and "read: started" in logged.stderr
    refused = CliRunner().invoke(main, ["run", str(_job(tmp_path))],
                                 env={**fake_env(fake), "BATCHOPT_PROGRESS_SECONDS": "never"})
    assert refused.exit_code == 2 and "BATCHOPT_PROGRESS_SECONDS='never'" in refused.output


def test_a_log_that_cannot_be_written_does_not_stop_the_run():
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    log = LogProgress(Closed(), 10.0, heartbeat=False)
    log.stage("read")
    log.sending(2)
    log.close()


def test_a_batch_stage_shows_its_spend():
    clock, out = FakeClock(), io.StringIO()
    log = LogProgress(out, 10.0, clock=clock, heartbeat=False)
    log.stage("batch")
    clock.now += 12
    log.tick()
    log.spent(0.125)
    clock.now += 3
    log.stage("write")
    assert _lines(out) == ["batch: started", "batch: running for 12s · spent $0.0000",
                           "batch: 15s in this stage · spent $0.1250", "write: started"]
