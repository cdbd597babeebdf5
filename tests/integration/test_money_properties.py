"""Money properties over generated pipeline shapes (issue 20, acceptance 1).

Hypothesis draws a job: strategy single / rules / cascade (gpt-4o-mini -> gpt-4o, with an
anthropic tier in some shapes), a judge or not (cascade only), a JSON-schema or a free-text answer,
online or batch, an empty or a warm response cache (a first run on part of the input), no budget,
a generous one or one that stops the run part-way (or refuses it up front), and 6-30 input rows
with exact copies, an empty or null row and rows differing only in an order number. Each shape is
planned (`plan_run`) and run (`run_pipeline`) against one fake server, and four properties are
checked, each in its own test so that each finds its own minimal failing shape:

1. `plan`: the plan's request count per tier equals what the run sent, where that is knowable in
   advance. Knowable: the requests the first tier is sent (every tier's, for `single` and
   `rules`, whose routing depends only on the input) and the cache hits. Not knowable, so not
   compared: a cascade's escalations (they depend on answers not yet given) and the judge's
   verdicts (a "no" escalates), hence every tier of a cascade but its first. A run the budget
   stopped part-way sent at most what was planned; one it refused up front sent nothing.
2. `tokens`: the ledger's tokens per model (its per-call record when the ledger has one, else
   its rows by `model`) equal the fake server's billing log exactly, input and output.
3. `summary`: the run's summary equals the ledger's sums (counts and tokens exactly, dollars to
   float rounding).
4. `budget`: the ledger's total never exceeds `budget.max_usd`, nor does the server's bill; and
   what the budget guard counts as spent by the run id is the ledger's total.

`plan_tokens`, a sharper form of 1: where the plan calls its prompt count exact (its token
counter is `exact:...`), a knowable tier's planned prompt tokens are what the server billed.

And `finishes`: the run ends in a summary or a budget refusal, not a crash (the four above
are not checked on a crashed run, so that a crash does not hide their own failures).

The examples are drawn the same way every run (the `ci` profile in tests/conftest.py). Each
shape is run once and its observation shared by the six tests (same test function, same draws).
CI reports the first failing shape as drawn; MONEY_SHRINK=1 shrinks it to a minimal one.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from faults.provider_helpers import billed_cost
from helpers import fake_env, pipeline_dict
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from batchopt.config.pipeline import load_pipeline
from batchopt.errors import EXIT_BUDGET, BudgetExceededError
from batchopt.execute.state import RunState
from batchopt.fakeapi import FakeServer
from batchopt.plan.estimate import JobEstimate, plan_run
from batchopt.run.runner import RunOptions, RunPending, RunSummary, run_pipeline

CHEAP, MID, STRONG = "gpt-4o-mini", "claude-3-5-haiku-20241022", "gpt-4o"
MODEL_OF = {"cheap": CHEAP, "mid": MID, "strong": STRONG}
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "topic": {"type": "string", "enum": ["damage", "delivery", "billing", "other"]},
    },
    "required": ["sentiment", "topic"],
}
BODIES = (
    "Where is my order #{n}?",
    "Please refund order #{n}, it never came.",
    "The box of order #{n} arrived damaged, the invoice shows the wrong address and the "
    "tracking page still says it is in transit. What now?",
    "Wrong colour delivered for order #{n}; I asked for blue and got a green one instead.",
)
SUBJECTS = ("Order", "Urgent")
EMPTY_ROWS = ((None, None), ("", ""), (None, "  "))

Row = tuple[str, str | None, str | None]  # ticket_id, subject, body


@dataclass(frozen=True)
class Shape:
    """One generated job."""

    strategy: str  # single | rules | cascade
    anthropic: bool  # an anthropic tier: the only tier (single), a rule's, a cascade's middle
    judge: bool  # cascade only: {type: judge, tier: strong}
    structured: bool  # a json_schema answer (and validator) or free text
    mode: str  # online | batch
    warm: bool  # a first run on part of the input filled the response cache
    budget: str  # none | generous | partway (1.3 x the plan) | refused (0.5 x the plan)
    rows: tuple[Row, ...]


@st.composite
def _rows(draw: st.DrawFn) -> tuple[Row, ...]:
    base = draw(st.lists(st.tuples(st.integers(0, len(BODIES) - 1), st.integers(0, 3),
                                   st.sampled_from(SUBJECTS)), min_size=4, max_size=20))
    rows: list[Row] = [(f"T{i:03d}", subject, BODIES[body].format(n=10400 + number))
                       for i, (body, number, subject) in enumerate(base)]
    copies = draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=6))
    rows += [(f"D{i:03d}", *rows[j][1:]) for i, j in enumerate(copies)]
    subject, body = draw(st.sampled_from(EMPTY_ROWS))
    rows.insert(draw(st.integers(0, len(rows))), ("E000", subject, body))
    return tuple(rows)


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    # the richest choice first: hypothesis starts from (and shrinks towards) the first of each
    strategy = draw(st.sampled_from(["cascade", "rules", "single"]))
    yes_no = st.sampled_from([True, False])
    return Shape(
        strategy=strategy,
        anthropic=draw(yes_no),
        judge=strategy == "cascade" and draw(yes_no),
        structured=draw(yes_no),
        mode=draw(st.sampled_from(["online", "batch"])),
        warm=draw(yes_no),
        budget=draw(st.sampled_from(["partway", "none", "generous", "refused"])),
        rows=draw(_rows()),
    )


def _tiers(shape: Shape) -> list[str]:
    if shape.strategy == "single":
        return ["mid" if shape.anthropic else "cheap"]
    return ["cheap", "mid", "strong"] if shape.anthropic else ["cheap", "strong"]


def _routing(shape: Shape) -> dict[str, Any]:
    tiers = _tiers(shape)
    routing: dict[str, Any] = {"strategy": shape.strategy, "tiers": tiers}
    if shape.strategy == "rules":
        rules = [{"name": "urgent", "when": {"column": "subject", "equals": "Urgent"},
                  "tier": "strong"}]
        if shape.anthropic:
            rules.append({"name": "long", "when": {"prompt_tokens": {"gt": 20}}, "tier": "mid"})
        routing.update(rules=rules, default_tier="cheap")
    elif shape.strategy == "cascade":
        validators: list[dict[str, Any]] = [{"type": "json_schema"} if shape.structured
                                            else {"type": "finish_reason"}]
        if shape.judge:
            validators.append({"type": "judge", "tier": "strong"})
        routing["validators"] = validators
    return routing


def _pipeline(shape: Shape, max_usd: float | None) -> dict[str, Any]:
    def profile(provider: str, model: str, max_tokens: int) -> dict[str, Any]:
        return {"provider": provider, "model": model, "max_tokens": max_tokens,
                "concurrency": 4, "max_attempts": 2, "timeout_s": 10}

    # A free-text answer is cut at max_tokens (the fake's is about 25 tokens): a cheap one fails
    # `finish_reason`, so cascades escalate, and each call costs its most, which is what the
    # budget reserves before sending, so a guard that lets one request too many through overruns.
    cheap_max, strong_max = (40, 64) if shape.structured else (16, 24)
    data = pipeline_dict(
        default_profile=_tiers(shape)[0],
        profiles={"cheap": profile("openai", CHEAP, cheap_max),
                  "mid": profile("anthropic", MID, 48),
                  "strong": profile("openai", STRONG, strong_max)},
        routing=_routing(shape),
        execution={"mode": shape.mode, "poll_seconds": 0.05},
    )
    if shape.structured:
        data["prompt"]["json_schema"] = SCHEMA
        data["prompt"]["output_column"] = "label"
    if max_usd is not None:
        data["budget"] = {"max_usd": max_usd}
    return data


@dataclass
class Observed:
    """What one shape's plan and run showed."""

    shape: Shape
    plan: JobEstimate  # the plan of the run, with its budget
    budget: float | None
    outcome: RunSummary | Exception  # BudgetExceededError: refused up front
    ledger: pl.DataFrame | None  # None: nothing was written (refused up front)
    calls: pl.DataFrame | None  # the ledger's per-call record, where the ledger has one
    log: list[dict[str, Any]]  # the fake's billing log of the run (not of the warm-up)
    budget_spent: float | None = None  # what the budget guard counts this run id has spent

    @property
    def stopped(self) -> bool:
        """The budget stopped the run before it was done (or before it began)."""
        if isinstance(self.outcome, RunSummary):
            return self.outcome.exit_code == EXIT_BUDGET
        return isinstance(self.outcome, BudgetExceededError)

    @property
    def crashed(self) -> bool:
        """The run ended in an error other than a budget refusal (`check_finishes` fails it;
        the money properties are not checked on it)."""
        return not isinstance(self.outcome, RunSummary | BudgetExceededError)


_OBSERVED: dict[Shape, Observed] = {}


@pytest.fixture(scope="module")
def server() -> Any:
    """One fake server for the module; batches end 50 ms after they are created."""
    with FakeServer(batch_seconds=0.05) as fake:
        yield fake


def _write_rows(folder: Path, rows: tuple[Row, ...]) -> None:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame([{"ticket_id": r[0], "subject": r[1], "body": r[2]} for r in rows],
                         schema={"ticket_id": pl.String, "subject": pl.String, "body": pl.String})
    frame.write_parquet(folder / "data" / "tickets.parquet")


def _run(path: Path, fake: FakeServer, run_id: str) -> RunSummary | Exception:
    """The run's summary, or the exception it ended with (a budget refusal is one)."""
    try:
        outcome = run_pipeline(load_pipeline(path), RunOptions(run_id=run_id),
                               env=fake_env(fake))
    except Exception as exc:  # noqa: BLE001 - a crash is an outcome `check_finishes` holds
        return exc
    assert not isinstance(outcome, RunPending), outcome  # wait=True: every batch collected
    return outcome


def _plan(path: Path, fake: FakeServer, run_id: str) -> JobEstimate:
    return plan_run(load_pipeline(path), RunOptions(run_id=run_id), env=fake_env(fake))


def _budget_spent(run_dir: Path) -> float | None:
    if not (run_dir / "state.sqlite").exists():
        return None
    state = RunState.open(run_dir)
    try:
        # what the guard counts (budget.Budget): the run id's confirmed calls
        return sum(c["cost_usd"] for c in state.calls() if c["status"] == "confirmed")
    finally:
        state.close()


def observe(fake: FakeServer, shape: Shape) -> Observed:
    """Plan and run `shape` once (in a fresh folder); later calls return what was seen."""
    if shape in _OBSERVED:
        return _OBSERVED[shape]
    fake.reset()
    fake.batch_seconds = 0.05
    # the cheap model flaws some answers: an invalid JSON fails json_schema, a wrong one the judge
    fake.set_quality(invalid_share={CHEAP: 0.3} if shape.structured else {},
                     wrong_share={CHEAP: 0.3})
    with tempfile.TemporaryDirectory(prefix="money-") as tmp:
        folder = Path(tmp)
        path = folder / "pipeline.yaml"
        if shape.warm:  # the first half of the input, answered and cached by an earlier run
            _write_rows(folder, shape.rows[: len(shape.rows) // 2])
            path.write_text(yaml.safe_dump(_pipeline(shape, None)))
            warm = _run(path, fake, "warm")
            if not isinstance(warm, RunSummary):
                seen = Observed(shape, None, None, warm, None, None, [])  # type: ignore[arg-type]
                _OBSERVED[shape] = seen
                return seen
        _write_rows(folder, shape.rows)
        path.write_text(yaml.safe_dump(_pipeline(shape, None)))
        budget = None
        if shape.budget != "none":
            unbounded = _plan(path, fake, "prop").cost_usd
            factor = {"generous": 100.0, "partway": 1.3, "refused": 0.5}[shape.budget]
            budget = max(factor * unbounded, 1e-6)
        path.write_text(yaml.safe_dump(_pipeline(shape, budget)))
        plan = _plan(path, fake, "prop")
        billed_before = len(fake.log())
        outcome = _run(path, fake, "prop")
        run_folder = folder / "out" / "ledger" / "pipeline=tickets" / "run_id=prop"
        ledger = calls = None
        if (run_folder / "part.parquet").exists():
            ledger = pl.read_parquet(run_folder / "part.parquet")
        found = sorted(run_folder.glob("calls*.parquet")) if run_folder.exists() else []
        if found:
            calls = pl.read_parquet(found[0])
        seen = Observed(shape, plan, budget, outcome, ledger, calls, fake.log()[billed_before:],
                        _budget_spent(folder / "out" / "cache" / "tickets" / "runs" / "prop"))
    _OBSERVED[shape] = seen
    if os.environ.get("MONEY_VERBOSE"):
        print("observed", shape.strategy, shape.anthropic, shape.judge, shape.structured,
              shape.mode, shape.warm, shape.budget, len(shape.rows), repr(outcome)[:60],
              dict(Counter(e["model"] for e in seen.log)), flush=True)
    return seen


# ---- the four properties, and that the run ends --------------------------------------------------


def check_finishes(seen: Observed) -> None:
    assert not seen.crashed, ("the run crashed", repr(seen.outcome))


def _sent_by_model(log: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["model"] for e in log)


def check_plan(seen: Observed) -> None:
    if seen.crashed:
        return
    shape, plan = seen.shape, seen.plan
    planned = {t.tier: t.requests - t.escalated for t in plan.tiers}
    sent = _sent_by_model(seen.log)
    knowable = _tiers(shape)[:1] if shape.strategy == "cascade" else _tiers(shape)
    if isinstance(seen.outcome, BudgetExceededError):
        assert sent == Counter(), ("refused up front, yet sent", sent)
        return
    for tier in knowable:
        model = MODEL_OF[tier]
        if seen.stopped:
            assert sent[model] <= planned[tier], (tier, "planned", planned[tier], "sent",
                                                  sent[model])
        else:
            assert sent[model] == planned[tier], (tier, "planned", planned[tier], "sent",
                                                  sent[model])
    assert seen.ledger is not None
    reps = seen.ledger.filter(pl.col("dedup") == "none")
    from_cache = int((reps["mode"] == "cache").sum())
    assert from_cache == plan.cached, ("cache hits: planned", plan.cached, "run", from_cache)


def check_plan_tokens(seen: Observed) -> None:
    """Where the plan says its prompt count is exact, the knowable tiers' prompt tokens are
    what the server billed for them."""
    shape = seen.shape
    if seen.crashed or seen.stopped:
        return
    knowable = _tiers(shape)[:1] if shape.strategy == "cascade" else _tiers(shape)
    for row in seen.plan.tiers:
        if row.tier in knowable and row.token_counter.startswith("exact"):
            billed = sum(e["input_tokens"] for e in seen.log if e["model"] == MODEL_OF[row.tier])
            assert row.input_tokens == billed, (row.tier, row.token_counter, "planned prompt "
                                                "tokens", row.input_tokens, "billed", billed)


_TOKENS = (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"))


def ledger_tokens_by_model(seen: Observed) -> dict[str, dict[str, int]]:
    """Per model: the ledger's per-call record where it has one, else its rows by `model`."""
    frame = seen.calls if seen.calls is not None else seen.ledger
    assert frame is not None
    out: dict[str, dict[str, int]] = defaultdict(lambda: {c: 0 for c, _ in _TOKENS})
    for row in frame.iter_rows(named=True):
        for column, _ in _TOKENS:
            if row["model"] is not None and row[column]:
                out[row["model"]][column] += int(row[column])
    return {model: dict(tokens) for model, tokens in out.items()}


def billed_tokens_by_model(log: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {c: 0 for c, _ in _TOKENS})
    for entry in log:
        for column, field in _TOKENS:
            out[entry["model"]][column] += int(entry[field])
    return {model: dict(tokens) for model, tokens in out.items()}


def check_tokens(seen: Observed) -> None:
    if seen.crashed:
        return
    if seen.ledger is None:
        assert seen.log == [], "nothing in the ledger, yet billed"
        return
    billed = billed_tokens_by_model(seen.log)
    ledger = ledger_tokens_by_model(seen)
    assert ledger == billed, {"ledger": ledger, "billed": billed}
    for column, field in _TOKENS:  # the ledger's own rows add up too (a row carries all its calls)
        assert int(seen.ledger[column].sum()) == sum(e[field] for e in seen.log), column


def check_summary(seen: Observed) -> None:
    if seen.crashed:
        return
    if not isinstance(seen.outcome, RunSummary):
        return
    summary, ledger = seen.outcome, seen.ledger
    assert ledger is not None
    reps = ledger.filter(pl.col("dedup") == "none")
    sums = {
        "rows": ledger.height,
        "failed_rows": int((ledger["status"] == "failed").sum()),
        "exact_duplicates": int((ledger["dedup"] == "exact").sum()),
        "cache_hits": int((ledger["mode"] == "cache").sum()),
        # the calls this run id made that may be billed (its calls table: first tiers,
        # escalations, judge calls); without one, the groups a provider was asked for
        "sent": (seen.calls.filter(pl.col("status") != "not_billed").height
                 if seen.calls is not None
                 else int(((reps["attempts"] > 0) & (reps["mode"] != "cache")).sum())),
        "escalated": int(ledger["escalated"].sum()),
        "input_tokens": int(ledger["input_tokens"].sum()),
        "cached_input_tokens": int(ledger["cached_input_tokens"].sum()),
        "output_tokens": int(ledger["output_tokens"].sum()),
    }
    told = {key: getattr(summary, key) for key in sums}
    assert told == sums, {"summary": told, "ledger": sums}
    for key in ("cost_usd", "baseline_cost_usd"):
        assert math.isclose(getattr(summary, key), float(ledger[key].sum()),
                            rel_tol=1e-12, abs_tol=1e-15), (key, getattr(summary, key),
                                                            float(ledger[key].sum()))


def check_budget(seen: Observed) -> None:
    if seen.crashed:
        return
    if seen.budget is None:
        return
    spent = float(seen.ledger["cost_usd"].sum()) if seen.ledger is not None else 0.0
    assert spent <= seen.budget, ("ledger", spent, "max_usd", seen.budget)
    billed = sum(billed_cost(e) for e in seen.log)
    assert billed <= seen.budget + 1e-12, ("billed", billed, "max_usd", seen.budget)
    if seen.budget_spent is not None:  # the guard counts what the ledger says, not more or less
        assert math.isclose(seen.budget_spent, spent, rel_tol=1e-9, abs_tol=1e-12), (
            "budget guard's spent", seen.budget_spent, "ledger", spent)


CHECKS = {"plan": check_plan, "plan_tokens": check_plan_tokens, "tokens": check_tokens,
          "summary": check_summary, "budget": check_budget, "finishes": check_finishes}
# Each new shape is a whole run (about a second): shrinking a failure takes hundreds of them, so
# CI reports the first failing shape as drawn; MONEY_SHRINK=1 shrinks it to a minimal one.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("MONEY_SHRINK"):
    _PHASES.append(Phase.shrink)


# Rows every tier of `rules` gets: a short one (cheap), an urgent one (strong), a long one (mid).
_MIXED: tuple[Row, ...] = (
    ("T000", "Order", BODIES[0].format(n=10400)), ("T001", "Urgent", BODIES[1].format(n=10401)),
    ("T002", "Order", BODIES[2].format(n=10402)), ("D000", "Order", BODIES[0].format(n=10400)),
    ("T003", "Order", BODIES[0].format(n=10401)), ("E000", None, None),
)


@pytest.mark.parametrize("prop", list(CHECKS))
# the issue's own job: a JSON-schema cascade with a judge on the strong tier, and a budget
@example(shape=Shape("cascade", False, True, True, "online", False, "generous", _MIXED))
# two openai tiers with requests in the same batch round, and a budget
@example(shape=Shape("rules", False, False, False, "batch", False, "generous", _MIXED))
# openai and anthropic tiers with requests in the same batch round
@example(shape=Shape("rules", True, False, False, "batch", False, "none", _MIXED))
@seed(20)  # one sequence of shapes for every property (each shape is run once, see `observe`)
@settings(max_examples=40, deadline=None, phases=_PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(shape=shapes())
def test_money_adds_up_on_any_job_shape(server, prop, shape):
    CHECKS[prop](observe(server, shape))
