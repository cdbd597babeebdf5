"""The chat framing a provider bills on top of a prompt's text, so offline counts match the bill.

OpenAI's chat models bill each message's text plus 3 tokens for its role and separators, and 3
more priming the reply (the OpenAI cookbook's rule for gpt-4o and gpt-3.5/4). The Anthropic
Messages API frames its messages likewise; batchopt asks Anthropic for JSON through the system
prompt (`anthropic.schema_instruction`), so those tokens are billed as system text (its
`ProviderTraits.framing` adds the instruction). A local model's chat template is counted by its
own run (billed by time, not by token): no framing (`ChatFraming()`).
"""

from __future__ import annotations

from batchopt.tokens import ChatFraming

__all__ = ["CHAT_FRAMING", "MESSAGE_TOKENS", "REPLY_TOKENS"]

MESSAGE_TOKENS = 3  # per message: role and separators
REPLY_TOKENS = 3  # once: the assistant reply's priming
CHAT_FRAMING = ChatFraming(MESSAGE_TOKENS, REPLY_TOKENS)
