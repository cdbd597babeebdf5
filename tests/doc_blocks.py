"""The documentation as tests see it: README.md and docs/*.md, their fenced code blocks, and the
commands of their shell blocks (shared by test_docs_blocks.py and test_docs_sql.py)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
SHELL_LANGUAGES = ("sh", "bash", "shell")


def doc_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language (the word after the fence) and text."""

    path: Path
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file (fences at the start of a line)."""
    text = path.read_text(encoding="utf-8")
    return [
        Block(path, text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2))
        for match in _FENCE.finditer(text)
    ]


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks(path)]


def without_code(text: str) -> str:
    """A Markdown text with its fenced blocks and inline code spans blanked out."""
    text = _FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def shell_commands(block: str) -> list[list[str]]:
    """The commands of an sh block, as the shell would split them (quotes spanning lines and
    backslash continuations joined, comments dropped)."""
    commands: list[list[str]] = []
    pending = ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on on the next line
            continue
        if words:
            commands.append(words)
        pending = ""
    assert not pending, f"unterminated command in the docs: {pending!r}"
    return commands


def is_ledger_sql(words: list[str]) -> bool:
    """`batchopt ledger query "..."` or `duckdb -c "..."`: SQL that test_docs_sql.py runs."""
    return words[:3] == ["batchopt", "ledger", "query"] or words[0] == "duckdb"


def ledger_sql_commands(paths: list[Path] | None = None) -> list[tuple[str, list[str]]]:
    """Every ledger SQL command of the sh blocks of these files (default: all docs), with where
    it is."""
    found = []
    for path in paths or doc_files():
        for block in blocks(path):
            if block.language in SHELL_LANGUAGES:
                found += [(block.where, w) for w in shell_commands(block.text) if is_ledger_sql(w)]
    return found


def sql_blocks() -> list[Block]:
    return [block for block in all_blocks() if block.language == "sql"]
