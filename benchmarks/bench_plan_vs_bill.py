"""How close `batchopt plan` lands on the shipped example pipelines, against the bill.

    python benchmarks/bench_plan_vs_bill.py                    # every shipped pipeline
    python benchmarks/bench_plan_vs_bill.py --only extract_orders --limit 300

For each pipeline, in a fresh temporary out dir, against a fake server this script starts:
`batchopt plan --json` with no history, then `batchopt run` (a batch pipeline is driven as cron
would: `run --no-wait` again until it stops exiting 75), then the bill. Then a second,
history-informed plan for a comparable run that cannot use the first run's response cache
(summarize and classify_reviews: the same rows with the same ledger and a fresh cache folder;
extract_orders: the next night's partition, same ledger and cache, as cron runs it), its run
and its bill. It prints plan, bill and their ratio for both, and whether the first is within
x1.5 of the bill and the second within 10% (issue 20, acceptance 2).

The bill is the fake server's own (`/_fake/bill`) where the fake has one, else its billing log
priced at the ledger's prices; the ledger's total is printed beside it. The fake's flawed
answers are switched on (`set_quality`: invalid and wrong gpt-4o-mini answers for the cascade,
wrong ones only for the rules pipeline) so validators and the judge have something to catch.
Uses the CLI as a user would, as subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from batchopt.fakeapi import FakeServer
from batchopt.ledger.pricing import PriceTable
from batchopt.records import Usage

ROOT = Path(__file__).resolve().parents[1]
BATCHOPT = Path(sys.executable).parent / "batchopt"
PENDING = 75


@dataclass(frozen=True)
class Job:
    """A shipped pipeline and how its two comparable runs differ."""

    name: str
    yaml: str
    args: tuple[str, ...] = ()
    # extra CLI args of the first and the second run
    first_args: tuple[str, ...] = ()
    second_args: tuple[str, ...] = ()
    second_fresh_cache: bool = True
    # what the fake gets wrong (`set_quality`), so validators and the judge have work
    invalid_share: dict[str, float] = field(default_factory=dict)
    wrong_share: dict[str, float] = field(default_factory=dict)


JOBS = (
    Job("summarize", "summarize.yaml", ("--profile", "openai")),
    Job("classify_reviews", "classify_reviews.yaml", invalid_share={"gpt-4o-mini": 0.05},
        wrong_share={"gpt-4o-mini": 0.10}),
    # rules, no cascade: an invalid answer would be a failed row, so only wrong ones
    Job("extract_orders", "extract_orders.yaml", first_args=("--date", "2026-12-01"),
        second_args=("--date", "2026-12-02"), second_fresh_cache=False,
        wrong_share={"gpt-4o-mini": 0.10}),
)


def _env(fake: FakeServer, out: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update({"BATCHOPT_OUT": str(out), "HF_HUB_OFFLINE": "1",
                "OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "sk-bench",
                "ANTHROPIC_BASE_URL": fake.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-bench",
                **extra})
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BATCHOPT), *args], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=1800)


def plan(job: Job, env: dict[str, str], extra: list[str]) -> dict[str, Any]:
    """`batchopt plan --json`; exit 3 (over budget) still prints the plan."""
    done = _cli(["plan", str(ROOT / "pipelines" / job.yaml), *job.args, "--json", *extra], env)
    if done.returncode not in (0, 3):
        raise RuntimeError(f"plan {job.name}: exit {done.returncode}\n{done.stderr}")
    return json.loads(done.stdout)


def run(job: Job, env: dict[str, str], run_id: str, extra: list[str]) -> tuple[int, int]:
    """`batchopt run` with `--no-wait` until it stops exiting 75; (exit code, invocations)."""
    args = ["run", str(ROOT / "pipelines" / job.yaml), *job.args, "--run-id", run_id,
            "--no-wait", "--quiet", *extra]
    for invocation in range(1, 1000):
        done = _cli(args, env)
        if done.returncode != PENDING:
            if done.returncode not in (0, 1):
                print(done.stdout + done.stderr, file=sys.stderr)
            return done.returncode, invocation
        time.sleep(0.2)
    raise RuntimeError(f"run {job.name}: still pending after 1000 invocations")


def log_priced(log: list[dict[str, Any]]) -> float:
    """The fake's billing log priced at the ledger's prices (batch calls at the batch price)."""
    prices = PriceTable.load()
    total = 0.0
    for entry in log:
        provider, _, kind = entry["wire"].partition("-")
        usage = Usage(input_tokens=entry["input_tokens"], output_tokens=entry["output_tokens"],
                      cached_input_tokens=entry["cache_read_tokens"],
                      cache_write_tokens=entry["cache_write_tokens"])
        total += prices.cost(prices.price(provider, entry["model"]), usage, batch=kind == "batch")
    return total


def fake_bill(fake: FakeServer) -> float | None:
    """The fake server's own bill, where it has one."""
    bill = getattr(fake, "bill", None)
    return None if bill is None else float(bill()["total_usd"])


def ledger_total(out: Path, pipeline: str, run_id: str) -> float:
    part = out / "ledger" / f"pipeline={pipeline}" / f"run_id={run_id}" / "part.parquet"
    return float(pl.read_parquet(part)["cost_usd"].sum()) if part.exists() else float("nan")


def measure(fake: FakeServer, job: Job, out: Path, step: str, extra: list[str]
            ) -> dict[str, Any]:
    """plan -> run -> bill for one run of `job`."""
    env = _env(fake, out, {})
    estimate = plan(job, env, extra)
    fake.reset()
    fake.set_quality(invalid_share=job.invalid_share, wrong_share=job.wrong_share)
    started = time.monotonic()
    code, invocations = run(job, env, step, extra)
    log = fake.log()
    billed_log = log_priced(log)
    own = fake_bill(fake)
    bill = own if own is not None else billed_log
    return {
        "pipeline": job.name, "run": step, "plan_usd": estimate["cost_usd"],
        "plan_requests": estimate["to_send"], "escalation": estimate.get("escalation_share"),
        "escalation_source": estimate.get("escalation_source"), "exit": code,
        "invocations": invocations, "seconds": round(time.monotonic() - started, 1),
        "calls": len(log), "bill_usd": bill, "bill_source": "fake /_fake/bill" if own is not None
        else "fake log at ledger prices", "log_priced_usd": billed_log,
        "ledger_usd": ledger_total(out, estimate["pipeline"], step),
        "ratio": estimate["cost_usd"] / bill if bill else float("nan"),
    }


def _line(m: dict[str, Any], tolerance: str) -> str:
    ratio = m["ratio"]
    ok = (1 / 1.5 <= ratio <= 1.5) if tolerance == "x1.5" else (0.9 <= ratio <= 1.1)
    return (f"  {m['run']:<7} plan ${m['plan_usd']:.4f} ({m['plan_requests']} to send, escalation "
            f"{m['escalation']:.1%}: {m['escalation_source']}) · bill ${m['bill_usd']:.4f} "
            f"({m['calls']} calls; {m['bill_source']}) · ledger ${m['ledger_usd']:.4f} · "
            f"plan/bill {ratio:.3f} · within {tolerance}: {'yes' if ok else 'no'} "
            f"[exit {m['exit']}, {m['invocations']} invocation(s), {m['seconds']} s]")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=[j.name for j in JOBS])
    parser.add_argument("--limit", type=int, help="only the first N rows of each input")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    extra = ["--limit", str(args.limit)] if args.limit else []
    results = []
    with FakeServer(batch_seconds=0.2) as fake, tempfile.TemporaryDirectory() as tmp:
        for job in JOBS:
            if args.only and job.name not in args.only:
                continue
            print(f"{job.name} (fake: invalid answers {job.invalid_share or 'none'}, wrong "
                  f"answers {job.wrong_share or 'none'}; load {os.getloadavg()[0]:.1f})")
            out = Path(tmp) / job.name
            first = measure(fake, job, out, "first", extra + list(job.first_args))
            again = extra + list(job.second_args) + (
                ["--cache-dir", str(out / "cache2")] if job.second_fresh_cache else [])
            second = measure(fake, job, out, "second", again)
            results += [first, second]
            print(_line(first, "x1.5"))
            print(_line(second, "10%"), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
