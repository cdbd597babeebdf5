"""The row-local stages of a plan as one step: compress the prompt's fields, then render the
user prompt. A function from a chunk of rows to the same rows with columns added, so an engine
can run it chunk by chunk, in this process or on Ray workers (it pickles: the template is kept
as text and compiled once per process that runs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from batchopt.config_compress import CompressConfig
from batchopt.prompts.template import PromptRenderer, render_prompts

REPORT_PREFIX = "_compress."  # the per-step report columns the step adds (summed by the driver)
SAVED = "compression_tokens_saved"


@dataclass
class RenderStep:
    """Compress (when configured) and render one chunk of rows."""

    template: str
    id_column: str
    compress: CompressConfig | None
    model: str  # whose tokenizer counts what compression removed
    _renderer: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_renderer": None}  # a jinja environment does not pickle

    def __call__(self, rows: pl.DataFrame) -> pl.DataFrame:
        if self._renderer is None:
            self._renderer = PromptRenderer(self.template)
        renderer = self._renderer
        if self.compress is not None:
            from batchopt.prompts.compress import SAVED_COLUMN, compress_rows

            rows, report = compress_rows(rows, self.compress, renderer.variables, self.model)
            rows = rows.with_columns(
                report[SAVED_COLUMN].alias(SAVED),
                *(report[name].alias(REPORT_PREFIX + name)
                  for name in report.columns if name != SAVED_COLUMN),
            )
        else:
            rows = rows.with_columns(pl.lit(0, dtype=pl.Int64).alias(SAVED))
        return render_prompts(rows, renderer, self.id_column)


def take_report(rows: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """`rows` without the step's report columns, and the tokens each compression step removed."""
    names = [c for c in rows.columns if c.startswith(REPORT_PREFIX)]
    compression = {
        name.removeprefix(REPORT_PREFIX).removeprefix("compress_").removesuffix("_tokens"):
            int(rows[name].sum())
        for name in names
    }
    return rows.drop(names), compression
