"""The row-local stages of a plan as one step: compress the prompt's fields, then render the
user prompt (and, for the exact-dedup key, each tier's own prompt variant). A function from a
chunk of rows to the same rows with columns added, so an engine can run it chunk by chunk, in
this process or on Ray workers (it pickles: the templates are kept as text and compiled once per
process that runs it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from batchopt.config.compress import CompressConfig
from batchopt.prompts.template import PromptRenderer, render_prompts
from batchopt.providers.token_counting import counter_for

REPORT_PREFIX = "_compress."  # the per-step report columns the step adds (summed by the driver)
SAVED = "compression_tokens_saved"
KEY_PREFIX = "__dedup_key_"  # the tier-variant renderings the step adds for the dedup key
BASELINE_TOKENS = "baseline_prompt_tokens"  # each row's prompt tokens on the baseline model


def key_columns(count: int) -> list[str]:
    """The columns `RenderStep` adds for `count` key templates."""
    return [f"{KEY_PREFIX}{i}" for i in range(count)]


@dataclass
class RenderStep:
    """Compress (when configured) and render one chunk of rows."""

    template: str
    id_column: str
    compress: CompressConfig | None
    model: str  # whose tokenizer counts what compression removed
    # (where, template) of each tier's own prompt variant that differs from `template`: each is
    # rendered too, into `key_columns(len(key_templates))`, so exact dedup keys on every
    # request the run may send (batchopt.run.tiers.dedup_key_templates)
    key_templates: tuple[tuple[str, str], ...] = ()
    # (provider, model, system) of the baseline: each row's uncompressed prompt, the default
    # template and system, counted with the baseline model's counter into `BASELINE_TOKENS`
    baseline: tuple[str, str, str] | None = None
    _renderer: Any = field(default=None, repr=False, compare=False)
    _key_renderers: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:  # a jinja environment does not pickle
        return {**self.__dict__, "_renderer": None, "_key_renderers": None}

    def __call__(self, rows: pl.DataFrame) -> pl.DataFrame:
        if self._renderer is None:
            self._renderer = PromptRenderer(self.template)
        renderer = self._renderer
        if self.baseline is not None:
            rows = self._count_baseline(render_prompts(rows, renderer, self.id_column,
                                                       out_column=BASELINE_TOKENS))
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
        if self._key_renderers is None:
            self._key_renderers = [PromptRenderer(template, where=where)
                                   for where, template in self.key_templates]
        for renderer_k, column in zip(self._key_renderers,
                                      key_columns(len(self._key_renderers)), strict=True):
            rows = render_prompts(rows, renderer_k, self.id_column, out_column=column)
        return render_prompts(rows, renderer, self.id_column)

    def _count_baseline(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The rendered prompt in `BASELINE_TOKENS` replaced by its token count."""
        assert self.baseline is not None
        provider, model, system = self.baseline
        counter = counter_for(provider, model)  # uncalibrated: the same count every run
        fixed = counter.count(system)
        counts = [fixed + counter.count(text) for text in rows[BASELINE_TOKENS].to_list()]
        return rows.with_columns(pl.Series(BASELINE_TOKENS, counts, dtype=pl.Int64))


def take_report(rows: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """`rows` without the step's report columns, and the tokens each compression step removed."""
    names = [c for c in rows.columns if c.startswith(REPORT_PREFIX)]
    compression = {
        name.removeprefix(REPORT_PREFIX).removeprefix("compress_").removesuffix("_tokens"):
            int(rows[name].sum())
        for name in names
    }
    return rows.drop(names), compression
