"""Overlapping schedulers: two and three `batchopt run` processes at once, started as a cron
line or an Airflow retry would start them (the `batchopt` console script, fresh processes).

On one run id: one process advances the run, each other one stops at once with exit 75 and a
message naming the process it waits for, having sent nothing; nothing is billed twice, no batch
is created twice, the state and the cache read back whole, and one more run finishes with the
full outputs without paying again.

On different run ids sharing one cache folder: each request is claimed by the run that sends
it, the others wait for its answer (and say so on stderr) and read it from the cache, so no
request is paid for by two runs and one batch holds it, not one per run; every run finishes
with all its rows, the cache and the run states read back whole, and a later run is answered by
the cache alone ($0). A claim whose holder was killed lapses: see
`test_a_killed_holders_claims_lapse`.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter

import polars as pl
import pytest
from kill_kit import (
    BATCHOPT,
    Job,
    check_rows,
    env_for,
    integrity_ok,
    make_job,
    start_fresh,
)

REFUSED = 75
# the holder of the lock works this long; the others are refused well before it is done
HOLD = {"online": {"latency_ms": 400}, "batch": {"batch_seconds": 4.0}}


def _job(tmp_path, mode: str) -> Job:
    return make_job(tmp_path, mode=mode, distinct=40, duplicates=4, concurrency=4)


def _start_all(job: Job, fake, run_ids: list[str]) -> list:
    env = env_for(fake, job)
    logs = job.folder / "logs"
    logs.mkdir(exist_ok=True)
    return [start_fresh(job.argv(run_id), env, job.folder, logs / f"{i}-{run_id}.log",
                        console_script=True) for i, run_id in enumerate(run_ids)]


def _billed(fake) -> Counter:
    return Counter(e["request_hash"] for e in fake.log())


@pytest.mark.parametrize("runs", [2, 3])
@pytest.mark.parametrize("mode", ["online", "batch"])
def test_overlapping_runs_on_one_run_id(fake, kill_tally, tmp_path, mode, runs):
    for name, value in HOLD[mode].items():
        setattr(fake, name, value)
    job = _job(tmp_path, mode)
    children = _start_all(job, fake, ["nightly"] * runs)
    codes = [child.wait(timeout=180) for child in children]
    winners = [c for c, code in zip(children, codes, strict=True) if code == 0]
    losers = [c for c, code in zip(children, codes, strict=True) if code != 0]
    billed = _billed(fake)
    kill_tally.schedulers.append({"kind": "same", "runs": runs, "refused": len(losers),
                                  "paid_twice": sum(n - 1 for n in billed.values()),
                                  "rows": len(job.ids)})

    assert len(winners) == 1, [(c.pid, c.status, c.output()) for c in children]
    assert sorted(codes) == [0] + [REFUSED] * (runs - 1), codes
    for loser in losers:
        lines = [line for line in loser.output().splitlines() if line.strip()]
        assert len(lines) == 1, loser.output()
        assert re.fullmatch(
            rf"error: run 'nightly' is being advanced by batchopt pid {winners[0].pid} since "
            r"\d\d:\d\d:\d\d; nothing was sent\. Run the same command again once it is done",
            lines[0]), lines[0]
    # one process did the work: every request billed once, one batch
    assert len(billed) == job.distinct and max(billed.values()) == 1, billed.most_common(3)
    assert fake.stats()["batches_created"] == (1 if mode == "batch" else 0)
    check_rows(job, "nightly", modes={mode})
    assert integrity_ok(job.cache / "cache.db") and integrity_ok(job.state("nightly"))

    # readable afterwards: status says finished; the run once more pays nothing
    env = env_for(fake, job)
    status = subprocess.run([str(BATCHOPT), "status", str(job.pipeline), "--run-id", "nightly"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "finished" in status.stdout, status.stdout + status.stderr
    fake.latency_ms = 0
    before = len(fake.log())
    again = start_fresh(job.argv("nightly"), env, job.folder, job.folder / "logs" / "again.log",
                        console_script=True)
    assert again.wait(timeout=120) == 0, again.output()
    assert len(fake.log()) == before and fake.stats()["batches_created"] == (mode == "batch")
    check_rows(job, "nightly", modes={mode})


def _shared_cache_runs(fake, tmp_path, mode: str, runs: int) -> tuple[Job, Counter, list]:
    """`runs` run ids over the same rows and the same cache folder, all at once (as cron lines
    would start them). The sending lasts seconds, so on a loaded machine the later processes
    (a few seconds of imports each) still start while the first one holds its claims."""
    fake.latency_ms = 600  # 40 requests at concurrency 4: about 6 s of sending
    fake.batch_seconds = 8.0
    job = _job(tmp_path, mode)
    run_ids = [f"r{i}" for i in range(runs)]
    children = _start_all(job, fake, run_ids)
    codes = [child.wait(timeout=180) for child in children]
    assert codes == [0] * runs, [(c.status, c.output()) for c in children]
    return job, _billed(fake), children


@pytest.mark.parametrize("runs", [2, pytest.param(3, marks=pytest.mark.slow_faults)])
@pytest.mark.parametrize("mode", ["online", "batch"])
def test_run_ids_sharing_a_cache_pay_each_request_once(fake, kill_tally, tmp_path, mode, runs):
    """The issue's bound: across runs that share a cache, a request is paid twice only if two
    had it in flight at once (online: at most the concurrency; with claims, none); a batch is
    never created for requests another run already has in an open batch."""
    job, billed, children = _shared_cache_runs(fake, tmp_path, mode, runs)
    twice = sum(n - 1 for n in billed.values())
    kill_tally.schedulers.append({"kind": "shared", "runs": runs, "paid_twice": twice,
                                  "rows": runs * len(job.ids)})
    assert len(billed) == job.distinct
    assert twice <= (job.concurrency if mode == "online" else 0), (
        f"{twice} of {job.distinct} requests paid by two runs",
        [(c.pid, c.output()[-1500:]) for c in children], fake.log()[:3])
    if mode == "batch":
        assert fake.stats()["batches_created"] == 1
    for i in range(runs):
        ledger = pl.read_parquet(job.ledger(f"r{i}"))
        assert sorted(ledger["row_id"].to_list()) == sorted(job.ids)
        assert (ledger["status"] == "ok").all()
        assert integrity_ok(job.state(f"r{i}"))
        for row in ledger.filter(pl.col("mode") == "cache").iter_rows(named=True):
            assert row["cached_from_run"] in {f"r{j}" for j in range(runs)} - {f"r{i}"}
    # the runs that waited said so, naming the run they waited for
    waited = [c.output() for c in children if "waiting:" in c.output()]
    assert waited and all(re.search(r"by run r\d \(pid \d+", out) for out in waited)
    assert integrity_ok(job.cache / "cache.db")
    assert sorted(pl.read_parquet(job.outputs)["ticket_id"].to_list()) == sorted(job.ids)

    # the cache is whole: a later run on another id is answered by it alone
    before = len(fake.log())
    later = start_fresh(job.argv("later"), env_for(fake, job), job.folder,
                        job.folder / "logs" / "later.log", console_script=True)
    assert later.wait(timeout=120) == 0, later.output()
    assert len(fake.log()) == before
    ledger = pl.read_parquet(job.ledger("later"))
    assert set(ledger["mode"]) <= {"cache", "dedup"} and ledger["cost_usd"].sum() == 0


def test_a_run_id_started_after_another_finished_sending_pays_nothing(fake, tmp_path):
    """Sharing a cache in sequence: the second run finds every answer the first one saved."""
    fake.latency_ms = 20
    job = _job(tmp_path, "online")
    env = env_for(fake, job)
    (job.folder / "logs").mkdir()
    first = start_fresh(job.argv("first"), env, job.folder, job.folder / "logs" / "1.log",
                        console_script=True)
    while len(fake.log()) < job.distinct:
        assert first.poll() in (None, 0), first.output()
        time.sleep(0.01)
    second = start_fresh(job.argv("second"), env, job.folder, job.folder / "logs" / "2.log",
                         console_script=True)
    assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    assert max(_billed(fake).values()) == 1 and len(fake.log()) == job.distinct


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_a_killed_holders_claims_lapse(fake, tmp_path, mode):
    """Run A is SIGKILLed while it holds claims; run B (another id, same cache), started
    after, takes over what A claimed but never answered instead of waiting for it, and pays
    again only for what A had in flight (online) or never got into a batch (batch: a batch A
    created is waited for, read from the cache once A's run id collects it)."""
    for name, value in HOLD[mode].items():
        setattr(fake, name, value)
    job = _job(tmp_path, mode)
    env = env_for(fake, job)
    (job.folder / "logs").mkdir()
    a = start_fresh(job.argv("A"), env, job.folder, job.folder / "logs" / "A.log",
                    console_script=True)
    deadline = time.monotonic() + 60
    while (len(fake.log()) < 3 if mode == "online" else fake.stats()["batches_created"] < 1):
        assert a.poll() is None, a.output()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    a.kill()
    a.wait()
    fake.latency_ms, fake.batch_seconds = 0, 0.5
    paid_by_a = len(fake.log()) if mode == "online" else 0
    b = start_fresh([*job.argv("B"), *(["--no-wait"] if mode == "batch" else [])], env,
                    job.folder, job.folder / "logs" / "B.log", console_script=True)
    if mode == "online":
        assert b.wait(timeout=120) == 0, b.output()
        billed = _billed(fake)
        assert len(billed) == job.distinct
        # paid twice: only what A had in flight when it died
        assert sum(n - 1 for n in billed.values()) <= job.concurrency
        assert len(fake.log()) <= job.distinct + min(paid_by_a, job.concurrency)
        ledger = pl.read_parquet(job.ledger("B"))
        assert sorted(ledger["row_id"].to_list()) == sorted(job.ids)
        return
    # batch: A's batch holds every request; B waits for it (exit 75) and creates none
    assert b.wait(timeout=120) == REFUSED, b.output()
    assert "in a batch of run A" in b.output() and fake.stats()["batches_created"] == 1
    resumed = start_fresh(job.argv("A"), env, job.folder, job.folder / "logs" / "A2.log",
                          console_script=True)
    assert resumed.wait(timeout=120) == 0, resumed.output()
    again = start_fresh(job.argv("B"), env, job.folder, job.folder / "logs" / "B2.log",
                        console_script=True)
    assert again.wait(timeout=120) == 0, again.output()
    assert fake.stats()["batches_created"] == 1 and max(_billed(fake).values()) == 1
    ledger = pl.read_parquet(job.ledger("B"))
    assert sorted(ledger["row_id"].to_list()) == sorted(job.ids)
    assert set(ledger["mode"]) <= {"cache", "dedup"}
