"""Tiering: which model set-up (tier) answers each row; pure functions the runner wires in.

The settings live in batchopt.config.routing (RoutingConfig, under `routing:` in a pipeline).

- rules.py: the `rules` strategy (and `single`): the first matching rule names the tier.
- classifier.py: the `classifier` strategy: train, save, load and apply a router on prompt
  embeddings.
- validators.py: the `cascade` checks of an answer (JSON schema, regex, length, refusal,
  confidence, finish reason) and the judge, whose model call the runner makes.
- errors.py: RoutingError, a ConfigError that is also a ValueError.
"""

from batchopt.routing.classifier import (
    THRESHOLDS,
    RouterModel,
    load_training_table,
    route_by_classifier,
    train_router,
    train_router_from_texts,
)
from batchopt.routing.errors import RoutingError
from batchopt.routing.rules import route_rules, route_single
from batchopt.routing.validators import (
    JudgeRequestFactory,
    JudgeValidator,
    Validator,
    Verdict,
    build_validators,
    judge_of,
    validate,
)

__all__ = [
    "THRESHOLDS",
    "JudgeRequestFactory",
    "JudgeValidator",
    "RouterModel",
    "RoutingError",
    "Validator",
    "Verdict",
    "build_validators",
    "judge_of",
    "load_training_table",
    "route_by_classifier",
    "route_rules",
    "route_single",
    "train_router",
    "train_router_from_texts",
    "validate",
]
