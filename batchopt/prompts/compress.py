"""Prompt compression: the `compress:` steps over the input columns a template uses.

Each step is a pure `str -> str` function (`normalise_whitespace`, `drop_repeated_lines`,
`cut_to_budget`, `trim_few_shot_text` in `text_steps.py`, `strip_boilerplate` in `boilerplate.py`,
a plugin), so the runner can apply them to other text too. `compress_rows` runs the configured
steps in order, column by column, before rendering, and reports the tokens each step removed per
row.

Tokens are counted with `batchopt.tokens.count_tokens` only when a step changed a value; the
count after one step is the count before the next, and equal values in a column are compressed
once.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import polars as pl

from batchopt.config.compress import (
    BoilerplateStep,
    CompressConfig,
    FewShotStep,
    FieldBudgetStep,
    PluginStep,
    RepeatedLinesStep,
    StepConfig,
    WhitespaceStep,
)
from batchopt.errors import ConfigError, InputError
from batchopt.prompts.boilerplate import strip_boilerplate
from batchopt.prompts.text_steps import (
    cut_to_budget,
    drop_repeated_lines,
    normalise_whitespace,
    trim_examples,
    trim_few_shot_text,
)
from batchopt.tokens import count_tokens

__all__ = [
    "SAVED_COLUMN",
    "compress_rows",
    "cut_to_budget",
    "drop_repeated_lines",
    "load_plugin",
    "normalise_whitespace",
    "report_columns",
    "step_function",
    "strip_boilerplate",
    "trim_examples",
    "trim_few_shot_text",
]

SAVED_COLUMN = "compression_tokens_saved"

# ---- steps: the built-in ones are in text_steps.py, plugins here -------------------------


@lru_cache(maxsize=64)
def load_plugin(entry_point: str) -> Callable[..., str]:
    """The function named by 'module:function' (a dotted attribute path after the colon)."""
    module_name, _, attr = entry_point.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"compress plugin {entry_point!r}: not of the form 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
        raise ConfigError(
            f"compress plugin {entry_point!r}: cannot import module {module_name!r} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigError(
                f"compress plugin {entry_point!r}: module {module_name!r} has no {attr!r}"
            ) from exc
    if not callable(obj):
        raise ConfigError(f"compress plugin {entry_point!r}: {attr!r} is not callable")
    return obj


def _plugin_function(step: PluginStep) -> Callable[[str], str]:
    fn = load_plugin(step.entry_point)

    def run(text: str) -> str:
        try:
            out = fn(text, budget_tokens=step.budget_tokens)
        except Exception as exc:  # noqa: BLE001 - a plugin failure names the plugin
            raise InputError(
                f"compress plugin {step.entry_point!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(out, str):
            raise InputError(
                f"compress plugin {step.entry_point!r} returned {type(out).__name__}, not str"
            )
        return out

    return run


def step_function(step: StepConfig, model: str, column: str) -> Callable[[str], str] | None:
    """The text function of `step` for `column`, or None when the step does not apply to it."""
    if not step.enabled or (step.columns is not None and column not in step.columns):
        return None
    if isinstance(step, WhitespaceStep):
        return lambda t: normalise_whitespace(t, html_tags=step.html, markdown=step.markdown)
    if isinstance(step, BoilerplateStep):
        patterns = [re.compile(p, re.MULTILINE) for p in step.extra_patterns]
        return lambda t: strip_boilerplate(
            t,
            quoted=step.quoted,
            signatures=step.signatures,
            disclaimers=step.disclaimers,
            greetings=step.greetings,
            extra_patterns=patterns,
        )
    if isinstance(step, RepeatedLinesStep):
        return lambda t: drop_repeated_lines(t, min_chars=step.min_chars)
    if isinstance(step, FieldBudgetStep):
        if column not in step.fields:
            return None
        budget = step.fields[column]
        return lambda t: cut_to_budget(
            t, budget, model, keep_tail_share=step.keep_tail_share, marker=step.marker
        )
    if isinstance(step, FewShotStep):
        return lambda t: trim_few_shot_text(
            t, step.max_tokens, model, separator=step.separator, min_examples=step.min_examples
        )
    if isinstance(step, PluginStep):
        return _plugin_function(step)
    raise TypeError(f"unknown compression step {step!r}")  # pragma: no cover


# ---- rows ----------------------------------------------------------------------------------


def report_columns(config: CompressConfig) -> list[str]:
    """The report's per-step columns, in step order: compress_<type>_tokens (_2, _3... when a
    type is listed twice), then `SAVED_COLUMN`."""
    names: list[str] = []
    for step in config.steps:
        base = f"compress_{step.type}_tokens"
        name, k = base, 2
        while name in names:
            name, k = f"{base.removesuffix('_tokens')}_{k}_tokens", k + 1
        names.append(name)
    return [*names, SAVED_COLUMN]


def _check_columns(config: CompressConfig, columns: list[str], rows: pl.DataFrame) -> None:
    for i, step in enumerate(config.steps):
        named: list[tuple[str, str]] = [
            (f"columns[{j}]", c) for j, c in enumerate(step.columns or [])
        ]
        if isinstance(step, FieldBudgetStep):
            named += [(f"fields.{c}", c) for c in step.fields]
        for key, column in named:
            if column not in columns or column not in rows.columns:
                raise ConfigError(
                    f"compress.steps[{i}].{key}: '{column}' is not an input column the template "
                    f"uses ({', '.join(columns) or 'none'})"
                )


def _compress_text(
    text: str, functions: list[Callable[[str], str] | None], model: str
) -> tuple[str, list[int]]:
    removed = [0] * len(functions)
    known: int | None = None
    for k, fn in enumerate(functions):
        if fn is None:
            continue
        out = fn(text)
        if out != text:
            before = count_tokens(text, model) if known is None else known
            after = count_tokens(out, model)
            known = before
            if after > before:  # e.g. ' LJ' is one token, 'LJ' two: keep the cheaper text
                continue
            known, removed[k], text = after, before - after, out
    return text, removed


def compress_rows(
    rows: pl.DataFrame, config: CompressConfig, columns: list[str], model: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`rows` with `columns` compressed by `config`'s steps, and a report with one row per input
    row: the tokens each step removed (`report_columns`, Int64) and their sum `SAVED_COLUMN`.

    String columns are compressed as text; a list-of-strings column only by `few_shot` steps
    (whole examples dropped from the end). Other column types and nulls are left alone.
    """
    names = report_columns(config)
    zeros = [0] * rows.height
    totals: list[list[int]] = [list(zeros) for _ in config.steps]
    if not config.enabled or not config.steps:
        report = pl.DataFrame(
            {name: zeros for name in names}, schema={name: pl.Int64 for name in names}
        )
        return rows, report
    _check_columns(config, columns, rows)
    updates: list[pl.Series] = []
    for column in columns:
        if column not in rows.columns:
            continue
        dtype = rows.schema[column]
        if dtype == pl.String:
            series, removed = _compress_strings(rows[column], config, model, column)
        elif dtype == pl.List(pl.String):
            series, removed = _compress_lists(rows[column], config, model, column)
        else:
            continue
        if any(any(r) for r in removed) or not series.equals(rows[column]):
            updates.append(series)
        for k, per_row in enumerate(removed):
            totals[k] = [a + b for a, b in zip(totals[k], per_row, strict=True)]
    out = rows.with_columns(updates) if updates else rows
    data = {name: totals[k] for k, name in enumerate(names[:-1])}
    data[SAVED_COLUMN] = [sum(t[i] for t in totals) for i in range(rows.height)]
    report = pl.DataFrame(data, schema={name: pl.Int64 for name in names})
    return out, report


def _compress_strings(
    series: pl.Series, config: CompressConfig, model: str, column: str
) -> tuple[pl.Series, list[list[int]]]:
    functions = [step_function(step, model, column) for step in config.steps]
    removed: list[list[int]] = [[0] * len(series) for _ in functions]
    values: list[str | None] = []
    memo: dict[str, tuple[str, list[int]]] = {}
    for i, value in enumerate(series.to_list()):
        if value is None:
            values.append(None)
            continue
        if value not in memo:
            memo[value] = _compress_text(value, functions, model)
        text, per_step = memo[value]
        values.append(text)
        for k, n in enumerate(per_step):
            removed[k][i] = n
    return pl.Series(series.name, values, dtype=pl.String), removed


def _compress_lists(
    series: pl.Series, config: CompressConfig, model: str, column: str
) -> tuple[pl.Series, list[list[int]]]:
    removed: list[list[int]] = [[0] * len(series) for _ in config.steps]
    values: list[list[str] | None] = []
    for i, value in enumerate(series.to_list()):
        if value is None:
            values.append(None)
            continue
        examples = list(value)
        for k, step in enumerate(config.steps):
            if not (isinstance(step, FewShotStep) and step.enabled and column in step.columns):
                continue
            kept = trim_examples(
                examples,
                step.max_tokens,
                model,
                separator=step.separator,
                min_examples=step.min_examples,
            )
            if len(kept) != len(examples):
                before = count_tokens(step.separator.join(examples), model)
                removed[k][i] = before - count_tokens(step.separator.join(kept), model)
                examples = kept
        values.append(examples)
    return pl.Series(series.name, values, dtype=pl.List(pl.String)), removed
