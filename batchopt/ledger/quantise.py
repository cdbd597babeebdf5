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

A stage module: the reference figures are `batchopt.config.selfhost_reference`'s (pipeline
validation checks names against them).
"""

from __future__ import annotations

import math

from batchopt.config.selfhost_reference import Architecture

__all__ = ["HOURS_PER_MONTH", "gpus_needed", "kv_cache_gb", "usd_per_million", "weights_gb"]

HOURS_PER_MONTH = 730.0  # 365 x 24 / 12
_GB = 1e9


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
