"""What a fine-tuned model's tokens cost when the pipeline does not price it.

OpenAI bills a fine-tuned model's tokens above its base model's. The factors below were
transcribed from OpenAI's pricing page and not re-verified online (prices change; pin the real
figure under the pipeline's `pricing.models`): gpt-4o-mini fine-tuned $0.30 / $1.20 per 1M
tokens (2x its base), gpt-4o-2024-08-06 $3.75 / $15.00 (1.5x), gpt-4.1 $3.00 / $12.00 (1.5x),
gpt-4.1-mini $0.80 / $3.20 (2x), gpt-4.1-nano $0.20 / $0.80 (2x). Other bases are assumed at
2x.
"""

from __future__ import annotations

from typing import Any

from batchopt.errors import ConfigError
from batchopt.ledger.pricing import PriceTable

FACTORS = {"gpt-4o-mini": 2.0, "gpt-4o": 1.5, "gpt-4.1": 1.5, "gpt-4.1-mini": 2.0,
           "gpt-4.1-nano": 2.0}
DEFAULT_FACTOR = 2.0


def fine_tuned_base(model: str) -> str | None:
    """The base of a fine-tuned model name (`ft:<base>:<org>:<suffix>:<id>`), else None."""
    if not model.startswith("ft:"):
        return None
    return model.split(":")[1] or None


def assumed_price(prices: PriceTable, provider: str, model: str) -> dict[str, Any]:
    """A `pricing.models` entry for fine-tuned `model`: its base's price times the factor."""
    base = fine_tuned_base(model)
    if base is None:
        raise ConfigError(f"no price for model '{model}'; add it under pricing.models")
    price = prices.price(provider, base)
    factor = FACTORS.get(price.model, DEFAULT_FACTOR)
    return {"input": price.input * factor, "output": price.output * factor,
            "cached_input": price.cached_input * factor}


def with_fine_tuned(prices: PriceTable, overrides: dict[str, dict[str, Any]], provider: str,
                    model: str) -> tuple[PriceTable, str | None]:
    """(`prices`, or a table that also prices fine-tuned `model` when `prices` cannot, a note
    saying what was assumed or None)."""
    try:
        prices.price(provider, model)
        return prices, None
    except ConfigError:
        if fine_tuned_base(model) is None:
            raise
    entry = assumed_price(prices, provider, model)
    table = PriceTable.load(overrides={**overrides, model: entry},
                            local_usd_per_hour=prices.local_usd_per_hour)
    note = (f"{model} is priced at ${entry['input']:.4g} / ${entry['output']:.4g} per 1M "
            f"input / output tokens, assumed from its base (not in the price table; pin it "
            "under pricing.models)")
    return table, note
