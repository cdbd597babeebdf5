"""batchopt: offline batch LLM jobs that cost less without returning less.

The public API is small: load a pipeline, run it, read its summary.

    from batchopt import load_pipeline, run_pipeline, RunOptions
    summary = run_pipeline(load_pipeline("pipelines/summarize.yaml"), RunOptions(profile="openai"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "BatchoptError",
    "ConfigError",
    "InputError",
    "ProviderError",
    "RunOptions",
    "RunSummary",
    "load_pipeline",
    "run_pipeline",
]

if TYPE_CHECKING:
    from batchopt.config.pipeline import load_pipeline
    from batchopt.errors import BatchoptError, ConfigError, InputError, ProviderError
    from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

_HOMES = {
    "load_pipeline": "batchopt.config.pipeline",
    "RunOptions": "batchopt.run.runner",
    "RunSummary": "batchopt.run.runner",
    "run_pipeline": "batchopt.run.runner",
    "BatchoptError": "batchopt.errors",
    "ConfigError": "batchopt.errors",
    "InputError": "batchopt.errors",
    "ProviderError": "batchopt.errors",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import batchopt` (and `batchopt --help`) does not pull in polars and the SDKs.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'batchopt' has no attribute {name!r}")
