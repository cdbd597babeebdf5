"""The one error routing raises."""

from __future__ import annotations

from batchopt.errors import ConfigError


class RoutingError(ConfigError, ValueError):
    """A routing setting does not fit the rows, the router file or the training table.

    A ConfigError (the CLI prints its one line and exits 2) and a ValueError.
    """
