"""The shipped example pipelines, end to end through the CLI and the real SDKs against the fake
server, on their shipped sample data: one output row per input row with the JSON Schema's column
types, the ledger's cost is what the summary printed, and the ledger's tokens are what the fake
server billed (per model where each row is answered by one model; in total for a cascade, whose
rows also pay cheaper tiers and judge calls)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
BATCHOPT = Path(sys.executable).parent / "batchopt"
TOKENS = ("input_tokens", "output_tokens")


def _env(fake, out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update({"BATCHOPT_OUT": str(out), "HF_HUB_OFFLINE": "1",
                "OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "sk-test-openai",
                "ANTHROPIC_BASE_URL": fake.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-test",
                **extra})
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BATCHOPT), *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def _ledger(out: Path, pipeline: str, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(out / "ledger" / f"pipeline={pipeline}" / f"run_id={run_id}"
                           / "part.parquet")


def _assert_summary_is_the_ledger(stdout: str, ledger: pl.DataFrame) -> None:
    """The summary's `cost $X` is the ledger's sum, to the digits it prints."""
    found = re.search(r"^cost\s+\$([\d,]+\.(\d+))", stdout, re.M)
    assert found, stdout
    printed, digits = float(found[1].replace(",", "")), len(found[2])
    assert abs(ledger["cost_usd"].sum() - printed) <= 0.5 * 10**-digits, (printed, stdout)


def _billed_tokens(log: list[dict], by_model: bool) -> dict[str, dict[str, int]]:
    frame = pl.DataFrame(log).with_columns(
        model=pl.col("model") if by_model else pl.lit("all"))
    return {r["model"]: {t: r[t] for t in TOKENS}
            for r in frame.group_by("model").agg(pl.col(t).sum() for t in TOKENS).to_dicts()}


def _ledger_tokens(ledger: pl.DataFrame, by_model: bool) -> dict[str, dict[str, int]]:
    paid = ledger.filter(pl.col("mode").is_in(["online", "batch"])).with_columns(
        model=pl.col("model") if by_model else pl.lit("all"))
    return {r["model"]: {t: r[t] for t in TOKENS}
            for r in paid.group_by("model").agg(pl.col(t).sum() for t in TOKENS).to_dicts()}


def test_summarize_openai_profile_end_to_end(fake, tmp_path):
    env = _env(fake, tmp_path)
    done = _cli(["run", str(PIPELINES / "summarize.yaml"), "--profile", "openai",
                 "--run-id", "s1", "--quiet"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    tickets = pl.read_parquet(ROOT / "sample_data" / "tickets.parquet")
    outputs = pl.read_parquet(tmp_path / "summarize" / "outputs.parquet")
    assert outputs.height == tickets.height
    assert sorted(outputs["ticket_id"]) == sorted(tickets["ticket_id"])
    assert outputs.schema["summary"] == pl.String and outputs["summary"].null_count() == 0
    ledger = _ledger(tmp_path, "summarize", "s1")
    _assert_summary_is_the_ledger(done.stdout, ledger)
    assert _ledger_tokens(ledger, by_model=True) == _billed_tokens(fake.log(), by_model=True)


@dataclass(frozen=True)
class Run:
    """What one CLI run left: its stdout, ledger, outputs and the fake server's billing log."""

    stdout: str
    ledger: pl.DataFrame
    outputs: pl.DataFrame
    log: list[dict]


CLASSIFY_LIMIT = 300  # holds the null, the empty and the 20,000-character review (make_reviews)


@pytest.fixture(scope="module")
def classify_run(fake_server, tmp_path_factory) -> Run:
    """classify_reviews.yaml on the sample's first rows, once for the tests that read it; the
    fake's gpt-4o-mini gets some answers wrong or invalid, so validators and judge have work."""
    out = tmp_path_factory.mktemp("classify")
    fake_server.reset()
    fake_server.set_quality(invalid_share={"gpt-4o-mini": 0.1},
                            wrong_share={"gpt-4o-mini": 0.1})
    try:
        done = _cli(["run", str(PIPELINES / "classify_reviews.yaml"), "--run-id", "c1",
                     "--limit", str(CLASSIFY_LIMIT), "--quiet"], _env(fake_server, out))
        log = fake_server.log()
    finally:
        fake_server.reset()
    assert done.returncode == 0, done.stdout + done.stderr
    return Run(done.stdout, _ledger(out, "classify_reviews", "c1"),
               pl.read_parquet(out / "classify_reviews" / "outputs.parquet"), log)


def test_classify_reviews_cascade_with_judge_end_to_end(classify_run):
    reviews = pl.read_parquet(ROOT / "sample_data" / "reviews.parquet").head(CLASSIFY_LIMIT)
    outputs, ledger = classify_run.outputs, classify_run.ledger
    assert sorted(outputs["review_id"]) == sorted(reviews["review_id"])
    assert outputs.schema["label_sentiment"] == pl.String
    assert outputs.schema["label_topic"] == pl.String
    assert set(outputs["label_sentiment"].drop_nulls()) <= {"positive", "negative", "neutral",
                                                             "mixed"}
    empty = reviews.filter(pl.col("review").is_null() | (pl.col("review").str.strip_chars() == ""))
    assert empty.height == 2
    # the null and the empty review were not sent, and the ledger says so
    skipped = ledger.filter(pl.col("status") == "skipped")
    assert sorted(skipped["row_id"]) == sorted(empty["review_id"])
    assert skipped["cost_usd"].sum() == 0
    answered = outputs.filter(~pl.col("review_id").is_in(empty["review_id"].implode()))
    assert answered["label_topic"].null_count() == 0
    # the cascade did escalate, and the judge (gpt-4o) was asked about first-tier answers
    assert ledger["escalated"].sum() > 0
    strong_calls = sum(e["model"] == "gpt-4o" for e in classify_run.log)
    assert strong_calls > ledger["escalated"].sum()
    _assert_summary_is_the_ledger(classify_run.stdout, ledger)


def test_classify_reviews_ledger_tokens_are_the_billed_tokens(classify_run):
    """Judge calls and earlier cascade attempts included (issue 20, point 4)."""
    assert (_ledger_tokens(classify_run.ledger, by_model=False)
            == _billed_tokens(classify_run.log, by_model=False))


def test_extract_orders_batch_mode_driven_as_cron(bfake, tmp_path):
    env = _env(bfake, tmp_path)  # the run id names the night: ${date} in the YAML's paths
    args = ["run", str(PIPELINES / "extract_orders.yaml"), "--run-id", "2026-12-02",
            "--no-wait", "--quiet", "--limit", "200"]
    codes = []
    while not codes or codes[-1] == 75:
        assert len(codes) < 20, codes
        done = _cli(args, env)
        codes.append(done.returncode)
        time.sleep(0.1)
    assert codes[0] == 75 and codes[-1] == 0, (codes, done.stdout + done.stderr)
    assert {e["wire"] for e in bfake.log()} == {"openai-batch"}
    notes = pl.read_parquet(ROOT / "sample_data" / "order_notes" / "night=2026-12-02").head(200)
    outputs = pl.read_parquet(tmp_path / "extract_orders" / "night=2026-12-02"
                              / "outputs.parquet")
    assert sorted(outputs["note_id"]) == sorted(notes["note_id"])
    assert outputs.schema["order_amount"] == pl.Float64  # {type: [number, "null"]}
    assert outputs.schema["order_urgent"] == pl.Boolean
    assert outputs.schema["order_order_id"] == pl.String
    assert outputs["order_order_id"].null_count() == 0
    ledger = _ledger(tmp_path, "extract_orders", "2026-12-02")
    # the rules test the input column: every e-mail thread went to gpt-4o, though compression
    # removed the quoted "On ... wrote:" lines from its prompt
    threads = notes.filter(pl.col("note").str.contains(r"(?m)^On .+ wrote:"))["note_id"]
    assert threads.len() > 0
    assert set(ledger.filter(pl.col("row_id").is_in(threads.implode()))["tier"]) == {"strong"}
    _assert_summary_is_the_ledger(done.stdout, ledger)
    assert _ledger_tokens(ledger, by_model=True) == _billed_tokens(bfake.log(), by_model=True)


@pytest.mark.parametrize("name", ["classify_reviews.yaml", "extract_orders.yaml"])
def test_shipped_pipelines_validate(fake, tmp_path, name):
    done = _cli(["validate", str(PIPELINES / name), "--date", "2026-12-01"], _env(fake, tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout
