"""Prompt compression and prompt caching on the support-ticket sample, against the fake server.

    python benchmarks/bench_compress.py                  # sample + 20,000 generated rows + runs
    python benchmarks/bench_compress.py --rows 5000 --skip-runs
    python benchmarks/bench_compress.py --out /tmp/bench   # keep the runs' files (a subfolder)

Three sections, figures only (nothing here asserts on timing):

1. Compression steps. The `compress:` steps of pipelines/summarize.yaml (or, when it has none,
   DEFAULT_STEPS: whitespace, boilerplate, repeated_lines, field_budget {body: 300}) run with
   `compress_rows` over the template's columns of the sample (sample_data/tickets.parquet) and
   of a larger set from sample_data/make_tickets.py (`build(seed, n)`, `--rows`). Per data set:
   for each step the tokens of those columns before and after it, the tokens it removed and
   their share of the original; the total share saved; the tokens of the whole rendered user
   prompt before and after; and the rows/s of `compress_rows` (wall time; best of 3 on the
   sample, one run on the larger set). A third set is the larger one with every 5th body made
   long (a pasted log whose lines repeat, pasted background): the generator's bodies are short
   and never repeat a line, so without it repeated_lines and field_budget would show nothing.
   On the sample, a fact check of the boilerplate step:
   the order numbers, amounts, dates, products, e-mails and codes written outside quoted
   history that the step cut (quoted replies are meant to go).

2. Prompt cache hit share on a run of identical-prefix requests: summarize.yaml run on the
   sample against the in-process fake server with `--profile openai` and `--profile
   anthropic` (the pipeline itself, loaded from its own folder; the steps of section 1 are added
   when it has no `compress:`; outputs, ledger and cache in a temp folder or `--out`). From each
   run's ledger: the rows paid, cached_input_tokens / input_tokens of the paid rows (the hit
   share of prompt tokens), the share of paid rows with a cache read, the cache-write tokens.
   A static prefix (the system text, which holds any prompt.context and prompt.examples, plus
   whatever every user message starts with) shorter than the provider's cache minimum is never
   cached; the line says so with both numbers.

3. Acceptance 4, from the anthropic run (one run): input-token dollars billed, that is
   (input - cached - written) x input rate + cached x cached_input rate + written x cache_write
   rate, against the same paid rows' uncompressed, uncached prompts, (input_tokens +
   compression_tokens_saved) x input rate, for the same model. Only paid rows count on either
   side: dedup followers and response-cache hits were not paid for. The ratio's target is
   <= 0.50. Then the same run with the anthropic profile sending its system text only (no
   context, no examples: too short to cache), where only compression acts, and what the cached
   prefix adds to the bill.

Nothing is spent: requests go to an in-process fake server through the env given to the runs;
the process's own OPENAI_* / ANTHROPIC_* variables are neither read nor changed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedders are packaged; never fetch
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars

import polars as pl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sample_data"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import make_tickets  # noqa: E402

from batchopt.config.compress import BoilerplateStep, CompressConfig, parse_compress  # noqa: E402
from batchopt.config.pipeline import LoadedPipeline, load_pipeline  # noqa: E402
from batchopt.ledger.ledger import PAID_MODES  # noqa: E402
from batchopt.ledger.pricing import TOKENS_PER_UNIT, PriceTable  # noqa: E402
from batchopt.prompts.compress import (  # noqa: E402
    SAVED_COLUMN,
    compress_rows,
    report_columns,
    step_function,
)
from batchopt.prompts.template import PromptRenderer, render_prompts  # noqa: E402
from batchopt.tokens import count_tokens, encoding_name_for, is_exact_for  # noqa: E402

PIPELINE = REPO / "pipelines" / "summarize.yaml"
SAMPLE = REPO / "sample_data" / "tickets.parquet"
DEFAULT_STEPS: list[dict[str, Any]] = [
    {"type": "whitespace"},
    {"type": "boilerplate"},
    {"type": "repeated_lines"},
    {"type": "field_budget", "fields": {"body": 300}},
]
RUN_PROFILES = ("openai", "anthropic")
RATIO_PROFILE = "anthropic"
TARGET_RATIO = 0.50

_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_SHORT_MONTHS = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
# What a ticket states that a summary may need; a boilerplate step must never cut one of these
# from the text the customer wrote (quoted history is meant to go, facts and all).
FACTS: dict[str, re.Pattern[str]] = {
    "order": re.compile(r"#\s?\d{4,}|\bNP-\d{4,}\b", re.IGNORECASE),
    "amount": re.compile(r"[$€£]\s?\d[\d,]*(?:\.\d{2})?"),
    "date": re.compile(
        rf"\b(?:{_MONTHS}|{_SHORT_MONTHS})\.? \d{{1,2}}\b|\b\d{{1,2}} (?:{_MONTHS}|{_SHORT_MONTHS})"
        r"\b|\b\d{4}-\d{2}-\d{2}\b",
        re.IGNORECASE,
    ),
    "email": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "code": re.compile(r"\b[A-Z]{1,4}-\d{3,}\b|\bDE\d{9}\b|\bending \d{4}\b", re.IGNORECASE),
}
_QUOTED_LINE = re.compile(r"^\s*>|^\s*On\b.{4,200}\bwrote:\s*$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Section 1: compression steps


@dataclass
class StepFigures:
    """One step over a data set: tokens of the template's columns before and after it."""

    name: str
    before: int
    after: int

    @property
    def removed(self) -> int:
        return self.before - self.after


@dataclass
class CompressionFigures:
    """`compress_rows` over one data set."""

    label: str
    rows: int
    columns: list[str]
    original: int  # tokens of the template's columns, uncompressed
    steps: list[StepFigures]
    counted_after: int  # the compressed columns counted afresh (must equal steps[-1].after)
    prompt_before: int  # tokens of the rendered user prompts, uncompressed
    prompt_after: int  # ... and compressed
    seconds: float  # wall time of one compress_rows call (the best of `runs`)
    runs: int
    report_saved: int = 0  # the report's SAVED_COLUMN, summed

    @property
    def final(self) -> int:
        return self.steps[-1].after if self.steps else self.original

    @property
    def saved_share(self) -> float:
        return (self.original - self.final) / self.original if self.original else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


LOG_LINES = (
    "2024-11-0{d} 10:0{m}:13 WARN sync: retrying upload (attempt 3 of 5)",
    "2024-11-0{d} 10:0{m}:14 ERROR sync: upload failed: E-7031 Sync failed",
    "2024-11-0{d} 10:0{m}:15 INFO sync: waiting 60 s before the next attempt",
)
BACKGROUND = (
    "Some background on how we use it: the whole team relies on it every day, we set it up "
    "last spring following the quick-start guide, and until now it has worked without trouble. "
)


def with_pasted_logs(frame: pl.DataFrame, every: int = 5) -> pl.DataFrame:
    """`frame` with every `every`-th body made long the way real tickets are: a pasted log
    whose lines repeat, and a paragraph of background pasted several times over."""
    bodies = frame["body"].to_list()
    for i in range(0, len(bodies), every):
        log = "\n".join(
            line.format(d=1 + i % 9, m=k % 10) for k in range(12) for line in LOG_LINES
        )
        log = "\n".join(log.split("\n")[:3] * 12)  # the same three lines, pasted twelve times
        bodies[i] = f"{bodies[i]}\n\nHere is the log:\n{log}\n\n{BACKGROUND * 30}"
    return frame.with_columns(pl.Series("body", bodies, dtype=pl.String))


def step_names(config: CompressConfig) -> list[str]:
    """Each step's name in the report: its type (type_2 when a type is listed twice)."""
    return [
        name.removeprefix("compress_").removesuffix("_tokens")
        for name in report_columns(config)[:-1]
    ]


def column_tokens(frame: pl.DataFrame, columns: Sequence[str], model: str) -> int:
    """Tokens of the string values of `columns` (each value counted on its own, as
    `compress_rows` counts them); other column types are not compressed and not counted."""
    total = 0
    for column in columns:
        if column in frame.columns and frame.schema[column] == pl.String:
            total += sum(count_tokens(v, model) for v in frame[column].to_list() if v)
    return total


def prompt_tokens(frame: pl.DataFrame, renderer: PromptRenderer, id_column: str, model: str) -> int:
    rendered = render_prompts(frame, renderer, id_column)["prompt_user"]
    return sum(count_tokens(text, model) for text in rendered.to_list())


def compression_figures(
    label: str,
    rows: pl.DataFrame,
    config: CompressConfig,
    renderer: PromptRenderer,
    id_column: str,
    model: str,
    runs: int = 1,
) -> CompressionFigures:
    """Run `compress_rows` `runs` times (the best wall time is kept) and count the tokens."""
    columns = renderer.variables
    best = float("inf")
    compressed, report = rows, pl.DataFrame()
    for _ in range(max(1, runs)):
        started = time.perf_counter()
        compressed, report = compress_rows(rows, config, columns, model)
        best = min(best, time.perf_counter() - started)
    original = column_tokens(rows, columns, model)
    steps, before = [], original
    for name, column in zip(step_names(config), report_columns(config)[:-1], strict=True):
        removed = int(report[column].sum())
        steps.append(StepFigures(name, before, before - removed))
        before -= removed
    return CompressionFigures(
        label=label,
        rows=rows.height,
        columns=list(columns),
        original=original,
        steps=steps,
        counted_after=column_tokens(compressed, columns, model),
        prompt_before=prompt_tokens(rows, renderer, id_column, model),
        prompt_after=prompt_tokens(compressed, renderer, id_column, model),
        seconds=best,
        runs=max(1, runs),
        report_saved=int(report[SAVED_COLUMN].sum()) if SAVED_COLUMN in report.columns else 0,
    )


def step_table(fig: CompressionFigures) -> list[str]:
    """The per-step table; `share` is the step's removed tokens over the original tokens."""
    head = f"{'step':<16}{'before':>11}{'after':>11}{'removed':>10}{'share':>9}"
    lines = [head, "-" * len(head)]
    for s in fig.steps:
        share = s.removed / fig.original if fig.original else 0.0
        lines.append(f"{s.name:<16}{s.before:>11}{s.after:>11}{s.removed:>10}{100 * share:>8.1f}%")
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<16}{fig.original:>11}{fig.final:>11}{fig.original - fig.final:>10}"
        f"{100 * fig.saved_share:>8.1f}%"
    )
    return lines


def compression_lines(fig: CompressionFigures) -> list[str]:
    lines = [f"{fig.label}: {fig.rows} rows, columns {', '.join(fig.columns)}"]
    lines += ["  " + line for line in step_table(fig)]
    check = "agrees" if fig.counted_after == fig.final else "DISAGREES"
    lines.append(
        f"  total share saved {100 * fig.saved_share:.1f}% of the columns' tokens "
        f"(compressed columns counted afresh: {fig.counted_after}, {check})"
    )
    prompt_share = (
        (fig.prompt_before - fig.prompt_after) / fig.prompt_before if fig.prompt_before else 0.0
    )
    lines.append(
        f"  rendered user prompts: {fig.prompt_before} -> {fig.prompt_after} tokens "
        f"({100 * prompt_share:.1f}% saved, {fig.prompt_before / max(1, fig.rows):.1f} -> "
        f"{fig.prompt_after / max(1, fig.rows):.1f} per row)"
    )
    how = f"best of {fig.runs}" if fig.runs > 1 else "one run"
    lines.append(
        f"  compress_rows: {fig.rows_per_s:,.0f} rows/s ({fig.seconds:.3f} s, {how}, wall time)"
    )
    return lines


def unquoted(text: str) -> str:
    """`text` without quoted-history lines ('>' lines, 'On ... wrote:')."""
    return "\n".join(line for line in text.split("\n") if not _QUOTED_LINE.search(line))


def facts_of(text: str, products: Sequence[str]) -> set[tuple[str, str]]:
    """(kind, value) of every fact in `text`, values lower-cased (chat users skip shift)."""
    found = {(kind, m.group(0).lower()) for kind, rx in FACTS.items() for m in rx.finditer(text)}
    lowered = text.lower()
    found |= {("product", p.lower()) for p in products if p.lower() in lowered}
    return found


@dataclass
class FactCheck:
    """What the boilerplate step cut of the facts written outside quoted history."""

    texts: int = 0  # distinct values the step changed
    facts: int = 0  # facts in those values (outside quoted lines)
    lost: list[tuple[str, str, str, str]] = field(default_factory=list)  # id, column, kind, fact


def boilerplate_fact_check(
    rows: pl.DataFrame,
    config: CompressConfig,
    columns: Sequence[str],
    id_column: str,
    model: str,
    products: Sequence[str],
) -> FactCheck | None:
    """Each value's text as the boilerplate step receives it (after the steps before it) and as
    it leaves it; the facts outside quoted lines that did not survive. None without the step."""
    index = next(
        (i for i, s in enumerate(config.steps) if isinstance(s, BoilerplateStep) and s.enabled),
        None,
    )
    if index is None:
        return None
    check = FactCheck()
    for column in columns:
        if column not in rows.columns or rows.schema[column] != pl.String:
            continue
        functions = [step_function(s, model, column) for s in config.steps[: index + 1]]
        if functions[-1] is None:
            continue
        seen: set[str] = set()
        for row_id, value in rows.select(id_column, column).iter_rows():
            if not value or value in seen:
                continue
            seen.add(value)
            text = value
            for fn in functions[:-1]:
                text = fn(text) if fn is not None else text
            out = functions[-1](text)
            if out == text:
                continue
            check.texts += 1
            kept = out.lower()
            for kind, fact in sorted(facts_of(unquoted(text), products)):
                check.facts += 1
                if fact not in kept:
                    check.lost.append((str(row_id), column, kind, fact))
    return check


def fact_check_lines(check: FactCheck | None, label: str) -> list[str]:
    if check is None:
        return [f"{label}: no boilerplate step, no fact check"]
    lines = [
        f"{label} boilerplate fact check: {check.texts} values changed by the step, holding "
        f"{check.facts} facts (order numbers, amounts, dates, products, e-mails, codes) outside "
        f"quoted history; cut: {len(check.lost)}"
    ]
    for row_id, column, kind, fact in check.lost[:10]:
        lines.append(f"  CUT {row_id} {column}: {kind} {fact!r}")
    return lines


# ---------------------------------------------------------------------------------------------
# Section 2: runs against the fake server


@dataclass
class ProfileRun:
    """One run of the pipeline with one profile, and what its prompts had in common."""

    profile: str
    provider: str
    model: str
    ledger: pl.DataFrame
    system_tokens: int  # tokens of the static system text (instructions, context, examples)
    user_prefix_tokens: int  # tokens every user message starts with
    cache_minimum: int
    seconds: float
    compress_added: bool

    @property
    def static_prefix(self) -> int:
        return self.system_tokens + self.user_prefix_tokens


def paid_rows(ledger: pl.DataFrame) -> pl.DataFrame:
    """Rows that paid for a call (online, batch, or failed but billed): not dedup followers,
    not response-cache hits."""
    return ledger.filter(pl.col("mode").is_in(PAID_MODES) & (pl.col("input_tokens") > 0))


@dataclass
class CacheFigures:
    rows: int
    paid: int
    input_tokens: int
    cached: int
    written: int
    rows_with_read: int

    @property
    def hit_share(self) -> float:
        return self.cached / self.input_tokens if self.input_tokens else 0.0

    @property
    def rows_read_share(self) -> float:
        return self.rows_with_read / self.paid if self.paid else 0.0


def cache_figures(ledger: pl.DataFrame) -> CacheFigures:
    paid = paid_rows(ledger)
    return CacheFigures(
        rows=ledger.height,
        paid=paid.height,
        input_tokens=int(paid["input_tokens"].sum()),
        cached=int(paid["cached_input_tokens"].sum()),
        written=int(paid["cache_write_tokens"].sum()),
        rows_with_read=int((paid["cached_input_tokens"] > 0).sum()),
    )


def cache_minimum(provider: str, model: str) -> int:
    from batchopt.providers.registry import prompt_cache_min_tokens

    return prompt_cache_min_tokens(provider, model) or 0


def common_prefix(texts: Sequence[str]) -> str:
    return os.path.commonprefix(list(texts)) if texts else ""


def with_compress(loaded: LoadedPipeline, config: CompressConfig) -> tuple[LoadedPipeline, bool]:
    """`loaded` as is when it compresses, else with `config` as its `compress:` section."""
    if loaded.config.compress is not None:
        return loaded, False
    cfg = loaded.config.model_copy(update={"compress": config})
    return loaded.model_copy(update={"config": cfg}), True


def fake_env(fake: Any, out_dir: Path) -> dict[str, str]:
    """The process env without real provider settings, pointed at the fake server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update(
        {
            "OPENAI_BASE_URL": fake.openai_base_url,
            "OPENAI_API_KEY": "sk-fake-bench-compress",
            "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
            "ANTHROPIC_API_KEY": "sk-ant-fake-bench-compress",
            "BATCHOPT_OUT": str(out_dir),
        }
    )
    return env


def without_static_context(loaded: LoadedPipeline, profile: str) -> LoadedPipeline:
    """`loaded` with `profile` sending only the system text: no context, no examples."""
    cfg = loaded.config
    short = cfg.profiles[profile].model_copy(update={"context": "", "examples": []})
    cfg = cfg.model_copy(update={"profiles": {**cfg.profiles, profile: short}})
    return loaded.model_copy(update={"config": cfg})


def run_profile(
    pipeline: Path, config: CompressConfig, profile: str, folder: Path, fake: Any,
    short_prompt: bool = False,
) -> ProfileRun:
    """Run `pipeline` with `profile` on its own input, everything written under `folder`;
    `short_prompt`: without the pipeline's context and examples."""
    from batchopt.run.runner import Plan, RunOptions, RunSummary, run_pipeline

    folder.mkdir(parents=True, exist_ok=True)
    env = fake_env(fake, folder)
    loaded, added = with_compress(load_pipeline(pipeline, env=env), config)
    if short_prompt:
        loaded = without_static_context(loaded, profile)
    name = loaded.config.name
    seen: dict[str, Any] = {}

    def on_prepared(plan: Plan) -> None:
        requests = list(plan.requests.values())
        systems = sorted({r.system for r in requests})
        seen["system"] = systems[0] if len(systems) == 1 else common_prefix(systems)
        seen["user_prefix"] = common_prefix([r.user for r in requests])
        seen["provider"], seen["model"] = plan.profile.provider, plan.profile.model

    options = RunOptions(
        profile=profile,
        run_id="bench",
        output=folder / "outputs.parquet",
        ledger=folder / "ledger",
        cache_dir=folder / "cache",
    )
    started = time.perf_counter()
    summary = run_pipeline(loaded, options, env=env, on_prepared=on_prepared)
    seconds = time.perf_counter() - started
    if not isinstance(summary, RunSummary):
        raise RuntimeError(f"--profile {profile}: the run did not finish ({summary!r})")
    run_folder = folder / "ledger" / f"pipeline={name}" / "run_id=bench"
    ledger = pl.read_parquet(run_folder / "part.parquet")
    model = seen["model"]
    return ProfileRun(
        profile=profile,
        provider=seen["provider"],
        model=model,
        ledger=ledger,
        system_tokens=count_tokens(seen["system"], model),
        user_prefix_tokens=count_tokens(seen["user_prefix"], model),
        cache_minimum=cache_minimum(seen["provider"], model),
        seconds=seconds,
        compress_added=added,
    )


def cache_lines(run: ProfileRun) -> list[str]:
    fig = cache_figures(run.ledger)
    lines = [
        f"--profile {run.profile} ({run.provider} {run.model}): {fig.rows} rows, {fig.paid} paid "
        f"({fig.rows - fig.paid} dedup followers or cache hits), {run.seconds:.1f} s",
        f"  prompt tokens of paid rows {fig.input_tokens}, cache reads {fig.cached}: hit share "
        f"{100 * fig.hit_share:.1f}% of prompt tokens",
        f"  paid rows with a cache read: {fig.rows_with_read} of {fig.paid} "
        f"({100 * fig.rows_read_share:.1f}%); cache-write tokens {fig.written}",
        f"  static prefix: {run.static_prefix} tokens (system text {run.system_tokens}, common "
        f"start of the user messages {run.user_prefix_tokens}); {run.provider}'s cache minimum "
        f"for {run.model}: {run.cache_minimum}",
    ]
    if fig.cached == 0 and run.static_prefix < run.cache_minimum:
        lines.append(
            f"  no cache hits: the static prefix ({run.static_prefix} tokens) is shorter than the "
            f"minimum the provider caches ({run.cache_minimum} tokens)"
        )
    elif fig.cached == 0:
        lines.append("  no cache hits, although the static prefix reaches the minimum")
    return lines


# ---------------------------------------------------------------------------------------------
# Section 3: the acceptance ratio


@dataclass
class InputDollars:
    paid_rows: int
    billed_usd: float  # input-token dollars billed: cache reads and writes at their rates
    uncompressed_usd: float  # the same rows' uncompressed prompts at the full input rate
    full_usd: float = 0.0  # the prompts as sent (compressed), all at the full input rate
    input_tokens: int = 0  # the prompts as sent
    saved_tokens: int = 0  # compression_tokens_saved

    @property
    def ratio(self) -> float:
        return self.billed_usd / self.uncompressed_usd if self.uncompressed_usd else float("nan")


def input_dollars(ledger: pl.DataFrame, prices: PriceTable) -> InputDollars:
    """Input-token dollars of the paid rows, billed against uncompressed and uncached.

    billed       = (input - cached - written) x input + cached x cached_input
                   + written x cache_write
    uncompressed = (input + compression_tokens_saved) x input
    Both at the row's model's list rates; a batch row's discount applies to both sides.
    """
    paid = paid_rows(ledger)
    billed = uncompressed = full = 0.0
    for (provider, model, mode), part in paid.group_by(
        ["provider", "model", "mode"], maintain_order=True
    ):
        price = prices.price(str(provider), str(model))
        n_in = int(part["input_tokens"].sum())
        cached = int(part["cached_input_tokens"].sum())
        written = int(part["cache_write_tokens"].sum())
        saved = int(part["compression_tokens_saved"].fill_null(0).sum())
        factor = (1.0 - price.batch_discount) if mode == "batch" else 1.0
        billed += factor * (
            (n_in - cached - written) * price.input
            + cached * price.cached_input
            + written * price.cache_write
        )
        uncompressed += factor * (n_in + saved) * price.input
        full += factor * n_in * price.input
    return InputDollars(
        paid_rows=paid.height,
        billed_usd=billed / TOKENS_PER_UNIT,
        uncompressed_usd=uncompressed / TOKENS_PER_UNIT,
        full_usd=full / TOKENS_PER_UNIT,
        input_tokens=int(paid["input_tokens"].sum()),
        saved_tokens=int(paid["compression_tokens_saved"].fill_null(0).sum()),
    )


def output_dollars(ledger: pl.DataFrame, prices: PriceTable) -> float:
    paid = paid_rows(ledger)
    total = 0.0
    for (provider, model, mode), part in paid.group_by(
        ["provider", "model", "mode"], maintain_order=True
    ):
        price = prices.price(str(provider), str(model))
        factor = (1.0 - price.batch_discount) if mode == "batch" else 1.0
        total += factor * int(part["output_tokens"].sum()) * price.output
    return total / TOKENS_PER_UNIT


def ratio_lines(run: ProfileRun, prices: PriceTable) -> list[str]:
    dollars = input_dollars(run.ledger, prices)
    paid = paid_rows(run.ledger)
    price = prices.price(run.provider, run.model)
    verdict = "met" if dollars.ratio <= TARGET_RATIO else "missed"
    lines = [
        f"--profile {run.profile} ({run.model}; input ${price.input:g}, cached_input "
        f"${price.cached_input:g}, cache_write ${price.cache_write:g} per 1M tokens), one run, "
        f"{dollars.paid_rows} paid rows only (dedup followers and response-cache hits were not "
        "paid for and count on neither side):",
        f"  input dollars billed (compressed, prompt-cached):  ${dollars.billed_usd:.6f}",
        f"  input dollars uncompressed, uncached:               ${dollars.uncompressed_usd:.6f}",
        f"  ratio {dollars.ratio:.3f}  target <= {TARGET_RATIO:.2f}: {verdict}",
    ]
    uncompressed_tokens = dollars.input_tokens + dollars.saved_tokens
    if uncompressed_tokens and dollars.full_usd:
        lines.append(
            f"  of which compression: {dollars.saved_tokens} of {uncompressed_tokens} prompt "
            f"tokens ({100 * dollars.saved_tokens / uncompressed_tokens:.1f}%); prompt caching: "
            f"the {dollars.input_tokens} tokens sent billed at "
            f"{100 * dollars.billed_usd / dollars.full_usd:.1f}% of their full input price"
        )
    ledger_cost = float(paid["cost_usd"].fill_null(0).sum())
    earlier = float(paid["earlier_attempts_usd"].fill_null(0).sum())
    if earlier == 0:
        check = ledger_cost - output_dollars(run.ledger, prices)
        agrees = abs(check - dollars.billed_usd) <= 1e-9 + 1e-6 * abs(check)
        lines.append(
            f"  check: the ledger's cost_usd less output dollars = ${check:.6f} "
            f"({'agrees' if agrees else 'DISAGREES'})"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Main


def compress_config(loaded: LoadedPipeline) -> tuple[CompressConfig, str]:
    if loaded.config.compress is not None:
        return loaded.config.compress, f"the compress: section of {PIPELINE.name}"
    names = ", ".join(
        s["type"] + (f" {s['fields']}" if "fields" in s else "") for s in DEFAULT_STEPS
    )
    return parse_compress({"steps": DEFAULT_STEPS}), (
        f"{PIPELINE.name} has no compress: section; the default steps: {names}"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=20000, help="rows of the larger generated set (default 20000)"
    )
    parser.add_argument(
        "--seed", type=int, default=make_tickets.SEED, help="seed of the larger generated set"
    )
    parser.add_argument(
        "--skip-runs", action="store_true", help="print only section 1 (no fake-server runs)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the runs' outputs, ledgers and caches here"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="compress_rows runs on the sample (best kept)"
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    return args


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    total_started = time.perf_counter()
    shown = sys.argv[1:] if argv is None else list(argv)
    out(f"$ python benchmarks/bench_compress.py {shlex.join(shown)}".rstrip())
    out(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}")

    loaded = load_pipeline(PIPELINE, env={**os.environ, "BATCHOPT_OUT": tempfile.gettempdir()})
    cfg = loaded.config
    config, where = compress_config(loaded)
    renderer = PromptRenderer(cfg.prompt.template)
    model = cfg.profiles[RATIO_PROFILE].model if RATIO_PROFILE in cfg.profiles else "gpt-4o"
    exact = "exact" if is_exact_for(model) else "an estimate"
    id_column = cfg.input.id_column

    out("")
    out("== 1. compression steps ==")
    out(f"steps: {where}")
    out(
        f"tokens: {encoding_name_for(model)} ({exact} for {model}), of the template's columns "
        f"({', '.join(renderer.variables)}); share: of the original tokens"
    )
    sample = pl.read_parquet(SAMPLE)
    started = time.perf_counter()
    larger, _labels = make_tickets.build(args.seed, args.rows)
    built = time.perf_counter() - started
    figures = [
        compression_figures(
            f"sample ({SAMPLE.relative_to(REPO)})",
            sample,
            config,
            renderer,
            id_column,
            model,
            runs=args.repeats,
        ),
        compression_figures(
            f"generated (make_tickets.build seed {args.seed}, {built:.1f} s to build)",
            larger,
            config,
            renderer,
            id_column,
            model,
            runs=1,
        ),
        compression_figures(
            "generated, every 5th body with a pasted log (lines repeated) and long background",
            with_pasted_logs(larger),
            config,
            renderer,
            id_column,
            model,
            runs=1,
        ),
    ]
    for fig in figures:
        out("")
        for line in compression_lines(fig):
            out(line)
    out("")
    products = list(make_tickets.PRODUCTS)
    for label, frame in (("sample", sample), ("generated", larger)):
        check = boilerplate_fact_check(
            frame, config, renderer.variables, id_column, model, products
        )
        for line in fact_check_lines(check, label):
            out(line)

    if args.skip_runs:
        out("")
        out(f"total {time.perf_counter() - total_started:.1f} s")
        return 0

    from batchopt.fakeapi import FakeServer

    out("")
    out("== 2. prompt cache hit share (the sample, one run per profile, fake server) ==")
    runs: dict[str, ProfileRun] = {}
    with FakeServer() as fake, tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        # a folder of its own per invocation: a rerun into the same --out would otherwise find
        # every answer in the response cache and pay for nothing
        stamp = time.strftime("%Y%m%dT%H%M%S")
        root = args.out / f"bench-compress-{stamp}" if args.out is not None else Path(tmp)
        for profile in RUN_PROFILES:
            if profile not in cfg.profiles:
                out(f"--profile {profile}: not in {PIPELINE.name}, skipped")
                continue
            runs[profile] = run_profile(PIPELINE, config, profile, root / profile, fake)
        if RATIO_PROFILE in cfg.profiles:
            short = run_profile(
                PIPELINE, config, RATIO_PROFILE, root / "short", fake, short_prompt=True
            )
        if any(r.compress_added for r in runs.values()):
            out(f"(the runs compress with the steps above: {PIPELINE.name} has no compress:)")
        for run in runs.values():
            for line in cache_lines(run):
                out(line)
        if args.out is not None:
            out(f"run files kept under {root}")

    out("")
    out("== 3. acceptance 4: compression + prompt caching, input-token dollars ==")
    if RATIO_PROFILE not in runs:
        out(f"no {RATIO_PROFILE} run: no ratio")
    else:
        overrides = {name: p.model_dump() for name, p in cfg.pricing.models.items()}
        prices = PriceTable.load(overrides=overrides)
        for line in ratio_lines(runs[RATIO_PROFILE], prices):
            out(line)
        out("")
        out(
            f"the same run without the pipeline's context and examples (system text only, "
            f"{short.system_tokens} tokens: too short to cache), so only compression acts:"
        )
        for line in ratio_lines(short, prices):
            out(line)
        full, bare = input_dollars(runs[RATIO_PROFILE].ledger, prices), input_dollars(
            short.ledger, prices
        )
        out(
            f"  with the cached context and examples the input bill is ${full.billed_usd:.6f}, "
            f"without them ${bare.billed_usd:.6f} ({full.billed_usd / bare.billed_usd:.2f}x): "
            "caching makes a long static prefix cheap, not free"
        )
    out("")
    out(f"total {time.perf_counter() - total_started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
