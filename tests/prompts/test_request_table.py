"""The plan's requests, routes and request tiers as columns (issue 10): the same Requests as
`build_requests`, and no dict with an entry per request or group left in the Plan."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from helpers import pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.prompts.groups import Representatives, RouteTable
from batchopt.prompts.request_table import KeyTiers, RequestTable, TierFields, request_columns
from batchopt.prompts.requests import CallSpec, build_requests
from batchopt.providers.token_counting import counter_for
from batchopt.records import Request
from batchopt.run.runner import RunOptions, prepare


def _rows() -> pl.DataFrame:
    users = ["refund #1", "refund  #1", "where is order 7?", "naïve ünïcode 日本 🙂", "", "login",
             "where is order 7?"]
    return pl.DataFrame({
        "group_id": ["g1", "g1", "g2", "g3", "g4", "g5", "g6"],
        "dedup": ["none", "exact", "none", "none", "none", "none", "none"],
        "prompt_user": users,
    })


def _spec(**changes: object) -> CallSpec:
    base = {"provider": "openai", "model": "gpt-4o-mini", "endpoint": "http://127.0.0.1:1/v1",
            "system": "Summarise.", "max_tokens": 32, "params": {"top_p": 0.5},
            "json_schema": {"type": "object"}}
    fields = {**base, **changes}
    counter = counter_for(str(fields["provider"]), str(fields["model"]))
    return CallSpec(**fields, counter=counter)  # type: ignore[arg-type]


def _table(rows: pl.DataFrame, specs: dict[str, CallSpec], tier_of: list[str],
           own: dict[str, pl.Series] | None = None) -> RequestTable:
    """The table for `rows`' representatives, the i-th on tier `tier_of[i]`; `own`: a tier's
    own users (its template), aligned with its representatives."""
    reps = Representatives(rows)
    names = list(specs)
    codes = np.array([names.index(t) for t in tier_of])
    parts = []
    for code, name in enumerate(names):
        which = np.flatnonzero(codes == code)
        users = (own or {}).get(name)
        keys, tokens = request_columns(
            users if users is not None else reps.column("prompt_user", which), specs[name])
        parts.append((code, which, keys, tokens, users))
    return RequestTable.assemble(reps, [TierFields.of(n, s) for n, s in specs.items()], parts)


def test_the_table_makes_the_requests_build_requests_makes_in_group_order():
    rows, spec = _rows(), _spec()
    table = _table(rows, {"t": spec}, ["t"] * 6)
    old = build_requests(rows, spec)
    assert len(table) == len(old) == 6
    assert list(table) == list(old) == ["g1", "g2", "g3", "g4", "g5", "g6"]
    assert list(table.items()) == list(old.items())
    assert list(table.values()) == list(old.values())
    assert dict(table) == old and table == old
    assert table["g3"] == old["g3"] and table.get("g5") == old["g5"]
    assert "g2" in table and "nope" not in table and 3 not in table
    assert table.get("nope") is None
    with pytest.raises(KeyError):
        table["nope"]
    assert list(table.iter_keys()) == [r.key for r in old.values()]
    assert table.distinct_keys() == 5  # g2 and g6 ask the same thing
    # the key index gives the last request with a key (as a dict built in order keeps)
    assert table.find_key(old["g2"].key) == 5 and table.find_key("0" * 32) is None


def test_tiers_with_their_own_users_and_interleaved_groups():
    rows = _rows()
    specs = {"cheap": _spec(), "strong": _spec(model="gpt-4o", system="Be thorough.",
                                               max_tokens=64)}
    tier_of = ["cheap", "strong", "cheap", "strong", "strong", "cheap"]
    variant = pl.Series(["V: where", "V: naive", "V: empty"])  # strong's own template
    table = _table(rows, specs, tier_of, {"strong": variant})
    chosen = rows.filter(pl.col("dedup") == "none").with_row_index("i")
    expected: dict[str, Request] = {}
    for i, (group, name) in enumerate(zip(chosen["group_id"], tier_of, strict=True)):
        frame = chosen.filter(pl.col("i") == i)
        if name == "strong":
            frame = frame.with_columns(pl.lit(variant[tier_of[:i].count("strong")])
                                       .alias("prompt_user"))
        expected[group] = build_requests(frame, specs[name])[group]
    assert list(table.items()) == list(expected.items())
    assert table["g4"].user == "V: naive" and table["g4"].model == "gpt-4o"
    assert list(table.tier_names) == ["cheap", "strong"]
    # a cut prompt and a dropped request: the rest unchanged, in order
    cut = build_requests(pl.DataFrame({"group_id": ["g4"], "dedup": ["none"],
                                       "prompt_user": ["V: cut"]}), specs["strong"])["g4"]
    revised = table.revise({3: cut}, [1])
    assert list(revised) == ["g1", "g3", "g4", "g5", "g6"]
    assert revised["g4"] == cut and revised["g3"] == expected["g3"]
    assert revised["g5"] == expected["g5"] and "g2" not in revised
    assert list(revised.values()) == [expected["g1"], expected["g3"], cut, expected["g5"],
                                      expected["g6"]]


def test_routes_and_key_tiers_as_columns():
    rows = _rows()
    reps = Representatives(rows)
    routed = pl.DataFrame({"t": ["a", "b", "a", "a", "b", "a"],
                           "why": ["x", "rule 'long'", "x", "x", "rule 'long'", "x"]})
    routes = RouteTable.from_frame(reps, routed, "t", "why", ["a", "b"])
    assert len(routes) == 6 and routes["g2"] == ("b", "rule 'long'")
    assert dict(routes.items()) == {
        "g1": ("a", "x"), "g2": ("b", "rule 'long'"), "g3": ("a", "x"), "g4": ("a", "x"),
        "g5": ("b", "rule 'long'"), "g6": ("a", "x")}
    assert "g9" not in routes and routes.get("g9") is None
    table = _table(rows, {"a": _spec(), "b": _spec(model="gpt-4o")}, list(routed["t"]))
    tiers = KeyTiers(table)
    assert tiers[table["g2"].key] == "b" and tiers[table["g3"].key] == "a"
    tiers["escalated-key"] = "b"  # what a run adds
    assert tiers["escalated-key"] == "b" and tiers.added == {"escalated-key": "b"}
    assert len(tiers) == len({r.key for r in table.values()}) + 1
    with pytest.raises(KeyError):
        tiers["unknown"]


def test_two_tiers_asking_alike_share_keys_and_the_last_tier_wins():
    rows = _rows()
    table = _table(rows, {"a": _spec(), "b": _spec()}, ["a", "b", "a", "a", "b", "a"])
    old = {r.key: name for r, name in zip(table.values(), ["a", "b", "a", "a", "b", "a"],
                                          strict=True)}
    assert table.key_tiers().tolist() == [
        table.tier_names.index(old[k]) for k in table.iter_keys()]  # g2 and g6: "a", as g6
    assert KeyTiers(table)[table["g2"].key] == "a"


def _plan(tmp_path, routing=None):
    data = pipeline_dict(routing=routing) if routing else pipeline_dict()
    data["profiles"]["cheap"] = {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 16}
    data["profiles"]["strong"] = {"provider": "openai", "model": "gpt-4o", "max_tokens": 64,
                                  "template": "VARIANT {{ subject }}: {{ body }}"}
    path = write_pipeline(tmp_path, data)
    tickets = [{"ticket_id": f"T{i:02d}", "subject": "Order",
                "body": f"Where is my order #{i % 25}?" + " Please help." * (i % 2)}
               for i in range(60)]
    pl.DataFrame(tickets).write_parquet(tmp_path / "data" / "tickets.parquet")
    return prepare(load_pipeline(path), RunOptions(), env={}, require_keys=False)


def test_the_plan_holds_no_dict_with_an_entry_per_request(tmp_path):
    rules = {"strategy": "rules", "tiers": ["cheap", "strong"], "default_tier": "cheap",
             "rules": [{"name": "polite", "when": {"prompt_tokens": {"gt": 12}},
                        "tier": "strong"}]}
    plan = _plan(tmp_path, rules)
    assert isinstance(plan.requests, RequestTable)
    assert isinstance(plan.routes, RouteTable)
    assert isinstance(plan.key_tier, KeyTiers) and plan.key_tier.added == {}
    count = len(plan.requests)
    assert count == 50 and len(plan.routes) == 50
    for item in dataclasses.fields(plan):
        value = getattr(plan, item.name)
        assert not (isinstance(value, dict | list | set) and len(value) >= count), item.name
    # still a mapping of Requests, each on the tier it was routed to
    requests = dict(plan.requests.items())
    assert {plan.tier_of(r).name for r in requests.values()} == {"cheap", "strong"}
    for group, request in requests.items():
        assert plan.tier_of(request).name == plan.routes[group][0]
        if plan.routes[group][0] == "strong":
            assert request.user.startswith("VARIANT Order:") and request.model == "gpt-4o"
