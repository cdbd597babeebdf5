"""A profile's `self_hosted:` block: the model, its size and precision, the hardware it runs on
and what an hour of it costs, so the tier is costed from time and throughput, not per token.

    profiles:
      vllm_8b:
        provider: openai
        base_url: http://gpu-box:8000/v1
        model: meta-llama/Llama-3.1-8B-Instruct
        self_hosted:
          parameters_b: 8
          precision: int4
          gpu: l4-24gb
          gpu_count: 1
          usd_per_hour: 0.80
          architecture: llama-3.1-8b
          throughput: {prompt_tokens_per_s: 4000, generated_tokens_per_s: 600}

Names of GPUs, precisions and architectures come from `batchopt/config/selfhost_reference.yaml`;
`reference:` adds or replaces entries of it for this profile.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from batchopt.config.selfhost_reference import load_reference
from batchopt.config.strict import StrictModel

__all__ = ["PRECISIONS", "SelfHostedField", "SelfHostedTier", "ThroughputConfig"]

# Every precision the shipped reference data gives bits for (a test keeps the two in step).
PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8", "int4", "q8_0", "q6_k", "q5_k_m", "q5_0",
              "q4_k_m", "q4_1", "q4_0", "q3_k_m", "q2_k")


class ThroughputConfig(StrictModel):
    """Throughput you measured elsewhere (a load test of your server), aggregate over the
    requests the server runs at once."""

    prompt_tokens_per_s: float = Field(gt=0, description="Prompt tokens read per second")
    generated_tokens_per_s: float = Field(gt=0, description="Answer tokens written per second")
    source: str = Field(default="", description="Where the figures come from")


class PrecisionOverride(StrictModel):
    """A precision's reference figures, replaced for this profile."""

    bits: float | None = Field(default=None, gt=0, le=32, description="Bits per weight")
    speed_vs_fp16: float | None = Field(default=None, gt=0)
    quality: str | None = None
    source: str | None = None
    as_of: str | None = None


class GpuOverride(StrictModel):
    """A GPU's (or machine's) reference figures, replaced or added for this profile."""

    memory_gb: float | None = Field(default=None, gt=0)
    usd_per_hour: float | None = Field(default=None, ge=0)
    source: str | None = None
    as_of: str | None = None


class ArchitectureOverride(StrictModel):
    """A model shape for the KV cache, replaced or added for this profile."""

    layers: int | None = Field(default=None, gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    head_dim: int | None = Field(default=None, gt=0)
    source: str | None = None
    as_of: str | None = None


class ReferenceOverrides(StrictModel):
    """Entries that replace or extend the shipped reference data for this profile."""

    precisions: dict[str, PrecisionOverride] = Field(default_factory=dict)
    gpus: dict[str, GpuOverride] = Field(default_factory=dict)
    architectures: dict[str, ArchitectureOverride] = Field(default_factory=dict)
    overhead_share: float | None = Field(default=None, ge=0, le=5)
    kv_bytes_per_value: float | None = Field(default=None, gt=0, le=4)
    scale_throughput: bool | None = Field(
        default=None, description="Scale throughput to other precisions by speed_vs_fp16")

    def as_dict(self) -> dict[str, Any]:
        """The overrides as plain data, unset fields and empty sections left out."""
        return {k: v for k, v in self.model_dump(exclude_none=True).items() if v != {}}


class SelfHostedTier(StrictModel):
    """What a self-hosted tier runs and on what: for costing from $/hour and throughput, and
    for the plan's quantisation what-if table."""

    parameters_b: float = Field(gt=0, description="The model's parameters, in billions")
    precision: str = Field(
        description=f"The weights' precision or GGUF type: {', '.join(PRECISIONS)}")
    gpu: str | None = Field(
        default=None, description="A GPU (or CPU machine) named in the reference data, e.g. "
        "l4-24gb, a100-80gb, cpu-2core")
    gpu_count: int | None = Field(
        default=None, ge=1, description="GPUs the set-up has (default: what the formula needs)")
    gpu_memory_gb: float | None = Field(
        default=None, gt=0, description="One GPU's memory (default: the reference's for `gpu`)")
    usd_per_hour: float | None = Field(
        default=None, ge=0, description="openai tiers: what an hour of the whole set-up costs "
        "(default: the reference price of `gpu` x gpu_count); local tiers use the profile's")
    throughput: ThroughputConfig | None = Field(
        default=None, description="Stated throughput; a `batchopt bench-tier` record wins")
    architecture: str | None = Field(
        default=None, description="A model shape in the reference data, for the KV cache")
    layers: int | None = Field(default=None, gt=0, description="KV cache: transformer layers")
    kv_heads: int | None = Field(default=None, gt=0, description="KV cache: key-value heads")
    head_dim: int | None = Field(default=None, gt=0, description="KV cache: size of one head")
    context_tokens: int | None = Field(
        default=None, gt=0, description="KV cache: tokens per sequence (default: the profile's "
        "context_tokens, else n_ctx)")
    sequences: int | None = Field(
        default=None, gt=0, description="KV cache: sequences held at once (default: the "
        "profile's concurrency)")
    reference: ReferenceOverrides = Field(
        default_factory=ReferenceOverrides,
        description="Reference figures replaced or added for this profile")

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        name = value.strip().lower()
        if name not in PRECISIONS:
            raise ValueError(f"'{value}' is not a known precision (one of {', '.join(PRECISIONS)})")
        return name

    @model_validator(mode="after")
    def _shape_and_hardware(self) -> SelfHostedTier:
        given = [k for k in ("layers", "kv_heads", "head_dim") if getattr(self, k) is not None]
        if given and len(given) < 3:
            missing = sorted({"layers", "kv_heads", "head_dim"} - set(given))
            raise ValueError(f"{', '.join(missing)}: give layers, kv_heads and head_dim together")
        if given and self.architecture is not None:
            raise ValueError("architecture: give an architecture or layers/kv_heads/head_dim, "
                             "not both")
        if self.gpu is None and self.gpu_memory_gb is None:
            raise ValueError("gpu: give a gpu from the reference data or gpu_memory_gb")
        _check_names(self)
        return self


def _check_names(tier: SelfHostedTier) -> None:
    """The named GPU and architecture exist in the reference data or this tier's overrides."""
    ref = load_reference()
    gpus = {k.lower(): v for k, v in tier.reference.gpus.items()}
    architectures = {k.lower() for k in tier.reference.architectures}
    if tier.gpu is not None:
        gpu = tier.gpu.lower()
        if gpu not in ref.gpus and gpu not in gpus:
            raise ValueError(f"gpu: '{tier.gpu}' is not in the reference data (known: "
                             f"{', '.join(sorted(ref.gpus))}); add it under reference.gpus "
                             "or give gpu_memory_gb")
        memory = gpus[gpu].memory_gb if gpu in gpus else None
        if gpu not in ref.gpus and memory is None and tier.gpu_memory_gb is None:
            raise ValueError(f"reference.gpus.{tier.gpu}.memory_gb: required for a new gpu")
    if tier.architecture is not None:
        arch = tier.architecture.lower()
        if arch not in ref.architectures and arch not in architectures:
            raise ValueError(f"architecture: '{tier.architecture}' is not in the reference data "
                             f"(known: {', '.join(sorted(ref.architectures))}); add it under "
                             "reference.architectures or give layers, kv_heads and head_dim")


def _fits_profile(value: SelfHostedTier | None, info: ValidationInfo) -> SelfHostedTier | None:
    """A self-hosted block belongs to an OpenAI-compatible server (provider openai with a
    base_url) or to the in-process llama.cpp tier, whose hourly price is the profile's own."""
    if value is None:
        return None
    provider = info.data.get("provider")
    if provider == "anthropic":
        raise ValueError("only for provider 'openai' (an OpenAI-compatible server with a "
                         "base_url) or 'local'")
    if provider == "openai" and not info.data.get("base_url"):
        raise ValueError("provider 'openai' needs base_url: the self-hosted server's address")
    if provider == "local" and value.usd_per_hour is not None:
        raise ValueError("usd_per_hour: a local tier's hourly price is the profile's "
                         "usd_per_hour (what the ledger charges); set it there")
    if provider == "openai" and value.usd_per_hour is None and _gpu_price(value) is None:
        raise ValueError(f"usd_per_hour: required, the reference data has no price for gpu "
                         f"'{value.gpu or '(none)'}'")
    return value


def _gpu_price(tier: SelfHostedTier) -> float | None:
    """The hourly price of one of the tier's GPUs in the reference data (overrides first)."""
    if tier.gpu is None:
        return None
    name = tier.gpu.lower()
    override = {k.lower(): v for k, v in tier.reference.gpus.items()}.get(name)
    if override is not None and override.usd_per_hour is not None:
        return override.usd_per_hour
    known = load_reference().gpus.get(name)
    return known.usd_per_hour if known is not None else None


SelfHostedField = Annotated[SelfHostedTier | None, AfterValidator(_fits_profile)]
