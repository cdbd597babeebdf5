"""The static part of every prompt, laid out so provider prompt caches can serve it.

Prompt caches match on a prompt's leading tokens: OpenAI caches the longest shared prefix of
1024 tokens or more on its own, Anthropic caches up to a `cache_control` breakpoint. So all that
is the same for every row (instructions, shared reference text, few-shot examples) goes into one
system text, in a fixed order and byte-identical from row to row, and the row's own text comes
after it in the user message. A template that puts the row first and the instructions after it
would pay full price for the instructions on every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Example", "static_system"]

CONTEXT_HEADING = "## Reference"
EXAMPLES_HEADING = "## Examples"


class Example(Protocol):
    """A worked example: an input and the answer wanted for it."""

    input: str
    output: str


def static_system(system: str, context: str = "", examples: Sequence[Example] = ()) -> str:
    """System text, then the shared context, then the examples, separated by blank lines.

    Pure and deterministic: the same arguments give the same bytes, so every row of a run (and
    every run of a pipeline) sends the same prefix.
    """
    parts = [system.strip()] if system.strip() else []
    if context.strip():
        parts.append(f"{CONTEXT_HEADING}\n\n{context.strip()}")
    if examples:
        shown = "\n\n".join(
            f"Input:\n{e.input.strip()}\nOutput:\n{e.output.strip()}" for e in examples
        )
        parts.append(f"{EXAMPLES_HEADING}\n\n{shown}")
    return "\n\n".join(parts)
