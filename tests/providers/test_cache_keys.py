"""Cache and dedup keys: equal values hash equally whatever their order, a request carries the
parameters and the prompt count its spec and counter give (issue 20, acceptance 5: what the
mutation run found unpinned)."""

from __future__ import annotations

import hashlib

import polars as pl
import pytest

from batchopt.hashing import keyed_by_last_field, stable_hash
from batchopt.prompts.requests import CallSpec, build_requests
from batchopt.providers.anthropic import schema_instruction
from batchopt.providers.framing import MESSAGE_TOKENS, REPLY_TOKENS
from batchopt.providers.registry import traits_of
from batchopt.providers.token_counting import counter_for
from batchopt.tokens import TokenCounter


def test_equal_mappings_hash_equally_in_any_order() -> None:
    a = {"model": "gpt-4o", "params": {"top_p": 0.9, "seed": 1}, "max_tokens": 32}
    b = {"max_tokens": 32, "params": {"seed": 1, "top_p": 0.9}, "model": "gpt-4o"}
    assert stable_hash(a) == stable_hash(b)
    assert stable_hash(a) != stable_hash({**a, "max_tokens": 33})


def test_a_str_is_hashed_as_is_not_as_json() -> None:
    text = 'refund "#1"'
    assert stable_hash(text) == hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    assert stable_hash(text) != stable_hash([text])
    assert len(stable_hash(text, 8)) == 8


@pytest.mark.parametrize("fields", [{}, {"model": "gpt-4o"}, {"a": 1, "model": "m", "p": [1]}])
def test_keyed_by_last_field_is_the_stable_hash_of_the_whole_mapping(fields: dict) -> None:
    key = keyed_by_last_field(fields, "user")
    for value in ("", "refund #1", "naïve 日本"):
        assert key(value) == stable_hash({**fields, "user": value})


@pytest.mark.parametrize("fields", [{"user": 1}, {"zzz": 1}])
def test_the_last_field_must_sort_after_every_other(fields: dict) -> None:
    with pytest.raises(ValueError):
        keyed_by_last_field(fields, "user")


def _rows() -> pl.DataFrame:
    return pl.DataFrame({"group_id": ["g1"], "dedup": ["none"], "prompt_user": ["refund #1"]})


def _spec(**changes: object) -> CallSpec:
    base = {"provider": "openai", "model": "gpt-4o-mini", "endpoint": "http://127.0.0.1:1/v1",
            "system": "Summarise.", "max_tokens": 32}
    fields = {**base, **changes}
    counter = counter_for(str(fields["provider"]), str(fields["model"]))
    return CallSpec(**fields, counter=counter)  # type: ignore[arg-type]


def _chars(provider: str) -> TokenCounter:
    """A counter of characters, with `provider`'s framing (as `counter_for` gives it)."""
    return TokenCounter(name="chars", exact=False, factor=1.0, tokens=len,
                        framing=traits_of(provider, "gpt-4o-mini").framing)


def test_a_request_carries_its_spec_parameters() -> None:
    request = build_requests(_rows(), _spec(temperature=0.7, params={"seed": 3}))["g1"]
    assert (request.temperature, request.params, request.max_tokens) == (0.7, {"seed": 3}, 32)


def test_prompt_tokens_are_counted_by_the_counter_given() -> None:
    request = build_requests(_rows(), _spec(), counter=_chars("openai"))["g1"]
    # the counter counts the texts; the provider's chat framing (two messages and the reply's
    # priming, as billed) comes on top
    framing = 2 * MESSAGE_TOKENS + REPLY_TOKENS
    assert request.estimated_input_tokens == len("Summarise.") + len("refund #1") + framing
    assert request.token_counter == "chars"


def test_an_anthropic_schema_instruction_is_counted_as_system_text() -> None:
    """batchopt asks Anthropic for JSON through the system prompt: its tokens are billed."""
    schema = {"type": "object", "properties": {"label": {"type": "string"}}}
    spec = _spec(provider="anthropic", json_schema=schema)
    request = build_requests(_rows(), spec, counter=_chars("anthropic"))["g1"]
    sent = f"Summarise.\n\n{schema_instruction(schema)}"  # the system text the payload carries
    framing = 2 * MESSAGE_TOKENS + REPLY_TOKENS
    assert request.estimated_input_tokens == len(sent) + len("refund #1") + framing
