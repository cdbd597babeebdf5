"""`batchopt validate`'s checks beyond the YAML itself, all free: the API keys the pipeline's
profiles need are set, every template compiles and renders in the product's sandbox, and every
column the YAML names is in the input's schema (Parquet metadata only, no rows read).

Each check raises the ConfigError or InputError a run would (exit 2), naming the YAML key; each
returns a line saying what it checked.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
from pathlib import Path
from typing import Any

import polars as pl

from batchopt.config.pipeline import LoadedPipeline
from batchopt.errors import ConfigError, InputError


def check_keys(loaded: LoadedPipeline, profile: str | None,
               env: dict[str, str] | None = None) -> str:
    """Every profile a run would send to has its API key set (as `run` reads it)."""
    from batchopt.run.settings import api_key_env, provider_settings
    from batchopt.run.tiers import tier_names

    env = dict(os.environ) if env is None else env
    names, _ = tier_names(loaded, profile)
    found = []
    for name in names:
        settings = loaded.config.profiles[name]
        provider_settings(name, settings, env)  # ConfigError naming the profile and variable
        key_env = api_key_env(settings)
        found.append(f"{name} ({key_env} set)" if key_env else f"{name} (no key needed)")
    return f"keys: {', '.join(found)}"


def _templates(loaded: LoadedPipeline) -> list[tuple[str, str]]:
    """(YAML key, template) for the prompt's template and each profile's own."""
    cfg = loaded.config
    found = [("prompt.template", cfg.prompt.template)]
    for name, profile in sorted(cfg.profiles.items()):
        if profile.template is not None:
            found.append((f"profiles.{name}.template", profile.template))
    return found


def _placeholder(dtype: pl.DataType | None) -> Any:
    """A value of the column's type to render a template with, without reading a row."""
    if dtype is None or dtype == pl.String or dtype == pl.Categorical:
        return "text"
    if dtype == pl.Boolean:
        return True
    if dtype.is_integer():
        return 1
    if dtype.is_float() or dtype.is_decimal():
        return 1.5
    if dtype == pl.Date:
        return dt.date(2026, 1, 1)
    if dtype == pl.Datetime:
        return dt.datetime(2026, 1, 1)
    if isinstance(dtype, pl.List | pl.Array):
        return [_placeholder(dtype.inner)]
    if isinstance(dtype, pl.Struct):
        return {f.name: _placeholder(f.dtype) for f in dtype.fields}
    return "text"


def check_templates(
    loaded: LoadedPipeline, schema: dict[str, pl.DataType] | None
) -> tuple[str, list[str], dict[str, list[str]]]:
    """Compile every template and render it once in the sandbox with placeholder values (of the
    columns' types when the schema is known). A syntax error or a sandbox escape is a
    ConfigError naming the YAML key; a render that fails on the placeholders only is a note.
    Returns the line, the notes and each template's variables by YAML key."""
    from jinja2 import TemplateError
    from jinja2.sandbox import SecurityError

    from batchopt.prompts.template import PromptRenderer

    notes: list[str] = []
    variables: dict[str, list[str]] = {}
    for where, template in _templates(loaded):
        renderer = PromptRenderer(template, where=where)  # ConfigError on a syntax error
        variables[where] = renderer.variables
        values = {v: _placeholder((schema or {}).get(v)) for v in renderer.variables}
        try:
            renderer.render(values)
        except SecurityError as exc:
            raise ConfigError(f"{where}: blocked by the sandbox ({exc})") from exc
        except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError,
                AttributeError, RecursionError) as exc:
            notes.append(f"{where}: did not render with placeholder values "
                         f"({type(exc).__name__}: {exc}); `batchopt plan --limit 5` renders "
                         "real rows")
    keys = ", ".join(where for where in variables)
    verb = "renders" if len(variables) == 1 else "render"
    return f"templates: {keys} {verb} in the sandbox", notes, variables


def _named_columns(loaded: LoadedPipeline,
                   variables: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(YAML key, column) for every input column the YAML names."""
    cfg = loaded.config
    named = [("input.id_column", cfg.input.id_column)]
    named += [("input.columns", c) for c in cfg.input.columns or []]
    for where, names in variables.items():
        named += [(where, v) for v in names]
    sem = cfg.dedup.semantic
    if sem.enabled and sem.column:
        named.append(("dedup.semantic.column", sem.column))
    if cfg.routing is not None:
        for i, rule in enumerate(cfg.routing.rules):
            for j, cond in enumerate(rule.when):
                if cond.column is not None:
                    named.append((f"routing.rules[{i}].when[{j}].column", cond.column))
    if cfg.compress is not None:
        for i, step in enumerate(cfg.compress.steps):
            named += [(f"compress.steps[{i}].columns", c) for c in step.columns or []]
            named += [(f"compress.steps[{i}].fields", c)
                      for c in getattr(step, "fields", None) or {}]
    return named


def read_schema(loaded: LoadedPipeline, input_path: Path | None = None) -> tuple[Path,
                                                                                  dict[str, Any]]:
    """The input's columns and types from its Parquet metadata; an error names input.path."""
    from batchopt.io.reader import input_schema

    cfg = loaded.config
    path = input_path or loaded.resolve(cfg.input.path)
    try:
        return path, input_schema(path, cfg.input.hive_partitioning)
    except InputError as exc:
        raise InputError(f"input.path: {exc}") from exc


def check_columns(loaded: LoadedPipeline, path: Path, schema: dict[str, Any],
                  variables: dict[str, list[str]]) -> str:
    """Every column the YAML names is in the schema; a misspelt one is named with its key and
    the columns it is close to."""
    available = list(schema)
    named = _named_columns(loaded, variables)
    for key, column in named:
        if column not in schema:
            close = difflib.get_close_matches(column, available, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InputError(f"{key}: no column {column!r} in {path} (columns: "
                             f"{', '.join(available)}){hint}")
    output = loaded.config.prompt.output_column
    if output in schema:
        raise ConfigError(f"prompt.output_column: '{output}' is already an input column")
    used = sorted({c for _, c in named})
    return (f"input: {path}: {len(available)} column(s) in its schema; found {', '.join(used)} "
            "(no rows read)")
