"""Helpers of the bad-input, security and disk tests: run `batchopt` through click's CliRunner
and check that a refused run wrote nothing and sent nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from batchopt.cli.main import main


def cli_env(fake: Any, openai_key: str = "sk-test", anthropic_key: str = "sk-ant-test",
            **extra: str | None) -> dict[str, str | None]:
    """CliRunner's env overrides: the fake server's URLs and these keys."""
    return {"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": openai_key,
            "ANTHROPIC_BASE_URL": fake.anthropic_base_url, "ANTHROPIC_API_KEY": anthropic_key,
            **extra}


def invoke(args: list[str], env: dict[str, str | None]) -> Result:
    """`batchopt ARGS` in this process, stderr apart from stdout."""
    return CliRunner().invoke(main, args, env=env)


def written_files(folder: Path) -> list[Path]:
    """Every file under `folder`, except the pipeline's own inputs (`data/`, the YAML)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and "data" not in p.relative_to(folder).parts and p.suffix != ".yaml")


def assert_refused(result: Result, fake: Any, folder: Path, *needles: str) -> str:
    """Exit 2 with one line `error: ...` holding every needle; no output, ledger or cache file
    under `folder`; not one request or batch at the fake server. Returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert written_files(folder) == [], written_files(folder)
    stats = fake.stats()
    assert stats["requests"] == 0 and stats["batches_created"] == 0, stats
    return lines[0]
