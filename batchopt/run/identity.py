"""A run's identity: the pipeline, the run id, its logical date, its configuration's fingerprint
and the cache folder that holds its state and paid answers. Recorded in the run's state and,
as `run.json`, beside its ledger part, when it starts (before anything is sent).

Invoking a run id again goes on with that run only when it is the same run: the same
configuration, the same night, the same cache folder. Anything else would mix two jobs in one
ledger part (a fresh cache folder re-pays every answer and replaces the ledger of what was
paid before), so it is refused before any spend, with what to do instead."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from batchopt.errors import ConfigError
from batchopt.io.writer import write_atomic

IDENTITY_FILE = "run.json"


def identity(pipeline: str, run_id: str, logical_date: dt.date | None, config_hash: str,
             cache: Path) -> dict[str, str]:
    """What makes a run the run it is (JSON-able)."""
    return {"pipeline": pipeline, "run_id": run_id,
            "logical_date": logical_date.isoformat() if logical_date else "",
            "config_hash": config_hash, "cache": str(cache)}


def read_ledger_side(ledger_folder: Path) -> dict[str, Any] | None:
    """The identity recorded beside a run's ledger part, if any."""
    path = ledger_folder / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):  # cut short: treated as absent
        return None


def write_ledger_side(ledger_folder: Path, ident: dict[str, str]) -> None:
    """Write the run's identity beside its ledger part (atomically)."""
    text = json.dumps(ident, indent=2, sort_keys=True).encode()
    write_atomic(ledger_folder / IDENTITY_FILE, lambda handle: handle.write(text))


def check(current: dict[str, str], recorded: dict[str, Any] | None, started: bool,
          ledger_folder: Path, date_given: bool) -> dict[str, str]:
    """The identity this invocation goes on with, or ConfigError (exit 2) when the run id is
    another run's. `recorded`: the state's identity (None: a new state, or one written before
    identities were); `started`: the state has run before; `date_given`: --date was passed (else
    a recorded logical date is kept: the run is for the night it was started for)."""
    run = f"run id '{current['run_id']}' of pipeline '{current['pipeline']}'"
    if recorded is None and not started:
        other = read_ledger_side(ledger_folder)
        if other is not None and other.get("cache") != current["cache"]:
            raise ConfigError(
                f"{run} was started with the cache folder {other.get('cache')} (its state and "
                f"paid answers are there); this invocation's, {current['cache']}, has none of "
                f"it: pass --cache-dir {other.get('cache')} to go on with that run, or a new "
                "--run-id to start another")
        if other is None and (ledger_folder / "part.parquet").exists():
            raise ConfigError(
                f"{run} already has a ledger ({ledger_folder}) but the cache folder "
                f"{current['cache']} has no state for it (another cache folder, or deleted): "
                "use a new --run-id, or the cache folder it ran with")
        return current
    if recorded is None:  # a state from before identities: this invocation's is recorded
        return current
    if recorded.get("config_hash") != current["config_hash"]:
        raise ConfigError(
            f"{run} was started with another configuration (fingerprint "
            f"{recorded.get('config_hash')}, now {current['config_hash']}: tiers, models, "
            "templates, routing, validators or compression changed); its ledger and state "
            "belong to that one: use a new --run-id for this configuration, or put the YAML "
            "back to go on with that run")
    was = recorded.get("logical_date") or ""
    if date_given and was and was != current["logical_date"]:
        raise ConfigError(
            f"{run} is for {was}; --date {current['logical_date']} names another night: use a "
            "new --run-id for it (or leave --date out to go on with this run)")
    return {**current, "logical_date": was or current["logical_date"]}
