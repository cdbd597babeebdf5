"""A run: the read-only plan, tiers resolved once, cost, reuse, rounds, fan-out and the runner,
the one module that knows the whole flow."""
