"""The record `batchopt bench-tier` keeps: one JSON file per tier under the cache folder,
`<cache>/<pipeline>/bench/<tier>.json`, written atomically (a temp file and a rename).

Two kinds of throughput are recorded. The *aggregate* figures (requests/s, prompt and generated
tokens/s) are what the sample did over its wall-clock time. The *cost-model* figures split that
time into reading prompts and writing answers, so that a request's time is
`input_tokens / prompt_tokens_per_s + output_tokens / generated_tokens_per_s` for any mix of
lengths: the prompts are first sent alone (one answer token each), which times the prompt
reading; what the full requests took beyond that is the writing.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from batchopt.errors import ConfigError
from batchopt.hashing import stable_hash
from batchopt.io.writer import write_text_atomic

__all__ = ["BENCH_VERSION", "BenchRecord", "bench_path", "find_record", "public_endpoint",
           "read_record", "write_record"]

BENCH_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,80}$")


@dataclass(frozen=True)
class BenchRecord:
    """What one bench of one tier measured, and what it implies at the tier's $/hour."""

    pipeline: str
    tier: str
    provider: str
    model: str
    endpoint: str  # base_url or GGUF path: a record of another endpoint is not used
    measured_at: str  # UTC, ISO 8601
    machine: dict[str, Any]  # where the bench ran (for an HTTP tier: the client)
    requests: int  # answered requests measured (failed ones are left out)
    failed: int
    concurrency: int
    max_tokens: int
    prompt_tokens: int
    generated_tokens: int
    wall_s: float
    requests_per_s: float
    prompt_tokens_per_s: float  # aggregate: prompt tokens / wall time
    generated_tokens_per_s: float  # aggregate: generated tokens / wall time
    latency_ms: dict[str, float]  # p50, p90, p99, mean
    cost_prompt_tokens_per_s: float  # cost model: prompt reading alone
    cost_generated_tokens_per_s: float  # cost model: answer writing alone
    cost_method: str
    usd_per_hour: float
    usd_per_hour_source: str
    self_hosted: dict[str, Any] | None = None
    version: int = BENCH_VERSION
    notes: list[str] = field(default_factory=list)

    @property
    def usd_per_1m_input(self) -> float:
        """$ per million prompt tokens at the cost model's rate, busy the whole hour."""
        return self.usd_per_hour / (self.cost_prompt_tokens_per_s * 3600.0) * 1e6

    @property
    def usd_per_1m_output(self) -> float:
        """$ per million generated tokens at the cost model's rate, busy the whole hour."""
        return self.usd_per_hour / (self.cost_generated_tokens_per_s * 3600.0) * 1e6

    @property
    def usd_per_1m_tokens(self) -> float:
        """$ per million tokens of either kind at the sample's own mix and wall time."""
        tokens = self.prompt_tokens + self.generated_tokens
        return self.usd_per_hour * self.wall_s / 3600.0 / tokens * 1e6 if tokens else 0.0

    def matches(self, provider: str, model: str, endpoint: str) -> bool:
        """Whether the record measured this model at this endpoint."""
        return (self.provider, self.model, self.endpoint) == (provider, model,
                                                              public_endpoint(endpoint))

    def describe(self, path: Path) -> str:
        """One line: where and when the record was measured, and on how many requests."""
        return (f"recorded bench ({path}, {self.measured_at}, {self.requests} requests at "
                f"concurrency {self.concurrency})")


def public_endpoint(endpoint: str) -> str:
    """`endpoint` as a record keeps it: a URL without any user:password@ in it."""
    parts = urlsplit(endpoint)
    if not parts.scheme or "@" not in parts.netloc:
        return endpoint
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def bench_path(cache_dir: Path, pipeline: str, tier: str) -> Path:
    """Where tier `tier`'s record lives (a name unsafe for a file name is hashed)."""
    name = tier if _SAFE_NAME.match(tier) else f"tier-{stable_hash(tier, 12)}"
    return Path(cache_dir) / pipeline / "bench" / f"{name}.json"


def write_record(record: BenchRecord, path: Path) -> Path:
    """Write `record` to `path` through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dict(asdict(record), usd_per_1m={
        "input": record.usd_per_1m_input, "output": record.usd_per_1m_output,
        "sample_mix": record.usd_per_1m_tokens,
    })
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_record(path: Path) -> BenchRecord | None:
    """The record at `path`; None when there is none. A damaged one is a ConfigError naming
    the file (delete it or bench again)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read bench record ({exc}); run `batchopt bench-tier` "
                          "again or delete it") from exc
    if not isinstance(data, dict) or data.get("version") != BENCH_VERSION:
        raise ConfigError(f"{path}: not a version {BENCH_VERSION} bench record; run "
                          "`batchopt bench-tier` again or delete it")
    data.pop("usd_per_1m", None)  # derived; recomputed from the record
    try:
        record = BenchRecord(**data)
    except TypeError as exc:
        raise ConfigError(f"{path}: bench record: {exc}") from exc
    if record.cost_prompt_tokens_per_s <= 0 or record.cost_generated_tokens_per_s <= 0:
        raise ConfigError(f"{path}: bench record has no throughput; run bench-tier again")
    return record


def find_record(cache_dir: Path, pipeline: str, tier: str, provider: str, model: str,
                endpoint: str) -> tuple[BenchRecord, Path] | None:
    """The record that measured this model at this endpoint: tier `tier`'s own, else the
    newest of another tier of the pipeline that runs the same model on the same endpoint
    (two tiers of one GGUF file differ only in their limits)."""
    own = bench_path(cache_dir, pipeline, tier)
    found = [(r, own)] if (r := read_record(own)) is not None else []
    if not found or not found[0][0].matches(provider, model, endpoint):
        others = sorted(own.parent.glob("*.json")) if own.parent.is_dir() else []
        found = [(r, p) for p in others if p != own and (r := read_record(p)) is not None]
    matching = [(r, p) for r, p in found if r.matches(provider, model, endpoint)]
    return max(matching, key=lambda item: item[0].measured_at) if matching else None

