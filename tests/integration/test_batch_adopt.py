"""Adopting a batch whose create call never answered: the provider made it, the run never learnt
its id. OpenAI batches are found by the tag in their metadata; an Anthropic message batch has
none and is found by what it holds (one request per key, by custom_id, created when the
submission began). It is adopted, never created twice; one that may be it but still runs is
waited for, not paid again."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import anthropic
import polars as pl
import pytest
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.config.pipeline import load_pipeline
from batchopt.errors import EXIT_PENDING, TransientProviderError
from batchopt.execute import batch as batch_module
from batchopt.execute.batch import ADOPT_PATIENCE_SECONDS, BatchExecutor, BatchSettings
from batchopt.execute.state import RunState
from batchopt.fakeapi import FakeServer
from batchopt.hashing import stable_hash
from batchopt.providers.anthropic import AnthropicProvider
from batchopt.providers.base import ProviderSettings
from batchopt.providers.batching import (
    ANTHROPIC_LIMITS,
    BatchesUnverified,
    BatchProvider,
    BatchRow,
    BatchStatus,
)
from batchopt.records import Request, Result
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

MODEL = "claude-3-5-haiku-latest"
RUN_ID = "ad"


# ---- helpers --------------------------------------------------------------------------------


def _tickets(n: int) -> list[dict[str, str]]:
    return [{"ticket_id": f"T{i:03d}", "subject": "Order", "body": f"Where is order #{5000 + i}?"}
            for i in range(n)]


def _pipeline(tmp_path: Path, n: int = 12, timeout_s: float = 1) -> Path:
    data = pipeline_dict(execution={"mode": "batch", "poll_seconds": 0.1},
                         default_profile="anthropic")
    data["profiles"]["anthropic"]["timeout_s"] = timeout_s
    path = write_pipeline(tmp_path, data)
    pl.DataFrame(_tickets(n)).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def _submissions(tmp_path: Path, run_id: str) -> list[tuple[str, str | None]]:
    state = tmp_path / "out" / "cache" / "tickets" / "runs" / run_id / "state.sqlite"
    with sqlite3.connect(state) as db:
        return db.execute("SELECT state, batch_id FROM submissions ORDER BY created_at").fetchall()


def _paid(fake: FakeServer, wire: str = "anthropic-batch") -> Counter[str]:
    return Counter(e["request_hash"] for e in fake.log() if e["wire"] == wire)


def _fake_batch_ids(fake: FakeServer) -> list[str]:
    """Every message batch the fake holds, newest first."""
    client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="x", max_retries=0)
    try:
        return [b.id for b in client.messages.batches.list(limit=100)]
    finally:
        client.close()


def _provider(fake: FakeServer, timeout_s: float = 10) -> AnthropicProvider:
    return AnthropicProvider(ProviderSettings(
        provider="anthropic", model=MODEL, base_url=fake.anthropic_base_url,
        api_key="sk-ant-test-adopt-0003", timeout_s=timeout_s,
    ))


def _requests(n: int, tag: str = "ours") -> list[Request]:
    """`n` distinct requests with batchopt-shaped keys (32 hex digits)."""
    return [
        Request(key=stable_hash({"tag": tag, "i": i}), provider="anthropic", model=MODEL,
                system="Summarise the ticket.", user=f"{tag} ticket {i}: the printer is jammed",
                max_tokens=40)
        for i in range(n)
    ]


async def _wait_ended(provider: AnthropicProvider, *batch_ids: str) -> None:
    deadline = time.monotonic() + 10
    for batch_id in batch_ids:
        while not (await provider.poll_batch(batch_id)).done:
            assert time.monotonic() < deadline, f"{batch_id} never ended"
            await asyncio.sleep(0.02)


# ---- whole runs -----------------------------------------------------------------------------


def test_an_anthropic_create_that_times_out_is_adopted_and_paid_once(fake, tmp_path):
    fake.batch_seconds = 0.3
    fake.set_faults([{"batch": "ack_delay", "delay_ms": 3000}])  # created; the answer is late
    summary = run_pipeline(load_pipeline(_pipeline(tmp_path)), RunOptions(run_id=RUN_ID),
                           env=fake_env(fake))
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    assert fake.stats()["batches_created"] == 1
    (orphan,) = _fake_batch_ids(fake)
    paid = _paid(fake)
    assert len(paid) == 12 and set(paid.values()) == {1}  # every row paid once
    assert len(fake.log()) == 12
    assert _submissions(tmp_path, RUN_ID) == [("collected", orphan)]
    ledger = _ledger(tmp_path, RUN_ID)
    assert ledger.height == 12 and (ledger["batch_id"] == orphan).all()
    assert (ledger["status"] == "ok").all() and (ledger["mode"] == "batch").all()
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert outputs.height == 12 and outputs["summary"].null_count() == 0


def test_another_jobs_batch_of_as_many_requests_is_not_adopted(fake, tmp_path):
    fake.batch_seconds = 0.3
    client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="x", max_retries=0)
    params = {"model": MODEL, "max_tokens": 20}
    foreign = client.messages.batches.create(requests=[
        {"custom_id": f"other-job-{i}",
         "params": {**params, "messages": [{"role": "user", "content": f"other {i}"}]}}
        for i in range(12)
    ]).id  # created in the window, with exactly as many requests as the run's batch
    client.close()
    foreign_paid = 12
    fake.set_faults([{"batch": "ack_delay", "delay_ms": 3000}])
    summary = run_pipeline(load_pipeline(_pipeline(tmp_path)), RunOptions(run_id=RUN_ID),
                           env=fake_env(fake))
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    assert fake.stats()["batches_created"] == 2  # the other job's and the run's own, once
    ours, theirs = _fake_batch_ids(fake)
    assert theirs == foreign
    assert _submissions(tmp_path, RUN_ID) == [("collected", ours)]
    ledger = _ledger(tmp_path, RUN_ID)
    assert ledger.height == 12 and (ledger["batch_id"] == ours).all()
    paid = _paid(fake)
    assert len(paid) == 12 + foreign_paid and set(paid.values()) == {1}


def test_a_batch_that_may_be_ours_but_still_runs_is_waited_for(fake, tmp_path, monkeypatch):
    """--no-wait: the run that cannot check the running batch yet exits 75 and sends nothing;
    once the batch has ended, the next run adopts and collects it."""
    fake.batch_seconds = 5.0
    fake.set_faults([{"batch": "ack_delay", "delay_ms": 2500}])
    path = _pipeline(tmp_path)
    for name, value in fake_env(fake).items():
        monkeypatch.setenv(name, value)
    args = ["run", str(path), "--run-id", RUN_ID, "--no-wait", "--quiet"]
    started = time.monotonic()
    first = CliRunner().invoke(main, args)  # the create call times out: no id recorded
    assert first.exit_code == EXIT_PENDING, first.output
    assert fake.stats()["batches_created"] == 1
    assert _submissions(tmp_path, RUN_ID) == [("submitting", None)]

    again = CliRunner().invoke(main, args)  # the batch still runs: neither lost nor resent
    assert time.monotonic() - started < fake.batch_seconds, "too slow to see the batch running"
    assert again.exit_code == EXIT_PENDING, again.output
    assert "being created" in again.output or "submitting" in again.output
    assert fake.stats()["batches_created"] == 1 and fake.log() == []
    assert _submissions(tmp_path, RUN_ID) == [("submitting", None)]

    time.sleep(max(0.0, fake.batch_seconds - (time.monotonic() - started)) + 0.3)
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    (orphan,) = _fake_batch_ids(fake)
    assert fake.stats()["batches_created"] == 1
    assert _submissions(tmp_path, RUN_ID) == [("collected", orphan)]
    paid = _paid(fake)
    assert len(paid) == 12 and set(paid.values()) == {1}
    assert pl.read_parquet(tmp_path / "out" / "outputs.parquet")["summary"].null_count() == 0


# ---- AnthropicProvider.find_batches ---------------------------------------------------------


async def test_anthropic_find_batches_by_what_the_batch_holds(bfake: FakeServer) -> None:
    prov = _provider(bfake)
    since = time.time()
    ours = _requests(6)
    keys = [r.key for r in ours]
    (stranger,) = _requests(1, "stranger")
    mine = await prov.submit_batch(ours, {})
    near = await prov.submit_batch(ours[:5] + [stranger], {})  # as many, one custom_id differs
    more = await prov.submit_batch(ours + [stranger], {})  # ours and one more
    fewer = await prov.submit_batch(ours[:5], {})
    await _wait_ended(prov, mine, near, more, fewer)
    assert await prov.find_batches({}, keys=keys, since=since) == [mine]
    assert await prov.find_batches({}, keys=keys[::-1], since=since) == [mine]  # order is free
    # created in another window: nothing (allowing two minutes for clocks that disagree)
    assert await prov.find_batches({}, keys=keys, since=since + 3600) == []
    assert await prov.find_batches({}, keys=keys, since=since - 86400) == []
    assert await prov.find_batches({}, keys=keys, since=since + 60) == [mine]
    # without keys or a time there is nothing to recognise a batch by
    assert await prov.find_batches({}, keys=keys) == []
    assert await prov.find_batches({}, since=since) == []
    # the same requests sent twice: both hold them (newest first; the caller picks)
    twice = await prov.submit_batch(ours[::-1], {})
    await _wait_ended(prov, twice)
    assert await prov.find_batches({}, keys=keys, since=since) == [twice, mine]
    await prov.aclose()


async def test_a_running_batch_that_may_be_it_cannot_be_verified_yet(bfake: FakeServer) -> None:
    prov = _provider(bfake)
    since = time.time()
    ours = _requests(4)
    done = await prov.submit_batch(ours, {})
    await _wait_ended(prov, done)
    bfake.batch_seconds = 30
    await prov.submit_batch(_requests(3, "other"), {})  # running, but another size: no matter
    running = await prov.submit_batch(_requests(4, "other"), {})  # as many: may be it
    with pytest.raises(BatchesUnverified) as caught:
        await prov.find_batches({}, keys=[r.key for r in ours], since=since)
    assert caught.value.unverified == [running] and caught.value.verified == [done]
    assert isinstance(caught.value, TransientProviderError)
    await prov.cancel_batch(running)
    await _wait_ended(prov, running)
    assert await prov.find_batches({}, keys=[r.key for r in ours], since=since) == [done]
    await prov.aclose()


async def test_a_verification_download_that_breaks_off_is_not_a_mismatch(
    bfake: FakeServer,
) -> None:
    prov = _provider(bfake)
    since = time.time()
    ours = _requests(8)
    bfake.set_faults([{"batch": "truncate_results", "times": 1}])
    mine = await prov.submit_batch(ours, {})
    await _wait_ended(prov, mine)
    with pytest.raises(TransientProviderError, match="broke off"):
        await prov.find_batches({}, keys=[r.key for r in ours], since=since)
    assert await prov.find_batches({}, keys=[r.key for r in ours], since=since) == [mine]
    await prov.aclose()


# ---- BatchExecutor._adopt ---------------------------------------------------------------------


class _Finder(BatchProvider):
    """A batch provider whose `find_batches` answers from a script; nothing else is called."""

    batch_limits = ANTHROPIC_LIMITS

    def __init__(self, answer: list[str] | Exception) -> None:
        self.answer = answer
        self.asked: list[tuple[list[str], float | None]] = []

    def batch_line_bytes(self, request: Request) -> int:
        return 1

    async def submit_batch(self, requests: Sequence[Request], tag: dict[str, str]) -> str:
        raise AssertionError("nothing may be submitted")

    async def poll_batch(self, batch_id: str) -> BatchStatus:
        return BatchStatus(batch_id, "pending", "in_progress")

    def fetch_batch_results(
        self, batch_id: str, requests: Iterable[Request]
    ) -> AsyncIterator[BatchRow]:
        raise AssertionError("nothing has ended")

    async def find_batches(
        self, tag: dict[str, str], *, keys: Sequence[str] = (), since: float | None = None
    ) -> list[str]:
        self.asked.append((list(keys), since))
        if isinstance(self.answer, Exception):
            raise self.answer
        return list(self.answer)

    async def cancel_batch(self, batch_id: str) -> None:
        raise AssertionError("nothing is cancelled")


def _executor(tmp_path: Path, provider: BatchProvider, persist=None) -> BatchExecutor:
    state = RunState.open(tmp_path / "runs" / RUN_ID)
    return BatchExecutor(provider, state, persist or (lambda results: None),
                         BatchSettings(run_id=RUN_ID, poll_seconds=0.02, wait=False),
                         provider_name="anthropic", model=MODEL)


def _states(executor: BatchExecutor) -> list[tuple[str, str, str | None]]:
    return [(s.tag, s.state, s.batch_id) for s in executor.state.submissions()]


async def test_a_submission_is_adopted_by_the_oldest_batch_not_yet_taken(tmp_path):
    finder = _Finder(["b-new", "b-mid", "b-old"])  # newest first, as find_batches lists
    executor = _executor(tmp_path, finder)
    keys = [r.key for r in _requests(3)]
    executor.state.begin_submission("x.r1.0", 1, "anthropic", MODEL, keys)
    executor.state.record_batch_id("x.r1.0", "b-old")  # already this run's
    executor.state.begin_submission(f"{RUN_ID}.r2.0", 2, "anthropic", MODEL, keys)
    executor.state.begin_submission(f"{RUN_ID}.r3.0", 3, "anthropic", MODEL, keys)
    await executor._adopt()
    assert _states(executor) == [("x.r1.0", "pending", "b-old"),
                                 (f"{RUN_ID}.r2.0", "pending", "b-mid"),
                                 (f"{RUN_ID}.r3.0", "pending", "b-new")]
    subs = executor.state.submissions()
    assert [(sorted(k), since) for k, since in finder.asked] == [
        (sorted(keys), subs[1].created_at), (sorted(keys), subs[2].created_at)]
    executor.state.close()


async def test_nothing_found_is_lost_and_its_rows_go_out_again(tmp_path):
    executor = _executor(tmp_path, _Finder([]))
    executor.state.begin_submission(f"{RUN_ID}.r1.0", 1, "anthropic", MODEL, ["k1"])
    await executor._adopt()
    ((_, state, batch_id),) = _states(executor)
    assert state == "lost" and batch_id is None
    assert executor.state.open_keys() == set()
    executor.state.close()


@pytest.mark.parametrize("answer", [
    BatchesUnverified("anthropic", [], ["b-running"]),
    TransientProviderError("anthropic batch: batch list broke off"),
], ids=["unverifiable", "lookup broke off"])
async def test_a_batch_that_cannot_be_checked_yet_keeps_the_submission_open(
    tmp_path, monkeypatch, answer
):
    executor = _executor(tmp_path, _Finder(answer))
    executor.state.begin_submission(f"{RUN_ID}.r1.0", 1, "anthropic", MODEL, ["k1", "k2"])
    outcome = await executor.run([], {})  # --no-wait: one pass
    assert _states(executor) == [(f"{RUN_ID}.r1.0", "submitting", None)]
    assert [s.tag for s in outcome.pending] == [f"{RUN_ID}.r1.0"]
    assert executor.state.open_keys() == {"k1", "k2"}  # neither resent nor given up
    # past any batch's lifetime, a batch still running cannot be this one
    later = time.time() + ADOPT_PATIENCE_SECONDS + 60
    monkeypatch.setattr(batch_module.time, "time", lambda: later)
    await executor._adopt()
    expected = "lost" if isinstance(answer, BatchesUnverified) else "submitting"
    assert _states(executor)[0][1] == expected
    executor.state.close()


async def test_past_the_wait_a_verified_batch_is_still_adopted(tmp_path, monkeypatch):
    executor = _executor(tmp_path, _Finder(BatchesUnverified("anthropic", ["b-ok"], ["b-run"])))
    executor.state.begin_submission(f"{RUN_ID}.r1.0", 1, "anthropic", MODEL, ["k1"])
    later = time.time() + ADOPT_PATIENCE_SECONDS + 60
    monkeypatch.setattr(batch_module.time, "time", lambda: later)
    await executor._adopt()
    assert _states(executor) == [(f"{RUN_ID}.r1.0", "pending", "b-ok")]
    executor.state.close()


async def test_the_same_requests_in_two_batches_are_both_read_and_kept(bfake, tmp_path):
    """Two submissions of the same keys whose creates both went unanswered: each adopts its
    own batch (the older the older) and both are read; every paid answer is persisted, the
    duplicate's too."""
    prov = _provider(bfake)
    requests = _requests(5)
    keys = [r.key for r in requests]
    persisted: list[Result] = []
    executor = _executor(tmp_path, prov, persist=persisted.extend)
    ids = []
    for round_ in (1, 2):
        executor.state.begin_submission(f"{RUN_ID}.r{round_}.0", round_, "anthropic", MODEL, keys)
        ids.append(await prov.submit_batch(requests, {}))  # its answer "never came back"
    await _wait_ended(prov, *ids)
    executor.settings = BatchSettings(run_id=RUN_ID, poll_seconds=0.02, wait=True)
    outcome = await executor.run(requests, {r.key: r for r in requests})
    assert _states(executor) == [(f"{RUN_ID}.r1.0", "collected", ids[0]),
                                 (f"{RUN_ID}.r2.0", "collected", ids[1])]
    assert sorted(outcome.results) == sorted(keys) and outcome.pending == []
    assert Counter(r.batch_id for r in persisted) == {ids[0]: 5, ids[1]: 5}
    assert bfake.stats()["batches_created"] == 2  # nothing sent a third time
    executor.state.close()
    await prov.aclose()
