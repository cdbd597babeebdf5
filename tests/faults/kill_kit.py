"""The test side of the fault tests: pipelines to run, child processes to start and kill, and
the checks that a run resumed after a kill lost no row and paid for nothing twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from helpers import cached_answer_ids, fake_env, pipeline_dict
from kill_child import KILL_ENV, KillAt

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
BATCHOPT = Path(sys.executable).parent / "batchopt"
CHILD = Path(__file__).resolve().parent / "kill_child.py"
KILLED = -signal.SIGKILL


# ---- children -------------------------------------------------------------------------------


class Child:
    """One `batchopt run` process: its pid, and how to kill and wait for it."""

    def __init__(self, pid: int, log: Path, waiter: Callable[[float], int],
                 poller: Callable[[], int | None]) -> None:
        self.pid, self.log = pid, log
        self._wait, self._poll = waiter, poller
        self.status: int | None = None

    def kill(self) -> None:
        """SIGKILL it (harmless if it has exited: it stays a zombie until waited for)."""
        os.kill(self.pid, signal.SIGKILL)

    def poll(self) -> int | None:
        if self.status is None:
            self.status = self._poll()
        return self.status

    def wait(self, timeout: float = 180) -> int:
        if self.status is None:
            self.status = self._wait(timeout)
        return self.status

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ForkServer:
    """`python tests/faults/kill_child.py serve`: forks a `batchopt run` child per `start`."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(CHILD), "serve"], cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        ready = self._read()
        assert "ready" in ready, ready

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            assert self._proc.stderr is not None
            raise RuntimeError(f"the fork server died: {self._proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path,
              kill: KillAt | None = None) -> Child:
        pid = self._ask({"op": "start", "argv": argv, "env": env, "cwd": str(cwd),
                         "log": str(log), "kill": kill.to_json() if kill else None})["pid"]

        def waiter(timeout: float) -> int:
            reply = self._ask({"op": "wait", "pid": pid, "timeout": timeout})
            assert not reply.get("timeout"), f"child {pid} ran over {timeout} s: {log}"
            return int(reply["status"])

        def poller() -> int | None:
            return self._ask({"op": "poll", "pid": pid})["status"]

        return Child(pid, log, waiter, poller)

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


def start_fresh(argv: list[str], env: dict[str, str], cwd: Path, log: Path,
                kill: KillAt | None = None, *, console_script: bool = False) -> Child:
    """A child in a fresh interpreter: the `batchopt` console script itself, or (with a kill
    point) `python tests/faults/kill_child.py run`, which installs it first."""
    env = dict(env)
    if console_script:
        assert kill is None
        cmd = [str(BATCHOPT), *argv]
    else:
        if kill is not None:
            env[KILL_ENV] = kill.to_json()
        cmd = [sys.executable, str(CHILD), *argv]
    handle = log.open("wb")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    handle.close()

    def waiter(timeout: float) -> int:
        return proc.wait(timeout=timeout)

    return Child(proc.pid, log, waiter, proc.poll)


# ---- the job --------------------------------------------------------------------------------


@dataclass
class Job:
    """A pipeline, the folder its run writes under, and what its runs should produce."""

    folder: Path
    pipeline: Path
    ids: list[str]  # every input row id, once
    distinct: int | None  # distinct requests (rows after dedup); None: as the ledger says
    provider: str
    concurrency: int
    mode: str = "online"
    name: str = "tickets"
    outputs: Path = Path()
    env: dict[str, str] = field(default_factory=dict)

    @property
    def tiers(self) -> int:
        """The tiers every row visits (a request each; in batch mode, a batch each)."""
        return len(_CASCADE_TIERS) if self.provider == CASCADE else 1

    def __post_init__(self) -> None:
        if self.outputs == Path():
            self.outputs = self.folder / "out" / "outputs.parquet"

    def argv(self, run_id: str, *extra: str) -> list[str]:
        argv = ["run", str(self.pipeline), "--run-id", run_id, "--quiet"]
        if self.provider != CASCADE:  # a cascade's tiers name their own profiles
            argv += ["--profile", self.provider]
        return argv + (["--mode", "batch"] if self.mode == "batch" else []) + list(extra)

    @property
    def cache(self) -> Path:
        return self.folder / "out" / "cache" / self.name

    def ledger(self, run_id: str) -> Path:
        return (self.folder / "out" / "ledger" / f"pipeline={self.name}" / f"run_id={run_id}"
                / "part.parquet")

    def state(self, run_id: str) -> Path:
        return self.cache / "runs" / run_id / "state.sqlite"


def tickets(distinct: int, duplicates: int, salt: str = "") -> list[dict[str, str]]:
    """`distinct` different tickets, then `duplicates` exact copies of the first ones."""
    rows = [{"ticket_id": f"T{i:04d}", "subject": f"Order {salt}",
             "body": f"Where  is order #{5000 + i}?  It was due on day {i % 28 + 1}."}
            for i in range(distinct)]
    rows += [{**rows[i % distinct], "ticket_id": f"D{i:04d}"} for i in range(duplicates)]
    return rows


# `make_job(provider=CASCADE)`: every row goes openai -> anthropic -> openai (the first two
# tiers cut every answer short, so finish_reason escalates it): three batches in batch mode
CASCADE = "cascade"
_CASCADE_TIERS = {
    "cheap": {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 4},
    "mid": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "max_tokens": 4},
    "strong": {"provider": "openai", "model": "gpt-4o", "max_tokens": 64},
}


def make_job(folder: Path, *, provider: str = "openai", mode: str = "online",
             distinct: int = 56, duplicates: int = 8, concurrency: int = 8,
             salt: str = "") -> Job:
    """The test pipeline (compression on, so its stage runs too) over generated tickets."""
    data = pipeline_dict()
    data["compress"] = {"steps": [{"type": "whitespace"}]}
    data["execution"] = {"mode": "online", "poll_seconds": 0.05, "batch_rounds": 3}
    if provider == CASCADE:
        data["profiles"] = {name: {**tier, "concurrency": concurrency}
                            for name, tier in _CASCADE_TIERS.items()}
        data["routing"] = {"strategy": "cascade", "tiers": list(_CASCADE_TIERS),
                           "validators": [{"type": "finish_reason"}]}
        data["default_profile"] = "cheap"
    else:
        data["profiles"][provider]["concurrency"] = concurrency
        data["default_profile"] = provider
    (folder / "data").mkdir(parents=True, exist_ok=True)
    rows = tickets(distinct, duplicates, salt)
    pl.DataFrame(rows).write_parquet(folder / "data" / "tickets.parquet")
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(yaml.safe_dump(data))
    return Job(folder, pipeline, [r["ticket_id"] for r in rows], distinct, provider,
               concurrency, mode)


def summarize_job(folder: Path, *, mode: str = "online") -> Job:
    """pipelines/summarize.yaml with --profile openai over the 300-row sample (compression,
    exact and semantic dedup with the packaged embedding model, prompt caching). In batch mode,
    a copy that polls every 0.05 s instead of every minute, otherwise the same."""
    ids = pl.read_parquet(ROOT / "sample_data" / "tickets.parquet")["ticket_id"].to_list()
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = ROOT / "pipelines" / "summarize.yaml"
    if mode == "batch":
        text = pipeline.read_text()
        for old, new in (("poll_seconds: 60", "poll_seconds: 0.05"),
                         ("../sample_data/tickets.parquet",
                          str(ROOT / "sample_data" / "tickets.parquet"))):
            assert old in text, old
            text = text.replace(old, new)
        (folder / "pipelines").mkdir(exist_ok=True)
        for extra in (ROOT / "pipelines").glob("*.md"):
            (folder / "pipelines" / extra.name).write_text(extra.read_text())
        pipeline = folder / "pipelines" / "summarize.yaml"
        pipeline.write_text(text)
    return Job(folder, pipeline, ids, None, "openai", 16, mode, "summarize",
               folder / "out" / "summarize" / "outputs.parquet",
               {"BATCHOPT_OUT": str(folder / "out"), "HF_HUB_OFFLINE": "1"})


def env_for(fake: Any, job: Job | None = None) -> dict[str, str]:
    return fake_env(fake, PYTHONUNBUFFERED="1", **(job.env if job else {}))


# ---- what a run left ------------------------------------------------------------------------


def journaled_answer_ids(cache: Path) -> set[str]:
    """The response ids in the cache's journal (`journal.jsonl`, written just before
    `cache.db`); a line cut short by the kill is skipped."""
    ids = set()
    path = cache / "journal.jsonl"
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                _, record = json.loads(line)
                request_id = json.loads(record).get("request_id")
            except (ValueError, TypeError, AttributeError):
                continue
            if request_id:
                ids.add(request_id)
    return ids


def submissions(state: Path) -> list[dict[str, Any]]:
    """The run's batch submissions from its state file ([] if it has none yet)."""
    if not state.exists():
        return []
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM submissions ORDER BY created_at")]
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return []
    finally:
        db.close()


def integrity_ok(database: Path) -> bool:
    """SQLite's own check of a file (the run state, the response cache's index)."""
    db = sqlite3.connect(str(database))
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def rows_lost(job: Job, run_id: str) -> int:
    """Input rows missing from, or repeated in, the outputs or the run's ledger."""
    want = set(job.ids)
    lost = 0
    for path, column in ((job.outputs, "ticket_id"), (job.ledger(run_id), "row_id")):
        if not path.exists():
            lost += len(want)
            continue
        got = pl.read_parquet(path)[column].to_list()
        lost += len(want - set(got)) + len(got) - len(set(got)) + len(set(got) - want)
    return lost


def check_rows(job: Job, run_id: str, *, modes: set[str]) -> int:
    """Every input row once in the outputs and once in the run's ledger, answered; the rows
    that asked a provider in `modes`, with their cost on them. Returns how many asked."""
    want = sorted(job.ids)
    out = pl.read_parquet(job.outputs)
    assert sorted(out["ticket_id"].to_list()) == want, "outputs: rows lost or repeated"
    assert out["summary"].null_count() == 0, "outputs: rows without an answer"
    ledger = pl.read_parquet(job.ledger(run_id))
    assert sorted(ledger["row_id"].to_list()) == want, "ledger: rows lost or repeated"
    assert (ledger["status"] == "ok").all(), ledger.filter(pl.col("status") != "ok")["error"]
    asked = ledger.filter(pl.col("dedup") == "none")
    assert job.distinct is None or asked.height == job.distinct
    # paid before the kill or after it, by this run: on its bill, not "from cache"
    assert set(asked["mode"].to_list()) <= modes, asked["mode"].value_counts()
    assert asked["cost_usd"].min() > 0
    assert (ledger.filter(pl.col("dedup") != "none")["mode"] == "dedup").all()
    return asked.height


# ---- kill, resume, check ---------------------------------------------------------------------


@dataclass
class Outcome:
    """What one kill point showed."""

    name: str
    mode: str
    killed: bool
    rows: int = 0
    rows_lost: int = 0
    paid_twice: int = 0  # answers batchopt had saved before the kill, billed again after it
    in_flight: int = 0  # answers billed but not saved at the kill, so sent again
    journaled: int = 0  # of those, answers the journal held (not yet in cache.db)
    limit: int = 0  # what in_flight may reach: the concurrency (online), 0 (batch)
    batches_created: int = 0
    batches_needed: int = 0


@dataclass
class Tally:
    """Every outcome of the session, for the summary line."""

    outcomes: list[Outcome] = field(default_factory=list)
    schedulers: list[dict[str, int]] = field(default_factory=list)

    def summary(self) -> list[str]:
        lines = []
        kills = [o for o in self.outcomes if o.killed]
        if self.outcomes:
            by_mode = {m: sum(1 for o in kills if o.mode == m) for m in ("online", "batch")}
            worst = max((o.in_flight for o in kills), default=0)
            limit = max((o.limit for o in kills), default=0)
            missed = len(self.outcomes) - len(kills)
            lines.append(
                f"kill points {len(kills)} (online {by_mode['online']}, batch "
                f"{by_mode['batch']}{f'; {missed} ran out before the kill' if missed else ''}),"
                f" rows checked {sum(o.rows for o in self.outcomes)},"
                f" rows lost {sum(o.rows_lost for o in self.outcomes)},"
                f" rows paid twice {sum(o.paid_twice for o in self.outcomes)},"
                f" in-flight re-sent {sum(o.in_flight for o in self.outcomes)}"
                f" (max {worst} at one kill, concurrency {limit};"
                f" {sum(o.journaled for o in self.outcomes)} of them journaled, not yet in"
                " cache.db),"
                f" batches created twice "
                f"{sum(o.batches_created - o.batches_needed for o in self.outcomes)}"
            )
        same = [s for s in self.schedulers if s.get("kind") == "same"]
        shared = [s for s in self.schedulers if s.get("kind") == "shared"]

        def total(items: list[dict[str, int]], key: str) -> int:
            return sum(s.get(key, 0) for s in items)

        if same:
            lines.append(
                f"overlapping runs on one run id: runs {total(same, 'runs')}, refused with "
                f"exit 75 {total(same, 'refused')}, rows checked {total(same, 'rows')}, "
                f"requests paid twice {total(same, 'paid_twice')}"
            )
        if shared:
            lines.append(
                f"overlapping run ids sharing a cache: runs {total(shared, 'runs')}, rows "
                f"checked {total(shared, 'rows')}, requests paid by two runs "
                f"{total(shared, 'paid_twice')}"
            )
        return lines


Trigger = Callable[[Child, Any], None]


def kill_and_resume(fake: Any, server: ForkServer, job: Job, name: str, *,
                    kill: KillAt | None = None, trigger: Trigger | None = None,
                    run_id: str = "K", must_kill: bool = True,
                    start: Callable[..., Child] | None = None,
                    resume: Callable[..., Child] | None = None,
                    tally: Tally | None = None,
                    faults: list[dict[str, Any]] | None = None,
                    after_kill: Callable[[Job, Any], None] | None = None) -> Outcome:
    """Run `job` in a child killed at `kill` (its own SIGKILL) or by `trigger` (the test's),
    run it again with the same run id to the end, and check what the two did together.

    Online: each answer the child had saved before it died is never billed again, and the
    ones billed but not yet saved (the requests in flight) are billed again once each, at most
    `concurrency` of them. Batch: nothing is billed twice and no batch is created twice.
    `after_kill(job, fake)` may check what the kill left before the run is resumed."""
    fake.reset()  # the billing log and the counters start empty; latency stays
    if faults:
        fake.set_faults(faults)
    env = env_for(fake, job)
    logs = job.folder / "logs"
    logs.mkdir(exist_ok=True)
    launch = start or server.start
    child = launch(job.argv(run_id), env, job.folder, logs / f"{name}.1.log", kill)
    if trigger is not None:
        trigger(child, fake)
    status = child.wait()
    killed = status == KILLED
    if must_kill:
        assert killed, f"{name}: the child was not killed (exit {status}):\n{child.output()}"
    else:
        assert status in (0, KILLED), f"{name}: exit {status}:\n{child.output()}"
    time.sleep(0.05 + 2 * fake.latency_ms / 1000)  # calls cut off by the kill are settled
    before = fake.log()
    saved = cached_answer_ids(job.cache)
    journaled = journaled_answer_ids(job.cache)
    created_at_kill = fake.stats()["batches_created"]
    if after_kill is not None:
        after_kill(job, fake)

    again = (resume or launch)(job.argv(run_id), env, job.folder, logs / f"{name}.2.log")
    code = again.wait()
    assert code == 0, f"{name}: the resumed run exited {code}:\n{again.output()}"
    after = fake.log()[len(before):]

    hashes_before = [e["request_hash"] for e in before]
    hashes_after = [e["request_hash"] for e in after]
    unsaved = {e["request_hash"] for e in before if e["id"] not in saved}
    in_journal = {e["request_hash"] for e in before if e["id"] in journaled}
    again_paid = set(hashes_before) & set(hashes_after)
    stats = fake.stats()
    online = job.mode == "online"
    outcome = Outcome(
        name, job.mode, killed, rows=len(job.ids), rows_lost=rows_lost(job, run_id),
        paid_twice=len(again_paid - unsaved) if online else len(again_paid),
        in_flight=len(again_paid & unsaved) if online else 0,
        journaled=len(again_paid & unsaved & in_journal) if online else 0,
        limit=job.concurrency if online else 0,
        batches_created=0 if online else stats["batches_created"],
        batches_needed=0 if online else job.tiers,
    )
    if tally is not None:
        tally.outcomes.append(outcome)
    assert outcome.rows_lost == 0, f"{name}: {outcome.rows_lost} rows lost or repeated"
    asked = check_rows(job, run_id, modes={job.mode})
    assert len(set(hashes_before)) == len(hashes_before), f"{name}: one run paid twice"
    assert len(set(hashes_after)) == len(hashes_after), f"{name}: the resumed run paid twice"
    assert len(set(hashes_before) | set(hashes_after)) == asked * job.tiers
    assert outcome.paid_twice == 0, (
        f"{name}: {outcome.paid_twice} answer(s) batchopt had saved before the kill were "
        "paid for again")
    if online:
        # An answer is saved once its write to cache.db is done (the journal line goes first):
        # only what was billed but not saved may be paid again, and what was not paid again
        # was found in the journal.
        assert again_paid <= unsaved
        assert unsaved - again_paid <= in_journal, (
            f"{name}: {len(unsaved - again_paid)} answer(s) neither saved nor sent again")
        assert outcome.in_flight <= job.concurrency, (
            f"{name}: {outcome.in_flight} requests in flight at the kill, concurrency "
            f"{job.concurrency}")
    else:
        # nothing billed twice: the ledger is the provider's whole bill for the two runs
        billed = fake.bill()["total_usd"]
        assert abs(pl.read_parquet(job.ledger(run_id))["cost_usd"].sum() - billed) < 1e-9, name
        assert outcome.batches_created == job.tiers, (
            f"{name}: {outcome.batches_created} batches created (at the kill "
            f"{created_at_kill}); {submissions(job.state(run_id))}")
    assert integrity_ok(job.cache / "cache.db")
    if job.state(run_id).exists():
        assert integrity_ok(job.state(run_id))
    return outcome


# ---- triggers: the test's own SIGKILL --------------------------------------------------------


def when(condition: Callable[[Any], bool], delay: float = 0.0,
         timeout: float = 60) -> Trigger:
    """Kill the child `delay` seconds after `condition(fake)` holds (polled every ms or so);
    if the child ends first, do nothing."""

    def trigger(child: Child, fake: Any) -> None:
        deadline = time.monotonic() + timeout
        while not condition(fake):
            if child.poll() is not None or time.monotonic() > deadline:
                return
            time.sleep(0.001)
        if delay:
            time.sleep(delay)
        child.kill()

    return trigger


def after_answers(n: int) -> Trigger:
    """Kill once the fake server has billed `n` model calls."""
    return when(lambda fake: fake.stats()["requests"] >= n)


def after_seconds(seconds: float) -> Trigger:
    """Kill `seconds` after the child started."""
    return when(lambda fake: True, delay=seconds)
