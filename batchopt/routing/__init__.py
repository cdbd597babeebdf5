"""Tiering: which model set-up (tier) answers each row.

rules.py       the `rules` strategy (and `single`): first matching rule names the tier
errors.py      RoutingError, a ConfigError that is also a ValueError
"""

from batchopt.routing.errors import RoutingError
from batchopt.routing.rules import route_rules, route_single

__all__ = ["RoutingError", "route_rules", "route_single"]
