"""The `plan` report and what stands beside it: the job estimate (`estimate.plan_run`, the run's
own preparation, then its forecast), the what-if over precisions, bench-tier, validate."""
