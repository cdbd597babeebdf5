from __future__ import annotations

import polars as pl
import pytest

from batchopt.prompts.requests import CallSpec, build_requests
from batchopt.providers.token_counting import counter_for


def _rows() -> pl.DataFrame:
    return pl.DataFrame({
        "group_id": ["g1", "g1", "g2"], "dedup": ["none", "exact", "none"],
        "prompt_user": ["refund #1", "refund  #1", "refund #2"],
    })


def _spec(**changes: object) -> CallSpec:
    base = {"provider": "openai", "model": "gpt-4o-mini", "endpoint": "http://127.0.0.1:1/v1",
            "system": "Summarise.", "max_tokens": 32}
    fields = {**base, **changes}
    counter = counter_for(str(fields["provider"]), str(fields["model"]))
    return CallSpec(**fields, counter=counter)  # type: ignore[arg-type]


def test_one_request_per_group_from_its_representative() -> None:
    requests = build_requests(_rows(), _spec())
    assert sorted(requests) == ["g1", "g2"]
    assert requests["g1"].user == "refund #1"
    assert requests["g1"].key != requests["g2"].key
    assert requests["g1"].estimated_input_tokens > 0


def test_requests_are_counted_by_the_counter_their_caller_picks() -> None:
    """prompts knows no provider: without a counter (the run sets one per tier) it says so."""
    bare = CallSpec(provider="openai", model="gpt-4o-mini", endpoint="", system="S.",
                    max_tokens=8)
    with pytest.raises(ValueError, match="no token counter for openai gpt-4o-mini"):
        build_requests(_rows(), bare)
    given = build_requests(_rows(), bare, counter=counter_for("openai", "gpt-4o-mini"))
    assert given == build_requests(_rows(), _spec(system="S.", endpoint="", max_tokens=8))
    assert given["g1"].token_counter == "exact:o200k_base"


def test_key_changes_with_everything_that_decides_the_answer() -> None:
    key = build_requests(_rows(), _spec())["g1"].key
    assert build_requests(_rows(), _spec())["g1"].key == key
    for change in ({"endpoint": "https://api.openai.com/v1"}, {"model": "gpt-4o"},
                   {"max_tokens": 33}, {"temperature": 0.5}, {"system": "Other."},
                   {"params": {"top_p": 0.9}}, {"json_schema": {"type": "object"}},
                   {"provider": "anthropic"}):
        assert build_requests(_rows(), _spec(**change))["g1"].key != key, change


@pytest.mark.parametrize("user", ["", "plain", 'quotes " and \\ backslash', "naïve ünïcode 日本",
                                  "control \x00\x1f chars\n\ttabs", "emoji 🙂 and \u2028"])
def test_the_fast_request_key_is_the_canonical_hash(user):
    """Request keys key the response cache: the one-pass key must equal stable_hash of the
    whole request, or every cache built before would miss (and be paid again)."""
    from batchopt.hashing import keyed_by_last_field, stable_hash

    fields = {"provider": "openai", "endpoint": "chat", "model": "m", "system": "sÿs \"x\"",
              "max_tokens": 64, "temperature": 0.0, "json_schema": {"b": 1, "a": [1, "é"]},
              "params": {"top_p": 0.5}}
    assert keyed_by_last_field(fields, "user")(user) == stable_hash({**fields, "user": user})
    with pytest.raises(ValueError):
        keyed_by_last_field({"zebra": 1}, "user")
