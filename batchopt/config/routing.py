"""The `routing:` and `budget:` sections of a pipeline YAML, as pydantic models.

Tiers are profile names, ordered cheap → strong. A strategy picks a tier for each row:

    single      every row to the first tier
    rules       the first rule whose conditions all hold names the tier; else `default_tier`
    classifier  a router trained on labelled history sends rows likely to be hard to the strong tier
    cascade     every row starts on the cheapest tier; an answer a validator rejects is asked
                again one tier up

This module and its two parts (`routing_rules`, `routing_validators`) import only pydantic, the
standard library and the config base, so the pipeline model can import them. Checks that need the
rest of the pipeline (tiers are profiles, a `json_schema` validator needs `prompt.json_schema`)
belong to the pipeline model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from batchopt.config.routing_rules import Rule
from batchopt.config.routing_validators import JudgeValidatorConfig, ValidatorConfig
from batchopt.config.strict import StrictModel

__all__ = ["BudgetConfig", "ClassifierConfig", "RoutingConfig"]

# The strategy each strategy-specific key belongs to.
_OWNER = {
    "rules": "rules",
    "default_tier": "rules",
    "classifier": "classifier",
    "validators": "cascade",
    "max_escalations": "cascade",
    "assume_escalation": "cascade",
}


class ClassifierConfig(StrictModel):
    """A router trained on labelled history (see batchopt.routing.classifier)."""

    path: str = Field(description="The trained router (.npz); relative to the YAML's folder")
    threshold: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="A row whose probability of being hard is at least this goes to the strong "
        "tier",
    )
    backend: Literal["sentence-transformers", "model2vec"] = Field(
        default="sentence-transformers",
        description="Embedder of the rendered prompts; must be the one the router was trained with",
    )
    model: str | None = Field(
        default=None, description="Embedder model folder (default: the backend's packaged model)"
    )


class RoutingConfig(StrictModel):
    """Which tier answers each row."""

    strategy: Literal["single", "rules", "classifier", "cascade"] = "single"
    tiers: list[str] = Field(
        min_length=1, description="Profile names, cheapest first, strongest last"
    )
    rules: list[Rule] = Field(default_factory=list, description="rules: first match wins")
    default_tier: str | None = Field(
        default=None, description="rules: the tier when no rule matches (default: the first tier)"
    )
    classifier: ClassifierConfig | None = Field(
        default=None, description="classifier: the trained router; uses exactly two tiers"
    )
    validators: list[ValidatorConfig] = Field(
        default_factory=list, description="cascade: checks an answer must pass to stay on its tier"
    )
    max_escalations: int | None = Field(
        default=None,
        ge=1,
        description="cascade: how many tiers up a row may go (default: up to the last tier)",
    )
    assume_escalation: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="cascade: the share of a tier's answers `batchopt plan` and the budget "
        "check expect to go one tier up while no past run of this configuration says (default "
        "0.2)",
    )

    @model_validator(mode="after")
    def _fits_strategy(self) -> RoutingConfig:
        tiers, strategy = self.tiers, self.strategy
        listed = ", ".join(tiers)
        for i, tier in enumerate(tiers):
            if tier in tiers[:i]:
                raise ValueError(f"tiers[{i}]: '{tier}' is listed twice")
        if strategy != "single" and len(tiers) < 2:
            raise ValueError(f"strategy '{strategy}' needs at least 2 tiers (got {listed})")
        self._check_keys_of_strategy()
        if strategy == "rules" and not self.rules:
            raise ValueError("strategy 'rules' needs at least one entry in rules")
        if strategy == "classifier":
            if self.classifier is None:
                raise ValueError("strategy 'classifier' needs classifier (path of the router)")
            if len(tiers) != 2:
                raise ValueError(
                    f"strategy 'classifier' uses exactly 2 tiers, cheap and strong (got {listed})"
                )
        if strategy == "cascade":
            self._check_cascade(listed)
        self._check_named_tiers(listed)
        return self

    def _check_keys_of_strategy(self) -> None:
        """Each strategy's own keys are set only under that strategy."""
        used = {
            "rules": bool(self.rules),
            "default_tier": self.default_tier is not None,
            "classifier": self.classifier is not None,
            "validators": bool(self.validators),
            "max_escalations": self.max_escalations is not None,
            "assume_escalation": self.assume_escalation is not None,
        }
        for key, is_set in used.items():
            if is_set and _OWNER[key] != self.strategy:
                raise ValueError(
                    f"{key}: only used by strategy '{_OWNER[key]}' (not '{self.strategy}')"
                )

    def _check_cascade(self, listed: str) -> None:
        if not self.validators:
            raise ValueError("strategy 'cascade' needs at least one entry in validators")
        judges = [i for i, v in enumerate(self.validators) if v.type == "judge"]
        if len(judges) > 1:
            raise ValueError(f"validators[{judges[1]}]: only one judge validator is allowed")
        if self.max_escalations is not None and self.max_escalations > len(self.tiers) - 1:
            raise ValueError(
                f"max_escalations: {self.max_escalations} is more than the "
                f"{len(self.tiers) - 1} step(s) up from the first tier ({listed})"
            )

    def _check_named_tiers(self, listed: str) -> None:
        """Every tier a rule, `default_tier` or a judge names is one of `tiers`."""
        named = [(f"rules[{i}].tier", rule.tier) for i, rule in enumerate(self.rules)]
        if self.default_tier is not None:
            named.append(("default_tier", self.default_tier))
        named += [
            (f"validators[{i}].tier", v.tier)
            for i, v in enumerate(self.validators)
            if isinstance(v, JudgeValidatorConfig)
        ]
        for key, tier in named:
            if tier not in self.tiers:
                raise ValueError(f"{key}: '{tier}' is not one of the tiers ({listed})")

    @property
    def fallback_tier(self) -> str:
        """rules: the tier of a row no rule matches."""
        return self.default_tier or self.tiers[0]

    @property
    def escalation_limit(self) -> int:
        """cascade: how many tiers up a row may go."""
        return self.max_escalations or len(self.tiers) - 1


class BudgetConfig(StrictModel):
    """A spending cap for one run, every tier, escalation and judge call included."""

    max_usd: float = Field(gt=0, description="Stop sending once the run has spent this much")
