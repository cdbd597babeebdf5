"""Provider faults, one knob of the fake server each, through whole runs on both providers'
SDKs: online (rate-limit storms, 5xx bursts, resets, read timeouts, bodies that are not JSON or
stop midway, answers cut at max_tokens or without usage) and through the batch APIs (batches
that fail validation, expire half done, come back out of order, whose upload times out or
whose results file breaks off).

Each run is held by `provider_helpers.check` to the guarantees: the expected exit code, every
row once in the outputs and the ledger with its own answer or a failure naming the fault,
attempts counted, nothing paid twice but the answers the server billed and batchopt never
received (asserted exactly, from the billing log), and the ledger's cost equal to the billing
log priced. What a fault bills is documented in `batchopt.fakeapi.app` (online) and
`batch_routes` (batches).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import diskcache
import polars as pl
import pytest
from click.testing import CliRunner
from faults.provider_helpers import MODELS, billed_cost, check, make_pipeline, run
from helpers import fake_env

from batchopt.cli.main import main
from batchopt.errors import EXIT_FAILED_ROWS
from batchopt.providers.sdk_common import USAGE_MISSING
from batchopt.run.model import RunPending

PROVIDERS = ["openai", "anthropic"]


def _failed_calls(fake) -> int:
    return fake.stats()["failed_requests"]


# ---- online: errors the server answers with ------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("retry_after", [0.05, None], ids=["retry-after", "no-retry-after"])
def test_a_429_storm_is_ridden_out_without_paying_twice(fake, tmp_path, provider, retry_after):
    storm = {"status": 429, "count": 7}
    if retry_after is not None:
        storm["retry_after"] = retry_after
    fake.set_faults([storm])
    # one attempt more than the storm has faults: no request can run out, whatever the order
    path = make_pipeline(tmp_path, provider, max_attempts=8)
    summary = run(path, fake, "storm")
    check(fake, tmp_path, summary, "storm", fault=f"429 storm {retry_after}", retries=7)
    assert _failed_calls(fake) == 7


@pytest.mark.parametrize("provider", PROVIDERS)
def test_500_502_503_529_bursts_are_retried(fake, tmp_path, provider):
    fake.set_faults([{"status": s, "count": 2} for s in (500, 502, 503, 529)])
    path = make_pipeline(tmp_path, provider, max_attempts=9)
    summary = run(path, fake, "burst")
    check(fake, tmp_path, summary, "burst", fault="5xx burst", retries=8)
    assert _failed_calls(fake) == 8


@pytest.mark.parametrize(("provider", "status"), [("openai", 429), ("anthropic", 529)])
def test_a_storm_longer_than_the_attempts_fails_the_row_through_the_cli(
    fake, tmp_path, monkeypatch, provider, status
):
    # one request at a time: the first takes every fault, runs out of attempts and fails; the
    # rest are answered, and the CLI says exit 1 (failed rows beyond the allowed share)
    fake.set_faults([{"status": status, "retry_after": 0.01, "count": 3}])
    path = make_pipeline(tmp_path, provider, concurrency=1, max_attempts=3)
    for key, value in fake_env(fake).items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(main, ["run", str(path), "--run-id", "long", "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    checked = check(fake, tmp_path, result.exit_code, "long", fault=f"{status} beyond attempts",
                    exit_code=EXIT_FAILED_ROWS, failed=1, error_words=(f"HTTP {status}",),
                    retries=2)
    failed = checked.ledger.filter(pl.col("status") == "failed")
    assert sorted(failed["row_id"]) == ["D000", "T000"]  # the first ticket and its duplicate
    assert failed.filter(pl.col("dedup") == "none")["attempts"].to_list() == [3]


# ---- online: the connection or the body breaks -----------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("kind", ["reset", "malformed"])
def test_unbilled_breaks_are_retried_and_never_paid(fake, tmp_path, provider, kind):
    """A reset before the model ran, a proxy's page instead of JSON: not billed, retried."""
    fake.set_faults([{"kind": kind, "count": 3}])
    path = make_pipeline(tmp_path, provider)
    summary = run(path, fake, kind)
    check(fake, tmp_path, summary, kind, fault=kind, retries=3)
    assert _failed_calls(fake) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_body_cut_midway_is_retried_and_paid_again_unavoidably(fake, tmp_path, provider):
    """The server billed the answer, then the body broke off: batchopt never had it, so the
    retry pays again. Exactly those calls are paid twice; the ledger holds what it received."""
    fake.set_faults([{"kind": "truncated", "count": 3}])
    path = make_pipeline(tmp_path, provider)
    summary = run(path, fake, "cut")
    checked = check(fake, tmp_path, summary, "cut", fault="truncated body", retries=3,
                    unavoidable=3)
    assert _failed_calls(fake) == 0 and len(checked.log) == 8 + 3


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("billed", [True, False], ids=["after-the-model", "before-the-model"])
def test_read_timeouts_are_retried(fake, tmp_path, provider, billed):
    """Answers held past the client's 2 s timeout. Held after the model ran (`kind: timeout`),
    they were billed and are paid again by the retry; held before it (a bare delay), the
    server drops them when the client hangs up and nothing is paid twice."""
    fault = {"delay_ms": 2500, "count": 2}
    if billed:
        fault["kind"] = "timeout"
    fake.set_faults([fault])
    path = make_pipeline(tmp_path, provider, timeout_s=2)  # 2 s: room for a loaded machine
    summary = run(path, fake, "slow")
    check(fake, tmp_path, summary, "slow", fault=f"read timeout billed={billed}", retries=2,
          unavoidable=2 if billed else 0)


# ---- online: answers that are not what they should be ----------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_answer_without_usage_is_kept_counted_offline_and_marked(fake, tmp_path, provider):
    fake.set_faults([{"kind": "no_usage", "count": 3}])
    path = make_pipeline(tmp_path, provider)
    summary = run(path, fake, "nousage")
    checked = check(fake, tmp_path, summary, "nousage", fault="usage missing", retries=0,
                    exact_usage=False)
    reps = checked.ledger.filter(pl.col("dedup") == "none")
    marked = reps.filter(pl.col("error") == USAGE_MISSING)
    assert marked.height == 3 and (marked["status"] == "ok").all()
    assert (marked["input_tokens"] > 0).all() and (marked["cost_usd"] > 0).all()
    # the offline count is near what the server billed for the same rows (by request id)
    billed = {e["id"]: e for e in checked.log}
    for row in marked.iter_rows(named=True):
        entry = billed[row["request_id"]]
        assert row["output_tokens"] == entry["output_tokens"]
        assert abs(row["input_tokens"] - entry["input_tokens"]) <= 0.1 * entry["input_tokens"]
        assert row["cost_usd"] == pytest.approx(billed_cost(entry), rel=0.1)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_answers_cut_at_max_tokens_are_kept_and_say_length(fake, tmp_path, provider):
    fake.set_faults([{"kind": "max_tokens", "count": 3}])
    path = make_pipeline(tmp_path, provider)
    summary = run(path, fake, "cut")
    checked = check(fake, tmp_path, summary, "cut", fault="max_tokens", retries=0)
    # kept (a prefix of the full answer, which `check` holds them to), and recorded as cut
    assert Counter(_cached_finish_reasons(tmp_path)) == {"length": 3, "stop": 5}
    longest = max(e["output_tokens"] for e in checked.log)
    assert sum(e["output_tokens"] <= longest // 2 for e in checked.log) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_cascade_escalates_the_answers_cut_at_max_tokens(fake, tmp_path, provider):
    fake.set_faults([{"kind": "max_tokens", "count": 3}])
    routing = {"strategy": "cascade", "tiers": ["cheap", "strong"],
               "validators": [{"type": "finish_reason"}]}
    path = make_pipeline(tmp_path, provider, routing=routing)
    summary = run(path, fake, "esc")
    checked = check(fake, tmp_path, summary, "esc", fault="max_tokens in a cascade")
    reps = checked.ledger.filter(pl.col("dedup") == "none")
    up = reps.filter(pl.col("escalated"))
    assert up.height == 3 and summary.escalated == 3
    assert (up["tier"] == "strong").all() and up["route_reason"].str.contains("'length'").all()
    # each escalated row paid for its cut cheap answer too (in its cost, as earlier attempts)
    cheap = [e for e in checked.log if e["model"] == MODELS[provider]]
    strong = [e for e in checked.log if e["model"] != MODELS[provider]]
    assert len(cheap) == 8 and len(strong) == 3 and {e["model"] for e in strong} == {up["model"][0]}
    longest = max(e["output_tokens"] for e in cheap)
    cut = [e for e in cheap if e["output_tokens"] <= longest // 2]  # the fault halves them
    assert sorted(up["earlier_attempts_usd"]) == pytest.approx(sorted(billed_cost(e) for e in cut))
    # an escalated row's tokens are both its calls' (issue 20: they were the strong call's only)
    assert up["input_tokens"].sum() == sum(e["input_tokens"] for e in strong + cut)
    stay = reps.filter(~pl.col("escalated"))
    assert stay["output_tokens"].sum() == sum(e["output_tokens"] for e in cheap) - sum(
        e["output_tokens"] for e in cut)


def _cached_finish_reasons(tmp_path: Path) -> list[str | None]:
    with diskcache.Cache(str(tmp_path / "out" / "cache" / "tickets")) as cache:
        return [json.loads(cache[key])["finish_reason"] for key in cache]


# ---- batches --------------------------------------------------------------------------------


def _batch(tmp_path: Path, provider: str, **kwargs) -> Path:
    return make_pipeline(tmp_path, provider, mode="batch", **kwargs)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_expired_batch_keeps_its_done_half_and_resends_the_rest(bfake, tmp_path, provider):
    bfake.set_faults([{"batch": "expire", "done_share": 0.5}])
    summary = run(_batch(tmp_path, provider), bfake, "exp")
    checked = check(bfake, tmp_path, summary, "exp", fault="batch expired half done")
    reps = checked.ledger.filter(pl.col("dedup") == "none")
    again = reps.filter(pl.col("retry_reason").is_not_null())
    assert again.height == 4 and again["retry_reason"].str.contains("expired").all()
    assert (again["attempts"] == 2).all() and (reps["mode"] == "batch").all()
    assert bfake.stats()["batches_created"] == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rows_an_expired_batch_never_ran_fail_when_rounds_run_out(bfake, tmp_path, provider):
    bfake.set_faults([{"batch": "expire", "done_share": 0.5}])
    summary = run(_batch(tmp_path, provider, batch_rounds=1), bfake, "exp1")
    check(bfake, tmp_path, summary, "exp1", fault="batch expired, one round",
          exit_code=EXIT_FAILED_ROWS, failed=4, error_words=("expired",))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("times", [1, 3])
def test_a_batch_that_fails_validation(bfake, tmp_path, provider, times):
    """OpenAI: the batch ends `failed`; Anthropic: the create answers 400. Either way its rows
    go into the next round; when every round fails, they fail saying why."""
    bfake.set_faults([{"batch": "invalid", "message": "line 1: bad json", "count": times}])
    summary = run(_batch(tmp_path, provider), bfake, "inv")
    failing = times >= 3
    checked = check(bfake, tmp_path, summary, "inv", fault=f"batch invalid x{times}",
                    exit_code=EXIT_FAILED_ROWS if failing else 0, failed=8 if failing else 0,
                    error_words=("line 1: bad json",))
    if not failing:
        assert (checked.ledger.filter(pl.col("dedup") == "none")["attempts"] == 2).all()
    assert len(checked.log) == (0 if failing else 8)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rows_out_of_order_come_back_to_their_own_rows(bfake, tmp_path, provider):
    bfake.set_faults([{"batch": "shuffle"}])
    summary = run(_batch(tmp_path, provider), bfake, "shuf")
    check(bfake, tmp_path, summary, "shuf", fault="batch rows shuffled")  # own answer per row


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("times", [1, 2])
def test_a_results_file_that_breaks_off_is_read_again(bfake, tmp_path, provider, times):
    bfake.set_faults([{"batch": ["truncate_results", "shuffle"], "times": times}])
    summary = run(_batch(tmp_path, provider), bfake, "brk")
    check(bfake, tmp_path, summary, "brk", fault=f"results broke off x{times}")
    assert bfake.stats()["batches_created"] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_results_file_that_always_breaks_off_stops_the_wait(bfake, tmp_path, provider, caplog):
    """A waiting run does not loop for ever on results it cannot download: after READ_TRIES
    broken reads in a row it leaves the batch pending (exit 75) and says so; run again once
    the provider serves the file, it reads it and pays for nothing twice."""
    from batchopt.execute.batch import READ_TRIES

    # the fault goes with the batch: its first READ_TRIES downloads break off, later ones do not
    bfake.set_faults([{"batch": "truncate_results", "times": READ_TRIES}])
    pending = run(_batch(tmp_path, provider, poll_seconds=0.01), bfake, "stuck")
    assert isinstance(pending, RunPending) and len(pending.batches) == 1
    assert f"{READ_TRIES} polls or results downloads in a row broke off" in caplog.text
    assert "--run-id stuck" in caplog.text
    summary = run(_batch(tmp_path, provider), bfake, "stuck")
    check(bfake, tmp_path, summary, "stuck", fault="results broke off every time")
    assert bfake.stats()["batches_created"] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_batch_row_error_in_every_round_fails_and_says_why(bfake, tmp_path, provider):
    bfake.set_faults([{"batch": "errors", "rows": 2, "message": "row exploded"}])
    summary = run(_batch(tmp_path, provider, batch_rounds=1), bfake, "err")
    check(bfake, tmp_path, summary, "err", fault="batch row errors",
          exit_code=EXIT_FAILED_ROWS, failed=2, error_words=("row exploded",))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_upload_that_times_out_leaves_nothing_and_is_sent_again(bfake, tmp_path, provider):
    bfake.set_faults([{"batch": "upload_delay", "delay_ms": 2500}])
    summary = run(_batch(tmp_path, provider, timeout_s=2), bfake, "up")
    check(bfake, tmp_path, summary, "up", fault="upload timed out")
    assert bfake.stats()["batches_created"] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_create_whose_answer_times_out(bfake, tmp_path, provider):
    """The batch was created but its id never came back. The next pass finds it and adopts it:
    an OpenAI batch by the tag in its metadata, an Anthropic message batch (no metadata) by
    what it holds (its custom_ids, created when the submission began). Nothing is paid twice."""
    bfake.set_faults([{"batch": "ack_delay", "delay_ms": 2500}])
    summary = run(_batch(tmp_path, provider, timeout_s=2), bfake, "ack")
    checked = check(bfake, tmp_path, summary, "ack", fault="batch create answer timed out")
    assert bfake.stats()["batches_created"] == 1
    (orphan,) = checked.ledger.filter(pl.col("dedup") == "none")["batch_id"].unique()
    assert orphan and all(e["wire"] == f"{provider}-batch" for e in checked.log)
