"""The `compress:` section of a pipeline YAML, as pydantic models.

Compression runs on the input columns a template uses, before the template is rendered. Steps
run in the order listed; each can be switched off with `enabled: false` and reports the tokens
it removed:

    whitespace      collapse runs of spaces and blank lines; HTML tags to text; markdown emphasis
                    markers dropped (the text kept)
    boilerplate     quoted replies ("> " lines, "On ... wrote:", "-----Original Message-----"),
                    signatures, legal disclaimers, and any `extra_patterns`
    repeated_lines  a line repeated within a field is kept once
    field_budget    a field over its token budget keeps its head and tail; the middle is cut and
                    marked
    few_shot        a column of examples (a list, or a text split on `separator`) loses whole
                    examples from the end until it fits `max_tokens`
    plugin          `module:function` called as fn(text, *, budget_tokens=...) -> str (e.g. an
                    LLMLingua wrapper); not a dependency of batchopt

This module imports only pydantic, the standard library and batchopt.errors, so config.py can
import it. `parse_compress` validates a mapping on its own with one-line messages such as
`compress.steps[2].fields.body: budget must be > 0`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from batchopt.config.strict import StrictModel
from batchopt.errors import ConfigError

__all__ = [
    "DEFAULT_CUT_MARKER",
    "BoilerplateStep",
    "CompressConfig",
    "FewShotStep",
    "FieldBudgetStep",
    "PluginStep",
    "RepeatedLinesStep",
    "StepConfig",
    "WhitespaceStep",
    "parse_compress",
]

DEFAULT_CUT_MARKER = "[… {n} tokens cut …]"
_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class _Step(StrictModel):
    enabled: bool = Field(default=True, description="false: the step is skipped (reports 0)")
    columns: list[str] | None = Field(
        default=None,
        description="Input columns the step applies to (default: every column the template uses)",
    )


class WhitespaceStep(_Step):
    """Runs of spaces and blank lines collapsed; markup reduced to its text."""

    type: Literal["whitespace"]
    html: bool = Field(default=True, description="HTML tags to text, entities decoded")
    markdown: bool = Field(
        default=True, description="Markdown emphasis and heading markers dropped, text kept"
    )


class BoilerplateStep(_Step):
    """Quoted e-mail history, signatures and disclaimers removed; new text between them kept."""

    type: Literal["boilerplate"]
    quoted: bool = Field(
        default=True,
        description="'>' lines, their 'On ... wrote:' line, and an '-----Original Message-----' "
        "or 'From:/Sent:' header with everything below it",
    )
    signatures: bool = Field(
        default=True, description="A '-- ' block, or a sign-off ('Thanks,') with a name block"
    )
    disclaimers: bool = Field(
        default=True,
        description="Confidentiality notices, 'Sent from my iPhone' and the like; a sentence "
        "with a digit in it is never removed",
    )
    greetings: bool = Field(
        default=True, description="A greeting alone on the first line ('Hi,', 'Dear team,')"
    )
    extra_patterns: list[str] = Field(
        default_factory=list,
        description="More regexes (Python re, multiline); every match is removed",
    )


class RepeatedLinesStep(_Step):
    """A line that appears again in the same field is kept only the first time."""

    type: Literal["repeated_lines"]
    min_chars: int = Field(
        default=1, ge=1, description="Lines shorter than this (stripped) are never dropped"
    )


class FieldBudgetStep(_Step):
    """A field over its budget keeps its head and tail; the middle is replaced by a marker."""

    type: Literal["field_budget"]
    fields: dict[str, int] = Field(description="Token budget per input column")
    keep_tail_share: float = Field(
        default=0.3, description="Share of the budget kept from the end of the field (0..1)"
    )
    marker: str = Field(
        default=DEFAULT_CUT_MARKER, description="Put where the middle was cut; {n}: tokens cut"
    )


class FewShotStep(_Step):
    """Whole examples are dropped from the end until the examples fit `max_tokens`."""

    type: Literal["few_shot"]
    columns: list[str] = Field(  # type: ignore[assignment]
        description="Columns of examples: a list of strings, or a text split on `separator`"
    )
    max_tokens: int = Field(description="Token budget of the examples together")
    separator: str = Field(default="\n\n", description="Between examples in a text column")
    min_examples: int = Field(default=0, ge=0, description="Never keep fewer than this")


class PluginStep(_Step):
    """A model-based compressor outside batchopt: `fn(text, *, budget_tokens) -> str`."""

    type: Literal["plugin"]
    entry_point: str = Field(description="'module:function', imported with importlib")
    budget_tokens: int | None = Field(default=None, description="Passed to the function")

    @field_validator("entry_point")
    @classmethod
    def _shape(cls, value: str) -> str:
        if not _ENTRY_POINT.fullmatch(value):
            raise ValueError(f"{value!r} is not of the form 'module:function'")
        return value


StepConfig = Annotated[
    WhitespaceStep
    | BoilerplateStep
    | RepeatedLinesStep
    | FieldBudgetStep
    | FewShotStep
    | PluginStep,
    Field(discriminator="type"),
]


class CompressConfig(StrictModel):
    """Prompt compression applied to the template's input columns before rendering."""

    enabled: bool = Field(default=True, description="false: no step runs")
    steps: list[StepConfig] = Field(description="Compression steps, run in this order")

    @model_validator(mode="after")
    def _check_steps(self) -> CompressConfig:
        for i, step in enumerate(self.steps):
            key = f"steps[{i}]"
            if step.columns is not None and not step.columns:
                raise ValueError(f"{key}.columns: must list at least one column")
            if isinstance(step, BoilerplateStep):
                for j, pattern in enumerate(step.extra_patterns):
                    try:
                        compiled = re.compile(pattern, re.MULTILINE)
                    except re.error as exc:
                        raise ValueError(
                            f"{key}.extra_patterns[{j}]: invalid regular expression "
                            f"{pattern!r} ({exc})"
                        ) from None
                    if compiled.fullmatch(""):
                        raise ValueError(
                            f"{key}.extra_patterns[{j}]: {pattern!r} matches the empty string"
                        )
            elif isinstance(step, FieldBudgetStep):
                if not step.fields:
                    raise ValueError(f"{key}.fields: must give at least one column's budget")
                for column, budget in step.fields.items():
                    if budget <= 0:
                        raise ValueError(f"{key}.fields.{column}: budget must be > 0")
                if not 0.0 <= step.keep_tail_share <= 1.0:
                    raise ValueError(
                        f"{key}.keep_tail_share: must be between 0 and 1 "
                        f"(got {step.keep_tail_share})"
                    )
                if step.marker.count("{") != step.marker.count("}") or re.search(
                    r"\{(?!n\})", step.marker
                ):
                    raise ValueError(f"{key}.marker: the only placeholder allowed is {{n}}")
            elif isinstance(step, FewShotStep):
                if not step.columns:
                    raise ValueError(f"{key}.columns: must list at least one column")
                if step.max_tokens <= 0:
                    raise ValueError(f"{key}.max_tokens: must be > 0")
                if not step.separator:
                    raise ValueError(f"{key}.separator: must not be empty")
            elif (
                isinstance(step, PluginStep)
                and step.budget_tokens is not None
                and step.budget_tokens <= 0
            ):
                raise ValueError(f"{key}.budget_tokens: must be > 0")
        return self


def _location(loc: tuple[Any, ...], tags: set[str]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif i >= 1 and isinstance(loc[i - 1], int) and item in tags:
            continue  # the discriminator pydantic inserts after a list index
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def parse_compress(data: Any, where: str = "compress") -> CompressConfig:
    """Validate a `compress:` mapping; any problem is one ConfigError naming the key path."""
    try:
        return CompressConfig.model_validate(data)
    except ValidationError as exc:
        tags = {"whitespace", "boilerplate", "repeated_lines", "field_budget", "few_shot", "plugin"}
        messages = []
        for item in exc.errors():
            loc = _location(tuple(item["loc"]), tags)
            key = f"{where}.{loc}" if loc else where
            msg = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                messages.append(f"{key}: unknown key")
            elif item["type"] == "missing":
                messages.append(f"{key}: required key is missing")
            elif not loc and msg.startswith("steps["):
                messages.append(f"{where}.{msg}")
            else:
                messages.append(f"{key}: {msg}")
        raise ConfigError("; ".join(messages)) from None
