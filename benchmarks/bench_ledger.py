"""How long the shipped ledger views take over a big ledger (10M rows by default).

    python benchmarks/bench_ledger.py                         # 10M rows: 20 runs x 500k rows
    python benchmarks/bench_ledger.py --rows 1000000 --runs 10 --keep /tmp/big-ledger
    python benchmarks/bench_ledger.py --ledger out/ledger     # time an existing ledger

Generates a ledger in the real layout (`pipeline=<p>/run_id=<id>/part.parquet`, two pipelines,
one run a day for `--runs` days) with numpy: modes, tiers, cascades and escalations, dedup
followers, cache hits, prompt-cache reads and writes, failures (billed and not), batch ids,
estimates and counters. Each run's facts are priced by the project's own `price_ledger` (so the
savings levers add up per row) and written by `write_ledger`, then the views file is written.

Then, through `batchopt.ledger.store.connect` (an in-memory DuckDB with every shipped view), each
view is read in full (`fetchall` of `SELECT * FROM <view>`: every row of it is computed and
brought into Python), best of `--repeat`; a result of more than 10,000 rows is also timed as
`count(*)` over the same query, to show what the fetch into Python costs. `most_expensive_rows`
holds every row of the ledger ordered by cost, so it is read as people read it, with `LIMIT 100`
(over all runs, and over the last run). The macros are timed the same way, and
`SELECT count(*) FROM ledger` shows the cost of opening the Parquet files. As a reference, polars
reads the columns cost_by_run needs (`--naive-all-columns`: every column) and computes its counts
and sums per run, timed once. The generated ledger goes to a temporary folder, deleted at the
end unless `--keep`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

from batchopt.ledger import FACT_SCHEMA, PriceTable, price_ledger, write_ledger, write_views_file
from batchopt.ledger.store import connect

VIEWS_SQL = Path(__file__).resolve().parents[1] / "batchopt" / "ledger" / "views.sql"
MODES = ["online", "batch", "cache", "dedup", "failed"]
# pipeline -> (provider, cheap model, strong model, routing, token counter)
PIPELINES = {
    "tickets": ("openai", "gpt-4o-mini", "gpt-4o", "cascade", "exact:o200k_base"),
    "invoices": (
        "anthropic",
        "claude-3-5-haiku",
        "claude-sonnet-4-5",
        "rules",
        "estimate:o200k_base x1.080 (calibrated on 52,113 rows)",
    ),
}
MAX_TOKENS = {"cheap": 64, "strong": 256}
PREFIX_TOKENS = 2_300  # the static prefix (system, context, examples) every row sends first
FAILURES = [
    "openai: HTTP 400: invalid request",  # not billed
    "not sent: budget max_usd 20 reached",  # not billed
    "invalid JSON: expected an object",  # billed: the answer came back, unusable
]
START = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)


def _pick(labels: list[str], index: np.ndarray) -> pl.Series:
    return pl.Series(labels, dtype=pl.String).gather(index)


def make_facts(
    n: int,
    run: int,
    pipeline: str,
    run_id: str,
    cached_from: str | None,
    prices: PriceTable,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """`n` fact rows of one run, vectorised; distributions loosely after real runs."""
    provider, cheap, strong, routing, counter = PIPELINES[pipeline]
    cache_p = 0.0 if cached_from is None else min(0.05 + 0.02 * run, 0.35)
    p = np.array([0.42 - cache_p / 2, 0.40 - cache_p / 2, cache_p, 0.16, 0.02])
    mode = rng.choice(5, size=n, p=p / p.sum())
    rep = mode != 3
    sent = (mode == 0) | (mode == 1) | (mode == 4)
    failure = np.where(mode == 4, rng.choice(3, size=n, p=[0.4, 0.2, 0.4]), -1)
    billed = (mode == 0) | (mode == 1) | (failure == 2)

    if routing == "cascade":
        escalated = rep & (mode != 4) & (rng.random(n) < 0.08)
        strong_tier = escalated | ((mode == 3) & (rng.random(n) < 0.08))
    else:
        escalated = np.zeros(n, dtype=bool)
        strong_tier = rng.random(n) < 0.25
    tier = np.where(strong_tier, 1, 0)
    ruled_up = strong_tier & (routing != "cascade")  # rules sent the row to the strong tier

    user = np.clip(rng.lognormal(5.5, 0.7, n), 20, 30_000).astype(np.int64)
    prompt = PREFIX_TOKENS + user
    max_out = np.where(strong_tier, MAX_TOKENS["strong"], MAX_TOKENS["cheap"])
    out = np.minimum(np.clip(rng.lognormal(3.8, 0.5, n), 1, None).astype(np.int64), max_out)
    squeezed = (rng.random(n) < 0.6) * (user * rng.uniform(0.0, 0.35, n)).astype(np.int64)
    reads = rng.random(n) < 0.9
    if provider == "anthropic":
        cached = np.where(reads, PREFIX_TOKENS, 0)
        written = np.where(~reads & (rng.random(n) < 0.01), PREFIX_TOKENS, 0)
    else:
        cached = np.where(reads, (PREFIX_TOKENS // 128) * 128, 0)
        written = np.zeros(n, dtype=np.int64)
    latency = rng.lognormal(6.6, 0.5, n)

    rates = {t: prices.price(provider, m) for t, m in (("cheap", cheap), ("strong", strong))}
    r_in = np.where(strong_tier, rates["strong"].input, rates["cheap"].input)
    r_out = np.where(strong_tier, rates["strong"].output, rates["cheap"].output)
    counted = (prompt * rng.uniform(0.93, 1.02, n)).astype(np.int64)
    estimate = (counted * r_in + max_out * r_out) / 1e6 * np.where(mode == 1, 0.5, 1.0)
    cut_answer = (prompt * rates["cheap"].input + MAX_TOKENS["cheap"] * rates["cheap"].output) / 1e6

    idx = np.arange(n)
    reps = np.flatnonzero(rep)
    leader = idx.copy()
    leader[~rep] = reps[rng.integers(0, len(reps), size=int((~rep).sum()))]
    semantic = (~rep) & (rng.random(n) < 0.35)
    row_ids = pl.Series(np.arange(n) + run * n).cast(pl.String).str.zfill(9)
    row_id = ("T" + row_ids).alias("row_id")
    on_cheap = f"{routing}: starts on cheap" if routing == "cascade" else "default"
    reasons = [
        on_cheap,
        "cascade: starts on cheap; escalated to strong: cheap rejected (finish_reason: "
        "finish_reason 'length')"
        if routing == "cascade"
        else "rules[0] 'long': prompt_tokens > 400",
    ]
    zero = np.int64(0)
    facts = pl.DataFrame(
        {
            "run_id": pl.Series([run_id]).gather(np.zeros(n, dtype=np.int64)),
            "pipeline": pl.Series([pipeline]).gather(np.zeros(n, dtype=np.int64)),
            "run_at": pl.Series(
                [START + dt.timedelta(days=run, minutes=int(rng.integers(0, 600)))]
            ).gather(np.zeros(n, dtype=np.int64)),
            "row_id": row_id,
            "group_id": ("g" + row_ids.gather(leader)),
            "representative_id": ("T" + row_ids.gather(leader)),
            "dedup": _pick(["none", "exact", "semantic"], np.where(rep, 0, 1 + semantic)),
            "similarity": np.where(semantic, rng.uniform(0.9, 0.99, n), np.nan),
            "tier": _pick(["cheap", "strong"], tier),
            "provider": pl.Series([provider]).gather(np.zeros(n, dtype=np.int64)),
            "model": _pick([cheap, strong], tier),
            "mode": _pick(MODES, mode),
            "route_reason": _pick(reasons, (escalated | ruled_up).astype(np.int64)),
            "escalated": escalated,
            "status": _pick(["ok", "failed"], (mode == 4).astype(np.int64)),
            "error": _pick(FAILURES, np.maximum(failure, 0)),
            "attempts": np.where(sent, 1 + (rng.random(n) < 0.03), np.where(mode == 2, 1, 0)),
            "latency_ms": np.where(billed, latency, 0.0),
            "batch_id": ("batch_" + pl.Series(idx // 50_000 + run * 100).cast(pl.String)),
            "retry_reason": _pick(["", "expired"], (rng.random(n) < 0.003).astype(np.int64)),
            "request_id": ("req_" + row_ids),
            "input_tokens": np.where(billed, prompt, zero),
            "cached_input_tokens": np.where(billed, cached, zero),
            "cache_write_tokens": np.where(billed, written, zero),
            "output_tokens": np.where(billed, out, zero),
            "compression_tokens_saved": np.where(rep, squeezed, zero),
            "baseline_input_tokens": prompt + squeezed,
            "baseline_output_tokens": out,
            "baseline_latency_ms": latency,
            "estimated_cost_usd": np.where(sent, estimate, 0.0),
            "estimated_input_tokens": counted,
            "token_counter": pl.Series([counter]).gather(np.zeros(n, dtype=np.int64)),
            "earlier_attempts_usd": np.where(escalated & billed, cut_answer, 0.0),
        }
    )
    facts = facts.with_columns(
        pl.col("similarity").fill_nan(None),
        pl.when(pl.col("status") == "failed").then("error").alias("error"),
        pl.when(pl.col("mode") == "batch").then("batch_id").alias("batch_id"),
        pl.when((pl.col("mode") == "batch") & (pl.col("retry_reason") != ""))
        .then("retry_reason")
        .alias("retry_reason"),
        pl.when(pl.col("input_tokens") > 0).then("request_id").alias("request_id"),
        pl.when(pl.col("mode") == "cache").then(pl.lit(cached_from)).alias("cached_from_run"),
        pl.lit(None, pl.String).alias("veto_guard"),
        pl.lit(None, pl.String).alias("veto_id"),
    )
    return facts.select(list(FACT_SCHEMA))


def generate(root: Path, rows: int, runs: int, seed: int) -> list[tuple[str, str]]:
    """Write `rows` ledger rows as `runs` runs under `root`; return (pipeline, run_id) pairs."""
    prices = PriceTable.load()
    rng = np.random.default_rng(seed)
    names = list(PIPELINES)
    written: list[tuple[str, str]] = []
    last: dict[str, str] = {}
    per_run = [rows // runs + (1 if i < rows % runs else 0) for i in range(runs)]
    for run, n in enumerate(per_run):
        pipeline = names[run % len(names)]
        run_id = (START + dt.timedelta(days=run)).strftime("%Y%m%d")
        facts = make_facts(n, run, pipeline, run_id, last.get(pipeline), prices, rng)
        provider, _, strong, _, _ = PIPELINES[pipeline]
        ledger = price_ledger(facts, prices, provider, strong)
        write_ledger(ledger, root, pipeline, run_id)
        written.append((pipeline, run_id))
        last[pipeline] = run_id
    write_views_file(root)
    return written


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _best(con: duckdb.DuckDBPyConnection, sql: str, repeat: int) -> tuple[int, float]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = len(con.execute(sql).fetchall())
        best = min(best, time.perf_counter() - start)
    return count, best


def queries(run_id: str) -> list[tuple[str, str]]:
    """(label, SQL) for every view and macro in views.sql, in the file's order."""
    text = VIEWS_SQL.read_text(encoding="utf-8")
    out = [("ledger (count(*))", "SELECT count(*) FROM ledger")]
    macro_calls = {
        "most_expensive": f"SELECT * FROM most_expensive(100, run := '{run_id}')",
        "run_cost": f"SELECT run_cost('{run_id}')",
        "savings": f"SELECT * FROM savings('{run_id}')",
    }
    for kind, name in re.findall(r"CREATE OR REPLACE (VIEW|MACRO) (\w+)", text):
        if kind == "VIEW" and name == "most_expensive_rows":
            out.append((f"{name} (LIMIT 100)", f"SELECT * FROM {name} LIMIT 100"))
            out.append(
                (
                    f"{name} (WHERE run_id, LIMIT 100)",
                    f"SELECT * FROM {name} WHERE run_id = '{run_id}' LIMIT 100",
                )
            )
        elif kind == "VIEW":
            out.append((name, f"SELECT * FROM {name}"))
        else:
            out.append((f"macro {name}", macro_calls.get(name, "")))
    return out


COST_BY_RUN_COLUMNS = [
    "mode",
    "status",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "estimated_cost_usd",
    "cost_usd",
    "baseline_cost_usd",
]


def naive(root: Path, every_column: bool) -> tuple[float, float, pl.DataFrame]:
    """polars: read the ledger (the columns cost_by_run needs, or every column), then
    cost_by_run's counts and sums per run. Seconds of each, and the result."""
    start = time.perf_counter()
    frame = pl.read_parquet(
        root / "**" / "part.parquet",
        columns=None if every_column else ["pipeline", "run_id", *COST_BY_RUN_COLUMNS],
        hive_partitioning=True,
        hive_schema={"pipeline": pl.String(), "run_id": pl.String()},
    )
    read = time.perf_counter() - start
    start = time.perf_counter()
    mode = pl.col("mode")
    out = frame.group_by("pipeline", "run_id").agg(
        pl.len().alias("rows"),
        *[(mode == m).sum().alias(f"{m}_rows") for m in ("online", "batch", "cache", "dedup")],
        (pl.col("status") == "failed").sum().alias("failed_rows"),
        pl.col("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens").sum(),
        pl.col("estimated_cost_usd", "cost_usd", "baseline_cost_usd").sum(),
        (pl.col("baseline_cost_usd") - pl.col("cost_usd")).sum().alias("saved_usd"),
    )
    grouped = time.perf_counter() - start
    return read, grouped, out


def time_views(root: Path, repeat: int) -> dict[tuple[str, str], float]:
    """Print the table of views and macros; return cost_by_run's cost_usd per run."""
    con = connect(root)
    try:
        threads = con.execute("SELECT current_setting('threads')").fetchone()
        print(
            f"duckdb threads: {threads[0] if threads else '?'}; each query best of {repeat}, "
            "every result row fetched into Python (fetchall)"
        )
        print()
        last_run = con.execute("SELECT max(run_id) FROM cost_by_run").fetchone()
        rows = [("query", "rows", "seconds")]
        total = 0.0
        for label, sql in queries(last_run[0] if last_run else ""):
            if not sql:
                rows.append((label, "-", "(no call known: not timed)"))
                continue
            count, best = _best(con, sql, repeat)
            total += best
            rows.append((label, f"{count:,}", f"{best:.3f}"))
            if count > 10_000:  # how much of that is bringing the rows into Python
                _, only = _best(con, f"SELECT count(*) FROM ({sql})", repeat)
                rows.append(("  the same, count(*) only", "1", f"{only:.3f}"))
        spent = {
            (p, r): c
            for p, r, c in con.execute(
                "SELECT pipeline, run_id, cost_usd FROM cost_by_run"
            ).fetchall()
        }
    finally:
        con.close()
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, (label, count, secs) in enumerate(rows):
        print(f"{label:<{widths[0]}}  {count:>{widths[1]}}  {secs:>{widths[2]}}")
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        f"{'all views and macros above':<{widths[0]}}  {'':>{widths[1]}}  {total:>{widths[2]}.3f}"
    )
    return spent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="ledger rows (10M)")
    parser.add_argument("--runs", type=int, default=20, help="runs, one a day (20)")
    parser.add_argument("--repeat", type=int, default=3, help="time each query best of N (3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="write the ledger here and keep it")
    parser.add_argument("--ledger", type=Path, help="time an existing ledger; generate none")
    parser.add_argument("--no-naive", action="store_true", help="skip the polars reference")
    parser.add_argument(
        "--naive-all-columns",
        action="store_true",
        help="the polars reference reads every column (10M rows: about 11 GB of memory)",
    )
    args = parser.parse_args(argv)

    scratch = None
    if args.ledger is not None:
        root = args.ledger.expanduser().resolve()
    elif args.keep is not None:
        root = args.keep.expanduser().resolve()
        if root.exists() and any(root.iterdir()):
            sys.exit(f"{root} is not empty; --keep needs a new or empty folder")
    else:
        scratch = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
        root = scratch / "ledger"
    try:
        print(
            f"machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}), "
            f"load average {os.getloadavg()[0]:.1f}; python {platform.python_version()}, "
            f"duckdb {duckdb.__version__}, polars {pl.__version__}, numpy {np.__version__}"
        )
        if args.ledger is None:
            start = time.perf_counter()
            written = generate(root, args.rows, args.runs, args.seed)
            took = time.perf_counter() - start
            print(
                f"generated {args.rows:,} rows in {len(written)} runs of {len(PIPELINES)} "
                f"pipelines in {took:.1f} s ({args.rows / took:,.0f} rows/s: numpy, priced by "
                "price_ledger, written by write_ledger)"
            )
        size = _size(root)
        print(f"ledger on disk: {size / 1e6:,.1f} MB at {root}")
        spent = time_views(root, args.repeat)

        if not args.no_naive:
            what = "every column" if args.naive_all_columns else "the 9 columns it needs"
            read, grouped, out = naive(root, args.naive_all_columns)
            gap = max(
                abs(c - spent[(p, r)])
                for p, r, c in out.select("pipeline", "run_id", "cost_usd").iter_rows()
            )
            print()
            print(
                f"reference, polars: read {what} of the {out['rows'].sum():,} rows "
                f"{read:.2f} s, then cost_by_run's counts and sums per run {grouped:.2f} s "
                f"(timed once; largest difference from cost_by_run's cost_usd: ${gap:.2g})"
            )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
            print(f"\ndeleted {root}")


if __name__ == "__main__":
    main()
