"""The fake server's own bill: an outside truth the tests hold batchopt's money to.

The fake counts tokens and prices them with its own code and price list (providers' published
rules), never with batchopt's, so a mistake in batchopt's pricing cannot cancel itself out.
"""

from __future__ import annotations

import ast
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anthropic
import bpe_openai
import openai
import pytest

from batchopt.fakeapi import FakeServer
from batchopt.fakeapi.state import ServerState

FAKE_DIR = Path(__file__).parents[2] / "batchopt" / "fakeapi"
OWN = "batchopt.fakeapi"


def _outside_imports(path: Path) -> list[str]:
    """The batchopt modules `path` imports from outside batchopt.fakeapi."""
    package = OWN.split(".")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the fake package
                base = package[: len(package) - node.level + 1]
                names = [".".join([*base, *([node.module] if node.module else [])])]
            else:
                names = [node.module or ""]
            # `from batchopt.providers import x` brings in batchopt.providers.x
            names = [f"{n}.{a.name}" for n in names for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "batchopt" and not (name + ".").startswith(OWN + "."):
                found.append(name)
    return found


def test_the_fake_server_imports_nothing_of_batchopt_but_itself() -> None:
    modules = sorted(FAKE_DIR.glob("*.py"))
    assert len(modules) > 10
    outside = {p.name: _outside_imports(p) for p in modules}
    assert {name: found for name, found in outside.items() if found} == {}


def _get(fake: FakeServer, path: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(fake.url + path, data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def _one_call_each(fake: FakeServer, system: str, user: str) -> tuple[Any, Any]:
    oai = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="sk-t", max_retries=0)
    ant = anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="sk-ant-t",
                                   max_retries=0)
    first = await oai.chat.completions.create(
        model="gpt-4o-mini-2024-07-18", max_tokens=40,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
    )
    second = await ant.messages.create(
        model="claude-3-5-haiku-20241022", max_tokens=40, system=system,
        messages=[{"role": "user", "content": user}],
    )
    await oai.close()
    await ant.close()
    return first, second


async def test_openai_prompts_are_counted_by_the_cookbook_rule(fake: FakeServer) -> None:
    system, user = "You sort tickets.", "Where is my parcel? Ordered on 3 May, nothing since."
    reply, _ = await _one_call_each(fake, system, user)
    # tiktoken's o200k_base for gpt-4o-mini; 3 tokens per message and 3 priming the reply
    o200k = bpe_openai.get_encoding("o200k_base")
    expected = sum(len(o200k.encode(t)) + 3 for t in (system, user)) + 3
    assert reply.usage.prompt_tokens == expected
    assert reply.usage.completion_tokens == len(o200k.encode(reply.choices[0].message.content))


async def test_the_bill_prices_every_paid_call_at_the_fake_list(fake: FakeServer) -> None:
    await _one_call_each(fake, "You sort tickets.", "Where is my parcel?")
    await _one_call_each(fake, "You sort tickets.", "The box came in pieces.")
    bill, log, prices = _get(fake, "/_fake/bill"), fake.log(), _get(fake, "/_fake/prices")
    assert len(log) == 4 and bill["unpriced"] == [] and bill["batch_usd"] == 0
    for entry in log:  # a dated model is priced as its base model
        rates = prices[entry["model"].rsplit("-", 1 if "claude" in entry["model"] else 3)[0]]
        plain = entry["input_tokens"] - entry["cache_read_tokens"] - entry["cache_write_tokens"]
        usd = (plain * rates["input"] + entry["output_tokens"] * rates["output"]) / 1e6
        assert entry["cost_usd"] == pytest.approx(usd, rel=1e-12) and usd > 0
    for model, kinds in bill["by_model"].items():
        mine = [e for e in log if e["model"] == model]
        line = kinds["online"]
        assert line["requests"] == len(mine) == 2
        assert line["input_tokens"] == sum(e["input_tokens"] for e in mine)
        assert line["output_tokens"] == sum(e["output_tokens"] for e in mine)
        assert line["usd"] == pytest.approx(sum(e["cost_usd"] for e in mine), rel=1e-12)
    assert bill["total_usd"] == pytest.approx(sum(e["cost_usd"] for e in log), rel=1e-12)

    assert _get(fake, "/_fake/bill", "DELETE") == {"ok": True}
    assert _get(fake, "/_fake/bill")["by_model"] == {} and len(fake.log()) == 4


@pytest.mark.parametrize("share", [None, 0.7])
def test_a_batch_row_pays_the_batch_share_of_the_online_price(share: float | None) -> None:
    state = ServerState()
    if share is not None:  # a contract whose batch price is not half the list price
        state.set_prices(state.prices.with_overrides({"gpt-4o": {"batch": share}}))
    for wire in ("openai", "openai-batch"):
        state.record_paid(wire, "gpt-4o-2024-08-06", 2000, 300, "h", "id", "unmatched", 1024)
    online, batch = (e["cost_usd"] for e in state.log())
    assert batch == pytest.approx(online * (0.5 if share is None else share), rel=1e-12)
    bill = state.bill()["by_model"]["gpt-4o-2024-08-06"]
    assert bill["batch"]["usd"] == batch and bill["batch"]["cached_input_tokens"] == 1024
    assert state.bill()["batch_usd"] == batch and state.bill()["online_usd"] == online


def test_an_unknown_model_is_billed_tokens_but_no_price() -> None:
    state = ServerState()
    state.record_paid("openai", "ft:gpt-4o-mini-2024-07-18:acme::x1", 100, 10, "h", "id")
    assert state.log()[0]["cost_usd"] is None
    assert state.bill()["unpriced"] == ["ft:gpt-4o-mini-2024-07-18:acme::x1"]


def test_price_overrides_are_checked_and_reset(fake: FakeServer) -> None:
    for bad in ({"gpt-4o": {"batch": 2}}, {"gpt-4o": {"input": -1}}, {"new-model": {"input": 1}},
                {"gpt-4o": {"outptu": 1}}, ["gpt-4o"]):
        with pytest.raises(urllib.error.HTTPError) as raised:
            _get(fake, "/_fake/prices", "POST", bad)
        assert raised.value.code == 400
    _get(fake, "/_fake/prices", "POST", {"gpt-4o": {"output": 1.0}})
    assert _get(fake, "/_fake/prices")["gpt-4o"]["output"] == 1.0
    fake.reset()
    assert _get(fake, "/_fake/prices")["gpt-4o"]["output"] > 1.0
