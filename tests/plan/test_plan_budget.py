"""`batchopt plan` exits 3 (as `run`'s budget guard does) when its estimate is over the budget."""

from __future__ import annotations

import json

from click.testing import CliRunner
from helpers import pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.errors import EXIT_BUDGET

ENV = {"HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": None, "ANTHROPIC_API_KEY": None}


def _plan(tmp_path, max_usd: float, *args: str):
    path = write_pipeline(tmp_path, pipeline_dict(budget={"max_usd": max_usd}))
    return CliRunner(env=ENV).invoke(main, ["plan", str(path), *args])


def test_plan_over_budget_prints_the_whole_plan_then_exits_3(tmp_path):
    out = _plan(tmp_path, 1e-9)
    assert out.exit_code == EXIT_BUDGET == 3, out.output
    assert "budget             $0" in out.stdout and ": OVER" in out.stdout
    assert "estimate" in out.stdout and "to send" in out.stdout  # the plan is all there
    assert out.stderr.startswith("error: budget.max_usd: the estimate ")
    assert "over the budget" in out.stderr


def test_plan_json_over_budget_exits_3_with_the_json(tmp_path):
    out = _plan(tmp_path, 1e-9, "--json")
    assert out.exit_code == 3, out.output
    data = json.loads(out.stdout)
    assert data["cost_usd"] > data["budget_usd"] == 1e-9


def test_plan_within_budget_exits_0(tmp_path):
    out = _plan(tmp_path, 1000.0)
    assert out.exit_code == 0, out.output
    assert ": within" in out.stdout and out.stderr == ""
    assert _plan(tmp_path / "json", 1000.0, "--json").exit_code == 0
