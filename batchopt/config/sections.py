"""The sections of a pipeline YAML other than its profiles: input, output, ledger, cache, prompt,
dedup, pricing, the self-hosted comparison, the baseline, execution and paths."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from batchopt.config.strict import StrictModel

ProviderName = Literal["openai", "anthropic", "local"]

# Measured on tests/data/dedup_labelled.parquet with all-MiniLM-L6-v2 and the default guards:
# precision 1.0 at 0.75 (recall 0.59 at k=10). Fresh draws of the same generator (other seeds)
# give precision 0.98-0.99 at 0.75 and 0.95 at 0.60: requests with the same facts but another
# intent ("pick up order 5 in Austin" / "send order 5 to Austin") reach cosine 0.82-0.87 and
# only the action lexicon tells them apart, so lower thresholds trade precision for recall.
DEFAULT_THRESHOLD = 0.75
# The model2vec static model distilled from that MiniLM puts requests with the same facts and
# another intent closer together: on the same labelled set it makes 12 wrong merges at 0.75
# (precision 0.967) and none at 0.80 (recall 0.56, about MiniLM's at 0.75).
BACKEND_THRESHOLDS = {"sentence-transformers": DEFAULT_THRESHOLD, "model2vec": 0.80}


def default_threshold(backend: str) -> float:
    """The threshold at which `backend`'s default model keeps precision 1.0 on the labelled set."""
    return BACKEND_THRESHOLDS.get(backend, DEFAULT_THRESHOLD)


class InputConfig(StrictModel):
    """Where the rows come from: a Parquet file, a folder, a glob, or hive-partitioned folders."""

    path: str = Field(description="Parquet file, folder, or glob; relative to the YAML's folder")
    id_column: str = Field(description="Column that identifies a row; unique and never null")
    columns: list[str] | None = Field(
        default=None,
        description="Input columns to carry into the outputs (default: every column)",
    )
    hive_partitioning: bool | None = Field(
        default=None, description="Read key=value folders as columns (default: auto)"
    )
    required: list[str] = Field(
        default_factory=list,
        description="Columns a row cannot be sent without: a row with any of them null or blank "
        "has nothing to send, as a row whose template fields are all blank (input.on_empty)",
    )
    on_empty: Literal["skip", "fail"] = Field(
        default="skip",
        description="A row with nothing to send: every column the prompt templates read (the id "
        "column aside) is null or blank. skip: not sent, no cost, a null answer, and the ledger "
        "says why (status skipped); fail: exit 2 before anything is sent, naming the rows",
    )


class OutputConfig(StrictModel):
    """Where the outputs go: one Parquet file, written atomically."""

    path: str = Field(description="Output Parquet file; relative to the YAML's folder")


class LedgerConfig(StrictModel):
    """Where the cost ledger goes: hive-partitioned Parquet under this folder."""

    path: str = Field(description="Ledger root folder; relative to the YAML's folder")


class CacheConfig(StrictModel):
    """The response cache: a re-run of the same request is answered from disk for $0."""

    path: str = Field(description="Cache folder; relative to the YAML's folder")
    enabled: bool = True


class ExampleConfig(StrictModel):
    """A worked example: an input and the answer wanted for it."""

    input: str = Field(min_length=1)
    output: str = Field(min_length=1)


class PromptConfig(StrictModel):
    """How each row becomes a request: a static system part and a sandboxed Jinja user template.

    The static part (system, then context, then examples) is sent first and is byte-identical for
    every row, so provider prompt caches bill it at the cached rate after the first row.
    """

    system: str = Field(default="", description="System text; identical for every row")
    context: str = Field(
        default="", description="Shared reference text (a glossary, a policy) after the system"
    )
    context_file: str | None = Field(
        default=None, description="Read `context` from this UTF-8 file (relative to the YAML)"
    )
    examples: list[ExampleConfig] = Field(
        default_factory=list, description="Few-shot examples, sent after the context"
    )
    template: str = Field(description="Jinja template of the user message; columns are variables")
    output_column: str = Field(default="output", description="Column that receives the answer")
    json_schema: dict[str, Any] | None = Field(
        default=None,
        description="Ask for structured output; answers are validated against this JSON Schema",
    )

    @field_validator("template")
    @classmethod
    def _template_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _one_context(self) -> PromptConfig:
        if self.context and self.context_file:
            raise ValueError("give context or context_file, not both")
        return self


class GuardsConfig(StrictModel):
    """Guards that veto a semantic merge; each can be switched off."""

    numbers: bool = Field(default=True, description="Differing numbers, order ids, quantities")
    amounts: bool = Field(default=True, description="Differing money amounts")
    codes: bool = Field(default=True, description="Differing ids and codes (SKUs, e-mails, URLs)")
    dates: bool = Field(default=True, description="Differing dates, weekdays, months")
    negation: bool = Field(default=True, description="A negation on one side only")
    opposites: bool = Field(
        default=True, description="Opposite words on each side (big/small, early/late...)"
    )
    actions: bool = Field(
        default=True,
        description="Each side asks for something the other does not (cancel vs refund, "
        "pick up vs deliver)",
    )
    entities: bool = Field(default=True, description="Differing named products or places")
    swaps: bool = Field(
        default=True,
        description="The same wording with one ordinary word swapped (strap vs spare filter)",
    )
    vocabulary: list[str] = Field(
        default_factory=list, description="Extra terms (product names...) that must match"
    )



class SemanticDedupConfig(StrictModel):
    """Near-duplicate collapsing: embeddings, faiss neighbours, guarded clusters."""

    enabled: bool = False
    threshold: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="Cosine similarity (default: where the backend's default model keeps "
        "precision 1.0 on the labelled set: 0.75 sentence-transformers, 0.80 model2vec)",
    )
    backend: Literal["sentence-transformers", "model2vec"] = "sentence-transformers"
    model: str | None = Field(
        default=None, description="Model folder (default: the packaged all-MiniLM-L6-v2)"
    )
    column: str | None = Field(
        default=None, description="Compare this input column (default: the rendered prompt)"
    )
    neighbours: int = Field(default=10, ge=1, le=100, description="Candidates per row")
    across_runs: bool = Field(
        default=True,
        description="Reuse answers of guarded near-duplicates answered in earlier runs",
    )
    guards: GuardsConfig = Field(default_factory=GuardsConfig)

    @model_validator(mode="before")
    @classmethod
    def _backend_threshold(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("threshold") is None:
            backend = data.get("backend") or "sentence-transformers"
            data = {**data, "threshold": default_threshold(str(backend))}
        return data


class DedupConfig(StrictModel):
    """Exact dedup on the rendered, normalised request; optional semantic dedup after it."""

    exact: bool = True
    ignore_case: bool = Field(
        default=False, description="Treat requests differing only in letter case as one"
    )
    semantic: SemanticDedupConfig = Field(default_factory=SemanticDedupConfig)



class ModelPriceConfig(StrictModel):
    """A price override in USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    batch_discount: float | None = Field(default=None, ge=0, le=1)


class PricingConfig(StrictModel):
    """Per-pipeline price overrides, keyed by model name."""

    models: dict[str, ModelPriceConfig] = Field(default_factory=dict)
    local_usd_per_hour: float | None = Field(default=None, ge=0)


class SelfHostedSetupConfig(StrictModel):
    """A self-hosted set-up to compare the API estimate with (your GPU, your load test)."""

    name: str
    gpu: str = Field(default="", description="What it is, for the plan's printout")
    usd_per_hour: float = Field(gt=0, description="What an hour of the set-up costs")
    input_tokens_per_s: float = Field(gt=0, description="Aggregate prompt tokens read per second")
    output_tokens_per_s: float = Field(gt=0, description="Aggregate answer tokens per second")


class SelfHostedConfig(StrictModel):
    """`batchopt plan`'s API-or-self-hosted comparison."""

    utilisation: float = Field(default=0.5, gt=0, le=1, description="Share of hours kept busy")
    setups: list[SelfHostedSetupConfig] = Field(
        default_factory=list, description="Default: the price table's self_hosted entries"
    )


class BaselineConfig(StrictModel):
    """The naive way savings are measured against: every row, this model, online, uncompressed."""

    provider: ProviderName
    model: str


class ExecutionConfig(StrictModel):
    """How requests are sent: online, through the provider's batch API, or chosen per run."""

    mode: Literal["online", "batch", "auto"] = Field(
        default="online",
        description="batch: the provider's batch API at its discount, answers within its window "
        "(24 h); auto: batch when `deadline_hours` allows it and the provider has a batch API, "
        "else online, and online for what an expired batch left",
    )
    deadline_hours: float | None = Field(
        default=None, gt=0, description="auto: how long answers may take (none: no deadline)"
    )
    poll_seconds: float = Field(
        default=60.0, gt=0, description="How often a waiting run asks the provider about batches"
    )
    batch_rounds: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Batches a request may go through (expired, errored and cancelled rows are "
        "sent again) before it counts as failed",
    )
    engine: Literal["local", "ray"] = Field(
        default="local",
        description="Where the row-local stages run: this process, or a Ray cluster "
        "(pip install 'batchopt[ray]'); grouping, batches and the run state stay in the driver",
    )
    ray_address: str | None = Field(
        default=None, description="engine ray: the cluster to join (default: a local Ray)"
    )
    ray_workers: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="engine ray: how many workers send online calls (sharing one rate limit), "
        "embed, and at least how many blocks a table is cut into (default: the cluster's CPUs)",
    )


class PathsConfig(StrictModel):
    """Where the paths in the YAML may point."""

    confine: bool = Field(
        default=False,
        description="Refuse a path in the YAML (input, output, ledger, cache, context_file, "
        "model files) that resolves outside `root`, symlinks followed",
    )
    root: str | None = Field(
        default=None, description="The project folder (default: the YAML's folder)"
    )

