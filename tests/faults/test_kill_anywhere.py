"""Kill anywhere: `batchopt run` is SIGKILLed at every stage boundary and at random points while
it sends online or collects batches, then run again with the same run id to the end.

After each kill and resume (see `kill_kit.kill_and_resume`): every input row is once in the
outputs and once in the ledger, answered and on the run's bill; by the fake server's billing
log, no answer batchopt had saved before the kill is paid for again, and of the answers billed
but not saved at the kill (in flight), those not found in the cache's journal are sent again,
once each and never more than the concurrency; in batch mode nothing is billed twice and one
batch is created, even when the kill fell between the provider creating it and batchopt
recording its id (found again by its tag on OpenAI, by its contents on Anthropic). A batch
cascade across providers (openai -> anthropic -> openai, a batch per tier) is killed in each
round too: three batches created in all, and the ledger equal to the fake's whole bill.

Kill points come in two kinds: the child's own SIGKILL at a named point (`kill_child.KillAt`: a
stage starting, before or after the n-th call of a function), and the test's SIGKILL at a
moment drawn with a fixed seed (after n billed calls; t seconds after the start, after the
first bill or after the batch's creation). The default suite tries about 65; `-m slow_faults`
adds a wider sweep and the shipped pipelines/summarize.yaml (semantic dedup and all) over the
300-row sample.
"""

from __future__ import annotations

import random

import pytest
from kill_child import KillAt
from kill_kit import (
    CASCADE,
    after_answers,
    after_seconds,
    kill_and_resume,
    make_job,
    start_fresh,
    submissions,
    summarize_job,
    when,
)

SEED = 20260611
_rng = random.Random(SEED)

STATE = "batchopt.execute.state"
CACHE = "batchopt.execute.cache:ResponseCache.put_many"
JOURNAL = "batchopt.execute.cache:ResponseCache._append"  # the journal line, before cache.db
RUNNER = "batchopt.run.runner"
# outputs are committed first (call 1), then the ledger (call 2)
COMMIT = "batchopt.io.writer:ParquetParts.commit"
OPENAI = "batchopt.providers.openai:OpenAIProvider"
ANTHROPIC = "batchopt.providers.anthropic:AnthropicProvider"
DISTINCT, DUPLICATES, CONCURRENCY = 56, 8, 8
# answers come back in one flush per event-loop turn: a few dozen flushes for 56 requests
_FLUSHES = sorted(_rng.sample(range(2, 12), 4))
_ANSWERS = sorted(_rng.sample(range(1, DISTINCT), 10))
_SECONDS = sorted(round(_rng.uniform(0.3, 1.3), 3) for _ in range(3))  # from the start
_SENDING = sorted(round(_rng.uniform(0.0, 0.3), 3) for _ in range(5))  # from the first bill
_COLLECTING = sorted(round(_rng.uniform(0.0, 0.45), 3) for _ in range(5))  # from the create

# The boundaries of an online run, in the order it crosses them.
ONLINE_POINTS = {
    "stage read": KillAt("stage:read"),
    "stage compress": KillAt("stage:compress"),
    "stage render": KillAt("stage:render"),
    "stage dedup": KillAt("stage:dedup"),
    "run lock taken": KillAt(f"{STATE}:RunLock.__enter__", "after"),
    "state started": KillAt(f"{STATE}:RunState.set", "after", arg="started"),
    "stage send": KillAt("stage:send"),
    "first answers saved": KillAt(CACHE, "after"),
    **{f"answers {k} received, not saved": KillAt(CACHE, "before", k) for k in _FLUSHES},
    **{f"answers {k} saved, workers not told": KillAt(CACHE, "after", k) for k in _FLUSHES[:2]},
    **{f"answers {k} journaled, not in cache.db": KillAt(JOURNAL, "after", k) for k in (1, 3)},
    "answer 30 reported": KillAt("batchopt.cli.progress:RichObserver.answered", "after", 30),
    "all answered, before finish": KillAt(f"{RUNNER}:finish"),
    "outputs written, no ledger": KillAt(COMMIT, "after", 1),
    "ledger written, no views": KillAt(COMMIT, "after", 2),
    "views written": KillAt(f"{RUNNER}:write_views_file", "after"),
    "state finished": KillAt(f"{STATE}:RunState.set", "after", arg="finished"),
    "lock released": KillAt(f"{STATE}:RunLock.__exit__", "after"),
}

# The boundaries of a batch run (results are read in chunks of 8 where named so).
_CHUNKS = (("batchopt.execute.batch:_PERSIST_EVERY", 8),)
_ROWS = sorted(_rng.sample(range(1, DISTINCT), 2))
BATCH_POINTS = {
    "stage batch": KillAt("stage:batch"),
    "submission recorded, not created": KillAt(f"{STATE}:RunState.begin_submission", "after"),
    "batch created, id not recorded": KillAt(f"{STATE}:RunState.record_batch_id", "before"),
    "batch id recorded": KillAt(f"{STATE}:RunState.record_batch_id", "after"),
    "first poll": KillAt(f"{OPENAI}.poll_batch", "after"),
    "before the first download": KillAt(f"{OPENAI}.fetch_batch_results", nth=0),
    **{f"download at row {k}": KillAt(f"{OPENAI}.fetch_batch_results", nth=k) for k in _ROWS},
    "answers saved, outcomes not recorded": KillAt(CACHE, "after"),
    "first 8 outcomes recorded": KillAt(f"{STATE}:RunState.record_outcomes", "after",
                                        settings=_CHUNKS),
    "16 saved, 24 read": KillAt(CACHE, "before", 3, settings=_CHUNKS),
    "batch collected": KillAt(f"{STATE}:RunState.mark_collected", "after"),
    "all answered, before finish": KillAt(f"{RUNNER}:finish"),
    "ledger written": KillAt(COMMIT, "after", 2),
}
ANTHROPIC_BATCH_POINTS = {  # Anthropic batches carry no metadata: found again by contents
    "batch created, id not recorded": KillAt(f"{STATE}:RunState.record_batch_id", "before"),
    "batch id recorded": KillAt(f"{STATE}:RunState.record_batch_id", "after"),
    "first poll": KillAt(f"{ANTHROPIC}.poll_batch", "after"),
    f"download at row {_ROWS[0]}": KillAt(f"{ANTHROPIC}.fetch_batch_results", nth=_ROWS[0]),
    "answers saved, outcomes not recorded": KillAt(CACHE, "after"),
}
# A batch cascade across providers (openai -> anthropic -> openai): one batch per tier, each
# polled, collected and adopted through the provider that made it.
RECORD_ID = f"{STATE}:RunState.record_batch_id"
MIXED_POINTS = {
    "round 1 collected": KillAt(f"{STATE}:RunState.mark_collected", "after"),
    "round 2 (anthropic) created, id not recorded": KillAt(RECORD_ID, "before", 2),
    "round 2 (anthropic) first poll": KillAt(f"{ANTHROPIC}.poll_batch", "after"),
    f"round 2 (anthropic) download at row {_ROWS[0]}":
        KillAt(f"{ANTHROPIC}.fetch_batch_results", nth=_ROWS[0]),
    "round 3 (openai) created, id not recorded": KillAt(RECORD_ID, "before", 3),
    "round 3 (openai) answers saved": KillAt(CACHE, "after", 3),
    "all answered, before finish": KillAt(f"{RUNNER}:finish"),
}


@pytest.fixture
def online(fake, tmp_path):
    fake.latency_ms = 25  # 56 requests, 8 at a time: about half a second of sending
    return make_job(tmp_path, distinct=DISTINCT, duplicates=DUPLICATES, concurrency=CONCURRENCY)


@pytest.fixture
def batch(fake, tmp_path):
    fake.batch_seconds = 0.3
    return make_job(tmp_path, mode="batch", distinct=DISTINCT, duplicates=DUPLICATES)


# ---- online ----------------------------------------------------------------------------------


@pytest.mark.parametrize("point", list(ONLINE_POINTS))
def test_online_killed_at_a_boundary(fake, fork_server, kill_tally, online, point):
    kill_and_resume(fake, fork_server, online, point, kill=ONLINE_POINTS[point], tally=kill_tally)


@pytest.mark.parametrize("n", _ANSWERS)
def test_online_killed_after_n_billed_calls(fake, fork_server, kill_tally, online, n):
    outcome = kill_and_resume(fake, fork_server, online, f"after {n} billed",
                              trigger=after_answers(n), tally=kill_tally)
    assert outcome.killed


@pytest.mark.parametrize("seconds", _SECONDS)
def test_online_killed_after_t_seconds(fake, fork_server, kill_tally, online, seconds):
    # from the start of the process: anywhere from reading the input to writing the ledger
    kill_and_resume(fake, fork_server, online, f"after {seconds} s",
                    trigger=after_seconds(seconds), tally=kill_tally, must_kill=False)


@pytest.mark.parametrize("seconds", _SENDING)
def test_online_killed_t_after_sending_began(fake, fork_server, kill_tally, online, seconds):
    # sending lasts about 0.3 s here: anywhere in it, or just after
    kill_and_resume(fake, fork_server, online, f"{seconds} s into sending",
                    trigger=when(lambda f: f.stats()["requests"] > 0, delay=seconds),
                    tally=kill_tally, must_kill=False)


@pytest.mark.parametrize("point", ["stage send", "answers received, not saved", "after 20 billed"])
def test_online_anthropic_killed(fake, fork_server, kill_tally, tmp_path, point):
    fake.latency_ms = 25
    job = make_job(tmp_path, provider="anthropic", distinct=DISTINCT, duplicates=DUPLICATES,
                   concurrency=CONCURRENCY)
    kills = {"stage send": KillAt("stage:send"), "answers received, not saved":
             KillAt(CACHE, "before", _FLUSHES[1])}
    kill_and_resume(fake, fork_server, job, f"anthropic {point}", kill=kills.get(point),
                    trigger=after_answers(20) if point not in kills else None, tally=kill_tally)


def test_a_fresh_interpreter_dies_and_resumes_the_same_way(fake, kill_tally, online):
    """The fork server saves start-up time only: the same kill in a fresh interpreter (and
    the resume by the `batchopt` console script) gives the same guarantees."""
    outcome = kill_and_resume(
        fake, None, online, "fresh: answers received, not saved", kill=KillAt(CACHE, "before", 4),
        tally=kill_tally, start=start_fresh,
        resume=lambda *args: start_fresh(*args, console_script=True))
    assert outcome.killed and 0 < outcome.in_flight <= CONCURRENCY


# ---- batch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("point", list(BATCH_POINTS))
def test_batch_killed_at_a_boundary(fake, fork_server, kill_tally, batch, point):
    kill_and_resume(fake, fork_server, batch, point, kill=BATCH_POINTS[point], tally=kill_tally)


@pytest.mark.parametrize("point", list(ANTHROPIC_BATCH_POINTS))
def test_anthropic_batch_killed_at_a_boundary(fake, fork_server, kill_tally, tmp_path, point):
    fake.batch_seconds = 0.3
    job = make_job(tmp_path, provider="anthropic", mode="batch", distinct=DISTINCT,
                   duplicates=DUPLICATES)
    kill_and_resume(fake, fork_server, job, f"anthropic {point}",
                    kill=ANTHROPIC_BATCH_POINTS[point], tally=kill_tally)


@pytest.mark.parametrize("point", list(MIXED_POINTS))
def test_mixed_provider_batch_cascade_killed(fake, fork_server, kill_tally, tmp_path, point):
    fake.batch_seconds = 0.3
    job = make_job(tmp_path, provider=CASCADE, mode="batch", distinct=DISTINCT,
                   duplicates=DUPLICATES)
    outcome = kill_and_resume(fake, fork_server, job, f"mixed cascade {point}",
                              kill=MIXED_POINTS[point], tally=kill_tally)
    assert outcome.batches_created == 3
    assert set(fake.bill()["by_model"]) == {"gpt-4o-mini", "claude-3-5-haiku-20241022",
                                            "gpt-4o"}


def _unrecorded(job, fake):
    """After the kill: the provider has the batch, the run's state has no id for it."""
    subs = submissions(job.state("K"))
    assert fake.stats()["batches_created"] == 1
    assert [(s["state"], s["batch_id"]) for s in subs] == [("submitting", None)], subs


def test_batch_killed_while_the_create_call_is_unanswered_is_adopted_by_its_tag(
        fake, fork_server, kill_tally, batch):
    """The provider created the batch and is slow to say so; the kill lands in between."""
    kill_and_resume(fake, fork_server, batch, "create call unanswered",
                    faults=[{"batch": "ack_delay", "delay_ms": 3000}],
                    trigger=when(lambda f: f.stats()["batches_created"] >= 1, delay=0.05),
                    after_kill=_unrecorded, tally=kill_tally)
    subs = submissions(batch.state("K"))
    assert len(subs) == 1 and subs[0]["state"] == "collected" and subs[0]["batch_id"]


def _uploading(job):
    def check(fake):
        subs = submissions(job.state("K"))
        return bool(subs) and subs[0]["state"] == "submitting"
    return check


def _never_created(job, fake):
    assert fake.stats()["batches_created"] == 0
    assert [s["state"] for s in submissions(job.state("K"))] == ["submitting"]


def test_batch_killed_during_the_upload_is_sent_once(fake, fork_server, kill_tally, batch):
    kill_and_resume(fake, fork_server, batch, "upload cut",
                    faults=[{"batch": "upload_delay", "delay_ms": 3000}],
                    trigger=when(_uploading(batch), delay=0.2), after_kill=_never_created,
                    tally=kill_tally)
    states = sorted(s["state"] for s in submissions(batch.state("K")))
    assert states == ["collected", "lost"]  # the first marked lost, its rows sent again


@pytest.mark.parametrize("seconds", _COLLECTING)
def test_batch_killed_t_after_its_creation(fake, fork_server, kill_tally, batch, seconds):
    # the batch ends 0.3 s after its creation: polling, download, or writing the outputs
    kill_and_resume(fake, fork_server, batch, f"batch {seconds} s after creation",
                    trigger=when(lambda f: f.stats()["batches_created"] > 0, delay=seconds),
                    tally=kill_tally, must_kill=False)


def test_batch_killed_the_moment_it_is_created(fake, fork_server, kill_tally, batch):
    kill_and_resume(fake, fork_server, batch, "batch created (timed)",
                    trigger=when(lambda f: f.stats()["batches_created"] >= 1), tally=kill_tally,
                    must_kill=False)


# ---- the long sweep: -m slow_faults ---------------------------------------------------------

_slow = random.Random(SEED + 1)


@pytest.mark.slow_faults
@pytest.mark.parametrize("n", sorted(_slow.sample(range(1, DISTINCT), 30)))
def test_sweep_online_killed_after_n_billed_calls(fake, fork_server, kill_tally, online, n):
    kill_and_resume(fake, fork_server, online, f"sweep after {n} billed",
                    trigger=after_answers(n), tally=kill_tally)


@pytest.mark.slow_faults
@pytest.mark.parametrize("seconds", sorted(round(_slow.uniform(0.0, 0.3), 3) for _ in range(10)))
def test_sweep_online_killed_t_after_sending_began(fake, fork_server, kill_tally, online,
                                                  seconds):
    kill_and_resume(fake, fork_server, online, f"sweep {seconds} s into sending",
                    trigger=when(lambda f: f.stats()["requests"] > 0, delay=seconds),
                    tally=kill_tally, must_kill=False)


@pytest.mark.slow_faults
@pytest.mark.parametrize("seconds", sorted(round(_slow.uniform(0.0, 0.45), 3) for _ in range(20)))
def test_sweep_batch_killed_t_after_its_creation(fake, fork_server, kill_tally, batch, seconds):
    kill_and_resume(fake, fork_server, batch, f"sweep batch {seconds} s after creation",
                    trigger=when(lambda f: f.stats()["batches_created"] > 0, delay=seconds),
                    tally=kill_tally, must_kill=False)


SUMMARIZE_POINTS = {
    "stage read": KillAt("stage:read"),
    "stage compress": KillAt("stage:compress"),
    "stage render": KillAt("stage:render"),
    "stage dedup": KillAt("stage:dedup"),
    "stage semantic dedup": KillAt("stage:semantic dedup"),
    "embeddings written": KillAt("batchopt.services.embed_cache:EmbeddingCache._write", "after"),
    "stage send": KillAt("stage:send"),
    "answers 5 received, not saved": KillAt(CACHE, "before", 5),
    "all answered, before finish": KillAt(f"{RUNNER}:finish"),
    "ledger written": KillAt(COMMIT, "after", 2),
}


@pytest.mark.slow_faults
@pytest.mark.parametrize("point", [*SUMMARIZE_POINTS, "after 40 billed", "after 120 billed"])
def test_summarize_sample_killed(fake, fork_server, kill_tally, tmp_path, point):
    """The shipped pipeline, --profile openai, on the 300-row sample."""
    fake.latency_ms = 25
    job = summarize_job(tmp_path)
    trigger = None if point in SUMMARIZE_POINTS else after_answers(int(point.split()[1]))
    kill_and_resume(fake, fork_server, job, f"summarize {point}",
                    kill=SUMMARIZE_POINTS.get(point), trigger=trigger, tally=kill_tally)


@pytest.mark.slow_faults
@pytest.mark.parametrize("point", ["batch created, id not recorded", "download at row 50"])
def test_summarize_sample_batch_killed(fake, fork_server, kill_tally, tmp_path, point):
    fake.batch_seconds = 0.5
    job = summarize_job(tmp_path, mode="batch")
    kill = {"batch created, id not recorded": BATCH_POINTS["batch created, id not recorded"],
            "download at row 50": KillAt(f"{OPENAI}.fetch_batch_results", nth=50)}[point]
    kill_and_resume(fake, fork_server, job, f"summarize batch {point}", kill=kill, tally=kill_tally)

