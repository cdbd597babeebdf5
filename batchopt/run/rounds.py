"""How a run's requests get answered: rounds of response cache, earlier runs' near-duplicates
and each tier's provider (online, or through its batch API; `sending.Round`); a cascade's later
rounds; the budget. A helper of `runner`, which prepares the plan before and writes outputs and
ledger after.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import TYPE_CHECKING

from batchopt.execute.cache import ResponseCache
from batchopt.execute.state import RunState, Submission
from batchopt.records import Request
from batchopt.run.budget import Budget
from batchopt.run.calls import CallsRecord
from batchopt.run.model import Answers, Plan, RunObserver, RunPending
from batchopt.run.sending import Round

if TYPE_CHECKING:
    from batchopt.routing.validators import JudgeValidator


def execute(
    plan: Plan,
    cache: ResponseCache,
    observer: RunObserver | None = None,
    state: RunState | None = None,
) -> Answers | RunPending:
    """Answer every request from the cache (exact, then semantic across runs) or the provider:
    online, or through its batch API (then `RunPending` while batches are still out). A
    cascade then asks the next tier for each answer its validators reject."""
    if observer is None:
        observer = RunObserver()
    answers = Answers(results={}, chain={g: [r] for g, r in plan.requests.items()})
    tier_of = partial(answers.tier_of, plan)  # the plan's tiers, and those the run adds
    calls = CallsRecord(plan, state, tier_of)
    budget = Budget(plan, calls, tier_of)
    round_ = Round(plan, cache, observer, state, answers, budget, calls)
    try:  # the Requests made once (plan.requests makes them when asked), shared with `chain`
        pending = round_.answer([chain[0] for chain in answers.chain.values()], first=True)
        if plan.strategy == "cascade":
            pending += _cascade(plan, round_)
    finally:
        if round_.claims is not None:
            round_.claims.close()
    if pending or round_.waiting:
        waiting = Counter(holder.run_id for holder in round_.waiting.values())
        # one batch once: a cascade step's judge calls and escalations may go to one tier, and
        # each sending reports that tier's open batches
        pending = list({sub.tag: sub for sub in pending}.values())
        makers = {(t.settings.provider, t.settings.model): name
                  for name, t in reversed(plan.tiers.items())}  # the cheapest tier of a model
        return RunPending(plan.run_id, plan.pipeline.config.name, pending,
                          state.path if state else None, waiting=dict(waiting),
                          tiers={s.tag: makers.get((s.provider, s.model), "?") for s in pending})
    answers.calls = calls.rows()
    return answers


def _cascade(plan: Plan, round_: Round) -> list[Submission]:
    """Ask one tier up for every answer the validators reject, as far as the config allows."""
    from batchopt.routing import build_validators, judge_of, validate
    from batchopt.run.tiers import judge_request_factory

    routing = plan.pipeline.config.routing
    assert routing is not None
    validators = build_validators(routing.validators, plan.pipeline.config.prompt.json_schema)
    judge = judge_of(validators)
    answers, pending = round_.answers, []
    for step in range(1, routing.escalation_limit + 1):
        rejected: dict[str, str] = {}
        to_judge: dict[str, Request] = {}
        for group, chain in answers.chain.items():
            result = answers.results.get(chain[-1].key)
            if len(chain) != step or result is None:  # further up already, or still out
                continue
            verdict = validate(validators, chain[-1], result)
            if not verdict.ok:
                rejected[group] = _why(verdict)
            elif judge is not None:
                make = judge_request_factory(plan.tiers[judge.tier])
                to_judge[group] = judge.judge_request(chain[-1], result, make)
        if to_judge:  # the answers every local check passed go to the judge, one call each
            assert judge is not None
            pending += _judge(round_, judge, to_judge, rejected)
        if not rejected:
            break
        pending += _escalate(plan, round_, rejected, step)
    return pending


def _judge(round_: Round, judge: JudgeValidator, to_judge: dict[str, Request],
           rejected: dict[str, str]) -> list[Submission]:
    """Ask the judge about each answer of `to_judge` (by group); add those it rejects to
    `rejected`. A judge call the budget stopped leaves its answer unverified."""
    answers = round_.answers
    for group, request in to_judge.items():
        answers.tiers[request.key] = judge.tier
        answers.judged.setdefault(group, []).append(request)
    pending = round_.answer(list(to_judge.values()), kind="judge")
    for group, request in to_judge.items():
        if request.key in answers.unsent:  # the budget stopped it: keep the answer
            answers.judged[group].remove(request)
            answers.unverified[group] = "budget"
            continue
        judged = answers.results.get(request.key)
        verdict = judge.read_judgement(judged) if judged is not None else None
        if verdict is not None and not verdict.ok:
            rejected[group] = _why(verdict)
    return pending


def _escalate(plan: Plan, round_: Round, rejected: dict[str, str], step: int
              ) -> list[Submission]:
    """Ask tier `step` (cheapest 0) for each group whose answer one below was `rejected`. An
    escalation the budget stopped keeps the answer below, unverified."""
    from batchopt.run.tiers import escalated_requests

    answers, names = round_.answers, list(plan.tiers)
    upper = escalated_requests(
        plan.rows, list(rejected), plan.tiers[names[step]],
        plan.pipeline.config.input.id_column,
    )
    before = dict(answers.escalations)
    for group, request in upper.items():
        answers.tiers[request.key] = names[step]
        answers.chain[group].append(request)
        answers.escalations[group] = (
            f"{answers.escalations[group]}; " if group in answers.escalations else ""
        ) + f"{names[step - 1]} rejected ({rejected[group]})"
    pending = round_.answer(list(upper.values()), kind="escalation")
    for group, request in upper.items():
        if request.key in answers.unsent:  # the budget stopped it: keep the answer below
            answers.chain[group].pop()
            if group in before:
                answers.escalations[group] = before[group]
            else:
                answers.escalations.pop(group, None)
            answers.unverified[group] = "budget"
    return pending


def _why(verdict: object) -> str:
    name, reason = getattr(verdict, "validator", None), getattr(verdict, "reason", None)
    return f"{name}: {reason}" if reason else str(name)
