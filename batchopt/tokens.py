"""Offline token counting, and the counters that say what they are.

OpenAI's encodings come from the `bpe-openai` package, which ships the o200k_base and
cl100k_base files (tiktoken itself downloads them at first use, which fails offline). Other
models get the closest available encoding and are reported as an estimate.

`count_tokens` is for callers that just need a count. A `TokenCounter` says what it is
(provider-exact or a calibrated estimate, by `name`) and carries the provider's `ChatFraming`;
`providers.token_counting.counter_for` picks the one a provider's model gets, and requests and
the ledger are counted with it (`static_prompt_tokens` plus each user message).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

ESTIMATE_ENCODING = "o200k_base"  # what a model without an exact counter is counted with
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


@dataclass(frozen=True)
class ChatFraming:
    """What a provider bills around a request's text: tokens per message (role markers and
    separators), once for the reply's priming, and, where it is asked for JSON through the
    system prompt, the instruction added to it. The default frames nothing (a local model's
    own chat template is billed by time, not by token)."""

    message_tokens: int = 0
    reply_tokens: int = 0
    schema_instruction: Callable[[dict[str, Any]], str] | None = field(
        default=None, compare=False)

    def sent_system(self, system: str, json_schema: dict[str, Any] | None) -> str:
        """The system text sent for a request of `system` and `json_schema`."""
        if self.schema_instruction is None or json_schema is None:
            return system
        instruction = self.schema_instruction(json_schema)
        return f"{system}\n\n{instruction}" if system else instruction

    def tokens(self, system: str) -> int:
        """Tokens billed for framing a system message (if `system` is not empty) and one user
        message, beyond their text."""
        messages = 2 if system else 1
        return messages * self.message_tokens + self.reply_tokens


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens of raw text; `name` says how: `exact:<encoding>` (a provider's own
    tokenizer), `estimate:o200k_base`, optionally ` x<factor> (calibrated on N rows)`.
    `framing` is what the provider the counter was made for bills around the text."""

    name: str
    exact: bool
    factor: float
    tokens: Callable[[str], int] = field(repr=False, compare=False)
    framing: ChatFraming = field(default=ChatFraming(), repr=False, compare=False)

    def count(self, text: str) -> int:
        """Tokens in `text`: the tokenizer's count times `factor`, rounded."""
        if not text:
            return 0
        n = self.tokens(text)
        return n if self.factor == 1.0 else round(n * self.factor)


@dataclass(frozen=True)
class Calibration:
    """What past runs billed for one (provider, model) per o200k token of their prompts."""

    factor: float  # billed input tokens / o200k tokens of system + user text
    rows: int
    input_tokens: int
    counted_tokens: float


def static_prompt_tokens(counter: TokenCounter, system: str,
                         json_schema: dict[str, Any] | None = None) -> int:
    """Tokens a request's static part is billed: its system text as sent (with a schema
    instruction where the provider asks for JSON that way) plus the chat framing of its
    messages (`counter.framing`). Add `counter.count(user)` for the whole prompt."""
    sent = counter.framing.sent_system(system, json_schema)
    return counter.count(sent) + counter.framing.tokens(sent)
