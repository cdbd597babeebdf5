"""Every fenced code block in README.md and docs/*.md is tested somehow, and the docs hold
together.

- sh blocks: each `batchopt ...` command is parsed by the real click CLI (the command, every
  option and its value must exist and fit); each benchmark script, make target and other program
  is checked to exist; ledger SQL is parsed here and run by test_docs_sql.py.
- yaml blocks: parse, and validate as a pipeline, or as a fragment of one merged into a minimal
  valid pipeline (tests/helpers.py `pipeline_dict`).
- sql blocks: parsed by DuckDB here, run over a real ledger by test_docs_sql.py.
- python blocks: compile.
- any other language is listed in OTHER_LANGUAGES with the reason it is not run.

Also: README.md is at most 200 lines, every relative link (and its anchor) resolves, every docs
page is on the contents page, the CLI reference names every command and option, and the YAML
reference names every key.
"""

from __future__ import annotations

import copy
import re
import unicodedata
from pathlib import Path
from typing import Any, get_args

import click
import duckdb
import pytest
import yaml
from doc_blocks import (
    DOCS,
    README,
    ROOT,
    SHELL_LANGUAGES,
    Block,
    all_blocks,
    doc_files,
    is_ledger_sql,
    shell_commands,
    without_code,
)
from helpers import pipeline_dict
from pydantic import BaseModel

from batchopt.cli.main import main
from batchopt.config.loader import interpolate
from batchopt.config.pipeline import PipelineConfig

BLOCKS = all_blocks()

# Languages that are shown, not run.
OTHER_LANGUAGES = {
    "text": "program output as batchopt prints it (the plan's what-if table), or a usage line",
}

# Programs other than batchopt that sh blocks may call, and what is checked of them.
NOT_RUN_PROGRAMS = {
    "pip": "installs packages; not run by tests",
    "curl": "asks a running fake server; its endpoints are tested in test_fake_server.py",
}
SHELL_OPERATORS = {"&", "&&", "|", ";"}


# --- sh blocks ------------------------------------------------------------------------------


def _split_pipeline(words: list[str]) -> list[list[str]]:
    """One command line cut at `&&`, `|`, `;` and a trailing `&`; env assignments dropped."""
    parts: list[list[str]] = [[]]
    for word in words:
        if word in SHELL_OPERATORS:
            parts.append([])
        else:
            parts[-1].append(word)
    result = []
    for part in parts:
        while part and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", part[0]):
            part = part[1:]
        if part:
            result.append(part)
    return result


def _click_command(args: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """The command the words name (groups descended), its path, and the words left for it."""
    command: click.Command = main
    path = ["batchopt"]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name = args[0]
        if name not in command.commands:
            break
        command, path, args = command.commands[name], [*path, name], args[1:]
    return command, path, args


def check_batchopt(words: list[str]) -> None:
    """Parse a `batchopt ...` command with the real CLI: an unknown command or option, a missing
    required one, or a bad value fails."""
    command, path, args = _click_command(words[1:])
    if isinstance(command, click.Group) and args and not args[0].startswith("-"):
        raise AssertionError(f"{' '.join(path)} has no command {args[0]!r}")
    try:
        command.make_context(" ".join(path), list(args))
    except click.exceptions.Exit:  # --help, --version
        pass
    except click.UsageError as error:
        raise AssertionError(f"{' '.join(words)}: {error.format_message()}") from None


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def check_make(words: list[str]) -> None:
    targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
    missing = sorted(set(targets) - _make_targets())
    assert not missing, f"{' '.join(words)}: no make target {missing}"


def check_script(words: list[str]) -> None:
    """`[.venv/bin/]python benchmarks/x.py --option ...`: the script exists and declares each
    option it is given."""
    script = ROOT / words[1]
    assert script.is_file(), f"{' '.join(words)}: no file {words[1]}"
    source = script.read_text(encoding="utf-8")
    for word in words[2:]:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert f'"{option}"' in source, f"{words[1]} has no option {option}"


def check_command(words: list[str]) -> None:
    program = Path(words[0]).name
    if program == "batchopt":
        check_batchopt(words)
        if is_ledger_sql(words):
            duckdb.extract_statements(words[3])  # run over a real ledger by test_docs_sql.py
    elif program == "duckdb":
        sql = [w for w in words[1:] if w != "-c" and not w.startswith(".")]
        assert sql, words
        for statement in sql:
            duckdb.extract_statements(statement)  # run by test_docs_sql.py
    elif program == "make":
        check_make(words)
    elif program.startswith("python"):
        check_script(words)
    elif program == "export":
        for word in words[1:]:
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", word), words
    else:
        assert program in NOT_RUN_PROGRAMS, f"unknown program {program!r}: {' '.join(words)}"


# --- yaml blocks ----------------------------------------------------------------------------

REQUIRED_KEYS = {name for name, f in PipelineConfig.model_fields.items() if f.is_required()}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def as_pipeline(fragment: dict[str, Any]) -> dict[str, Any]:
    """A whole pipeline as it is; a fragment merged into a minimal valid pipeline, with a
    profile (like `openai`) for every tier it names that the minimal one lacks."""
    if set(fragment) >= REQUIRED_KEYS:
        return fragment
    data = _merge(pipeline_dict(), fragment)
    routing = data.get("routing") or {}
    for tier in routing.get("tiers", []):
        data["profiles"].setdefault(tier, copy.deepcopy(data["profiles"]["openai"]))
    return data


def check_yaml(block: Block) -> None:
    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), f"{block.where}: not a mapping"
    unknown = set(data) - set(PipelineConfig.model_fields)
    assert not unknown, f"{block.where}: {sorted(unknown)} are not pipeline keys"
    PipelineConfig.model_validate(interpolate(as_pipeline(data), env={}))


# --- every block ----------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.where}-{b.language}" for b in BLOCKS])
def test_every_code_block_is_tested(block: Block) -> None:
    if block.language in SHELL_LANGUAGES:
        commands = [p for words in shell_commands(block.text) for p in _split_pipeline(words)]
        assert commands, f"{block.where}: an empty sh block"
        for words in commands:
            check_command(words)
    elif block.language == "yaml":
        check_yaml(block)
    elif block.language == "sql":
        assert duckdb.extract_statements(block.text)  # run by test_docs_sql.py
    elif block.language == "python":
        compile(block.text, block.where, "exec")
    else:
        assert block.language in OTHER_LANGUAGES, (
            f"{block.where}: a ```{block.language or '(no language)'} block; give it a language "
            "this test checks, or list it in OTHER_LANGUAGES with the reason it is not run"
        )


def test_the_docs_have_blocks_of_each_kind() -> None:
    languages = {block.language for block in BLOCKS}
    assert {"sh", "yaml", "sql", "text"} <= languages
    assert sum(block.language == "sh" for block in BLOCKS) >= 20


def test_a_misspelt_option_or_command_fails_the_check() -> None:
    with pytest.raises(AssertionError, match="No such option"):
        check_batchopt(["batchopt", "run", "p.yaml", "--run-idd", "x"])
    with pytest.raises(AssertionError, match="no command"):
        check_batchopt(["batchopt", "ledger", "qurey", "select 1"])
    with pytest.raises(AssertionError, match="Missing option"):
        check_batchopt(["batchopt", "ledger", "query", "select 1"])
    with pytest.raises(AssertionError, match="not pipeline keys"):
        check_yaml(Block(README, 1, "yaml", "routes: {strategy: cascade}\n"))


# --- the docs as a whole --------------------------------------------------------------------


def test_the_readme_is_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail to docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*#*$", text, re.M):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        found.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return found


def relative_links(path: Path) -> list[str]:
    text = without_code(path.read_text(encoding="utf-8"))
    targets = re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_every_relative_link_points_at_a_file_and_anchor_that_exist() -> None:
    broken = []
    for path in doc_files():
        for target in relative_links(path):
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no file {file_part}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)
    assert sum(len(relative_links(p)) for p in doc_files()) >= 50


def test_every_docs_page_is_on_the_contents_page_and_the_contents_page_in_the_readme() -> None:
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in relative_links(DOCS / "index.md")}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "index.md" and p not in linked]
    assert not missing, f"docs/index.md does not link {missing}"
    assert "docs/index.md" in relative_links(README)


def _commands(group: click.Group, path: list[str]) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, [*path, name])
        else:
            found.append((" ".join([*path, name]), command))
    return found


def test_the_cli_reference_names_every_command_and_option() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    problems = []
    for name, command in _commands(main, ["batchopt"]):
        match = re.search(rf"^## `{re.escape(name)}`\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        if not match:
            problems.append(f"no section '## `{name}`'")
            continue
        if "Exit codes:" not in " ".join(match.group(1).split()):
            problems.append(f"{name}: no 'Exit codes:' sentence")
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in [o for o in param.opts + param.secondary_opts if o.startswith("--")]:
                    if opt != "--help" and f"`{opt}" not in match.group(1):
                        problems.append(f"{name}: {opt} not described")
    assert not problems, "\n".join(problems)


def _model_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """Every key a pipeline YAML may hold under this model, nested models included."""
    if model in seen:
        return set()
    seen.add(model)
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(field.alias or name)
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                keys |= _model_keys(annotation, seen)
            else:
                stack.extend(get_args(annotation))
    return keys


def test_the_yaml_reference_names_every_key() -> None:
    text = (DOCS / "pipeline-yaml.md").read_text(encoding="utf-8")
    named = {word for span in re.findall(r"`([^`\n]+)`", text) for word in re.findall(r"\w+", span)}
    named |= {word for block in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S)
              for word in re.findall(r"^\s*-?\s*(\w+):", block, re.M)}
    missing = sorted(_model_keys(PipelineConfig, set()) - named)
    assert not missing, f"docs/pipeline-yaml.md never names the keys {missing}"
