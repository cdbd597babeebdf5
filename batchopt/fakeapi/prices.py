"""The fake server's own price list: what it bills each paid call, independent of batchopt's.

USD per 1M tokens, the list prices on the providers' published pricing pages (OpenAI:
openai.com/api/pricing, "Standard" tier; Anthropic: docs.anthropic.com "Pricing", the model
table with its prompt-caching columns), for the models the tests and sample pipelines use.
Written 2026-12-07 from the pages as last read (this machine cannot reach them to re-check);
typed in here on their own, not copied from batchopt's prices.yaml. Anthropic's cache write is
the 5-minute one (1.25x input; the fake bills 1-hour writes at the same rate, a
simplification); OpenAI bills no cache writes. Both batch APIs cost
half the online price of every kind of token (Anthropic: the batch discount stacks with the
prompt-caching multipliers), so `batch` is the share of the online price a batch row pays.

A dated snapshot (`gpt-4o-2024-08-06`, `claude-3-5-haiku-20241022`) or a `-latest` alias is
priced as its base model; any other name (a fine-tuned `ft:` model, a made-up one) has no
price: its calls are billed tokens with `cost_usd` None and listed as `unpriced` in the bill.
A test can bill at other rates (a negotiated contract) with `FakePrices.with_overrides`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

PER_TOKENS = 1_000_000.0
BATCH_SHARE = 0.5  # the batch APIs of both providers: 50% of the online price


@dataclass(frozen=True)
class Rates:
    """One model's prices in USD per 1M tokens; `batch` is the share of them a batch row pays."""

    input: float
    cached_input: float
    cache_write: float
    output: float
    batch: float = BATCH_SHARE


def _openai(input: float, cached: float, output: float) -> Rates:
    # input, cached input, output
    return Rates(input=input, cached_input=cached, cache_write=input, output=output)


def _anthropic(input: float, write: float, read: float, output: float) -> Rates:
    return Rates(input=input, cached_input=read, cache_write=write, output=output)


PRICES: dict[str, Rates] = {
    "gpt-4o": _openai(2.50, 1.25, 10.00),
    "gpt-4o-mini": _openai(0.15, 0.075, 0.60),
    "gpt-4.1": _openai(2.00, 0.50, 8.00),
    "gpt-4.1-mini": _openai(0.40, 0.10, 1.60),
    "gpt-4.1-nano": _openai(0.10, 0.025, 0.40),
    "gpt-5": _openai(1.25, 0.125, 10.00),
    "gpt-5-mini": _openai(0.25, 0.025, 2.00),
    "gpt-5-nano": _openai(0.05, 0.005, 0.40),
    # input, 5-minute cache write, cache read, output
    "claude-3-haiku": _anthropic(0.25, 0.30, 0.03, 1.25),
    "claude-3-5-haiku": _anthropic(0.80, 1.00, 0.08, 4.00),
    "claude-3-5-sonnet": _anthropic(3.00, 3.75, 0.30, 15.00),
    "claude-haiku-4-5": _anthropic(1.00, 1.25, 0.10, 5.00),
    "claude-sonnet-4-5": _anthropic(3.00, 3.75, 0.30, 15.00),
    "claude-opus-4-1": _anthropic(15.00, 18.75, 1.50, 75.00),
}
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
_RATE_NAMES = {f.name for f in fields(Rates)}


class FakePrices:
    """A price list: the published one, or that with some models' rates overridden."""

    def __init__(self, table: dict[str, Rates] | None = None) -> None:
        self.table = dict(PRICES if table is None else table)

    def rates(self, model: str) -> Rates | None:
        """`model`'s rates (a snapshot's are its base model's); None if it has no price."""
        found = self.table.get(model)
        if found is None:
            found = self.table.get(_SNAPSHOT.sub("", model))
        return found

    def cost(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        *,
        batch: bool = False,
    ) -> float | None:
        """USD for one paid call; `input_tokens` is the whole prompt, cache reads and writes
        included. None if `model` has no price."""
        r = self.rates(model)
        if r is None:
            return None
        plain = input_tokens - cache_read_tokens - cache_write_tokens
        usd = (
            plain * r.input
            + cache_read_tokens * r.cached_input
            + cache_write_tokens * r.cache_write
            + output_tokens * r.output
        ) / PER_TOKENS
        return usd * r.batch if batch else usd

    def with_overrides(self, spec: Any) -> FakePrices:
        """This list with `spec` = {model: {rate name: USD per 1M tokens, "batch": share}} laid
        over it (a model not listed yet needs all four token rates); ValueError if malformed."""
        if not isinstance(spec, dict):
            raise ValueError("prices: must be an object of model -> rates")
        table = dict(self.table)
        for model, given in spec.items():
            if not isinstance(given, dict) or not given:
                raise ValueError(f"prices.{model}: must be a non-empty object of rates")
            unknown = set(given) - _RATE_NAMES
            if unknown:
                raise ValueError(f"prices.{model}: unknown rate(s) {sorted(unknown)}")
            for name, value in given.items():
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"prices.{model}.{name}: must be a number >= 0")
            if given.get("batch", 0) > 1:
                raise ValueError(f"prices.{model}.batch: a share of the online price, <= 1")
            base = self.rates(str(model))
            if base is None:
                missing = {"input", "cached_input", "cache_write", "output"} - set(given)
                if missing:
                    raise ValueError(f"prices.{model}: a new model needs {sorted(missing)}")
                base = Rates(0.0, 0.0, 0.0, 0.0)
            table[str(model)] = replace(base, **{k: float(v) for k, v in given.items()})
        return FakePrices(table)
