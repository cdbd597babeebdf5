"""Offline token counting.

OpenAI's encodings come from the `bpe-openai` package, which ships the o200k_base and
cl100k_base files (tiktoken itself downloads them at first use, which fails offline). Other
models get the closest available encoding and are reported as an estimate.

`count_tokens` is for callers that just need a count; `services.token_counters` has counters
that say what they are (provider-exact or a calibrated estimate), for requests and the ledger.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

_CL100K_PREFIXES = ("gpt-4-", "gpt-3.5", "text-embedding-ada", "gpt-4")
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")


def encoding_name_for(model: str) -> str:
    """The encoding used to count `model`'s tokens (exact for OpenAI models, else an estimate)."""
    lowered = model.lower()
    if lowered.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if lowered.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


def is_exact_for(model: str) -> bool:
    """Whether `count_tokens` is the provider's own count for `model`."""
    return model.lower().startswith(_O200K_PREFIXES + _CL100K_PREFIXES)


@lru_cache(maxsize=4)
def _encoding(name: str) -> Any:
    import bpe_openai  # deferred: loading an encoding takes about a second

    return bpe_openai.get_encoding(name)


def count_in_encoding(text: str, encoding: str) -> int:
    """Tokens in `text` under a bpe-openai encoding by name (o200k_base, cl100k_base)."""
    if not text:
        return 0
    return len(_encoding(encoding).encode(text))


def count_tokens(text: str, model: str = "gpt-4o") -> int:
    """Tokens in `text` under `model`'s encoding (see `is_exact_for`)."""
    return count_in_encoding(text, encoding_name_for(model))
