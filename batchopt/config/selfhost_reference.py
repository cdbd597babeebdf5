"""The reference figures for self-hosted tiers (`selfhost_reference.yaml`): precisions, GPUs and
model shapes, each with its source and as-of date. Pipeline validation checks names against
them; the quantisation what-if (`batchopt.ledger.quantise`) computes with them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from batchopt.errors import ConfigError

__all__ = ["REFERENCE_FILE", "Architecture", "Gpu", "Precision", "Reference", "load_reference"]

REFERENCE_FILE = Path(__file__).with_name("selfhost_reference.yaml")


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
