"""The static prompt prefix: system, context, examples, byte-identical for every row."""

from __future__ import annotations

import pytest
import yaml
from helpers import pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.config.sections import ExampleConfig
from batchopt.errors import ConfigError
from batchopt.prompts.layout import static_system


def test_static_system_orders_the_parts_and_is_deterministic() -> None:
    examples = [ExampleConfig(input="Refund #1?", output="Wants a refund for #1.")]
    text = static_system("Summarise.", "Glossary: NP = Northpeak.", examples)
    assert text.index("Summarise.") < text.index("Glossary") < text.index("Refund #1?")
    assert text == static_system("Summarise.", "Glossary: NP = Northpeak.", list(examples))
    assert static_system("Summarise.") == "Summarise."
    assert static_system("", "", []) == ""


def test_context_file_is_read_relative_to_the_pipeline(tmp_path) -> None:
    (tmp_path / "ctx.md").write_text("Refunds take 5 days.", encoding="utf-8")
    prompt = {**pipeline_dict()["prompt"], "context_file": "ctx.md",
              "examples": [{"input": "a", "output": "b"}]}
    loaded = load_pipeline(write_pipeline(tmp_path, pipeline_dict(prompt=prompt)))
    assert loaded.config.prompt.context == "Refunds take 5 days."
    assert loaded.config.prompt.examples[0].output == "b"


def test_context_problems_name_the_key(tmp_path) -> None:
    prompt = {**pipeline_dict()["prompt"], "context_file": "missing.md"}
    with pytest.raises(ConfigError, match=r"prompt\.context_file: cannot read .*missing\.md"):
        load_pipeline(write_pipeline(tmp_path, pipeline_dict(prompt=prompt)))
    both = {**pipeline_dict()["prompt"], "context": "x", "context_file": "ctx.md"}
    with pytest.raises(ConfigError, match="context or context_file, not both"):
        load_pipeline(write_pipeline(tmp_path / "b", pipeline_dict(prompt=both)))
    bad = {**pipeline_dict()["prompt"], "examples": [{"input": "a"}]}
    with pytest.raises(ConfigError, match=r"prompt\.examples\[0\]\.output: required key"):
        load_pipeline(write_pipeline(tmp_path / "c", pipeline_dict(prompt=bad)))


def test_a_tier_can_leave_the_context_out(tmp_path) -> None:
    from batchopt.ledger.pricing import PriceTable
    from batchopt.providers.base import ProviderSettings
    from batchopt.run.tiers import make_tier

    data = pipeline_dict(prompt={**pipeline_dict()["prompt"], "context": "Long glossary."})
    data["profiles"]["anthropic"]["context"] = ""
    loaded = load_pipeline(write_pipeline(tmp_path, yaml.safe_load(yaml.safe_dump(data))))
    prices = PriceTable.load()
    with_context = make_tier(loaded, "openai", ProviderSettings("openai", "gpt-4o-mini"), prices)
    without = make_tier(
        loaded, "anthropic", ProviderSettings("anthropic", "claude-3-5-haiku"), prices
    )
    assert "Long glossary." in with_context.spec.system
    assert without.spec.system == "Summarise the ticket in one sentence."


def test_validate_says_which_profiles_get_the_prompt_cache() -> None:
    from pathlib import Path

    from click.testing import CliRunner

    from batchopt.cli.main import main

    pipeline = Path(__file__).resolve().parents[2] / "pipelines" / "summarize.yaml"
    # validate checks the keys a run needs
    keys = {"OPENAI_API_KEY": "sk-test-0001", "ANTHROPIC_API_KEY": "sk-ant-test-0002"}
    out = CliRunner(env=keys).invoke(main, ["validate", str(pipeline)])
    assert out.exit_code == 0, out.output
    lines = {line.split(":")[0].strip(): line for line in out.output.splitlines()[1:]}
    assert "cached from the second request" in lines["anthropic"]
    assert "cached from the second request" in lines["openai"]
    assert "no prompt cache" in lines["local"]


def test_a_short_prefix_is_reported_too_short(tmp_path) -> None:
    from click.testing import CliRunner

    from batchopt.cli.main import main

    # validate checks the keys a run needs
    keys = {"OPENAI_API_KEY": "sk-test-0001", "ANTHROPIC_API_KEY": "sk-ant-test-0002"}
    out = CliRunner(env=keys).invoke(main, ["validate", str(write_pipeline(tmp_path))])
    assert out.exit_code == 0, out.output
    assert "too short for claude-3-5-haiku-20241022's prompt cache (needs 2,048)" in out.output
    assert "too short for gpt-4o-mini's prompt cache (needs 1,024)" in out.output
