"""The budget's arithmetic held to the providers' published prices (the fake server's own list,
`fakeapi.prices`, not batchopt's price table): what a send reserves, what a batch answer
costs, a reservation given back, and the pre-send check's boundary. Found by the mutation script
(docs/mutation.md): each of these could be broken without a run-level test noticing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.errors import BudgetExceededError
from batchopt.fakeapi.prices import FakePrices
from batchopt.records import Result, Usage
from batchopt.run.budget import Budget
from batchopt.run.cost import max_request_cost, result_cost
from batchopt.run.runner import Plan, RunOptions, prepare

PUBLISHED = FakePrices()
LONG_SYSTEM = "You summarise support tickets for the billing team. " * 400  # > 2,048 tokens


class _NoCalls:
    def spent(self) -> float:
        return 0.0

    def unconfirmed(self) -> float:
        return 0.0


def _plan(tmp_path: Path, profile: str = "openai", budget: float | None = None,
          system: str | None = None) -> Plan:
    data = pipeline_dict(default_profile=profile)
    if budget is not None:
        data["budget"] = {"max_usd": budget}
    if system is not None:
        data["prompt"]["system"] = system
    path = write_pipeline(tmp_path, data)
    return prepare(load_pipeline(path), RunOptions(),
                   env={"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant-x"})


def _first(plan: Plan):
    return next(iter(plan.requests.values()))


@pytest.mark.parametrize("batch", [False, True])
def test_a_send_reserves_every_prompt_token_and_max_tokens(tmp_path, batch):
    plan = _plan(tmp_path)
    request = _first(plan)
    assert request.estimated_input_tokens > 20 and request.max_tokens == 32
    expected = PUBLISHED.cost(request.model, request.estimated_input_tokens,
                              request.max_tokens, batch=batch)
    assert max_request_cost(plan, request, batch=batch) == pytest.approx(expected, rel=1e-12)


def test_an_anthropic_cacheable_prefix_is_reserved_at_the_cache_write_rate(tmp_path):
    plan = _plan(tmp_path, "anthropic", system=LONG_SYSTEM)
    request = _first(plan)
    system_tokens = request.estimated_input_tokens - 100  # the prefix: most of the prompt
    most = max_request_cost(plan, request)
    plain = PUBLISHED.cost(request.model, request.estimated_input_tokens, request.max_tokens)
    assert system_tokens > 2048 and most > plain  # writing the cache costs more than reading
    rates = PUBLISHED.rates(request.model)
    assert rates is not None and rates.cache_write > rates.input


def test_a_batch_answer_costs_the_batch_price(tmp_path):
    plan = _plan(tmp_path)
    tier = next(iter(plan.tiers.values()))
    usage = Usage(input_tokens=1200, output_tokens=300)
    online = Result(key="k", text="ok", usage=usage)
    batch = Result(key="k", text="ok", usage=usage, mode="batch")
    assert result_cost(plan, tier, online) == pytest.approx(
        PUBLISHED.cost("gpt-4o-mini", 1200, 300), rel=1e-12)
    assert result_cost(plan, tier, batch) == pytest.approx(
        PUBLISHED.cost("gpt-4o-mini", 1200, 300, batch=True), rel=1e-12)
    failed = Result(key="k", text=None, status="failed")
    assert result_cost(plan, tier, failed) == 0.0


def test_a_released_reservation_is_given_back(tmp_path):
    plan = _plan(tmp_path, budget=1.0)
    budget = Budget(plan, _NoCalls())  # type: ignore[arg-type]
    request = _first(plan)
    assert budget.reserve(request)
    assert budget.left == pytest.approx(1.0 - max_request_cost(plan, request))
    budget.release(request.key)
    assert budget.left == 1.0 and not budget.holding


def test_a_reservation_that_does_not_fit_is_refused(tmp_path):
    plan = _plan(tmp_path, budget=1.0)
    request = _first(plan)
    most = max_request_cost(plan, request)
    tight = _plan(tmp_path / "tight", budget=most * 0.999)
    assert not Budget(tight, _NoCalls()).reserve(_first(tight))  # type: ignore[arg-type]
    exact = _plan(tmp_path / "exact", budget=most)
    assert Budget(exact, _NoCalls()).reserve(_first(exact))  # type: ignore[arg-type]


def test_the_pre_send_check_passes_at_the_limit_and_refuses_past_it(tmp_path):
    plan = _plan(tmp_path, budget=1.0)
    misses = list(plan.requests.values())
    estimate = Budget(plan, _NoCalls()).estimate(misses)  # type: ignore[arg-type]
    assert estimate > 0
    at = _plan(tmp_path / "at", budget=estimate)
    Budget(at, _NoCalls()).check_estimate(list(at.requests.values()))  # type: ignore[arg-type]
    under = _plan(tmp_path / "under", budget=estimate * 0.999)
    with pytest.raises(BudgetExceededError):
        Budget(under, _NoCalls()).check_estimate(  # type: ignore[arg-type]
            list(under.requests.values()))


def test_a_batch_run_reserves_at_the_batch_price_unless_told_otherwise(tmp_path):
    """The run's mode decides the price a send reserves; an online leftover of a batch run
    (`batch=False`) reserves at the online price."""
    data = pipeline_dict(budget={"max_usd": 1.0}, execution={"mode": "batch"})
    path = write_pipeline(tmp_path, data)
    plan = prepare(load_pipeline(path), RunOptions(), env={"OPENAI_API_KEY": "sk-x"})
    assert plan.mode == "batch"
    request = _first(plan)
    budget = Budget(plan, _NoCalls())  # type: ignore[arg-type]
    online = PUBLISHED.cost(request.model, request.estimated_input_tokens, request.max_tokens)
    assert budget.most(request) == pytest.approx(online / 2, rel=1e-12)
    assert budget.most(request, batch=False) == pytest.approx(online, rel=1e-12)
    assert budget.reserve(request, batch=False)
    assert budget.left == pytest.approx(1.0 - online, rel=1e-12)


def test_an_openai_request_reads_its_cached_prefix_unless_it_is_the_first(tmp_path):
    """A long static prefix is read from the provider's cache on every request but the first
    (OpenAI: in steps of 128 tokens from 1,024), and the expected usage says so."""
    from batchopt.run.cost import expected_usage

    plan = _plan(tmp_path, system=LONG_SYSTEM)
    request = _first(plan)
    usage = expected_usage(plan.history, request)
    first = expected_usage(plan.history, request, first=True)
    assert first.cached_input_tokens == 0 and first.cache_write_tokens == 0
    assert usage.cached_input_tokens >= 1024 and usage.cached_input_tokens % 128 == 0
    assert usage.cached_input_tokens <= request.estimated_input_tokens
    assert usage.input_tokens == first.input_tokens == request.estimated_input_tokens


class _Calls:
    """A run id's calls record: what earlier invocations paid, and sent but never confirmed."""

    def __init__(self, spent: float, unconfirmed: float) -> None:
        self._spent, self._unconfirmed = spent, unconfirmed

    def spent(self) -> float:
        return self._spent

    def unconfirmed(self) -> float:
        return self._unconfirmed


def _prefix_tokens(request) -> int:
    """The tokens of the static system prefix a provider's prompt cache serves, counted as the
    prompt is (OpenAI: in steps of 128; Anthropic: the whole prefix)."""
    from batchopt.tokens import count_tokens

    assert request.system == LONG_SYSTEM.strip()
    tokens = count_tokens(request.system, request.model)
    return tokens - tokens % 128 if request.provider == "openai" else tokens


def test_the_first_anthropic_request_writes_the_prefix_and_the_others_read_it(tmp_path):
    """Anthropic: the first request of a tier writes the cacheable prefix (billed at the
    cache-write rate), every later one reads it (the cache-read rate); both price it so."""
    from batchopt.run.cost import expected_usage, request_cost

    plan = _plan(tmp_path, "anthropic", system=LONG_SYSTEM)
    request = _first(plan)
    prefix = _prefix_tokens(request)
    assert prefix >= 2048  # Claude 3.5 Haiku caches prefixes of 2,048 tokens or more
    first = expected_usage(plan.history, request, first=True)
    later = expected_usage(plan.history, request)
    assert (first.cache_write_tokens, first.cached_input_tokens) == (prefix, 0)
    assert (later.cache_write_tokens, later.cached_input_tokens) == (0, prefix)
    for usage in (first, later):  # every prompt token counted; no history: max_tokens out
        assert usage.input_tokens == request.estimated_input_tokens
        assert usage.output_tokens == request.max_tokens
    n_in, n_out = request.estimated_input_tokens, request.max_tokens
    assert request_cost(plan, request, first=True) == pytest.approx(
        PUBLISHED.cost(request.model, n_in, n_out, cache_write_tokens=prefix), rel=1e-12)
    assert request_cost(plan, request) == pytest.approx(
        PUBLISHED.cost(request.model, n_in, n_out, cache_read_tokens=prefix), rel=1e-12)
    assert request_cost(plan, request, batch=True) == pytest.approx(
        PUBLISHED.cost(request.model, n_in, n_out, cache_read_tokens=prefix, batch=True),
        rel=1e-12)
    # the most a send can cost: the whole prefix written, max_tokens out, at the batch price too
    for batch in (False, True):
        assert max_request_cost(plan, request, batch=batch) == pytest.approx(
            PUBLISHED.cost(request.model, n_in, n_out, cache_write_tokens=prefix, batch=batch),
            rel=1e-12)


def test_a_known_answer_length_overrides_the_expected_output(tmp_path):
    """`output`: the answer's tokens where they are known otherwise (a judge's verdict)."""
    from batchopt.run.cost import expected_usage

    plan = _plan(tmp_path)
    request = _first(plan)
    assert expected_usage(plan.history, request).output_tokens == request.max_tokens
    assert expected_usage(plan.history, request, output=5).output_tokens == 5
    assert expected_usage(plan.history, request, output=0).output_tokens == 0


def test_an_openai_request_is_priced_with_its_cached_prefix_unless_it_is_the_first(tmp_path):
    """OpenAI bills cached prompt tokens at half the input rate and no cache write: the first
    request pays the full prompt, the later ones the cached prefix at the cached rate."""
    from batchopt.run.cost import request_cost

    plan = _plan(tmp_path, system=LONG_SYSTEM)
    request = _first(plan)
    prefix = _prefix_tokens(request)
    assert prefix >= 1024
    n_in, n_out = request.estimated_input_tokens, request.max_tokens
    for batch in (False, True):
        assert request_cost(plan, request, batch=batch, first=True) == pytest.approx(
            PUBLISHED.cost(request.model, n_in, n_out, batch=batch), rel=1e-12)
        assert request_cost(plan, request, batch=batch) == pytest.approx(
            PUBLISHED.cost(request.model, n_in, n_out, cache_read_tokens=prefix, batch=batch),
            rel=1e-12)
        # the most: every prompt token at the full input rate (OpenAI writes no cache)
        assert max_request_cost(plan, request, batch=batch) == pytest.approx(
            PUBLISHED.cost(request.model, n_in, n_out, batch=batch), rel=1e-12)


SELF_HOSTED = {"provider": "openai", "model": "llama-2-7b-chat",
               "base_url": "http://127.0.0.1:9/v1", "max_tokens": 16,
               "self_hosted": {"parameters_b": 7, "precision": "int4", "gpu": "l4-24gb",
                               "usd_per_hour": 0.80, "architecture": "llama-2-7b",
                               "throughput": {"prompt_tokens_per_s": 5000,
                                              "generated_tokens_per_s": 500}}}


def _self_hosted_plan(tmp_path: Path) -> Plan:
    data = pipeline_dict(profiles={"vllm": SELF_HOSTED}, default_profile="vllm")
    return prepare(load_pipeline(write_pipeline(tmp_path, data)), RunOptions(),
                   env={"OPENAI_API_KEY": "sk-x"})


def test_a_self_hosted_tier_is_priced_by_the_time_its_tokens_take(tmp_path):
    """A time-priced tier costs its $/hour for the time the prompt and max_tokens take at its
    stated throughput (`self_hosted.throughput`); tokens and the batch flag change nothing else."""
    from batchopt.run.cost import request_cost

    plan = _self_hosted_plan(tmp_path)
    request = _first(plan)
    seconds = request.estimated_input_tokens / 5000 + request.max_tokens / 500
    expected = seconds / 3600 * 0.80
    assert expected > 0
    for batch in (False, True):
        assert request_cost(plan, request, batch=batch) == pytest.approx(expected, rel=1e-12)
        assert max_request_cost(plan, request, batch=batch) == pytest.approx(expected, rel=1e-12)


def test_a_bought_result_of_a_self_hosted_tier_costs_its_measured_time(tmp_path):
    plan = _self_hosted_plan(tmp_path)
    tier = plan.tier_of(_first(plan))
    timed = Result(key="k", text="ok", usage=Usage(input_tokens=30, output_tokens=10),
                   latency_ms=45.0)
    assert result_cost(plan, tier, timed) == pytest.approx(45.0 / 3.6e6 * 0.80, rel=1e-12)
    # a server that reports no token counts: the answer still took its machine time
    silent = Result(key="k", text="ok", latency_ms=45.0)
    assert result_cost(plan, tier, silent) == pytest.approx(45.0 / 3.6e6 * 0.80, rel=1e-12)


def test_a_failed_answer_that_came_back_is_billed_its_tokens(tmp_path):
    """An answer that failed after it arrived (not JSON: `execute.structured`) was billed; a
    request that failed with no usage (never answered) costs nothing."""
    plan = _plan(tmp_path)
    tier = next(iter(plan.tiers.values()))
    bad = Result(key="k", text="{oops", status="failed", error="answer is not JSON",
                 usage=Usage(input_tokens=1, output_tokens=300))
    assert result_cost(plan, tier, bad) == pytest.approx(
        PUBLISHED.cost("gpt-4o-mini", 1, 300), rel=1e-12)
    batch = Result(key="k", text="{oops", status="failed", mode="batch",
                   usage=Usage(input_tokens=1200, output_tokens=300))
    assert result_cost(plan, tier, batch) == pytest.approx(
        PUBLISHED.cost("gpt-4o-mini", 1200, 300, batch=True), rel=1e-12)


def test_the_budget_counts_earlier_spend_and_unconfirmed_calls(tmp_path):
    """What is left: the limit less what the run id's calls record says it paid and what it
    sent without an answer (which may be billed)."""
    plan = _plan(tmp_path, budget=1.0)
    budget = Budget(plan, _Calls(spent=0.25, unconfirmed=0.5))  # type: ignore[arg-type]
    assert budget.spent == pytest.approx(0.75) and budget.left == pytest.approx(0.25)
    assert not budget.reached
    assert Budget(plan, _Calls(spent=0.5, unconfirmed=0.5)).reached  # type: ignore[arg-type]


def test_a_request_held_already_is_not_reserved_twice(tmp_path):
    """Batch mode: a request whose most is held already (reserved before its batch was sent)
    is not charged again, and still counts as reserved when the budget has no room left."""
    plan = _plan(tmp_path, budget=1.0)
    most = max_request_cost(plan, _first(plan))
    exact = _plan(tmp_path / "exact", budget=most)
    budget = Budget(exact, _NoCalls())  # type: ignore[arg-type]
    request = _first(exact)
    assert budget.reserve(request) and budget.left == pytest.approx(0.0, abs=1e-15)
    assert budget.reserve(request)
    assert budget.left == pytest.approx(0.0, abs=1e-15) and budget.held == {request.key: most}


def test_the_refusal_says_what_earlier_invocations_spent(tmp_path):
    """The pre-send check counts what earlier invocations of the run id spent, and says so."""
    plan = _plan(tmp_path, budget=1.0)
    misses = list(plan.requests.values())
    fresh = Budget(plan, _NoCalls()).estimate(misses)  # type: ignore[arg-type]
    over = Budget(plan, _Calls(spent=0.9, unconfirmed=0.1))  # type: ignore[arg-type]
    with pytest.raises(BudgetExceededError) as raised:
        over.check_estimate(misses)
    text = str(raised.value)
    assert f"estimated at ${1.0 + fresh:,.4f}" in text
    assert "($1.0000 of it already spent by earlier invocations of this run id)" in text
    assert "against a budget of $1.0000" in text
    tight = _plan(tmp_path / "tight", budget=fresh * 0.5)
    with pytest.raises(BudgetExceededError) as raised:
        Budget(tight, _NoCalls()).check_estimate(misses)  # type: ignore[arg-type]
    assert f"estimated at ${fresh:,.4f} (as `batchopt plan` estimates it)" in str(raised.value)


def test_an_openai_reservation_writes_no_cache_even_under_a_contract_with_a_write_rate(tmp_path):
    """OpenAI bills no cache writes (its usage never reports any), so a contract's
    `cache_write` rate for an OpenAI model does not enter what its send reserves: every prompt
    token at the contract's input rate."""
    contract = {"input": 0.12, "output": 0.50, "cached_input": 0.06, "cache_write": 0.15}
    data = pipeline_dict(pricing={"models": {"gpt-4o-mini": contract}})
    data["prompt"]["system"] = LONG_SYSTEM
    plan = prepare(load_pipeline(write_pipeline(tmp_path, data)), RunOptions(),
                   env={"OPENAI_API_KEY": "sk-x"})
    request = _first(plan)
    assert _prefix_tokens(request) >= 1024  # a prefix OpenAI would cache
    billed = PUBLISHED.with_overrides({"gpt-4o-mini": contract})
    for batch in (False, True):
        assert max_request_cost(plan, request, batch=batch) == pytest.approx(
            billed.cost(request.model, request.estimated_input_tokens, request.max_tokens,
                        batch=batch), rel=1e-12)


def test_a_failed_call_without_usage_costs_nothing_on_a_self_hosted_tier(tmp_path):
    """A call that failed with no usage was not billed (`calls`: not_billed), whatever time it
    took; the ledger and the budget count it at 0."""
    plan = _self_hosted_plan(tmp_path)
    tier = plan.tier_of(_first(plan))
    failed = Result(key="k", text=None, status="failed", error="timeout", latency_ms=45.0)
    assert result_cost(plan, tier, failed) == 0.0
