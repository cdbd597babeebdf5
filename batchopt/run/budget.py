"""A run id's budget (`budget.max_usd`): what it has spent, what each request in flight holds,
and the pre-send check against what the rest is estimated to cost."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchopt.errors import BudgetExceededError
from batchopt.records import Request, Result
from batchopt.run.calls import CallsRecord, TierOf
from batchopt.run.cost import max_request_cost
from batchopt.run.forecast import estimated_cost

if TYPE_CHECKING:
    from batchopt.run.model import Plan

__all__ = ["Budget"]


class Budget:
    """Money this run id has spent against `budget.max_usd`: what its calls record says it
    paid (earlier invocations' calls and this one's, as they are confirmed). A request is sent
    only once its most (`max_request_cost`) is reserved within what is left; the reservation
    is settled to the actual cost when its answer is persisted, or released when it fails
    unbilled."""

    def __init__(self, plan: Plan, calls: CallsRecord, tier_of: TierOf | None = None) -> None:
        budget = plan.pipeline.config.budget
        self.limit = budget.max_usd if budget is not None else None
        # calls sent but never answered may be billed: the cap counts their estimate
        self.before = calls.spent() + calls.unconfirmed()
        self.spent = self.before
        self.held: dict[str, float] = {}  # request key -> its reservation, while in flight
        self._plan, self._tier_of = plan, tier_of

    def settle(self, results: list[Result], cost: float) -> None:
        """`results` were persisted and recorded as calls costing `cost` in all: settle their
        reservations to it."""
        for result in results:
            self.held.pop(result.key, None)
        self.spent += cost

    @property
    def reached(self) -> bool:
        """Whether what was spent has reached the limit."""
        return self.limit is not None and self.spent >= self.limit

    @property
    def left(self) -> float:
        """What is left to reserve (infinite without a budget)."""
        if self.limit is None:
            return float("inf")
        return self.limit - self.spent - sum(self.held.values())

    def most(self, request: Request, *, batch: bool | None = None) -> float:
        """The most `request` can cost on its tier (`cost.max_request_cost`)."""
        batch = self._plan.mode == "batch" if batch is None else batch
        tier = self._tier_of(request) if self._tier_of is not None else None
        return max_request_cost(self._plan, request, batch=batch, tier=tier)

    def reserve(self, request: Request, *, batch: bool | None = None,
                force: bool = False) -> bool:
        """Hold `request`'s most against the budget; False (nothing held) when what is left
        cannot cover it. `force` holds it anyway (a request already submitted in a batch)."""
        if self.limit is None or request.key in self.held:  # held already (batch mode)
            return True
        cost = self.most(request, batch=batch)
        if not force and cost > self.left + 1e-12:
            return False
        self.held[request.key] = cost
        return True

    def release(self, key: str) -> None:
        """Give back a reservation whose request was not billed (failed, or not sent)."""
        self.held.pop(key, None)

    @property
    def holding(self) -> bool:
        """Whether any request in flight holds a reservation."""
        return bool(self.held)

    def stop_reason(self) -> str:
        """Why sending stops here: the spend against the limit."""
        assert self.limit is not None
        return (f"budget reached: spent ${self.spent:,.4f} of ${self.limit:,.4f}, the next "
                "request could pass it")

    def estimate(self, misses: list[Request]) -> float:
        """This run's spend so far plus what sending `misses` should cost, every call counted
        as `batchopt plan` counts it (escalations and judge calls too: `estimated_cost`)."""
        return self.spent + estimated_cost(self._plan, {r.key for r in misses})

    def check_estimate(self, misses: list[Request]) -> None:
        """Refuse to start (exit 3) when what is left to send is estimated over the budget."""
        if self.limit is None:
            return
        estimate = self.estimate(misses)
        if estimate > self.limit:
            already = (f" (${self.before:,.4f} of it already spent by earlier invocations of "
                       "this run id)" if self.before else "")
            raise BudgetExceededError(
                f"budget.max_usd: this run is estimated at ${estimate:,.4f}{already} (as "
                f"`batchopt plan` estimates it) against a budget of ${self.limit:,.4f}; "
                "nothing was sent"
            )
