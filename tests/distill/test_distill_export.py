"""`batchopt distill export`: past runs of a cascade against the fake server become a
fine-tuning set of the strong tier's good answers, and nothing else.

The fake server's oracle makes the cheap tier refuse every ticket (so the cascade sends each one
up) and the strong tier refuse about a fifth of them: those strong answers fail the refusal
validator but stay the rows' answers (a cascade has no tier above its last), and must not be
exported. Other helpers here are shared by the other tests/distill/ files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers import fake_env, file_contents, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.errors import EXIT_USAGE
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

BATCHOPT = Path(sys.executable).parent / "batchopt"
KEY = "sk-distill-SECRET-4f9a8b7c6d5e4f3a"  # recognisable in any file it leaked into
LABELS = ("refund", "shipping", "login")
SYSTEM = "Label the ticket with one word."
CASCADE = {"strategy": "cascade", "tiers": ["cheap", "strong"],
           "validators": [{"type": "finish_reason"}, {"type": "refusal"}]}
ACCURACY = {"gpt-4o-mini": {"hard": 0.0}, "gpt-4o": {"hard": 0.8},
            "ft:gpt-4o-mini": {"hard": 0.9}}
N_TICKETS, N_DUPLICATES = 30, 5


def tickets() -> list[dict[str, str]]:
    """N_TICKETS distinct tickets, then N_DUPLICATES exact copies of the first ones."""
    rows = [{"ticket_id": f"T{i:03d}", "subject": "Help",
             "body": f"Q{i:03d}: order #{1000 + i} needs {LABELS[i % 3]} help"}
            for i in range(N_TICKETS)]
    rows += [{"ticket_id": f"D{i:03d}", "subject": "Help", "body": rows[i]["body"]}
             for i in range(N_DUPLICATES)]
    return rows


def set_oracle(fake: Any) -> None:
    items = [{"match": f"Q{i:03d}:", "answer": LABELS[i % 3], "wrong": ["I don't know."],
              "difficulty": "hard"} for i in range(N_TICKETS)]
    fake.set_oracle(items, models=ACCURACY)


def distill_pipeline(folder: Path, **extra: Any) -> Path:
    data = pipeline_dict(routing=CASCADE, **extra)
    data["prompt"]["system"] = SYSTEM
    data["prompt"]["output_column"] = "label"
    data["profiles"]["cheap"] = {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 16,
                                 "concurrency": 4, "timeout_s": 10}
    data["profiles"]["strong"] = {"provider": "openai", "model": "gpt-4o", "max_tokens": 64,
                                  "concurrency": 4, "timeout_s": 10}
    path = write_pipeline(folder, data)
    pl.DataFrame(tickets()).write_parquet(folder / "data" / "tickets.parquet")
    return path


def env_for(fake: Any) -> dict[str, str]:
    return fake_env(fake, KEY, "sk-ant-distill-SECRET-0002")


def run_twice(fake: Any, folder: Path) -> Path:
    """Two runs of the pipeline: r1 pays for everything, r2 is answered from the cache."""
    set_oracle(fake)
    path = distill_pipeline(folder)
    for run_id in ("r1", "r2"):
        summary = run_pipeline(load_pipeline(path), RunOptions(run_id=run_id), env=env_for(fake))
        assert isinstance(summary, RunSummary) and summary.exit_code == 0
    return path


def teacher_right(fake: Any) -> set[str]:
    """The distinct tickets whose strong answer the oracle calls right (the fake's own view)."""
    return {f"T{i:03d}" for i, row in enumerate(tickets()[:N_TICKETS])
            if fake.oracle_verdict("gpt-4o", row["body"])[0] == "right"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BATCHOPT), *args], env=env, capture_output=True, text=True,
                          timeout=300)


def ledger(folder: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(folder / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def past_runs(fake, tmp_path) -> Path:
    return run_twice(fake, tmp_path)


def test_the_export_holds_each_good_strong_answer_once_and_nothing_else(fake, tmp_path,
                                                                       past_runs):
    out = tmp_path / "set"
    done = cli(env_for(fake), "distill", "export", str(past_runs), "--out", str(out))
    assert done.returncode == 0, done.stderr
    right = teacher_right(fake)
    assert 15 <= len(right) < N_TICKETS  # the oracle left some strong refusals to leave out

    examples = pl.read_parquet(out / "examples.parquet")
    assert set(examples["row_id"]) == right  # every good strong answer, and only those
    assert examples["request_key"].n_unique() == examples.height  # one per distinct request
    assert not examples["answer"].str.contains("know").any()
    assert set(examples["answer"]) <= set(LABELS)
    assert set(examples["run_id"]) == {"r1"}  # r2's cache copies are not examples

    r1, r2 = ledger(tmp_path, "r1"), ledger(tmp_path, "r2")
    exported = r1.filter(pl.col("row_id").is_in(examples["row_id"].to_list()))
    assert (exported["dedup"] == "none").all() and (exported["tier"] == "strong").all()
    assert exported["mode"].is_in(["online", "batch"]).all()
    assert exported["cached_from_run"].null_count() == exported.height
    followers = r1.filter(pl.col("dedup") != "none")["row_id"].to_list()
    assert len(followers) == N_DUPLICATES and not set(followers) & set(examples["row_id"])
    assert (r2["mode"] != "online").all()  # every r2 row was a cache copy or a follower
    refused = r1.filter(pl.col("tier") == "strong").filter(
        ~pl.col("row_id").is_in(list(right)) & (pl.col("dedup") == "none"))
    assert refused.height == N_TICKETS - len(right)  # what validation left out

    train, validation = read_jsonl(out / "train.jsonl"), read_jsonl(out / "validation.jsonl")
    assert len(train) + len(validation) == len(right) and len(validation) >= 1
    assert (examples["split"] == "validation").sum() == len(validation)
    for line in train + validation:
        roles = [m["role"] for m in line["messages"]]
        assert roles == ["system", "user", "assistant"]
        system, user, answer = (m["content"] for m in line["messages"])
        assert system == SYSTEM and user.startswith("Subject: Help\n\nQ")
        assert fake.oracle_verdict("gpt-4o", user) == ("right", answer)

    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["failed_validation"] == N_TICKETS - len(right)
    assert counts["paid"] == N_TICKETS and counts["followers"] == 2 * N_DUPLICATES
    assert counts["cache_copies"] == N_TICKETS
    assert f"{len(train)} training and {len(validation)} validation" in done.stdout


def test_the_split_and_the_files_are_the_same_on_a_second_export(fake, tmp_path, past_runs):
    env = env_for(fake)
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert cli(env, "distill", "export", str(past_runs), "--out", str(out)).returncode == 0
    for name in ("train.jsonl", "validation.jsonl"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_no_api_key_reaches_any_file_written(fake, tmp_path, past_runs):
    out = tmp_path / "set"
    done = cli(env_for(fake), "distill", "export", str(past_runs), "--out", str(out))
    assert done.returncode == 0, done.stderr
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"train.jsonl", "validation.jsonl", "examples.parquet",
                                         "manifest.json"}
    for path in written:
        contents = file_contents(path)
        assert KEY.encode() not in contents and b"SECRET" not in contents, path
    assert "SECRET" not in done.stdout + done.stderr


def test_too_little_data_is_refused_with_the_counts_and_nothing_written(fake, tmp_path,
                                                                       past_runs):
    env, out = env_for(fake), tmp_path / "set"
    done = cli(env, "distill", "export", str(past_runs), "--out", str(out),
               "--min-examples", "100")
    assert done.returncode == EXIT_USAGE
    right = len(teacher_right(fake))
    assert "too little data" in done.stderr and f"{right} usable example(s)" in done.stderr
    assert "at least 100 needed" in done.stderr and "failed validation" in done.stderr
    assert not out.exists()

    later = cli(env, "distill", "export", str(past_runs), "--out", str(out),
                "--since", "2999-01-01")
    assert later.returncode == EXIT_USAGE and "0 usable example(s)" in later.stderr
    assert "0 ledger row(s) in 0 run(s)" in later.stderr and not out.exists()


def test_a_pipeline_that_never_ran_has_nothing_to_export(fake, tmp_path):
    path = distill_pipeline(tmp_path)
    done = cli(env_for(fake), "distill", "export", str(path), "--out", str(tmp_path / "set"))
    assert done.returncode == EXIT_USAGE and "0 usable example(s)" in done.stderr
