"""Every command's --help ends with the exit codes it can return."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from batchopt.cli.main import main


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


COMMANDS = _commands(main)


def _exit_codes(path: tuple[str, ...]) -> str:
    out = CliRunner().invoke(main, [*path, "--help"], terminal_width=80)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "Exit codes:" in text, f"batchopt {' '.join(path)} --help lists no exit codes"
    return text[text.index("Exit codes:"):]


def test_every_command_is_walked():
    names = {" ".join(p) for p in COMMANDS}
    assert {"", "run", "plan", "validate", "ledger", "ledger query", "router train",
            "distill export", "distill train", "distill eval", "bench-tier", "doctor",
            "fake-server"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "batchopt")
def test_help_lists_exit_codes(path):
    codes = _exit_codes(path)
    assert re.search(r"\b0\b", codes) and re.search(r"\b2\b", codes)  # ok; click usage errors


@pytest.mark.parametrize("command", ["run", "plan"])
def test_run_and_plan_list_the_budget_exit_code(command):
    assert re.search(r"\b3 over budget", _exit_codes((command,))) or re.search(
        r"\b3 the estimate is over budget", _exit_codes((command,)))
