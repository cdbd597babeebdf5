"""A self-hosted tier's machine: its GPUs as configured (or as many as the formula needs), read
against the reference data (`batchopt.config.selfhost_reference`), and what an hour of it
costs. The run bills such a tier by machine time at that rate (`tiers.tier_price`); the plan's
what-if (`batchopt.plan.whatif`) shows the same set-up at other precisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from batchopt.config.selfhost_reference import Architecture, Reference, load_reference
from batchopt.ledger.quantise import gpus_needed, kv_cache_gb, weights_gb

if TYPE_CHECKING:
    from batchopt.config.pipeline import ModelConfig
    from batchopt.config.selfhost import SelfHostedTier

__all__ = ["Hardware", "architecture", "profile_hardware", "setup_hourly"]


@dataclass(frozen=True)
class Hardware:
    """A self-hosted tier's set-up as configured, with the reference it is read against."""

    ref: Reference
    gpu: str
    memory_gb: float
    gpu_usd_per_hour: float | None
    gpu_source: str
    kv_gb: float
    kv_formula: str
    count: int
    count_source: str
    notes: list[str] = field(default_factory=list)


def profile_hardware(profile: ModelConfig, name: str) -> Hardware:
    """The set-up of profile `name` (which has a self_hosted block)."""
    sh = profile.self_hosted
    assert sh is not None
    ref = load_reference().overridden(sh.reference.as_dict(),
                                      f"profiles.{name}.self_hosted.reference")
    gpu = ref.gpus.get(sh.gpu.lower()) if sh.gpu else None
    memory = sh.gpu_memory_gb or (gpu.memory_gb if gpu else 0.0)
    arch = architecture(sh, ref, name)
    tokens = (sh.context_tokens or profile.context_tokens or profile.n_ctx) * (
        sh.sequences or profile.concurrency)
    if arch is None:
        kv, kv_text = 0.0, ("KV cache not counted (name self_hosted.architecture, or give "
                            "layers, kv_heads and head_dim)")
    else:
        kv = kv_cache_gb(arch, ref.kv_bytes_per_value, tokens)
        kv_text = (f"KV cache 2 x {arch.layers} layers x {arch.kv_heads} kv_heads x "
                   f"{arch.head_dim} head_dim x {ref.kv_bytes_per_value:g} B x {tokens:,} "
                   f"tokens ({arch.name}) = {kv:.2f} GB")
    weights = weights_gb(sh.parameters_b, ref.precision(sh.precision).bits)
    need = gpus_needed(weights * (1 + ref.overhead_share) + kv, memory)
    notes = []
    if sh.gpu_count is not None and sh.gpu_count < need:
        notes.append(f"by the formula {sh.precision} needs {need} GPUs of {memory:g} GB; the "
                     f"set-up has {sh.gpu_count}")
    return Hardware(
        ref=ref, gpu=sh.gpu or f"{memory:g} GB GPU", memory_gb=memory,
        gpu_usd_per_hour=gpu.usd_per_hour if gpu else None,
        gpu_source=f"{gpu.name}: {gpu.source} (as of {gpu.as_of})" if gpu else "",
        kv_gb=kv, kv_formula=kv_text, count=sh.gpu_count or need,
        count_source="self_hosted.gpu_count" if sh.gpu_count else "what the formula needs",
        notes=notes,
    )


def architecture(sh: SelfHostedTier, ref: Reference, name: str) -> Architecture | None:
    """The model's shape for the KV cache: as given in the block, else the named one."""
    if sh.layers and sh.kv_heads and sh.head_dim:
        return Architecture("as given", sh.layers, sh.kv_heads, sh.head_dim,
                            f"profiles.{name}.self_hosted", "")
    return ref.architectures[sh.architecture.lower()] if sh.architecture else None


def setup_hourly(profile: ModelConfig, name: str) -> tuple[float, str]:
    """(What an hour of profile `name`'s self-hosted set-up costs, where the figure comes
    from): its `self_hosted.usd_per_hour`, else its GPUs at the reference price."""
    sh = profile.self_hosted
    assert sh is not None
    if sh.usd_per_hour is not None:
        return sh.usd_per_hour, f"profiles.{name}.self_hosted.usd_per_hour"
    hw = profile_hardware(profile, name)
    assert hw.gpu_usd_per_hour is not None  # the config refuses a tier with neither
    return (hw.count * hw.gpu_usd_per_hour,
            f"{hw.count} x ${hw.gpu_usd_per_hour:g}/h, reference {hw.gpu_source}")
