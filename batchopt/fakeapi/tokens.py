"""The fake server's own token counting, written from the providers' published rules.

It never uses batchopt's counters: the tests hold batchopt's counts and costs against these.

OpenAI: the model's tiktoken encoding (o200k_base for the gpt-4o, gpt-4.1, gpt-5 and o-series
families, cl100k_base for gpt-4 and gpt-3.5), through `bpe_openai`, a tiktoken-compatible
tokenizer that ships both encodings' files (tiktoken downloads them at first use, which this
offline server cannot). A chat prompt is framed as OpenAI's cookbook counts it ("How to count
tokens with tiktoken"): 3 tokens per message, plus 3 priming the reply.

Anthropic publishes no tokenizer (only a count-tokens endpoint), so Claude models are counted
with o200k_base and the same framing: a stand-in, consistent from call to call.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

MESSAGE_OVERHEAD = 3  # per message: role and framing
REPLY_OVERHEAD = 3  # once per prompt: the assistant reply's priming

_O200K = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_CL100K = ("gpt-4", "gpt-3.5", "text-embedding-ada")
_FINE_TUNED = "ft:"


def encoding_name(model: str) -> str:
    """The encoding the fake counts `model`'s tokens in."""
    name = model.lower()
    if name.startswith(_FINE_TUNED):  # ft:gpt-4o-mini-2024-07-18:org::id counts as its base
        name = name[len(_FINE_TUNED) :]
    if name.startswith(_O200K):
        return "o200k_base"
    if name.startswith(_CL100K):
        return "cl100k_base"
    return "o200k_base"


@lru_cache(maxsize=4)
def encoding(name: str) -> Any:
    """The tiktoken-compatible encoding `name` (loading one takes about a second)."""
    import bpe_openai

    return bpe_openai.get_encoding(name)


def count(text: str, model: str) -> int:
    """Tokens in `text` for `model`, without any framing."""
    if not text:
        return 0
    return len(encoding(encoding_name(model)).encode(text))
