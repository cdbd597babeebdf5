"""A pipeline configuration's fingerprint: what decides how rows are routed and what is sent.

Past runs inform an estimate (escalation share, answer lengths, the last run's spend) only when
they ran the same configuration: the ledger records each run's `config_hash`, and
`ledger.history.read_history` keeps the runs that share it. The base URL is left out (a
rehearsal on the fake server and the real run share a configuration), and so are settings that
change neither routing nor prompts (budget, paths, concurrency, the plan's own assumptions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from batchopt.hashing import stable_hash

if TYPE_CHECKING:
    from batchopt.config.pipeline import LoadedPipeline
    from batchopt.run.tiers import Tier

__all__ = ["config_hash"]


def config_hash(loaded: LoadedPipeline, strategy: str, tiers: Mapping[str, Tier]) -> str:
    """A stable hash of `loaded`'s routing and prompts as run on `tiers` (cheapest first)."""
    cfg = loaded.config
    routing: dict[str, Any] | None = None
    if cfg.routing is not None:
        routing = cfg.routing.model_dump(mode="json", exclude={"assume_escalation"})
    return stable_hash({
        "strategy": strategy,
        "tiers": [_tier(name, tier) for name, tier in tiers.items()],
        "routing": routing,
        "prompt": {"template": cfg.prompt.template, "json_schema": cfg.prompt.json_schema},
        "compress": cfg.compress.model_dump(mode="json") if cfg.compress is not None else None,
    }, length=16)


def _tier(name: str, tier: Tier) -> dict[str, Any]:
    spec, profile = tier.spec, tier.profile
    return {"name": name, "provider": spec.provider, "model": spec.model,
            "max_tokens": spec.max_tokens, "temperature": spec.temperature,
            "system": spec.system, "json_schema": spec.json_schema, "params": spec.params,
            "template": profile.template}
