"""Sandboxed Jinja rendering of the user message.

Templates run in `jinja2.sandbox.ImmutableSandboxedEnvironment` with `StrictUndefined`: a
template cannot reach Python internals, and a misspelt variable is an error, not an empty string.
Column values are data: they are never rendered as templates themselves. A null never prints
as the word "None": a null column value is passed as "" (so `| trim`, `| string` and the like
see an empty string too) and any other expression that comes out None prints as "".

The sandbox guards attributes, not resources, so this one also refuses a power or a repeated
string or list past `MAX_RENDERED_CHARS`, a rendered prompt longer than that, and has no
`lipsum`; `range` is capped by Jinja (100,000). A template is config written by the pipeline's
author: a loop that spins without writing anything is not caught.
"""

from __future__ import annotations

import math
from typing import Any

import polars as pl
from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from batchopt.errors import ConfigError, InputError

MAX_RENDERED_CHARS = 10_000_000  # more than any model's context (1M tokens is about 4M chars)
_MAX_POWER_BITS = 4096


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` checked before they allocate."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _power_bits(left, right) > _MAX_POWER_BITS:
            raise SecurityError(f"{left} ** {right} is too large for a prompt")
        if operator == "*" and _repeated_size(left, right) > MAX_RENDERED_CHARS:
            raise SecurityError("a repeated string or list too large for a prompt")
        return super().call_binop(context, operator, left, right)


def _none_as_empty(value: Any) -> Any:
    """What `{{ ... }}` prints: a null prints as nothing, never as the word "None"."""
    return "" if value is None else value


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _power_bits(base: Any, exponent: Any) -> float:
    """About how many bits `base ** exponent` takes (0 unless both are ints)."""
    if not (_int(base) and _int(exponent)) or exponent <= 0 or abs(base) <= 1:
        return 0.0
    return exponent * math.log2(abs(base))


def _repeated_size(left: Any, right: Any) -> int:
    """len(seq) * n for `seq * n` or `n * seq` (0 for anything else)."""
    seq, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
    if isinstance(seq, str | list | tuple) and _int(times):
        return len(seq) * times
    return 0


class PromptRenderer:
    """Renders one pipeline's user template for each row."""

    def __init__(self, template: str, *, where: str = "prompt.template") -> None:
        self.where = where
        self._env = _BoundedSandbox(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
            finalize=_none_as_empty,
        )
        self._env.globals.pop("lipsum", None)  # lipsum(10**6) writes megabytes
        try:
            parsed = self._env.parse(template)
            self._template = self._env.from_string(template)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            at = f" (line {line})" if line else ""
            raise ConfigError(f"{where}: invalid template{at}: {exc.message}") from exc
        self.variables: list[str] = sorted(meta.find_undeclared_variables(parsed))

    def render(self, values: dict[str, Any]) -> str:
        """The user message for one row's values; SecurityError past `MAX_RENDERED_CHARS`."""
        parts, size = [], 0
        for chunk in self._template.generate(**values):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise SecurityError(f"the prompt passes {MAX_RENDERED_CHARS:,} characters")
            parts.append(chunk)
        return "".join(parts)


def render_prompts(
    frame: pl.DataFrame,
    renderer: PromptRenderer,
    id_column: str,
    out_column: str = "prompt_user",
) -> pl.DataFrame:
    """Add `out_column` with each row's rendered user message.

    A null column value is passed as "" (whatever the column's type), so it never prints as
    "None", through a filter (`| trim`, `| string`) or not.

    A row the template cannot render (a sandbox violation, a filter failing on its value, a
    division by zero...) is an InputError naming the row's id.
    """
    columns = [c for c in renderer.variables if c in frame.columns and c != id_column]
    rendered: list[str] = []
    for values in frame.select(id_column, *columns).iter_rows(named=True):
        try:
            rendered.append(renderer.render(
                {k: "" if v is None else v for k, v in values.items()}))
        except SecurityError as exc:
            raise InputError(
                f"{renderer.where}: row {values[id_column]!r}: blocked by the sandbox ({exc})"
            ) from exc
        except (TemplateError, TypeError, ValueError) as exc:
            raise InputError(
                f"{renderer.where}: row {values[id_column]!r}: cannot render ({exc})"
            ) from exc
        except (ArithmeticError, LookupError, AttributeError, RecursionError) as exc:
            raise InputError(
                f"{renderer.where}: row {values[id_column]!r}: cannot render "
                f"({type(exc).__name__}: {exc})"
            ) from exc
    return frame.with_columns(pl.Series(out_column, rendered, dtype=pl.String))
