from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from batchopt.config.routing import BudgetConfig, RoutingConfig
from batchopt.config.routing_rules import RuleCondition
from batchopt.config.routing_validators import DEFAULT_JUDGE_PROMPT, JudgeValidatorConfig


def _messages(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        RoutingConfig.model_validate(data)
    return " | ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
        for e in info.value.errors()
    )


def _rules(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"strategy": "rules", "tiers": ["cheap", "strong"], "rules": list(rules), **extra}


YAML_EXAMPLES = """
single:
  tiers: [mini]
rules:
  strategy: rules
  tiers: [mini, big]
  default_tier: mini
  rules:
    - name: vip
      when: {column: priority, in: [high, urgent]}
      tier: big
    - when:
        - {prompt_tokens: {gt: 400}}
        - {prompt_matches: "(?i)refund|chargeback"}
      tier: big
classifier:
  strategy: classifier
  tiers: [mini, big]
  classifier: {path: routers/tickets.npz, threshold: 0.6}
cascade:
  strategy: cascade
  tiers: [mini, big]
  validators:
    - {type: finish_reason}
    - {type: refusal, extra_phrases: ["please contact support"]}
    - {type: length, min_chars: 20, max_chars: 600}
    - {type: confidence, min_mean_logprob: -0.4}
    - {type: judge, tier: big}
"""


@pytest.mark.parametrize("strategy", ["single", "rules", "classifier", "cascade"])
def test_yaml_examples_validate(strategy: str) -> None:
    config = RoutingConfig.model_validate(yaml.safe_load(YAML_EXAMPLES)[strategy])
    assert config.strategy == strategy


def test_defaults() -> None:
    config = RoutingConfig.model_validate(yaml.safe_load(YAML_EXAMPLES)["rules"])
    assert config.fallback_tier == "mini"
    assert config.rules[0].when[0].op == "in" and config.rules[0].when[0].value == [
        "high",
        "urgent",
    ]
    assert (
        config.rules[1].describe()
        == "prompt_tokens > 400 and prompt matches '(?i)refund|chargeback'"
    )
    cascade = RoutingConfig.model_validate(yaml.safe_load(YAML_EXAMPLES)["cascade"])
    assert cascade.escalation_limit == 1
    judge = cascade.validators[-1]
    assert isinstance(judge, JudgeValidatorConfig)
    assert judge.prompt == DEFAULT_JUDGE_PROMPT and judge.pass_words == ["yes", "pass"]
    classifier = RoutingConfig.model_validate(yaml.safe_load(YAML_EXAMPLES)["classifier"])
    assert classifier.classifier is not None and classifier.classifier.threshold == 0.6


def test_default_tier_defaults_to_first_tier() -> None:
    config = RoutingConfig.model_validate(
        _rules({"when": {"column": "a", "equals": 1}, "tier": "strong"})
    )
    assert config.fallback_tier == "cheap"


def test_condition_needs_exactly_one_subject() -> None:
    assert "exactly one of column, prompt_tokens, prompt_matches (got none)" in _messages(
        _rules({"when": {"equals": 1}, "tier": "strong"})
    )
    assert "(got column, prompt_matches)" in _messages(
        _rules({"when": {"column": "a", "prompt_matches": "x", "equals": 1}, "tier": "strong"})
    )


def test_condition_needs_exactly_one_comparison() -> None:
    message = _messages(_rules({"when": {"column": "p", "equals": 1, "gt": 0}, "tier": "strong"}))
    assert "rules.0.when.0: column 'p' needs exactly one comparison" in message
    assert "(got equals, gt)" in message
    assert "(got none)" in _messages(_rules({"when": {"column": "p"}, "tier": "strong"}))
    assert "gt: only for a `column` condition" in _messages(
        _rules({"when": {"prompt_tokens": {"gt": 1}, "gt": 3}, "tier": "strong"})
    )
    assert "prompt_tokens needs exactly one of gt, ge, lt, le (got gt, lt)" in _messages(
        _rules({"when": {"prompt_tokens": {"gt": 1, "lt": 9}}, "tier": "strong"})
    )


def test_prompt_tokens_takes_numbers_only() -> None:
    assert "prompt_tokens.gt" in _messages(
        _rules({"when": {"prompt_tokens": {"gt": "many"}}, "tier": "strong"})
    )


def test_in_is_spelt_in_and_needs_values() -> None:
    condition = RuleCondition.model_validate({"column": "p", "in": ["a", 1, True]})
    assert condition.value == ["a", 1, True]
    assert condition.model_dump(exclude_none=True) == {"column": "p", "in": ["a", 1, True]}
    assert "in" in _messages(_rules({"when": {"column": "p", "in": []}, "tier": "strong"}))


def test_bad_regexes_are_named() -> None:
    message = _messages(_rules({"when": {"column": "p", "matches": "(ab"}, "tier": "strong"}))
    assert "matches: invalid regular expression '(ab'" in message
    message = _messages(_rules({"when": {"prompt_matches": "[z-a]"}, "tier": "strong"}))
    assert "prompt_matches: invalid regular expression '[z-a]'" in message
    message = _messages(_rules({"when": {"prompt_matches": "foo(?!bar)"}, "tier": "strong"}))
    assert "'foo(?!bar)' uses look-around" in message
    message = _messages(
        {
            "strategy": "cascade",
            "tiers": ["a", "b"],
            "validators": [{"type": "regex", "pattern": "*x"}],
        }
    )
    assert "validators.0.regex.pattern: pattern: invalid regular expression '*x'" in message


def test_unknown_key_is_rejected() -> None:
    assert "Extra inputs are not permitted" in _messages(
        _rules({"when": {"column": "p", "equal": 1}, "tier": "strong"})
    )
    assert "Extra inputs" in _messages({"tiers": ["a"], "strategey": "rules"})


def test_unknown_tiers_are_named() -> None:
    message = _messages(
        _rules(
            {"when": {"column": "a", "equals": 1}, "tier": "cheap"},
            {"when": {"column": "a", "equals": 2}, "tier": "strong"},
            {"when": {"column": "a", "equals": 3}, "tier": "gold"},
        )
    )
    assert "rules[2].tier: 'gold' is not one of the tiers (cheap, strong)" in message
    message = _messages(
        _rules({"when": {"column": "a", "equals": 1}, "tier": "strong"}, default_tier="mid")
    )
    assert "default_tier: 'mid' is not one of the tiers (cheap, strong)" in message
    message = _messages(
        {
            "strategy": "cascade",
            "tiers": ["cheap", "strong"],
            "validators": [{"type": "refusal"}, {"type": "judge", "tier": "opus"}],
        }
    )
    assert "validators[1].tier: 'opus' is not one of the tiers (cheap, strong)" in message


def test_strategy_requirements() -> None:
    assert "strategy 'rules' needs at least 2 tiers (got cheap)" in _messages(
        {"strategy": "rules", "tiers": ["cheap"], "rules": []}
    )
    assert "strategy 'rules' needs at least one entry in rules" in _messages(_rules())
    assert "strategy 'classifier' needs classifier" in _messages(
        {"strategy": "classifier", "tiers": ["a", "b"]}
    )
    assert "uses exactly 2 tiers, cheap and strong (got a, b, c)" in _messages(
        {"strategy": "classifier", "tiers": ["a", "b", "c"], "classifier": {"path": "r.npz"}}
    )
    assert "strategy 'cascade' needs at least one entry in validators" in _messages(
        {"strategy": "cascade", "tiers": ["a", "b"]}
    )
    assert "tiers: List should have at least 1 item" in _messages({"tiers": []})
    assert "tiers[1]: 'a' is listed twice" in _messages({"tiers": ["a", "a"]})


def test_settings_of_another_strategy_are_rejected() -> None:
    assert "rules: only used by strategy 'rules' (not 'cascade')" in _messages(
        {
            "strategy": "cascade",
            "tiers": ["a", "b"],
            "validators": [{"type": "refusal"}],
            "rules": [{"when": {"column": "x", "equals": 1}, "tier": "b"}],
        }
    )
    assert "validators: only used by strategy 'cascade' (not 'single')" in _messages(
        {"tiers": ["a"], "validators": [{"type": "refusal"}]}
    )


def test_cascade_limits() -> None:
    base = {"strategy": "cascade", "tiers": ["a", "b", "c"], "validators": [{"type": "refusal"}]}
    assert RoutingConfig.model_validate(base).escalation_limit == 2
    assert RoutingConfig.model_validate({**base, "max_escalations": 1}).escalation_limit == 1
    assert "max_escalations: 3 is more than the 2 step(s) up" in _messages(
        {**base, "max_escalations": 3}
    )
    two_judges = {**base, "validators": [{"type": "judge", "tier": "c"}] * 2}
    assert "validators[1]: only one judge validator is allowed" in _messages(two_judges)


def test_validator_parameters() -> None:
    def cascade(*validators: dict[str, Any]) -> str:
        return _messages({"strategy": "cascade", "tiers": ["a", "b"], "validators": validators})

    assert "length needs min_chars, max_chars or both" in cascade({"type": "length"})
    assert "min_chars (9) is larger than max_chars (3)" in cascade(
        {"type": "length", "min_chars": 9, "max_chars": 3}
    )
    assert "prompt must contain the placeholder {answer}" in cascade(
        {"type": "judge", "tier": "b", "prompt": "Is {prompt} fine?"}
    )
    assert "pass_words[0]: 'looks good' is not a single word" in cascade(
        {"type": "judge", "tier": "b", "pass_words": ["looks good"]}
    )
    assert "does not match any of the expected tags" in cascade({"type": "vibes"})
    assert "extra_phrases[1] is blank" in cascade(
        {"type": "refusal", "extra_phrases": ["nope", " "]}
    )
    assert "Extra inputs" in cascade({"type": "json_schema", "schema": {}})


def test_classifier_threshold_is_open_interval() -> None:
    for threshold in (0, 1, 1.5):
        assert "classifier.threshold" in _messages(
            {
                "strategy": "classifier",
                "tiers": ["a", "b"],
                "classifier": {"path": "r.npz", "threshold": threshold},
            }
        )


def test_budget() -> None:
    assert BudgetConfig(max_usd=2.5).max_usd == 2.5
    with pytest.raises(ValidationError):
        BudgetConfig(max_usd=0)


def test_models_are_frozen() -> None:
    config = RoutingConfig(tiers=["a"])
    with pytest.raises(ValidationError):
        config.strategy = "rules"  # type: ignore[misc]
