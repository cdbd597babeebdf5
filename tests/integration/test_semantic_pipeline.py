"""Semantic dedup inside a run and across runs, through the shipped pipeline and the fake server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("sentence_transformers")

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "summarize.yaml"
BATCHOPT = Path(sys.executable).parent / "batchopt"


def _env(fake, out: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update({"BATCHOPT_OUT": str(out), "OPENAI_BASE_URL": fake.openai_base_url,
                "OPENAI_API_KEY": "sk-test", "HF_HUB_OFFLINE": "1"})
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(BATCHOPT), "run", str(PIPELINE), "--profile", "openai", *args],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


def _ledger(out: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(out / "ledger" / "pipeline=summarize" / f"run_id={run_id}"
                           / "part.parquet")


def test_semantic_dedup_saves_in_a_run_and_across_runs(fake, tmp_path):
    env = _env(fake, tmp_path)
    first = _run(env, "--run-id", "day1")
    day1 = _ledger(tmp_path, "day1")
    semantic = day1.filter(pl.col("dedup") == "semantic")
    assert semantic.height > 0, "the sample's paraphrases should collapse"
    assert re.search(rf"semantic near-duplicates: {semantic.height}\b", first.stdout)
    assert (semantic["cost_usd"] == 0).all() and (semantic["saved_semantic_usd"] > 0).all()
    assert semantic["similarity"].min() >= 0.75
    paid_day1 = fake.stats()["requests"]
    assert paid_day1 == day1.filter(pl.col("mode") == "online").height

    # Day 2: the same tickets lightly reworded (same facts), hard negatives, and new tickets.
    tickets = pl.read_parquet(ROOT / "sample_data" / "tickets.parquet")
    answered = set(day1.filter(pl.col("mode") == "online")["row_id"])
    base = tickets.filter(pl.col("ticket_id").is_in(answered)).head(20)
    reworded = base.with_columns(
        ("D2-" + pl.col("ticket_id")).alias("ticket_id"),
        # Not a closing thanks: compression would strip that and make the prompts identical.
        ("Following up on my earlier message.\n" + pl.col("body")).alias("body"),
    )
    negatives = base.filter(pl.col("body").str.contains("NP-")).head(5).with_columns(
        ("NEG-" + pl.col("ticket_id")).alias("ticket_id"),
        pl.col("body").str.replace_all(r"NP-(\d)", "NP-9$1").alias("body"),
    )
    fresh = base.head(5).with_columns(
        ("NEW-" + pl.col("ticket_id")).alias("ticket_id"),
        pl.lit("Subject change").alias("subject"),
        (pl.lit("My loyalty points from the spring promotion never showed up, case ")
         + pl.col("ticket_id")).alias("body"),
    )
    assert negatives.height == 5
    assert (~negatives["body"].is_in(base["body"].implode())).all()
    day2_input = tmp_path / "day2.parquet"
    pl.concat([reworded, negatives, fresh]).write_parquet(day2_input)

    # the plan makes the run's cross-run look-ups: it counts what the run then sends
    planned = subprocess.run([str(BATCHOPT), "plan", str(PIPELINE), "--profile", "openai",
                              "--json", "--input", str(day2_input)],
                             env=env, capture_output=True, text=True, timeout=600)
    assert planned.returncode == 0, planned.stderr
    estimate = json.loads(planned.stdout)
    fake.reset()
    _run(env, "--run-id", "day2", "--input", str(day2_input))
    day2 = _ledger(tmp_path, "day2")
    paid = set(day2.filter(pl.col("mode") == "online")["row_id"])
    reused = day2.filter(pl.col("cached_from_run") == "day1")
    # Paid: only what is neither cached nor a guarded near-duplicate of an answered row.
    assert {r for r in paid if r.startswith("D2-")} == set()
    assert {r for r in paid if r.startswith(("NEG-", "NEW-"))} == set(
        negatives["ticket_id"]) | set(fresh["ticket_id"])
    assert fake.stats()["requests"] == len(paid) == 10 == estimate["to_send"]
    assert estimate["reused_past"] == len(reworded)
    assert set(reused["row_id"]) == set(reworded["ticket_id"])
    assert set(reused["representative_id"]) <= answered
    assert (reused["mode"] == "cache").all() and (reused["cost_usd"] == 0).all()
    assert (reused["saved_cache_usd"] > 0).all()

    # Day 3: the same reworded tickets asked of another model (the anthropic profile): an answer
    # gpt-4o-mini gave is not claude's, so nothing is reused across configurations.
    fake.reset()
    env3 = {**env, "ANTHROPIC_BASE_URL": fake.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-test"}
    result = subprocess.run([str(BATCHOPT), "run", str(PIPELINE), "--profile", "anthropic",
                             "--run-id", "day3", "--input", str(day2_input)],
                            env=env3, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    day3 = _ledger(tmp_path, "day3")
    assert day3.filter(pl.col("cached_from_run").is_in(["day1", "day2"])).height == 0
    assert set(day3.filter(pl.col("mode") == "online")["row_id"]) >= set(reworded["ticket_id"])


def test_the_sample_pipelines_merges_against_the_samples_labels(tmp_path):
    """The shipped pipeline's semantic dedup, scored on the sample's own labels: a group that
    holds tickets of two sources is a wrong merge (the answer of one would be fanned out to
    the other). Two remain with today's guards (11 before the negation count and the swaps
    guard); recall of the near and paraphrase tickets is the price (36 of 75, was 52)."""
    from batchopt.config.pipeline import load_pipeline
    from batchopt.run.runner import RunOptions, prepare

    plan = prepare(load_pipeline(PIPELINE), RunOptions(cache_dir=tmp_path / "cache"),
                   require_keys=False)
    labels = pl.read_parquet(ROOT / "sample_data" / "tickets_labels.parquet")
    rows = plan.rows.select("ticket_id", "group_id").join(labels, on="ticket_id", how="left")
    source = {t: s if s is not None and rel in ("exact", "near", "paraphrase") else t
              for t, s, rel in rows.select("ticket_id", "source_ticket_id", "relation").iter_rows()}

    def root(ticket: str) -> str:
        while source[ticket] != ticket:
            ticket = source[ticket]
        return ticket

    members: dict[str, set[str]] = {}
    for ticket, group in rows.select("ticket_id", "group_id").iter_rows():
        members.setdefault(group, set()).add(root(ticket))
    wrong = sum(len(roots) - 1 for roots in members.values())
    group = dict(rows.select("ticket_id", "group_id").iter_rows())
    wanted = rows.filter(pl.col("relation").is_in(["near", "paraphrase"]))
    found = sum(group[t] == group[s]
                for t, s in wanted.select("ticket_id", "source_ticket_id").iter_rows())
    assert wrong <= 2, wrong
    assert found >= 30, f"{found} of {wanted.height} near-duplicates merged"
