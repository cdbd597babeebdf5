"""What a person sees: a progress bar while sending (or, in a log, progress lines), and the
closing summary."""

from __future__ import annotations

import sys
from typing import TextIO

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from batchopt.cli.progress_log import DEFAULT_PROGRESS_SECONDS, LogProgress
from batchopt.execute.state import Submission
from batchopt.plan.figures import limit_note, usd
from batchopt.providers.batching import BatchStatus
from batchopt.records import Result
from batchopt.run.runner import RunObserver, RunPending, RunSummary
from batchopt.run.status import StatusReport


class RichObserver(RunObserver):
    """Draws a rich progress bar on stderr while requests are sent; when stderr is not a
    terminal (a file, a pipe, a cron log), writes progress lines there instead (`LogProgress`).
    `enabled=False` (--quiet): neither."""

    def __init__(self, enabled: bool = True, *, interval: float = DEFAULT_PROGRESS_SECONDS,
                 stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self.enabled = enabled and stream.isatty()  # the bar
        self._log = LogProgress(stream, interval) if enabled and not self.enabled else None
        self._progress: Progress | None = None
        self._task: int | None = None

    def stage(self, name: str) -> None:
        super().stage(name)
        if self._log is not None:
            self._log.stage(name)

    def spent(self, amount: float) -> None:
        if self._log is not None:
            self._log.spent(amount)

    def sending(self, total: int) -> None:
        if self._log is not None:
            self._log.sending(total)
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("send", total=total)

    def answered(self, result: Result) -> None:
        if self._log is not None:
            self._log.answered()
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def batches(self, submissions: list[Submission], statuses: dict[str, BatchStatus]) -> None:
        """One line per pass while a run waits on its batches (stderr, so scripts can parse
        stdout); in a log, stamped like the progress lines."""
        if not self.enabled and self._log is None:
            return
        out = [_batch_line(s, statuses.get(s.batch_id or "")) for s in submissions
               if s.state in ("submitting", "pending")]
        if out and self._log is not None:
            self._log.line("waiting: " + " · ".join(out))
        elif out:
            Console(stderr=True, highlight=False).print("waiting: " + " · ".join(out))

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _batch_line(sub: Submission, status: BatchStatus | None) -> str:
    counts = ""
    if status is not None and status.total:
        counts = f" {status.succeeded + status.errored}/{status.total}"
    where = status.raw_status if status is not None else (sub.raw_status or sub.state)
    return f"{sub.batch_id or sub.tag} {where}{counts}"


def print_pending(pending: RunPending) -> None:
    """What a `--no-wait` run left with the provider, and how to pick it up (stdout)."""
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"[bold]run {pending.run_id}[/bold] · pipeline {pending.pipeline}: "
                  f"{len(pending.batches)} batch(es) pending (exit 75)")
    for sub in pending.batches:
        console.print(f"  round {sub.round} · {pending.tiers.get(sub.tag, '?')} "
                      f"({sub.provider}/{sub.model}): "
                      f"{sub.batch_id or '(being created) ' + sub.tag}  {sub.requests:,} "
                      f"requests · {sub.raw_status or sub.state}")
    for other, count in pending.waiting.items():
        console.print(f"  {count:,} requests are in a batch of run {other}, which shares the "
                      "response cache: their answers are read from it once that run collects")
    console.print(f"run the same command again with --run-id {pending.run_id} to collect; "
                  "nothing already sent will be sent or paid for again")


def print_status(report: StatusReport) -> None:
    """`batchopt status`: the run's state, its batches, and the exit code's meaning."""
    console = Console(highlight=False, soft_wrap=True)
    meaning = {
        "finished": "finished",
        "running": "another batchopt process is advancing it",
        "blocked": "stopped: " + str((report.blocked or {}).get("error", "")),
        "pending": "batches still running at the provider",
        "ready": "nothing to wait for: run it again with this --run-id to collect and finish",
    }[report.state]
    console.print(f"[bold]run {report.run_id}[/bold] · pipeline {report.pipeline}: {meaning} "
                  f"(exit {report.exit_code})")
    for sub in report.batches:
        status = report.statuses.get(sub.batch_id or "")
        line = _batch_line(sub, status)
        console.print(f"  round {sub.round} · {report.tiers.get(sub.tag, '?')} "
                      f"({sub.provider}/{sub.model}): {line} · "
                      f"{sub.requests:,} requests · {sub.state}"
                      + (f" · {sub.error}" if sub.error else ""))
    if report.finished:
        f = report.finished
        console.print(f"  rows {f.get('rows')} · failed {f.get('failed_rows')} · cost "
                      f"{usd(float(f.get('cost_usd') or 0.0))}")  # type: ignore[arg-type]
        console.print(f"  outputs {f.get('output')}")
        console.print(f"  ledger  {f.get('ledger')}")
    console.print(f"  state   {report.state_path}")


def print_summary(summary: RunSummary) -> None:
    """The closing summary, one fact a line, on stdout."""
    console = Console(highlight=False, soft_wrap=True)
    share = summary.saving_usd / summary.baseline_cost_usd if summary.baseline_cost_usd else 0.0
    console.print(f"[bold]run {summary.run_id}[/bold] · pipeline {summary.pipeline} · "
                  f"profile {summary.profile} ({summary.provider}/{summary.model})")
    console.print(f"rows               {summary.rows:,}")
    if summary.row_limit is not None:
        console.print(f"limit              {limit_note(summary.row_limit, summary.rows)}")
    console.print(f"distinct requests  {summary.distinct_requests:,} "
                  f"(exact duplicates: {summary.exact_duplicates:,}, semantic near-duplicates: "
                  f"{summary.semantic_duplicates:,})")
    when = f" (when it ran, {summary.finished_at}; nothing sent now)" if summary.finished_at \
        else ""
    console.print(f"answered           sent {summary.sent:,} · from cache "
                  f"{summary.cache_hits:,} · failed rows {summary.failed_rows:,}{when}")
    console.print(f"tokens             input {summary.input_tokens:,} (cached "
                  f"{summary.cached_input_tokens:,}) · output {summary.output_tokens:,}")
    if summary.compression:
        steps = " · ".join(f"{name} {n:,}" for name, n in summary.compression.items())
        console.print(f"compression        {steps} (prompt tokens removed, all rows)")
    console.print(f"cost               {usd(summary.cost_usd)} · baseline "
                  f"{usd(summary.baseline_cost_usd)} · saved {usd(summary.saving_usd)} "
                  f"({share:.1%})")
    # what the ledger says this run cost may have been paid in an earlier invocation of it
    if summary.sent == 0 and summary.failed_rows == 0 and summary.cost_usd == 0:
        console.print("spent $0: every request was answered from the cache or by dedup, "
                      "no request was sent")
    if len(summary.tiers) > 1 or summary.escalated:
        shown = " · ".join(f"{name} {n:,}" for name, n in sorted(summary.tiers.items()))
        console.print(f"tiers              {shown} (distinct requests, by the tier that "
                      f"answered) · escalated {summary.escalated:,}")
    console.print(f"outputs            {summary.output_path}")
    console.print(f"ledger             {summary.ledger_path}")
    for note in summary.notes:
        console.print(f"[yellow]{note}[/yellow]")
    if summary.failed_rows:
        console.print(f"[yellow]{summary.failed_rows} row(s) failed: see the ledger's "
                      f"'error' column (batchopt ledger query ... \"select * from failures\")"
                      f"[/yellow]")


def print_dedup_report(groups: pl.DataFrame, texts: pl.DataFrame, out_path: object,
                       sample: int, limit: int | None = None) -> None:
    """Counts by dedup kind, vetoes by guard, and the largest groups with their texts."""
    console = Console(highlight=False, soft_wrap=True)
    counts = dict(groups["dedup"].value_counts().iter_rows())
    distinct = groups["group_id"].n_unique()
    console.print(f"rows {groups.height:,} · distinct requests {distinct:,} · exact duplicates "
                  f"{counts.get('exact', 0):,} · semantic near-duplicates "
                  f"{counts.get('semantic', 0):,}")
    if limit is not None:
        console.print(f"limit: {limit_note(limit, groups.height)}")
    vetoes = groups.filter(pl.col("veto_guard").is_not_null())["veto_guard"].value_counts()
    if vetoes.height:
        shown = ", ".join(f"{g} {n}" for g, n in vetoes.sort("count", descending=True).iter_rows())
        console.print(f"near-merges vetoed by guards: {shown}")
    largest = (groups.group_by("group_id").agg(pl.len().alias("size"),
                                               pl.col("representative_id").first())
               .filter(pl.col("size") > 1).sort(["size", "group_id"], descending=[True, False])
               .head(sample))
    text_of = dict(texts.iter_rows())
    for group_id, size, rep in largest.iter_rows():
        console.print(f"\n[bold]group of {size}[/bold] (representative {rep}): "
                      f"{_clip(text_of.get(rep, ''))}")
        members = groups.filter((pl.col("group_id") == group_id) & (pl.col("id") != rep)).head(3)
        for row in members.iter_rows(named=True):
            sim = f"{row['similarity']:.3f}" if row["similarity"] is not None else "exact"
            text = _clip(text_of.get(row["id"], ""))
            console.print(f"  {row['id']} ({row['dedup']}, {sim}): {text}")
    console.print(f"\ngroups written to {out_path}")


def _clip(text: str, width: int = 90) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
