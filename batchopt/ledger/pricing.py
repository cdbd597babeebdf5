"""Prices per model and the cost formula: tokens (or, for local models, time) to US dollars.

Prices live in `prices.yaml` (USD per 1M tokens, with its as-of date); a pipeline overrides them
under `pricing.models`. Costs are never rounded here: they are summed as float64 and reconciled
to the cent at the sum level.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from batchopt.errors import ConfigError
from batchopt.hashing import stable_hash
from batchopt.records import Usage

PRICES_FILE = Path(__file__).with_name("prices.yaml")
LOCAL_PROVIDER = "local"
TOKENS_PER_UNIT = 1_000_000.0
MS_PER_HOUR = 3_600_000.0

# What may follow a listed name in a model id: a snapshot date or an alias, nothing else, so that
# `gpt-4o-2024-08-06` is priced as gpt-4o while `gpt-5-pro` is not silently priced as gpt-5.
_SNAPSHOT_SUFFIX = re.compile(r"[-@](\d{4}-\d{2}-\d{2}|\d{8}|latest)")
_RATE_KEYS = ("input", "output", "cached_input", "cache_write")
_NEW_ENTRY: dict[str, Any] = {
    "provider": None,
    "cached_input": None,
    "cache_write": None,
    "batch_discount": None,
    "source": "",
}


@dataclass(frozen=True)
class ModelPrice:
    """One model's price: token rates in USD per 1M tokens, or `usd_per_hour` if time-priced.

    `model` is the name of the price-table entry that matched (a dated model id matches its
    base name). `cached_input` and `cache_write` are already resolved (they default to `input`).
    """

    provider: str
    model: str
    input: float
    output: float
    cached_input: float
    cache_write: float
    batch_discount: float
    usd_per_hour: float | None = None
    source: str = ""

    @property
    def time_priced(self) -> bool:
        """True when the model is billed by wall-clock time rather than by tokens."""
        return self.usd_per_hour is not None


def token_usd(
    uncached: Any,
    cached: Any,
    written: Any,
    output: Any,
    price_in: Any,
    price_cached: Any,
    price_write: Any,
    price_out: Any,
) -> Any:
    """USD for token counts at per-1M-token prices.

    The one formula behind both `PriceTable.cost` (numbers) and the ledger (polars expressions).
    """
    total = uncached * price_in + cached * price_cached + written * price_write
    return (total + output * price_out) / TOKENS_PER_UNIT


def daily_cost(
    requests_per_day: float, input_tokens: float, output_tokens: float, price: ModelPrice
) -> float:
    """Cost per day of `requests_per_day` identical online requests at full price."""
    per_request = token_usd(
        input_tokens, 0.0, 0.0, output_tokens, price.input, 0.0, 0.0, price.output
    )
    return requests_per_day * per_request


def _number(value: Any, where: str, *, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if value < 0 or (upper is not None and value > upper):
        bound = f"between 0 and {upper:g}" if upper is not None else "0 or more"
        raise ConfigError(f"{where}: must be {bound}, got {value!r}")
    return float(value)


def _entry(raw: Any, where: str, *, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate one model entry; fields it leaves out are taken from `base` (if any)."""
    if hasattr(raw, "model_dump"):  # a pydantic ModelPriceConfig handed over as is
        raw = raw.model_dump()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of prices, got {raw!r}")
    given = {k: v for k, v in raw.items() if v is not None}
    unknown = set(given) - {*_RATE_KEYS, "batch_discount", "provider", "source"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    entry = dict(base or _NEW_ENTRY)
    for key in _RATE_KEYS:
        if key in given:
            entry[key] = _number(given[key], f"{where}.{key}")
        elif key in ("input", "output") and key not in entry:
            raise ConfigError(f"{where}.{key}: required key is missing")
    if "batch_discount" in given:
        entry["batch_discount"] = _number(
            given["batch_discount"], f"{where}.batch_discount", upper=1.0
        )
    for key in ("provider", "source"):
        if key in given:
            entry[key] = str(given[key])
    return entry


class PriceTable:
    """The effective price table: `prices.yaml` plus a pipeline's overrides.

    Build it with `PriceTable.load`; look prices up with `price` and turn usage into dollars
    with `cost`.
    """

    def __init__(
        self,
        as_of: str,
        batch_discount: float,
        models: dict[str, dict[str, Any]],
        local_usd_per_hour: float,
        local_source: str = "",
    ) -> None:
        self.as_of = as_of
        self.batch_discount = batch_discount
        self._models = models
        self.local_usd_per_hour = local_usd_per_hour
        self._local_source = local_source
        self._contexts: dict[str, int] = {}  # model -> context window (not part of `version`)
        self._hourly: dict[tuple[str, str], ModelPrice] = {}  # self-hosted, by (provider, model)
        # Longest first, so gpt-4o-mini-2024-07-18 finds gpt-4o-mini before gpt-4o.
        self._names = sorted(models, key=len, reverse=True)
        effective = {
            "as_of": as_of,
            "batch_discount": batch_discount,
            "models": models,
            "local_usd_per_hour": local_usd_per_hour,
        }
        self.version = f"{as_of}+{stable_hash(effective, 8)}"

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        overrides: dict[str, dict] | None = None,
        local_usd_per_hour: float | None = None,
    ) -> PriceTable:
        """Read a price file (default: the shipped `prices.yaml`) and apply overrides.

        `overrides` maps a model name to {input, output, cached_input?, cache_write?,
        batch_discount?} in USD per 1M tokens (a pipeline's `pricing.models`). An override of a
        listed model replaces the fields it gives and keeps the others; an override of an
        unlisted model prices that name for any provider.
        """
        source = Path(path) if path is not None else PRICES_FILE
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{source}: cannot read price file ({exc})") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
            raise ConfigError(f"{source}: a price file needs a 'models' mapping")
        as_of = raw.get("as_of")
        if isinstance(as_of, dt.date):
            as_of = as_of.isoformat()
        if not as_of:
            raise ConfigError(f"{source}: as_of is missing")
        discount = _number(raw.get("batch_discount", 0.0), f"{source}: batch_discount", upper=1.0)
        models: dict[str, dict[str, Any]] = {}
        contexts: dict[str, int] = {}
        for name, entry in raw["models"].items():
            if isinstance(entry, dict) and "context_tokens" in entry:
                entry = dict(entry)
                where = f"{source}: models.{name}.context_tokens"
                contexts[str(name)] = int(_number(entry.pop("context_tokens"), where))
            models[str(name)] = _entry(entry, f"{source}: models.{name}")
            if not models[str(name)]["provider"]:
                raise ConfigError(f"{source}: models.{name}.provider: required key is missing")
        for name, entry in (overrides or {}).items():
            merged = _entry(entry, f"pricing.models.{name}", base=models.get(str(name)))
            merged["source"] = "pipeline override (pricing.models)"
            models[str(name)] = merged
        local = raw.get("local") or {}
        if local_usd_per_hour is not None:
            hourly = _number(local_usd_per_hour, "pricing.local_usd_per_hour")
            local_source = "pipeline pricing.local_usd_per_hour"
        else:
            hourly = _number(local.get("usd_per_hour", 0.0), f"{source}: local.usd_per_hour")
            local_source = str(local.get("source", "")).strip()
        table = cls(str(as_of), discount, models, hourly, local_source)
        table._contexts = contexts
        return table

    def _match(self, model: str) -> str | None:
        for name in self._names:
            if model == name or (
                model.startswith(name) and _SNAPSHOT_SUFFIX.fullmatch(model[len(name) :])
            ):
                return name
        return None

    def context_tokens(self, provider: str, model: str) -> int | None:
        """The context window of `model` at `provider` in tokens (prompt plus output), or None
        when the price file does not say."""
        name = self._match(model)
        entry = self._models.get(name) if name is not None else None
        if name is None or entry is None or entry["provider"] not in (None, provider):
            return None
        return self._contexts.get(name)

    def bill_by_time(self, provider: str, model: str, usd_per_hour: float, source: str
                     ) -> ModelPrice:
        """Price `model` at `provider` by machine time from now on (a self-hosted server: an
        OpenAI-compatible endpoint you run); returns that price."""
        price = ModelPrice(provider=provider, model=model, input=0.0, output=0.0,
                           cached_input=0.0, cache_write=0.0, batch_discount=0.0,
                           usd_per_hour=usd_per_hour, source=source)
        self._hourly[(provider, model)] = price
        return price

    def price(self, provider: str, model: str) -> ModelPrice:
        """The price of `model` at `provider`; ConfigError if the table has none."""
        if (provider, model) in self._hourly:
            return self._hourly[(provider, model)]
        name = self._match(model)
        entry = self._models.get(name) if name is not None else None
        if entry is not None and entry["provider"] not in (None, provider):
            entry = None  # listed under another provider: never guess across providers
        if entry is None and provider == LOCAL_PROVIDER:
            return ModelPrice(
                provider=provider,
                model=model,
                input=0.0,
                output=0.0,
                cached_input=0.0,
                cache_write=0.0,
                batch_discount=0.0,
                usd_per_hour=self.local_usd_per_hour,
                source=self._local_source,
            )
        if entry is None or name is None:
            raise ConfigError(
                f"no price for model '{model}' (provider {provider}); "
                "add it under pricing.models in the pipeline"
            )
        rate_in = entry["input"]
        discount = entry["batch_discount"]
        return ModelPrice(
            provider=provider,
            model=name,
            input=rate_in,
            output=entry["output"],
            cached_input=rate_in if entry["cached_input"] is None else entry["cached_input"],
            cache_write=rate_in if entry["cache_write"] is None else entry["cache_write"],
            batch_discount=self.batch_discount if discount is None else discount,
            source=entry["source"],
        )

    def cost(
        self, price: ModelPrice, usage: Usage, *, batch: bool = False, latency_ms: float = 0.0
    ) -> float:
        """USD for one call: prompt-cache rates applied, batch discount if `batch`.

        Time-priced models cost `latency_ms` of machine time and ignore tokens and `batch`.
        """
        if price.usd_per_hour is not None:
            return latency_ms / MS_PER_HOUR * price.usd_per_hour
        uncached = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
        if uncached < 0:
            raise ValueError(
                f"usage has more cached ({usage.cached_input_tokens}) and cache-write "
                f"({usage.cache_write_tokens}) tokens than input tokens ({usage.input_tokens})"
            )
        total = token_usd(
            uncached,
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            usage.output_tokens,
            price.input,
            price.cached_input,
            price.cache_write,
            price.output,
        )
        return total * (1.0 - price.batch_discount) if batch else total
