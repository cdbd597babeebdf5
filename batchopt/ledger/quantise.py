"""Quantisation what-if for a self-hosted model: memory, GPUs, $/hour and $/1M tokens per
precision, and the monthly volume at which an always-on set-up costs what an API would.

The formulas (their inputs come from `selfhost_reference.yaml`, overridable per profile):

    weights GB  = parameters (billions) x bits / 8
    KV cache GB = 2 x layers x kv_heads x head_dim x kv_bytes_per_value x tokens / 1e9
    overhead GB = overhead_share x weights GB
    GPUs        = ceil((weights + KV cache + overhead) / one GPU's memory)
    $/1M input  = $/hour / (prompt tokens/s x 3600) x 1e6   ($/1M output: generated tokens/s)
    break-even  = $/hour x 730 / API $ per request, requests a month, where the API's
                  $ per request = (input_tokens x input_price + output_tokens x output_price) / 1e6

A stage module: it imports only the leaves (errors) and reads its own data file.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from batchopt.errors import ConfigError

__all__ = [
    "HOURS_PER_MONTH", "REFERENCE_FILE", "Architecture", "Gpu", "Precision", "Reference",
    "gpus_needed", "kv_cache_gb", "load_reference", "usd_per_million", "weights_gb",
]

REFERENCE_FILE = Path(__file__).with_name("selfhost_reference.yaml")
HOURS_PER_MONTH = 730.0  # 365 x 24 / 12
_GB = 1e9


@dataclass(frozen=True)
class Precision:
    """A number format for the weights: its effective bits per weight and what is known of it."""

    name: str
    bits: float
    speed_vs_fp16: float | None
    quality: str
    source: str
    as_of: str


@dataclass(frozen=True)
class Gpu:
    """One GPU (or CPU machine) as hired: its memory and hourly price."""

    name: str
    memory_gb: float
    usd_per_hour: float | None
    source: str
    as_of: str


@dataclass(frozen=True)
class Architecture:
    """The shape that sizes a model's KV cache."""

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    source: str
    as_of: str


@dataclass(frozen=True)
class Reference:
    """The reference figures, each with its source and as-of date."""

    as_of: str
    overhead_share: float
    overhead_source: str
    kv_bytes_per_value: float
    kv_source: str
    scale_throughput: bool
    precisions: dict[str, Precision]
    gpus: dict[str, Gpu]
    architectures: dict[str, Architecture]
    table: tuple[str, ...]
    where: str  # the file, and "+ profiles.<name>.self_hosted.reference" when overridden

    def precision(self, name: str) -> Precision:
        found = self.precisions.get(name.lower())
        if found is None:
            raise ConfigError(f"{self.where}: precision '{name}' is not in the reference data "
                              f"(known: {', '.join(sorted(self.precisions))})")
        return found

    def overridden(self, overrides: dict[str, Any], where: str) -> Reference:
        """This reference with `overrides` (a profile's `self_hosted.reference`, None-free)
        applied: an entry replaces the fields it gives and keeps the rest."""
        if not overrides:
            return self
        changes: dict[str, Any] = {"where": f"{self.where} + {where}"}
        if "scale_throughput" in overrides:
            changes["scale_throughput"] = bool(overrides["scale_throughput"])
        if "overhead_share" in overrides:
            changes["overhead_share"] = float(overrides["overhead_share"])
            changes["overhead_source"] = f"{where}.overhead_share"
        if "kv_bytes_per_value" in overrides:
            changes["kv_bytes_per_value"] = float(overrides["kv_bytes_per_value"])
            changes["kv_source"] = f"{where}.kv_bytes_per_value"
        for key, kind in (("precisions", Precision), ("gpus", Gpu),
                          ("architectures", Architecture)):
            merged = dict(getattr(self, key))
            for name, entry in (overrides.get(key) or {}).items():
                name = str(name).lower()
                base = merged.get(name)
                fields = {"source": f"{where}.{key}.{name}", "as_of": "set in the pipeline",
                          **entry}
                merged[name] = replace(base, **fields) if base else _build(
                    kind, name, fields, f"{where}.{key}.{name}")
            changes[key] = merged
        return replace(self, **changes)


def weights_gb(parameters_b: float, bits: float) -> float:
    """Memory of the weights: parameters x bits / 8 bytes (7B at 16 bits: 14 GB)."""
    return parameters_b * bits / 8.0


def kv_cache_gb(arch: Architecture, bytes_per_value: float, tokens: int) -> float:
    """Memory of the KV cache holding `tokens` tokens (every sequence held at once): a key and
    a value vector per layer and key-value head for each token."""
    per_token = 2 * arch.layers * arch.kv_heads * arch.head_dim * bytes_per_value
    return per_token * tokens / _GB


def gpus_needed(total_gb: float, memory_gb: float) -> int:
    """GPUs of `memory_gb` each that hold `total_gb` (at least one)."""
    return max(1, math.ceil(total_gb / memory_gb - 1e-9))


def usd_per_million(usd_per_hour: float, tokens_per_s: float) -> float:
    """Dollars per million tokens at `tokens_per_s`, the set-up busy the whole hour."""
    return usd_per_hour / (tokens_per_s * 3600.0) * 1e6


def load_reference(path: Path | None = None) -> Reference:
    """The reference file (default: the shipped `selfhost_reference.yaml`)."""
    return _load(path or REFERENCE_FILE)


@lru_cache(maxsize=4)
def _load(path: Path) -> Reference:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read reference file ({exc})") from exc
    where = str(path)
    try:
        overhead, kv = raw["overhead_share"], raw["kv_bytes_per_value"]
        ref = Reference(
            as_of=_date(raw["as_of"]),
            overhead_share=float(overhead["value"]), overhead_source=str(overhead["source"]),
            kv_bytes_per_value=float(kv["value"]), kv_source=str(kv["source"]),
            scale_throughput=bool(raw.get("scale_throughput", False)),
            precisions={str(n): _build(Precision, str(n), e, f"{where}: precisions.{n}")
                        for n, e in raw["precisions"].items()},
            gpus={str(n): _build(Gpu, str(n), e, f"{where}: gpus.{n}")
                  for n, e in raw["gpus"].items()},
            architectures={str(n): _build(Architecture, str(n), e, f"{where}: architectures.{n}")
                           for n, e in (raw.get("architectures") or {}).items()},
            table=tuple(str(p) for p in raw.get("table") or ()),
            where=where,
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: {exc.args[0]}: required key is missing") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = [p for p in ref.table if p not in ref.precisions]
    if unknown:
        raise ConfigError(f"{where}: table: unknown precision(s) {', '.join(unknown)}")
    return ref


_FIELDS: dict[type, dict[str, Any]] = {
    Precision: {"bits": float, "speed_vs_fp16": float, "quality": str},
    Gpu: {"memory_gb": float, "usd_per_hour": float},
    Architecture: {"layers": int, "kv_heads": int, "head_dim": int},
}
_OPTIONAL = {"speed_vs_fp16", "usd_per_hour", "quality"}


def _build(kind: type, name: str, entry: Any, where: str) -> Any:
    """One reference entry, every figure checked; `source` and `as_of` are required."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping")
    values: dict[str, Any] = {"name": name}
    for key, cast in {**_FIELDS[kind], "source": str, "as_of": _date}.items():
        value = entry.get(key)
        if value is None:
            if key not in _OPTIONAL:
                raise ConfigError(f"{where}.{key}: required key is missing")
            values[key] = "" if cast is str else None
            continue
        if cast in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)
                                     or value <= 0):
            raise ConfigError(f"{where}.{key}: expected a number above 0, got {value!r}")
        values[key] = cast(value)
    return kind(**values)


def _date(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)
