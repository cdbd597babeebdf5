"""`batchopt plan` counts every call a run makes: the judge's calls on the judge tier, and a
cascade's escalations at a stated assumed share when no past run says (issue 20, point 1); the
pre-send budget check compares the very total the plan prints."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from helpers import fake_env, pipeline_dict, write_pipeline
from pydantic import ValidationError

from batchopt.config.pipeline import load_pipeline
from batchopt.errors import BudgetExceededError, ConfigError
from batchopt.plan.estimate import plan_run
from batchopt.plan.report import over_budget, print_estimate
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

SHORT = "Where is my order?"
LONG = ("My order arrived with the wrong colour, the box was damaged, the invoice shows the "
        "wrong address and the tracking page still says it is in transit, what now?")
JUDGE = {"type": "judge", "tier": "strong"}


def _pipeline(tmp_path: Path, validators: list[dict], **routing: object) -> Path:
    data = pipeline_dict(routing={"strategy": "cascade", "tiers": ["cheap", "strong"],
                                  "validators": validators, **routing})
    data["profiles"]["cheap"] = {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 64,
                                 "concurrency": 2, "timeout_s": 10}
    data["profiles"]["strong"] = {"provider": "openai", "model": "gpt-4o", "max_tokens": 64,
                                  "concurrency": 2, "timeout_s": 10}
    path = write_pipeline(tmp_path, data)
    bodies = [f"{SHORT} #{100 + i}" for i in range(6)] + [f"{LONG} #{200 + i}" for i in range(4)]
    pl.DataFrame([{"ticket_id": f"T{i:02d}", "subject": "Order", "body": b}
                  for i, b in enumerate(bodies)]).write_parquet(tmp_path / "data"
                                                                / "tickets.parquet")
    return path


def _plan(path: Path, fake=None):
    env = fake_env(fake) if fake is not None else {}
    return plan_run(load_pipeline(path), RunOptions(), env)


def test_judge_calls_are_counted_and_priced_on_the_judge_tier(tmp_path, fake):
    without = _plan(_pipeline(tmp_path / "a", [{"type": "refusal"}]))
    judged = _plan(_pipeline(tmp_path / "b", [{"type": "refusal"}, JUDGE]))
    calls = [t for t in judged.tiers if t.judge]
    assert len(calls) == 1 and not any(t.judge for t in without.tiers)
    judge = calls[0]
    cheap = next(t for t in judged.tiers if t.tier == "cheap")
    assert judge.tier == "strong" and judge.model == "gpt-4o"
    assert judge.requests == cheap.requests == judged.to_send == 10
    assert judge.online_usd > 0
    assert judged.cost_usd == pytest.approx(without.cost_usd + judge.online_usd, rel=1e-12)

    # the run makes as many judge calls: one per cheap answer, on gpt-4o, before escalations
    fake.set_oracle([{"match": f"#{100 + i}", "answer": "yes", "difficulty": "easy"}
                     for i in range(10)],
                    models={"gpt-4o": {"easy": 1.0}, "gpt-4o-mini": {"easy": 1.0}})
    summary = run_pipeline(load_pipeline(tmp_path / "b" / "pipeline.yaml"),
                           RunOptions(run_id="j1"), env=fake_env(fake))
    assert isinstance(summary, RunSummary) and summary.escalated == 0
    strong = [e for e in fake.log() if e["model"] == "gpt-4o"]
    assert len(strong) == judge.requests
    # a verdict, not max_tokens: the judge calls' output as billed
    assert judge.output_tokens == sum(e["output_tokens"] for e in strong) == judge.requests
    assert judge.output_source == "a yes/no verdict"


def test_plan_prints_the_judge_calls_and_the_assumed_escalation(tmp_path, capsys):
    estimate = _plan(_pipeline(tmp_path, [{"type": "refusal"}, JUDGE]))
    print_estimate(estimate)
    out = capsys.readouterr().out
    assert "judge calls strong" in out
    assert "assumed 20% escalate (default): no past run of this configuration" in out


def test_without_history_the_escalation_share_is_a_stated_assumption(tmp_path):
    default = _plan(_pipeline(tmp_path / "a", [{"type": "refusal"}]))
    assert default.escalation_share == 0.2
    assert default.escalation_source.startswith("assumed 20% escalate")
    strong = next(t for t in default.tiers if t.tier == "strong")
    assert strong.requests == strong.escalated == 2  # 20% of the 10 cheap requests

    stated = _plan(_pipeline(tmp_path / "b", [{"type": "refusal"}], assume_escalation=0.5))
    assert stated.escalation_share == 0.5
    assert "routing.assume_escalation" in stated.escalation_source
    assert next(t for t in stated.tiers if t.tier == "strong").requests == 5
    assert stated.cost_usd > default.cost_usd


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_assume_escalation_must_be_a_share(tmp_path, share):
    path = _pipeline(tmp_path, [{"type": "refusal"}], assume_escalation=share)
    with pytest.raises((ConfigError, ValidationError), match="assume_escalation"):
        load_pipeline(path)


@pytest.mark.parametrize("factor", [0.999, 1.001])
def test_plan_and_the_budget_guard_agree(tmp_path, fake, factor):
    path = _pipeline(tmp_path, [{"type": "refusal"}, JUDGE])
    estimate = _plan(path)
    data = load_pipeline(path)
    budget = estimate.cost_usd * factor
    text = path.read_text() + f"budget:\n  max_usd: {budget!r}\n"
    path.write_text(text)
    loaded = load_pipeline(path)
    planned = plan_run(loaded, RunOptions(), {})
    assert planned.cost_usd == estimate.cost_usd and data is not None
    if over_budget(planned):
        with pytest.raises(BudgetExceededError):
            run_pipeline(loaded, RunOptions(run_id="b1"), env=fake_env(fake))
        assert fake.log() == []
    else:
        run_pipeline(loaded, RunOptions(run_id="b1"), env=fake_env(fake))
        assert fake.log()  # not refused before sending
    assert over_budget(planned) == (factor < 1)
