"""Reading a pipeline YAML: the strict YAML parse, `${VAR}` and `${date}` interpolation, and the
one-line error texts for YAML and validation mistakes.

The YAML is read strictly: a key given twice, an impossible date, a nesting too deep or aliases
that expand past `MAX_VALUES` values are one-line ConfigErrors like any other mistake.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from batchopt.dates import logical_date
from batchopt.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(value: Any, env: dict[str, str], where: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a YAML tree.

    A `${VAR}` without a default whose variable is unset is an error naming the key path.
    """
    if isinstance(value, dict):
        return {
            k: interpolate(v, env, f"{where}.{_key_text(k)}" if where else _key_text(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _VAR.sub(substitute, value)


def _key_text(key: Any) -> str:
    """A key as an error message shows it: quoted if it is blank or holds a control character,
    so the message stays on one line."""
    text = str(key)
    return text if text.strip() and text.isprintable() else repr(text)


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + _key_text(item))
    return "".join(parts) or "(top level)"


def format_validation_error(source: Path, error: ValidationError) -> str:
    messages = []
    for item in error.errors():
        loc = _format_location(tuple(item["loc"]))
        if item["type"] == "extra_forbidden":
            messages.append(f"{loc}: unknown key")
        elif item["type"] == "missing":
            messages.append(f"{loc}: required key is missing")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            messages.append(f"{loc}: {msg}")
    return f"{source}: " + "; ".join(messages)


MAX_VALUES = 1_000_000  # values in a pipeline YAML once its aliases are expanded


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice and names an impossible date's line."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key_node.value}' is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        try:
            return super().construct_yaml_timestamp(node)  # type: ignore[arg-type]
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"'{node.value}' is not a valid date ({exc})", node.start_mark
            ) from exc


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        before = text[: exc.position]
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        return f" at line {line}, column {column}: unacceptable character #x{exc.character:04x}"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{where}: {getattr(exc, 'problem', None) or 'invalid YAML'}"


def _count_values(raw: Any, limit: int) -> None:
    """ConfigError if the tree (aliases expanded, so a recursive alias never ends) holds more
    than `limit` values: interpolation and validation walk every one."""
    stack, seen = [raw], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(
                f"the YAML expands to more than {limit:,} values (a recursive or nested alias?)"
            )
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def read_yaml(source: Path) -> dict[Any, Any]:
    """The YAML mapping in `source`, read strictly; every failure is a one-line ConfigError."""
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: pipeline file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read pipeline file ({exc})") from exc
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML{_yaml_problem(exc, text)}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: invalid YAML: nested too deep") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a pipeline must be a YAML mapping of keys to values")
    return raw


def interpolate_tree(source: Path, raw: dict[Any, Any], env: dict[str, str] | None,
                     date: dt.date | None) -> dict[Any, Any]:
    """`raw` with `${VAR}` from `env` (default: the process environment) and `${date}`, the
    run's logical date, replaced; a ConfigError names `source`."""
    try:
        _count_values(raw, MAX_VALUES)
        variables = dict(os.environ) if env is None else dict(env)
        variables["date"] = logical_date(date, None).isoformat()
        return interpolate(raw, variables)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
