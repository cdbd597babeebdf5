"""What a run is made of, shared by the runner and its helpers: the options of an invocation,
the plan `runner.prepare` builds (frozen: nothing after `prepare` changes it), what `rounds`
finds (`Answers`, or `RunPending` while batches are out), the summary, and the progress hooks.

The helpers (`rounds`, `calls`, `reuse`, `cost`, `forecast`) import these from here, never the
runner, which imports them all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from batchopt.config.pipeline import LoadedPipeline, ModelConfig
from batchopt.errors import EXIT_OK, EXIT_PENDING
from batchopt.execute.state import Submission
from batchopt.ledger.history import History
from batchopt.ledger.pricing import ModelPrice, PriceTable
from batchopt.prompts.request_table import RequestTable
from batchopt.providers.base import ProviderFactory, ProviderSettings
from batchopt.providers.registry import create_provider
from batchopt.records import Request, Result
from batchopt.run.tiers import Tier

if TYPE_CHECKING:  # the semantic modules load numpy and faiss: only when a pipeline uses them
    from batchopt.dedup.crossrun import PastAnswer
    from batchopt.dedup.guards import GuardConfig
    from batchopt.dedup.step import SemanticOutcome
    from batchopt.providers.batching import BatchStatus


@dataclass(frozen=True)
class RunOptions:
    """Per-invocation choices: the profile, the run id, and path overrides for schedulers."""

    profile: str | None = None
    run_id: str | None = None
    input: Path | None = None
    output: Path | None = None
    ledger: Path | None = None
    cache_dir: Path | None = None
    mode: str | None = None  # online | batch | auto; default: the YAML's execution.mode
    wait: bool = True  # batch: block until every batch is collected; else RunPending
    engine: str | None = None  # local | ray; default: the YAML's execution.engine
    ray_address: str | None = None  # default: the YAML's execution.ray_address
    limit: int | None = None  # read only the first `limit` rows of the input (None: all)
    date: date | None = None  # the logical date (default: the run id's date, else today)
    # builds each tier's provider (default: providers.registry.create_provider); a test passes
    # providers.scripted.stand_ins(...) to run without a socket
    providers: ProviderFactory | None = None


class RunObserver:
    """Progress hooks; the CLI draws a progress bar with them. The default does nothing."""

    def stage(self, name: str) -> None:
        """A stage began."""

    def sending(self, total: int) -> None:
        """`total` requests are about to be sent."""

    def answered(self, result: Result) -> None:
        """One request was answered (or failed for good)."""

    def spent(self, amount: float) -> None:
        """Answers just arrived that this invocation paid `amount` (USD) for, priced as the ledger
        prices them (`cost.result_cost`); cache hits cost nothing."""

    def batches(self, submissions: list[Submission], statuses: dict[str, BatchStatus]) -> None:
        """The run's batches after a pass; `statuses` has those polled in it, by batch id."""


@dataclass(frozen=True)
class Plan:
    """Everything known before the first paid request."""

    pipeline: LoadedPipeline
    profile_name: str
    profile: ModelConfig
    settings: ProviderSettings
    run_id: str
    rows: pl.DataFrame
    requests: RequestTable  # by group_id: columns, a Request made when one is asked for
    price: ModelPrice
    baseline: tuple[str, str]
    prices: PriceTable
    paths: dict[str, Path]
    keep_columns: list[str]
    semantic: SemanticOutcome | None = None
    guards: GuardConfig | None = None
    mode: str = "online"  # online | batch (auto is resolved in `prepare`)
    online_fallback: bool = False  # auto: what a batch did not answer goes online
    wait: bool = True
    # tiers by name, cheapest first; the first is `profile_name` above
    tiers: dict[str, Tier] = field(default_factory=dict)
    strategy: str = "single"
    # group -> (tier, reason): a RouteTable (columns) after `prepare`
    routes: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # request key -> tier name of the requests' table (KeyTiers); what a run asks besides
    # them (escalations, judge calls) is in `Answers.tiers`
    key_tier: Mapping[str, str] = field(default_factory=dict)
    history: History = field(default_factory=History.empty)  # the pipeline's past runs
    compression: dict[str, int] = field(default_factory=dict)  # tokens removed, by step
    # prompts too long for their tier's context: group -> "skipped" | "truncated"; the skipped
    # ones are not in `requests` (group -> (request, why)) and are never sent
    overflow: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, tuple[Request, str]] = field(default_factory=dict)
    # the groups (one row each) skipped for an empty input (input.on_empty); also in `skipped`
    empty: set[str] = field(default_factory=set)
    engine: str = "local"  # where row stages ran and API calls go out: local | ray
    ray_address: str | None = None
    # time-priced tiers: (prompt, generated) tokens/s they are costed at, found on first use
    # (`cost.tier_rates`; a memo, not a fact of the plan: a bench record is read when needed)
    rates: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    row_limit: int | None = None  # --limit: only the input's first rows were read
    config_hash: str = ""  # the configuration's fingerprint (`batchopt.run.fingerprint`)
    logical_date: date | None = None  # the night the run is for (`batchopt.dates`)
    make_provider: ProviderFactory = create_provider  # RunOptions.providers, else the real ones

    def tier_of(self, request: Request) -> Tier:
        """The tier a request of the plan's table was built for."""
        return self.tiers[self.key_tier[request.key]]


@dataclass
class RunPending:
    """A batch run whose batches are still with the provider: run again with the same id."""

    run_id: str
    pipeline: str
    batches: list[Submission]
    state_path: Path | None
    exit_code: int = EXIT_PENDING
    waiting: dict[str, int] = field(default_factory=dict)  # other run -> its batched requests
    tiers: dict[str, str] = field(default_factory=dict)  # batch tag -> the tier it serves


@dataclass
class Answers:
    """What `rounds.execute` found: results by request key, the earlier answers reused, and
    each group's requests in the order a cascade asked them (one unless it escalated)."""

    results: dict[str, Result]
    past: dict[str, PastAnswer] = field(default_factory=dict)  # by request key
    chain: dict[str, list[Request]] = field(default_factory=dict)  # by group_id
    escalations: dict[str, str] = field(default_factory=dict)  # group_id -> why it went up
    judged: dict[str, list[Request]] = field(default_factory=dict)  # group_id -> judge calls
    budget_stop: str | None = None  # why sending stopped at the budget, if it did
    unsent: set[str] = field(default_factory=set)  # request keys the budget kept from sending
    unverified: dict[str, str] = field(default_factory=dict)  # group_id -> why (budget)
    calls: list[dict[str, object]] = field(default_factory=list)  # the run id's calls record
    # request key -> tier name of what the run asked besides the plan's requests (a cascade's
    # escalations and judge calls)
    tiers: dict[str, str] = field(default_factory=dict)

    def tier_of(self, plan: Plan, request: Request) -> Tier:
        """The tier `request` was asked of: one the run added, else the plan's."""
        name = self.tiers.get(request.key)
        return plan.tier_of(request) if name is None else plan.tiers[name]


@dataclass
class RunSummary:
    """What a run did and what it cost; the CLI prints it."""

    run_id: str
    pipeline: str
    profile: str
    provider: str
    model: str
    rows: int
    distinct_requests: int
    exact_duplicates: int
    semantic_duplicates: int
    cache_hits: int
    sent: int
    failed_rows: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: float
    baseline_cost_usd: float
    output_path: Path
    ledger_path: Path
    exit_code: int = EXIT_OK
    notes: list[str] = field(default_factory=list)
    tiers: dict[str, int] = field(default_factory=dict)  # paid rows by tier that answered
    escalated: int = 0  # rows a cascade sent one tier up (or more)
    compression: dict[str, int] = field(default_factory=dict)  # tokens removed, by step
    row_limit: int | None = None  # --limit: only the input's first rows were read
    # set when the run had already finished this job: the summary was read from its ledger
    finished_at: str | None = None

    @property
    def saving_usd(self) -> float:
        """What the run saved against the baseline (every row online on the baseline model)."""
        return self.baseline_cost_usd - self.cost_usd
