"""Shared helpers for tests: a minimal valid pipeline written into a tmp folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import polars as pl
import yaml

# a progress line a run writes on stderr when stderr is not a terminal (batchopt.cli.progress_log)
PROGRESS_LINE = re.compile(r"^\[ *\d+(s|m\d\ds|h\d\dm)\] ")


def message_lines(output: str) -> list[str]:
    """The non-blank lines of a command's output, without the progress lines of a log."""
    return [line for line in output.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]


def write_tickets(path: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    rows = rows or [
        {"ticket_id": "T1", "subject": "Refund", "body": "Please refund order #10233."},
        {"ticket_id": "T2", "subject": "Refund", "body": "Please  refund order #10233. "},
        {"ticket_id": "T3", "subject": "Login", "body": "I cannot log in since Monday."},
        {"ticket_id": "T4", "subject": "Refund", "body": "Please refund order #10234."},
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(path)
    return path


def pipeline_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "tickets",
        "input": {"path": "data/tickets.parquet", "id_column": "ticket_id"},
        "output": {"path": "out/outputs.parquet"},
        "ledger": {"path": "out/ledger"},
        "cache": {"path": "out/cache"},
        "prompt": {
            "system": "Summarise the ticket in one sentence.",
            "template": "Subject: {{ subject }}\n\n{{ body }}",
            "output_column": "summary",
        },
        "baseline": {"provider": "openai", "model": "gpt-4o"},
        "default_profile": "openai",
        "profiles": {
            "openai": {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 32,
                       "concurrency": 4, "max_attempts": 3, "timeout_s": 10},
            "anthropic": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022",
                          "max_tokens": 32, "concurrency": 4, "max_attempts": 3,
                          "timeout_s": 10},
        },
    }
    for key, value in overrides.items():
        data[key] = value
    return data


def write_pipeline(folder: Path, data: dict[str, Any] | None = None, text: str | None = None,
                   tickets: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if tickets:
        write_tickets(folder / "data" / "tickets.parquet")
    path = folder / "pipeline.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data or pipeline_dict()))
    return path


def fake_env(fake: Any, openai_key: str = "sk-test-0001", anthropic_key: str = "sk-ant-test-0002",
             **extra: str) -> dict[str, str]:
    """This process's environment pointed at the fake server, with no real provider settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update({"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": openai_key,
                "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
                "ANTHROPIC_API_KEY": anthropic_key, **extra})
    return env


def file_contents(path: Path) -> bytes:
    """What a file holds, readable: a Parquet file's pages are compressed (zstd), so a key in
    them is not in its bytes; its rows and metadata are decoded and added."""
    raw = path.read_bytes()
    if path.suffix != ".parquet":
        return raw
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    return raw + repr(table.to_pylist()).encode() + repr(meta).encode()


def cached_answer_ids(cache: Path) -> set[str]:
    """The provider response ids of the answers `cache.db` holds: saved for good (read after
    the child died, before anything else opens the cache)."""
    if not (cache / "cache.db").exists():
        return set()
    import diskcache

    ids = set()
    with diskcache.Cache(str(cache), eviction_policy="none", size_limit=2**62) as store:
        for key in store:
            raw = store.get(key)
            if isinstance(raw, str) and raw.startswith("{"):
                request_id = json.loads(raw).get("request_id")
                if request_id:
                    ids.add(request_id)
    return ids
