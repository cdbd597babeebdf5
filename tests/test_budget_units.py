"""The budget's arithmetic held to the providers' published prices (the fake server's own list,
`providers.fake.prices`, not batchopt's price table): what a send reserves, what a batch answer
costs, a reservation given back, and the pre-send check's boundary. Found by the mutation script
(docs/mutation.md): each of these could be broken without a run-level test noticing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import pipeline_dict, write_pipeline

from batchopt.config import load_pipeline
from batchopt.errors import BudgetExceededError
from batchopt.estimate import max_request_cost
from batchopt.providers.fake.prices import FakePrices
from batchopt.records import Result, Usage
from batchopt.rounds import _Budget, result_cost
from batchopt.runner import Plan, RunOptions, prepare

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
    budget = _Budget(plan, _NoCalls())  # type: ignore[arg-type]
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
    assert not _Budget(tight, _NoCalls()).reserve(_first(tight))  # type: ignore[arg-type]
    exact = _plan(tmp_path / "exact", budget=most)
    assert _Budget(exact, _NoCalls()).reserve(_first(exact))  # type: ignore[arg-type]


def test_the_pre_send_check_passes_at_the_limit_and_refuses_past_it(tmp_path):
    plan = _plan(tmp_path, budget=1.0)
    misses = list(plan.requests.values())
    estimate = _Budget(plan, _NoCalls()).estimate(misses)  # type: ignore[arg-type]
    assert estimate > 0
    at = _plan(tmp_path / "at", budget=estimate)
    _Budget(at, _NoCalls()).check_estimate(list(at.requests.values()))  # type: ignore[arg-type]
    under = _plan(tmp_path / "under", budget=estimate * 0.999)
    with pytest.raises(BudgetExceededError):
        _Budget(under, _NoCalls()).check_estimate(  # type: ignore[arg-type]
            list(under.requests.values()))


def test_a_batch_run_reserves_at_the_batch_price_unless_told_otherwise(tmp_path):
    """The run's mode decides the price a send reserves; an online leftover of a batch run
    (`batch=False`) reserves at the online price."""
    data = pipeline_dict(budget={"max_usd": 1.0}, execution={"mode": "batch"})
    path = write_pipeline(tmp_path, data)
    plan = prepare(load_pipeline(path), RunOptions(), env={"OPENAI_API_KEY": "sk-x"})
    assert plan.mode == "batch"
    request = _first(plan)
    budget = _Budget(plan, _NoCalls())  # type: ignore[arg-type]
    online = PUBLISHED.cost(request.model, request.estimated_input_tokens, request.max_tokens)
    assert budget.most(request) == pytest.approx(online / 2, rel=1e-12)
    assert budget.most(request, batch=False) == pytest.approx(online, rel=1e-12)
    assert budget.reserve(request, batch=False)
    assert budget.left == pytest.approx(1.0 - online, rel=1e-12)


def test_an_openai_request_reads_its_cached_prefix_unless_it_is_the_first(tmp_path):
    """A long static prefix is read from the provider's cache on every request but the first
    (OpenAI: in steps of 128 tokens from 1,024), and the expected usage says so."""
    from batchopt.estimate import expected_usage

    plan = _plan(tmp_path, system=LONG_SYSTEM)
    request = _first(plan)
    usage = expected_usage(plan.history, request)
    first = expected_usage(plan.history, request, first=True)
    assert first.cached_input_tokens == 0 and first.cache_write_tokens == 0
    assert usage.cached_input_tokens >= 1024 and usage.cached_input_tokens % 128 == 0
    assert usage.cached_input_tokens <= request.estimated_input_tokens
    assert usage.input_tokens == first.input_tokens == request.estimated_input_tokens
