"""The chat framing a provider bills on top of a prompt's text, so offline counts match the bill.

OpenAI's chat models bill each message's text plus 3 tokens for its role and separators, and 3
more priming the reply (the OpenAI cookbook's rule for gpt-4o and gpt-3.5/4). The Anthropic
Messages API frames its messages likewise; batchopt asks Anthropic for JSON through the system
prompt (`anthropic.schema_instruction`), so those tokens are billed as system text. A local
model's chat template is counted by its own run (billed by time, not by token): no framing here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MESSAGE_TOKENS", "REPLY_TOKENS", "framing_tokens", "sent_system"]

MESSAGE_TOKENS = 3  # per message: role and separators
REPLY_TOKENS = 3  # once: the assistant reply's priming
_FRAMED = ("openai", "anthropic")


def sent_system(provider: str, system: str, json_schema: dict[str, Any] | None) -> str:
    """The system text `provider` is sent for a request of `system` and `json_schema`."""
    if provider == "anthropic" and json_schema is not None:
        from batchopt.providers.anthropic import schema_instruction

        instruction = schema_instruction(json_schema)
        return f"{system}\n\n{instruction}" if system else instruction
    return system


def framing_tokens(provider: str, system: str) -> int:
    """Tokens `provider` bills for framing a system message (if `system` is not empty) and one
    user message, beyond their text."""
    if provider not in _FRAMED:
        return 0
    messages = 2 if system else 1
    return messages * MESSAGE_TOKENS + REPLY_TOKENS
