"""The plan's prompt tokens are the bill's: each provider's chat framing (and Anthropic's schema
instruction in the system prompt) is counted per request, as the fake server bills it
(issue 20, point 5: the plan was 9 tokens a request below the bill)."""

from __future__ import annotations

import pytest
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.plan.estimate import plan_run
from batchopt.run.runner import RunOptions, run_pipeline

SCHEMA = {"type": "object", "properties": {"topic": {"type": "string", "enum": ["a", "b"]}},
          "required": ["topic"]}


@pytest.mark.parametrize(("profile", "schema", "system"), [
    ("openai", None, "Summarise the ticket in one sentence."),
    ("openai", SCHEMA, ""),
    ("anthropic", None, "Summarise the ticket in one sentence."),
    ("anthropic", SCHEMA, "Classify the ticket."),
])
def test_plan_input_tokens_equal_the_billed_ones(tmp_path, fake, profile, schema, system):
    data = pipeline_dict(default_profile=profile)
    data["prompt"]["system"] = system
    if schema is not None:
        data["prompt"]["json_schema"] = schema
    loaded = load_pipeline(write_pipeline(tmp_path, data))
    env = fake_env(fake)
    estimate = plan_run(loaded, RunOptions(), env, show=100)
    planned = sorted(int(r["estimated_input_tokens"]) for r in estimate.shown)
    assert estimate.to_send == len(planned) == 3

    summary = run_pipeline(loaded, RunOptions(run_id="r1"), env=env)
    assert summary.sent == 3
    billed = sorted(entry["input_tokens"] for entry in fake.log())
    assert planned == billed
    assert sum(t.input_tokens for t in estimate.tiers) == sum(billed)
