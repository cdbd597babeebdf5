"""The `plan` report and what stands beside it: the estimate, what-if, break-even, bench-tier,
validate."""
