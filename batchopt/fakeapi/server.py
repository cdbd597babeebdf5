"""Run the fake provider server: in a background thread (`FakeServer`) or in the foreground
(`serve`). It binds to 127.0.0.1 only. See `batchopt.fakeapi.app` for the endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Any

from aiohttp import web

from batchopt.fakeapi import answers
from batchopt.fakeapi.app import DEFAULT_BATCH_SECONDS, HOST, FakeProviderApp
from batchopt.fakeapi.faults import parse_faults
from batchopt.fakeapi.oracle import parse_oracle
from batchopt.fakeapi.prices import FakePrices
from batchopt.fakeapi.quality import Quality
from batchopt.fakeapi.state import ServerState

READY_LINE = "fake server listening on {url}"


async def start_site(app: FakeProviderApp, port: int) -> tuple[web.AppRunner, int]:
    """Start serving `app` on 127.0.0.1:`port` (0 picks a free port); return the bound port."""
    # Load both tokenizers now, not on the first request (about 0.2 s each).
    answers.cached_count("warm up", "gpt-4o")
    answers.cached_count("warm up", "gpt-4-0613")
    # handler_cancellation: a client that times out cancels its pending (sleeping) handler.
    runner = web.AppRunner(
        app.build(), access_log=None, shutdown_timeout=0.5, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    return runner, int(runner.addresses[0][1])


class FakeServer:
    """The fake server in a background thread with its own event loop.

    with FakeServer(latency_ms=5) as server:
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="x")
        ...
        assert server.stats()["requests"] == 1
    """

    def __init__(
        self,
        latency_ms: float = 0.0,
        port: int = 0,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
        invalid_share: dict[str, float] | None = None,
        wrong_share: dict[str, float] | None = None,
        judge_reject_share: float = 0.0,
    ) -> None:
        """`invalid_share` / `wrong_share` map a model (or `*`) to the share of its answers
        the fake makes invalid / wrong; see `batchopt.fakeapi.quality`."""
        quality = Quality(dict(invalid_share or {}), dict(wrong_share or {}), judge_reject_share)
        self.state = ServerState(quality)
        self._app = FakeProviderApp(self.state, latency_ms, batch_seconds)
        self._requested_port = port
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://{HOST}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The `base_url` for an OpenAI client (the url plus /v1)."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The `base_url` for an Anthropic client (the url itself)."""
        return self.url

    @property
    def latency_ms(self) -> float:
        """How long each model call sleeps before answering."""
        return self._app.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self._app.latency_ms = float(value)

    @property
    def batch_seconds(self) -> float:
        """How long after creation a batch ends (applies to batches created afterwards)."""
        return self._app.batch_seconds

    @batch_seconds.setter
    def batch_seconds(self, value: float) -> None:
        self._app.batch_seconds = value

    def start(self) -> FakeServer:
        """Start serving in a daemon thread; return once the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, errors), name="batchopt-fake-server", daemon=True
        )
        self._thread.start()
        ready.wait()
        if errors:
            self._thread.join()
            self._thread = None
            raise errors[0]
        return self

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            runner, self.port = loop.run_until_complete(start_site(self._app, self._requested_port))
        except BaseException as exc:  # surfaced by start() in the caller's thread
            errors.append(exc)
            loop.close()
            ready.set()
            return
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._thread is None:
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """What GET /_fake/stats returns."""
        return self._app.stats()

    def log(self) -> list[dict[str, Any]]:
        """What GET /_fake/log returns."""
        return self._app.log()

    def bill(self) -> dict[str, Any]:
        """What GET /_fake/bill returns: what the fake billed, at its own prices."""
        return self._app.bill()

    def reset_bill(self) -> None:
        """Start a new bill (DELETE /_fake/bill); the stats and the log stay."""
        self._app.batches.settle_due()
        self.state.reset_bill()

    def set_prices(self, overrides: dict[str, dict[str, float]]) -> None:
        """Bill at `overrides` laid over the published list (POST /_fake/prices); ValueError if
        malformed. `reset` and `clear_prices` put back the published list."""
        self.state.set_prices(FakePrices().with_overrides(overrides))

    def clear_prices(self) -> None:
        """Back to the published price list (DELETE /_fake/prices)."""
        self.state.set_prices(None)

    def reset(self) -> None:
        """Zero the stats, empty the log, drop faults, files and batches (POST /_fake/reset)."""
        self._app.reset()

    def set_faults(self, faults: list[dict[str, Any]]) -> None:
        """Queue faults for the next model calls and batches (POST /_fake/faults); [] clears."""
        self.state.set_faults(parse_faults(faults))

    def clear_faults(self) -> None:
        """Drop pending faults (DELETE /_fake/faults)."""
        self.state.set_faults([])

    def set_oracle(
        self,
        items: list[dict[str, Any]],
        models: dict[str, dict[str, float]] | None = None,
        default_accuracy: dict[str, float] | None = None,
    ) -> None:
        """Answer requests that match an item from the oracle (POST /_fake/oracle).

        `items` are `{"match", "answer", "wrong", "difficulty"}`, `models` maps a model name to
        its accuracy per difficulty; see `batchopt.fakeapi.oracle`. ValueError if
        malformed.
        """
        spec = {"items": items, "models": models or {}, "default_accuracy": default_accuracy or {}}
        self.state.set_oracle(parse_oracle(spec))

    def clear_oracle(self) -> None:
        """Drop the oracle (DELETE /_fake/oracle); `reset` drops it too."""
        self.state.set_oracle(None)

    def set_quality(
        self,
        invalid_share: dict[str, float] | None = None,
        wrong_share: dict[str, float] | None = None,
        judge_reject_share: float = 0.0,
    ) -> None:
        """Flaw the answers from now on (POST /_fake/quality); `reset` puts back the server's
        own settings. ValueError if a share is not from 0 to 1."""
        self.state.set_quality(
            Quality(dict(invalid_share or {}), dict(wrong_share or {}), judge_reject_share)
        )

    def clear_quality(self) -> None:
        """Back to the server's own flaw settings (DELETE /_fake/quality)."""
        self.state.set_quality(None)

    def oracle_verdict(self, model: str, user_text: str) -> tuple[str, str | None]:
        """(right | wrong | unmatched, the answer) the oracle gives `model` for `user_text`."""
        oracle = self.state.oracle
        if oracle is None:
            return "unmatched", None
        verdict = oracle.decide(model, user_text)
        return verdict.kind, verdict.text


async def _serve_forever(
    port: int, latency_ms: float, batch_seconds: float, quality: Quality | None
) -> None:
    app = FakeProviderApp(ServerState(quality), latency_ms, batch_seconds)
    runner, bound = await start_site(app, port)
    print(READY_LINE.format(url=f"http://{HOST}:{bound}"), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(
    port: int,
    latency_ms: float = 0.0,
    batch_seconds: float = DEFAULT_BATCH_SECONDS,
    quality: Quality | None = None,
) -> None:
    """Serve on 127.0.0.1:`port` in the foreground until Ctrl-C.

    Prints "fake server listening on http://127.0.0.1:PORT" once ready (with the bound port,
    so port 0 works too). `quality` flaws the answers (see `quality`).
    """
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(port, latency_ms, batch_seconds, quality))
