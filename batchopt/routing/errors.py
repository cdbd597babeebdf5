"""The one error routing raises, and the check that routing outputs do not clobber a column."""

from __future__ import annotations

from batchopt.errors import ConfigError


class RoutingError(ConfigError, ValueError):
    """A routing setting does not fit the rows, the router file or the training table.

    A ConfigError (the CLI prints its one line and exits 2) and a ValueError.
    """


def check_free_columns(columns: list[str], *names: str) -> None:
    """Raise unless every one of `names` is absent from `columns` (routing adds them)."""
    for name in names:
        if name in columns:
            raise RoutingError(
                f"the rows already have a column '{name}'; pass another name for the routing output"
            )
