"""Without history, a structured answer is expected at its schema's shape, not at max_tokens.

max_tokens only bounds an answer: priced at it, the plan of a JSON extraction came out at 1.77x
its bill (max_tokens 80 against answers of ~35 tokens)."""

from __future__ import annotations

import json

from batchopt.ledger.history import History
from batchopt.records import Request
from batchopt.run.cost import expected_output, schema_answer_tokens
from batchopt.tokens import count_tokens

SCHEMA = {"type": "object", "properties": {
    "order_id": {"type": "string"},
    "amount": {"type": ["number", "null"]},
    "action": {"type": "string", "enum": ["refund", "address_change"]},
    "tags": {"type": "array", "items": {"type": "string", "enum": ["late", "damaged"]}},
    "urgent": {"type": "boolean"},
}}


def _request(schema: dict | None, max_tokens: int = 200) -> Request:
    return Request(key="k", provider="openai", model="gpt-4o-mini", system="", user="u",
                   max_tokens=max_tokens, json_schema=schema)


def test_a_structured_answer_is_expected_at_its_schemas_shape() -> None:
    typical = {"order_id": "a few words here", "amount": 1234.56, "action": "address_change",
               "tags": ["damaged"], "urgent": False}
    tokens = count_tokens(json.dumps(typical), "gpt-4o-mini")
    assert schema_answer_tokens(SCHEMA, "gpt-4o-mini") == tokens
    assert expected_output(History.empty(), _request(SCHEMA)) == (
        tokens, "an answer of the schema's shape (no past run)")


def test_max_tokens_still_bounds_it_and_free_text_keeps_it() -> None:
    assert expected_output(History.empty(), _request(SCHEMA, max_tokens=5)) == (5, "max_tokens")
    assert expected_output(History.empty(), _request(None)) == (200, "max_tokens")


def test_history_comes_first() -> None:
    history = History({("openai", "gpt-4o-mini"): (21.4, 30)}, {}, None)
    assert expected_output(history, _request(SCHEMA)) == (21, "mean of 30 past answers")
