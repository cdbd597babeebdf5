"""One run of a pipeline, start to finish: the only module that knows the whole flow (with its
helpers `tiers`, which routes rows to tiers, and `rounds`, which answers requests).

    read → render → exact + semantic dedup → route to tiers → requests → response cache
         → online calls or provider batches (→ cascade rounds) → fan out
         → outputs (Parquet) + ledger (Parquet, DuckDB views)

`prepare` does everything before the first paid request (and spends nothing); `execute` sends
what the cache cannot answer, persisting each answer as it arrives; `finish` fans the answers out
to every row and writes the outputs and the ledger.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from datetime import UTC, date, datetime
from functools import partial
from typing import TYPE_CHECKING

import polars as pl

from batchopt.config.pipeline import LoadedPipeline
from batchopt.dates import logical_date
from batchopt.engines import get_engine
from batchopt.errors import EXIT_BUDGET, EXIT_FAILED_ROWS, EXIT_OK, NoBatchAPIError
from batchopt.execute.cache import ResponseCache
from batchopt.execute.state import RunLock, RunState, run_dir
from batchopt.io.writer import ParquetParts
from batchopt.ledger.calls_table import write_calls
from batchopt.ledger.history import read_history
from batchopt.ledger.ledger import price_ledger
from batchopt.ledger.store import LedgerPart, part_path, write_views_file
from batchopt.prompts.request_table import KeyTiers
from batchopt.providers.registry import create_provider
from batchopt.providers.token_counting import counter_for
from batchopt.records import Request, Result
from batchopt.run import identity as run_identity
from batchopt.run.calls import NOT_BILLED, by_group, calls_frame
from batchopt.run.cost import request_cost
from batchopt.run.fanout import (
    LedgerTotals,
    group_results,
    ledger_facts,
    output_table,
    with_other_calls,
    write_fanned_out,
)
from batchopt.run.fingerprint import config_hash
from batchopt.run.model import Answers, Plan, RunObserver, RunOptions, RunPending, RunSummary
from batchopt.run.resume import (
    earlier_calls,
    finished_summary,
    job_fingerprint,
    keep_earlier,
    limit_changed,
    run_summary,
)
from batchopt.run.rounds import execute
from batchopt.run.settings import resolve_mode, tier_settings
from batchopt.run.steps import (
    baseline_of,
    input_paths,
    price_table,
    read_input,
    render_rows,
    render_step,
    semantic_step,
    tier_requests,
)
from batchopt.run.tiers import make_tier, tier_names

if TYPE_CHECKING:  # the semantic modules load numpy and faiss: only when a pipeline uses them
    pass

__all__ = ["Plan", "RunObserver", "RunOptions", "RunPending", "RunSummary", "finish",
           "new_run_id", "prepare", "run_pipeline"]


def new_run_id() -> str:
    """A sortable run id: the UTC time to the second."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def prepare(
    loaded: LoadedPipeline,
    options: RunOptions,
    env: dict[str, str] | None = None,
    observer: RunObserver | None = None,
    *,
    require_keys: bool = True,
) -> Plan:
    """Read, render, dedup and build the requests; check prices and keys (unless not
    `require_keys`: an estimate needs none). Spends nothing."""
    observer = observer or RunObserver()
    env = dict(os.environ) if env is None else env
    cfg = loaded.config
    names, strategy = tier_names(loaded, options.profile)
    settings = {name: tier_settings(loaded, name, env, require_key=require_keys)
                for name in names}
    prices = price_table(loaded, names[0])
    # every tier's price before any row is read (exit 2 if none)
    tiers = {name: make_tier(loaded, name, settings[name], prices) for name in names}
    baseline = baseline_of(loaded, tiers[names[-1]], prices)
    paths = input_paths(loaded, options)
    observer.stage("read")
    rows, keep_columns, renderer = read_input(loaded, options, list(tiers.values()), paths)
    rows, step = render_step(loaded, rows, renderer, tiers, strategy, baseline, observer)
    engine_name = options.engine or cfg.execution.engine
    ray_address = options.ray_address or cfg.execution.ray_address
    engine = get_engine(engine_name, ray_address, cfg.execution.ray_workers)
    with closing(engine):  # row stages and embedding run on the engine
        rows, compression = render_rows(loaded, rows, step, engine, observer)
        rows, semantic, guards = semantic_step(loaded, rows, tiers, paths, engine, observer)
    routed = tier_requests(loaded, rows, tiers, strategy, semantic, prices, paths)
    tiers = routed.tiers
    mode, fallback = resolve_mode(loaded, options.mode, tiers)
    fingerprint = config_hash(loaded, strategy, tiers)
    run_id = options.run_id or new_run_id()
    profile_name = names[0]
    return Plan(
        pipeline=loaded, profile_name=profile_name, profile=tiers[profile_name].profile,
        settings=settings[profile_name], run_id=run_id, rows=routed.rows,
        requests=routed.requests, price=tiers[profile_name].price, baseline=baseline,
        prices=prices, paths=paths, keep_columns=keep_columns, semantic=semantic,
        guards=guards, mode=mode, online_fallback=fallback, wait=options.wait, tiers=tiers,
        strategy=strategy, routes=routed.routes, key_tier=KeyTiers(routed.requests),
        history=read_history(paths["ledger"], cfg.name, fingerprint), compression=compression,
        overflow=routed.overflow, skipped=routed.skipped, empty=routed.empty,
        engine=engine_name, ray_address=ray_address, row_limit=options.limit,
        config_hash=fingerprint,
        logical_date=logical_date(options.date, run_id),
        make_provider=options.providers or create_provider,
    )


def finish(plan: Plan, answers: Answers) -> RunSummary:
    """Fan answers out to every row; write the outputs and the ledger atomically."""
    cfg = plan.pipeline.config
    groups, asked = _answered_groups(plan, answers)
    status_column = f"{cfg.prompt.output_column}_status" if answers.budget_stop else None
    constants = {"run_id": plan.run_id, "pipeline": cfg.name, "run_at": datetime.now(UTC),
                 "row_limit": plan.row_limit, "config_hash": plan.config_hash,
                 "logical_date": plan.logical_date}
    earlier = earlier_calls(plan)

    def to_ledger(rows: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
        facts = ledger_facts(rows, groups, cfg.input.id_column, constants)
        return keep_earlier(
            with_other_calls(price_ledger(facts, plan.prices, plan.baseline[0], plan.baseline[1],
                                          price_version=plan.prices.version), facts),
            earlier)

    def to_outputs(rows: pl.DataFrame, groups: pl.DataFrame) -> pl.DataFrame:
        return output_table(rows, groups, plan.keep_columns, cfg.prompt.output_column,
                            cfg.prompt.json_schema, status_column)

    with (ParquetParts(plan.paths["output"]) as outputs,
          LedgerPart(plan.paths["ledger"], cfg.name, plan.run_id) as ledger):
        totals = write_fanned_out(plan.rows, groups, outputs, ledger,
                                  to_outputs=to_outputs, to_ledger=to_ledger)
        output_file = outputs.commit()
        ledger_file = ledger.commit()
    write_calls(calls_frame(answers.calls, asked), ledger_file.parent)
    write_views_file(plan.paths["ledger"])
    exit_code, notes = _outcome(plan, answers, totals)
    return run_summary(plan, totals, sent=sum(1 for c in answers.calls
                                              if c["status"] != NOT_BILLED),
                       output_path=output_file, ledger_path=ledger_file, exit_code=exit_code,
                       notes=notes)


def _answered_groups(plan: Plan, answers: Answers
                     ) -> tuple[pl.DataFrame, dict[str, list[Request]]]:
    """(Each group's final answer, tier, route and cost as a frame; every request each group
    asked: the tiers a cascade tried and its judge calls)."""
    results = dict(answers.results)
    final = {group: chain[-1] for group, chain in answers.chain.items()}
    routes, escalated = {}, set()
    for group, (request, why) in plan.skipped.items():  # too long or empty: never sent
        final[group], routes[group] = request, plan.routes[group]
        status = "skipped" if group in plan.empty else "failed"  # empty: not a failure
        results[request.key] = Result(key=request.key, text=None, status=status, attempts=0,
                                      error=why)
    for group, chain in answers.chain.items():
        tier, reason = plan.routes[group]
        if len(chain) > 1:
            tier = answers.tier_of(plan, chain[-1]).name
            reason = f"{reason}; escalated to {tier}: {answers.escalations[group]}"
            escalated.add(group)
        routes[group] = (tier, reason)
    # what each row paid besides its final answer (cheaper tiers tried first, judge calls),
    # and its calls never confirmed: the run id's calls record
    asked = {g: [*chain, *answers.judged.get(g, [])] for g, chain in answers.chain.items()}
    others = by_group(plan, asked, {g: results[c[-1].key] for g, c in answers.chain.items()},
                      answers.calls, partial(answers.tier_of, plan))
    earlier = {g: s["earlier_attempts_usd"] for g, s in others.items()}
    unsent = {request.key for request, _ in plan.skipped.values()}
    groups = group_results(
        final, results, lambda request: 0.0 if request.key in unsent else request_cost(
            plan, request, batch=plan.mode == "batch", tier=answers.tier_of(plan, request)),
        answers.past,
        routes, earlier, escalated, plan.overflow, others,
    )
    groups = _baseline_output(groups, plan.baseline)
    if answers.unverified:  # a cascade the budget stopped keeps its answer so far
        groups = _keep_unverified(groups, answers, final, results)
    return groups, asked


def _keep_unverified(groups: pl.DataFrame, answers: Answers, final: dict[str, Request],
                     results: dict[str, Result]) -> pl.DataFrame:
    """The groups whose cascade the budget stopped: marked unverified, their answer so far
    kept."""
    from batchopt.ledger.ledger import UNVERIFIED

    stopped = pl.col("group_id").is_in(pl.Series(list(answers.unverified)).implode())
    # a paid answer its checks rejected stays failed, but its text is kept (it was paid for,
    # and the escalation that would have replaced it was not sent)
    paid = {group: results[request.key].text for group, request in final.items()
            if group in answers.unverified and results[request.key].text is not None}
    return groups.with_columns(
        status=pl.when(stopped & (pl.col("status") == "ok"))
        .then(pl.lit(UNVERIFIED)).otherwise(pl.col("status")),
        answer=pl.when(stopped & pl.col("answer").is_null())
        .then(pl.col("group_id").replace_strict(paid, default=None, return_dtype=pl.String))
        .otherwise(pl.col("answer")),
    )


def _outcome(plan: Plan, answers: Answers, totals: LedgerTotals) -> tuple[int, list[str]]:
    """(The run's exit code, its notes): failed rows over the pipeline's share, a budget stop,
    rows skipped for an empty input."""
    exit_code = EXIT_OK
    if totals.failed and totals.failed / totals.rows > plan.pipeline.config.max_failed_share:
        exit_code = EXIT_FAILED_ROWS
    notes = []
    if plan.empty:
        notes.append(f"{len(plan.empty):,} row(s) skipped: empty input (input.on_empty: skip; "
                     "every template field null or blank): not sent, no cost")
    if answers.budget_stop:
        exit_code = EXIT_BUDGET
        notes.append(f"{answers.budget_stop}: the rest was not sent (outputs and ledger kept)")
    return exit_code, notes


def run_pipeline(
    loaded: LoadedPipeline,
    options: RunOptions | None = None,
    *,
    env: dict[str, str] | None = None,
    observer: RunObserver | None = None,
    on_prepared: Callable[[Plan], None] | None = None,
) -> RunSummary | RunPending:
    """Run a pipeline, or move a batch run forward; `RunPending` while batches are out.

    The run's lock is held throughout: a second process on the same run id stops at once with
    RunLockedError (exit 75) and sends nothing."""
    options = options or RunOptions()
    observer = observer or RunObserver()
    plan = prepare(loaded, options, env=env, observer=observer)
    if on_prepared is not None:
        on_prepared(plan)
    directory = run_dir(plan.paths["cache"], plan.pipeline.config.name, plan.run_id)
    with RunLock(directory, plan.run_id):
        state = RunState.open(directory)
        try:
            before = state.get("started") or {}
            plan = replace(plan, logical_date=_check_identity(
                plan, state, started=bool(before), date_given=options.date is not None))
            return _run(plan, state, before, observer)
        finally:
            state.close()


def _run(plan: Plan, state: RunState, before: dict[str, object], observer: RunObserver
         ) -> RunSummary | RunPending:
    """The run under its lock: what it finished already, else send what is left and finish."""
    cfg = plan.pipeline.config
    job = job_fingerprint(plan)
    done = finished_summary(plan, state.get("finished"), job)
    if done is not None:  # the same job, finished: its ledger says what it did
        return done
    state.set("finished", None)  # another job on this run id: not finished until it is
    state.set("started", {"profile": plan.profile_name, "mode": plan.mode,
                          "row_limit": plan.row_limit, "job": job})
    state.set("blocked", None)  # what stopped an earlier invocation may be mended now
    cache = ResponseCache(plan.paths["cache"] / cfg.name, enabled=cfg.cache.enabled)
    try:
        answers = execute(plan, cache, observer, state)
    except NoBatchAPIError as exc:  # `status` says so too: a person must act
        state.set("blocked", {"error": str(exc), "exit_code": exc.exit_code})
        raise
    finally:
        cache.close()
    if isinstance(answers, RunPending):
        return answers
    observer.stage("write")
    summary = finish(plan, answers)
    notes = list(summary.notes)  # what a re-run reads back: not this invocation's limit
    if before and before.get("row_limit") != plan.row_limit:
        summary.notes.append(limit_changed(before.get("row_limit"),  # type: ignore[arg-type]
                                           plan.row_limit))
    state.set("finished", {
        "exit_code": summary.exit_code, "rows": summary.rows,
        "failed_rows": summary.failed_rows, "cost_usd": summary.cost_usd,
        "output": str(summary.output_path), "ledger": str(summary.ledger_path),
        "job": job, "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sent": summary.sent, "notes": notes,
    })
    return summary


def _check_identity(plan: Plan, state: RunState, *, started: bool, date_given: bool
                    ) -> date | None:
    """Go on only with the same run (`batchopt.run.identity`): record who it is in its state and
    beside its ledger part. Returns the logical date the run is for: the one it was started
    for."""
    cfg = plan.pipeline.config
    current = run_identity.identity(cfg.name, plan.run_id, plan.logical_date, plan.config_hash,
                                    plan.paths["cache"])
    folder = part_path(plan.paths["ledger"], cfg.name, plan.run_id).parent
    recorded = state.get("identity")
    ident = run_identity.check(current, recorded, started, folder, date_given)
    if recorded != ident:
        state.set("identity", ident)
    if run_identity.read_ledger_side(folder) != ident:
        run_identity.write_ledger_side(folder, ident)
    if ident["logical_date"]:
        return date.fromisoformat(ident["logical_date"])
    return plan.logical_date


def _baseline_output(groups: pl.DataFrame, baseline: tuple[str, str]) -> pl.DataFrame:
    """Each group's answer counted with the baseline model's counter: what the baseline would
    have generated to give it, whichever tier answered (no answer: 0)."""
    counter = counter_for(*baseline)  # uncalibrated: the same count every run
    counts = [counter.count(text) if text else 0 for text in groups["answer"].to_list()]
    return groups.with_columns(pl.Series("baseline_output_tokens", counts, dtype=pl.Int64))
