"""The base of every model in a pipeline YAML."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Rejects unknown keys, so a misspelt key is an error rather than a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
