"""The fake server's control endpoints, `/_fake/...`: stats, log and bill, reset, and the
faults, oracle, answer quality and prices the server is told to use (see `batchopt.fakeapi.app`
for what each answers)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from aiohttp import web

from batchopt.fakeapi.batches import BatchStore
from batchopt.fakeapi.faults import parse_faults
from batchopt.fakeapi.finetune_routes import FineTuneRoutes
from batchopt.fakeapi.oracle import parse_oracle
from batchopt.fakeapi.prices import FakePrices
from batchopt.fakeapi.quality import parse_quality
from batchopt.fakeapi.state import ServerState
from batchopt.fakeapi.wire import json_response


class ControlRoutes:
    """The `/_fake/...` handlers, over the server's state, batches and fine-tuning jobs."""

    def __init__(self, state: ServerState, batches: BatchStore, finetunes: FineTuneRoutes) -> None:
        self.state = state
        self.batches = batches
        self.finetunes = finetunes

    def register(self, router: web.UrlDispatcher) -> None:
        """Add the control endpoints to `router`."""
        router.add_get("/_fake/stats", self.get_stats)
        router.add_get("/_fake/log", self.get_log)
        router.add_post("/_fake/reset", self.post_reset)
        router.add_post("/_fake/faults", self.post_faults)
        router.add_get("/_fake/faults", self.get_faults)
        router.add_delete("/_fake/faults", self.delete_faults)
        router.add_post("/_fake/oracle", self.post_oracle)
        router.add_get("/_fake/oracle", self.get_oracle)
        router.add_delete("/_fake/oracle", self.delete_oracle)
        router.add_post("/_fake/quality", self.post_quality)
        router.add_get("/_fake/quality", self.get_quality)
        router.add_delete("/_fake/quality", self.delete_quality)
        router.add_get("/_fake/bill", self.get_bill)
        router.add_delete("/_fake/bill", self.delete_bill)
        router.add_post("/_fake/prices", self.post_prices)
        router.add_get("/_fake/prices", self.get_prices)
        router.add_delete("/_fake/prices", self.delete_prices)

    def stats(self) -> dict[str, Any]:
        """The stats, after settling every batch that has ended."""
        self.batches.settle_due()
        return {**self.state.stats(), **self.finetunes.stats()}

    def log(self) -> list[dict[str, Any]]:
        """The paid-call log, after settling every batch that has ended."""
        self.batches.settle_due()
        return self.state.log()

    def bill(self) -> dict[str, Any]:
        """The fake's own bill, after settling every batch that has ended."""
        self.batches.settle_due()
        return self.state.bill()

    def reset(self) -> None:
        """Zero the stats, empty the log, drop pending faults and every file, batch and
        fine-tuning job."""
        self.batches.clear()
        self.finetunes.clear()
        self.state.reset()

    async def get_stats(self, request: web.Request) -> web.Response:
        """GET /_fake/stats."""
        return json_response(self.stats())

    async def get_log(self, request: web.Request) -> web.Response:
        """GET /_fake/log."""
        return json_response(self.log())

    async def post_reset(self, request: web.Request) -> web.Response:
        """POST /_fake/reset."""
        self.reset()
        return json_response({"ok": True})

    async def post_faults(self, request: web.Request) -> web.Response:
        """POST /_fake/faults: replace the pending faults."""
        try:
            faults = parse_faults(json.loads(await request.read()))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        self.state.set_faults(faults)
        return self._pending()

    async def get_faults(self, request: web.Request) -> web.Response:
        """GET /_fake/faults."""
        return self._pending()

    def _pending(self) -> web.Response:
        return json_response(
            {
                "ok": True,
                "pending": self.state.pending_faults(),
                "pending_batch": self.state.pending_batch_faults(),
            }
        )

    async def delete_faults(self, request: web.Request) -> web.Response:
        """DELETE /_fake/faults."""
        self.state.set_faults([])
        return json_response({"ok": True})

    async def post_oracle(self, request: web.Request) -> web.Response:
        """POST /_fake/oracle: replace the oracle."""
        try:
            oracle = parse_oracle(json.loads(await request.read()))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        self.state.set_oracle(oracle)
        return json_response({"ok": True, **oracle.describe()})

    async def get_oracle(self, request: web.Request) -> web.Response:
        """GET /_fake/oracle."""
        oracle = self.state.oracle
        return json_response({"set": False} if oracle is None else oracle.describe())

    async def delete_oracle(self, request: web.Request) -> web.Response:
        """DELETE /_fake/oracle."""
        self.state.set_oracle(None)
        return json_response({"ok": True})

    async def post_quality(self, request: web.Request) -> web.Response:
        """POST /_fake/quality: replace the answers' flaw settings."""
        try:
            quality = parse_quality(json.loads(await request.read()))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        self.state.set_quality(quality)
        return json_response({"ok": True, **quality.describe()})

    async def get_quality(self, request: web.Request) -> web.Response:
        """GET /_fake/quality."""
        return json_response(self.state.quality.describe())

    async def delete_quality(self, request: web.Request) -> web.Response:
        """DELETE /_fake/quality: back to the server's own settings."""
        self.state.set_quality(None)
        return json_response({"ok": True})

    async def get_bill(self, request: web.Request) -> web.Response:
        """GET /_fake/bill."""
        return json_response(self.bill())

    async def delete_bill(self, request: web.Request) -> web.Response:
        """DELETE /_fake/bill: start a new bill."""
        self.batches.settle_due()  # what ended before the reset belongs to the old bill
        self.state.reset_bill()
        return json_response({"ok": True})

    async def post_prices(self, request: web.Request) -> web.Response:
        """POST /_fake/prices: rates laid over the published list."""
        try:
            prices = FakePrices().with_overrides(json.loads(await request.read()))
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        self.state.set_prices(prices)
        return json_response({"ok": True})

    async def get_prices(self, request: web.Request) -> web.Response:
        """GET /_fake/prices."""
        table = self.state.prices.table
        return json_response({model: asdict(rates) for model, rates in sorted(table.items())})

    async def delete_prices(self, request: web.Request) -> web.Response:
        """DELETE /_fake/prices: back to the published list."""
        self.state.set_prices(None)
        return json_response({"ok": True})
