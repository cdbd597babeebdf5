"""`batchopt status`: where a run stands (finished, running, pending batches, ready), read from
its state file and, for open batches, the provider. Spends nothing."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from batchopt.config.pipeline import LoadedPipeline, ModelConfig
from batchopt.errors import EXIT_OK, EXIT_PENDING, EXIT_USAGE, ConfigError
from batchopt.execute.state import OPEN_STATES, RunLock, RunState, Submission, run_dir
from batchopt.providers.base import Provider
from batchopt.providers.registry import create_provider
from batchopt.run.calls import CONFIRMED, UNCONFIRMED
from batchopt.run.model import RunOptions
from batchopt.run.settings import provider_settings

if TYPE_CHECKING:
    from batchopt.providers.batching import BatchStatus


@dataclass
class StatusReport:
    """Where a run stands, for `batchopt status`."""

    run_id: str
    pipeline: str
    # finished | running (another process has it) | blocked (the last invocation stopped on
    # what a person must mend) | pending (batches out) | ready
    state: str
    exit_code: int
    batches: list[Submission]
    statuses: dict[str, BatchStatus]
    finished: dict[str, object] | None
    state_path: Path
    spent_usd: float = 0.0  # what the run id's confirmed calls cost (`batchopt.run.calls`)
    unconfirmed_usd: float = 0.0  # estimated: sent, never answered (maybe billed)
    identity: dict[str, object] | None = None  # `batchopt.run.identity`
    tiers: dict[str, str] = field(default_factory=dict)  # batch tag -> the tier (profile) it serves
    blocked: dict[str, object] | None = None  # why the last invocation stopped (state blocked)

    def to_json(self) -> dict[str, object]:
        """For a scheduler's sensor or a dashboard: `status --json`."""
        batches = []
        for sub in self.batches:
            polled = self.statuses.get(sub.batch_id or "")
            batches.append({
                "round": sub.round, "tier": self.tiers.get(sub.tag), "provider": sub.provider,
                "model": sub.model,
                "batch_id": sub.batch_id, "tag": sub.tag, "state": sub.state,
                "requests": sub.requests, "error": sub.error,
                "provider_status": polled.raw_status if polled else sub.raw_status,
                "done": polled.done if polled else sub.state not in OPEN_STATES,
                "succeeded": polled.succeeded if polled else None,
                "errored": polled.errored if polled else None,
            })
        return {
            "run_id": self.run_id, "pipeline": self.pipeline, "state": self.state,
            "exit_code": self.exit_code, "identity": self.identity,
            "pending_batches": sum(1 for b in batches if not b["done"]),
            "spent_usd": self.spent_usd, "unconfirmed_usd": self.unconfirmed_usd,
            "batches": batches, "finished": self.finished, "blocked": self.blocked,
            "state_path": str(self.state_path),
        }


def run_status(
    loaded: LoadedPipeline, options: RunOptions, env: dict[str, str] | None = None
) -> StatusReport:
    """Read a run's state and ask the provider about its open batches. Spends nothing.

    Exit code: the finished run's own (0, or 1 for too many failed rows); 75 while there is
    something to wait for (batches still running at the provider, or another process advancing
    the run); 0 when there is not: the next `run` with this id collects and finishes."""
    cfg = loaded.config
    if not options.run_id:
        raise ConfigError("status needs --run-id")
    cache_dir = options.cache_dir or loaded.resolve(cfg.cache.path)
    directory = run_dir(cache_dir, cfg.name, options.run_id)
    if not RunState.exists(directory):
        raise ConfigError(
            f"no run '{options.run_id}' of pipeline '{cfg.name}' under {directory.parent}"
        )
    state = RunState.open(directory)
    try:
        finished = state.get("finished")
        blocked = state.get("blocked")
        started = state.get("started") or {}
        identity = state.get("identity")
        batches = state.submissions()
        calls = state.calls()
    finally:
        state.close()
    open_ = [b for b in batches if b.state in OPEN_STATES and b.batch_id]
    statuses: dict[str, BatchStatus] = {}
    if open_ and finished is None:
        env = dict(os.environ) if env is None else env
        chosen = options.profile or started.get("profile")
        for (provider, model), subs in _by_maker(open_).items():
            name, profile = _profile_of(loaded, provider, model, chosen)
            settings = provider_settings(name, profile, env)
            make = options.providers or create_provider
            ids = [b.batch_id for b in subs if b.batch_id]
            statuses.update(asyncio.run(_poll(make(settings), ids)))
    creating = any(b.state == "submitting" for b in batches)
    if finished is not None:
        kind, code = "finished", int(finished.get("exit_code", EXIT_OK))
    elif RunLock.held(directory):
        kind, code = "running", EXIT_PENDING
    elif blocked:  # the last invocation stopped on what only a person can mend
        kind, code = "blocked", int(blocked.get("exit_code", EXIT_USAGE))
    elif creating or any(not s.done for s in statuses.values()):
        kind, code = "pending", EXIT_PENDING
    else:  # nothing left to wait for: the next `run` collects what ended and finishes
        kind, code = "ready", EXIT_OK
    return StatusReport(
        run_id=options.run_id, pipeline=cfg.name, state=kind, exit_code=code, batches=batches,
        statuses=statuses, finished=finished, state_path=directory / "state.sqlite",
        spent_usd=sum(c["cost_usd"] or 0.0 for c in calls if c["status"] == CONFIRMED),
        unconfirmed_usd=sum(c["estimated_usd"] or 0.0 for c in calls
                            if c["status"] == UNCONFIRMED),
        identity=identity, blocked=blocked,
        tiers={b.tag: _tier_of(loaded, b.provider, b.model, started.get("profile"))
               for b in batches},
    )


def _by_maker(batches: list[Submission]) -> dict[tuple[str, str], list[Submission]]:
    """Batches by the provider and model that made them: each is polled through its own API (a
    run's tiers may span providers, and one provider's batch id means nothing to another's)."""
    grouped: dict[tuple[str, str], list[Submission]] = {}
    for batch in batches:
        grouped.setdefault((batch.provider, batch.model), []).append(batch)
    return grouped


def _tier_of(loaded: LoadedPipeline, provider: str, model: str, chosen: str | None) -> str:
    """The routing tier (or profile) that sends to `provider`'s `model`; "?" if none does now."""
    cfg = loaded.config
    tiers = list(cfg.routing.tiers) if cfg.routing is not None else []
    names = ([chosen] if chosen else []) + tiers + sorted(cfg.profiles)
    for name in names:
        profile = cfg.profiles.get(name)
        if profile is not None and profile.provider == provider and profile.model == model:
            return name
    return "?"


def _profile_of(loaded: LoadedPipeline, provider: str, model: str, chosen: str | None
                ) -> tuple[str, ModelConfig]:
    """The pipeline's profile that sends to `provider`'s `model`: the run's own profile if it
    does, else the first that does."""
    name = _tier_of(loaded, provider, model, chosen)
    if name != "?":
        return name, loaded.config.profiles[name]
    raise ConfigError(
        f"{loaded.source}: the run has a batch at {provider} ({model}) but no profile sends "
        "there any more; restore that profile to collect it"
    )


async def _poll(provider: Provider, batch_ids: list[str]) -> dict[str, BatchStatus]:
    try:
        return {batch_id: await provider.poll_batch(batch_id) for batch_id in batch_ids}  # type: ignore[attr-defined]
    finally:
        await provider.aclose()
