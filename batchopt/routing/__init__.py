"""Tiering: which model set-up (tier) answers each row.

rules.py       the `rules` strategy (and `single`): first matching rule names the tier
validators.py  cascade checks of an answer (schema, regex, length, refusal, confidence,
               finish reason) and the judge, whose call the runner makes
errors.py      RoutingError, a ConfigError that is also a ValueError
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
    JudgeValidator,
    Validator,
    Verdict,
    build_validators,
    judge_of,
    validate,
)

__all__ = [
    "THRESHOLDS",
    "RouterModel",
    "load_training_table",
    "route_by_classifier",
    "train_router",
    "train_router_from_texts",
    "JudgeValidator",
    "RoutingError",
    "Validator",
    "Verdict",
    "build_validators",
    "judge_of",
    "route_rules",
    "route_single",
    "validate",
]
