"""Joining (or starting) Ray for the `ray` engine: one place that knows how.

A local Ray is started quietly and offline: no dashboard, no usage stats, no auth token, its
temp folder under `BATCHOPT_RAY_TMPDIR` when set (tests point it at their tmp). `address`
joins an existing cluster instead.
"""

from __future__ import annotations

import os
from typing import Any


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """The `ray` module, initialised (once per process)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = num_cpus or os.cpu_count() or 2
            tmp = os.environ.get("BATCHOPT_RAY_TMPDIR")
            if tmp:
                kwargs["_temp_dir"] = tmp
        ray.init(**kwargs)
    return ray
