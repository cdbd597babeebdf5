"""What one invocation of a run id reads back from the earlier ones: whether it is the same job
(`job_fingerprint`), the summary of a job already finished (read from its ledger part), and what
the ledger part recorded of the calls it made."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from batchopt.errors import EXIT_OK
from batchopt.ledger.store import part_path
from batchopt.run.fanout import LedgerTotals
from batchopt.run.model import Plan, RunSummary

__all__ = ["earlier_calls", "finished_summary", "job_fingerprint", "keep_earlier",
           "limit_changed", "run_summary"]


def limit_changed(was: int | None, now: int | None) -> str:
    """A run resumed or re-run under another --limit: it covers what it read this time."""
    def shown(limit: int | None) -> str:
        return "none" if limit is None else str(limit)

    return (f"--limit changed since this run id last ran ({shown(was)} -> {shown(now)}): outputs "
            "and ledger cover the rows read this time; answers it already paid for were reused")


def job_fingerprint(plan: Plan) -> str:
    """What makes two invocations of a run id the same job: the configuration, the rows read
    (ids, in order, and the group each joined), every request the plan would send, what it
    skips, the --limit and where the outputs and ledger go."""
    digest = hashlib.blake2b(digest_size=16)
    cfg = plan.pipeline.config
    head = [plan.row_limit, str(plan.paths["output"]), str(plan.paths["ledger"]),
            plan.config_hash]  # validators, routing, tiers: another configuration is another job
    digest.update(json.dumps(head).encode())
    ids = plan.rows.select(pl.col(cfg.input.id_column).cast(pl.String), "group_id")
    for start in range(0, ids.height, 100_000):
        chunk = ids.slice(start, 100_000)
        digest.update("\n".join(f"{i}\t{g}" for i, g in chunk.iter_rows()).encode())
    digest.update(b"|" + "\n".join(plan.requests.iter_keys()).encode())
    digest.update(b"|" + "\n".join(sorted(r.key for r, _ in plan.skipped.values())).encode())
    return digest.hexdigest()


def run_summary(plan: Plan, totals: LedgerTotals, *, sent: int, output_path: Path,
                ledger_path: Path, exit_code: int, notes: list[str],
                finished_at: str | None = None) -> RunSummary:
    """The summary of `plan`'s run from its ledger's totals."""
    return RunSummary(
        run_id=plan.run_id, pipeline=plan.pipeline.config.name,
        profile=" → ".join(plan.tiers) if len(plan.tiers) > 1 else plan.profile_name,
        provider=plan.profile.provider, model=plan.profile.model, rows=totals.rows,
        distinct_requests=plan.requests.distinct_keys(), exact_duplicates=totals.exact,
        semantic_duplicates=totals.semantic, cache_hits=totals.cache_hits, sent=sent,
        failed_rows=totals.failed, input_tokens=totals.input_tokens,
        cached_input_tokens=totals.cached_input_tokens, output_tokens=totals.output_tokens,
        cost_usd=totals.cost_usd, baseline_cost_usd=totals.baseline_cost_usd,
        output_path=output_path, ledger_path=ledger_path, exit_code=exit_code, notes=notes,
        tiers=dict(totals.paid_by_tier), escalated=totals.escalated,
        compression=plan.compression, row_limit=plan.row_limit, finished_at=finished_at,
    )


def finished_summary(plan: Plan, finished: dict[str, object] | None, job: str
                     ) -> RunSummary | None:
    """The summary of a finished run of this same job, read from its ledger part (nothing
    sent, nothing rewritten); None when the run has not finished this job or its outputs or
    ledger are gone (then it runs, answering from the cache what it paid for). A run that ended
    with failed rows or a budget stop is not done: invoked again, it retries what failed or
    goes on under a raised budget, paying for nothing it already paid for."""
    if (not finished or finished.get("job") != job or finished.get("exit_code") != EXIT_OK
            or finished.get("failed_rows")):
        return None
    output = Path(str(finished.get("output")))
    part = part_path(plan.paths["ledger"], plan.pipeline.config.name, plan.run_id)
    if output != plan.paths["output"] or not output.exists() or not part.exists():
        return None
    totals = LedgerTotals()
    totals.add(pl.read_parquet(part))
    at = str(finished.get("at") or "an earlier invocation")
    notes = [str(n) for n in finished.get("notes") or []]  # type: ignore[attr-defined]
    notes.append(f"run {plan.run_id} finished at {at}: summary read from its ledger; "
                 "nothing sent, nothing rewritten")
    return run_summary(
        plan, totals, sent=int(finished.get("sent") or 0),  # type: ignore[call-overload]
        output_path=output, ledger_path=part,
        exit_code=int(finished.get("exit_code") or EXIT_OK),  # type: ignore[call-overload]
        notes=notes, finished_at=at,
    )


_CALL_FACTS = ("attempts", "estimated_cost_usd")


def earlier_calls(plan: Plan) -> pl.DataFrame | None:
    """What this run's ledger part (an earlier invocation of the run id) recorded of the calls
    it made: row, request id, attempts and the estimate made before sending."""
    part = part_path(plan.paths["ledger"], plan.pipeline.config.name, plan.run_id)
    if not part.exists():
        return None
    return (pl.read_parquet(part, columns=["row_id", "request_id", *_CALL_FACTS])
            .filter(pl.col("request_id").is_not_null() & (pl.col("attempts") > 0))
            .unique(["row_id", "request_id"], keep="first"))


def keep_earlier(ledger: pl.DataFrame, earlier: pl.DataFrame | None) -> pl.DataFrame:
    """An answer this run paid for in an earlier invocation comes back from the cache with no
    attempts: the ledger keeps what it recorded of that call when it was made."""
    if earlier is None or not earlier.height:
        return ledger
    joined = ledger.join(earlier, on=["row_id", "request_id"], how="left", suffix="_was",
                         maintain_order="left")
    same = pl.col("attempts_was").is_not_null() & (pl.col("attempts") == 0)
    return joined.with_columns(
        pl.when(same).then(pl.col(f"{c}_was")).otherwise(pl.col(c)).alias(c) for c in _CALL_FACTS
    ).select(ledger.columns)
