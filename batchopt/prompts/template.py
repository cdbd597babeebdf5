"""Sandboxed Jinja rendering of the user message.

Templates run in `jinja2.sandbox.ImmutableSandboxedEnvironment` with `StrictUndefined`: a
template cannot reach Python internals, and a misspelt variable is an error, not an empty string.
Column values are data: they are never rendered as templates themselves.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from batchopt.errors import ConfigError, InputError


class PromptRenderer:
    """Renders one pipeline's user template for each row."""

    def __init__(self, template: str, *, where: str = "prompt.template") -> None:
        self.where = where
        self._env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        try:
            parsed = self._env.parse(template)
            self._template = self._env.from_string(template)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            at = f" (line {line})" if line else ""
            raise ConfigError(f"{where}: invalid template{at}: {exc.message}") from exc
        self.variables: list[str] = sorted(meta.find_undeclared_variables(parsed))

    def render(self, values: dict[str, Any]) -> str:
        """The user message for one row's values."""
        return self._template.render(**values)


def render_prompts(
    frame: pl.DataFrame,
    renderer: PromptRenderer,
    id_column: str,
    out_column: str = "prompt_user",
) -> pl.DataFrame:
    """Add `out_column` with each row's rendered user message.

    A row the template cannot render (a sandbox violation, a filter failing on its value) is an
    InputError naming the row's id.
    """
    columns = [c for c in renderer.variables if c in frame.columns and c != id_column]
    rendered: list[str] = []
    for values in frame.select(id_column, *columns).iter_rows(named=True):
        try:
            rendered.append(renderer.render(values))
        except SecurityError as exc:
            raise InputError(
                f"{renderer.where}: row {values[id_column]!r}: blocked by the sandbox ({exc})"
            ) from exc
        except (TemplateError, TypeError, ValueError) as exc:
            raise InputError(
                f"{renderer.where}: row {values[id_column]!r}: cannot render ({exc})"
            ) from exc
    return frame.with_columns(pl.Series(out_column, rendered, dtype=pl.String))
