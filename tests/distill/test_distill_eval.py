"""Distillation end to end on the fake server: export the strong tier's answers, fine-tune a
student through the real SDK (surviving a process that left while it trained), use the new model
as a tier, and measure it in the teacher's shadow with `batchopt distill eval`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import test_distill_export
import yaml
from test_distill_export import (
    N_TICKETS,
    cli,
    distill_pipeline,
    env_for,
    ledger,
    run_twice,
    teacher_right,
    tickets,
)

from batchopt.config.pipeline import load_pipeline
from batchopt.distill.agreement import json_agreement, label_agreement, text_agreement
from batchopt.distill.evaluate import evaluate
from batchopt.errors import EXIT_PENDING, EXIT_USAGE
from batchopt.routing import load_training_table
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

MODEL = re.compile(r"fine-tuned model: (ft:\S+) \(job (ftjob-\S+?)[,)]")


def _add_to_pipeline(path: Path, snippet: dict[str, Any], tiers: list[str] | None = None) -> None:
    data = yaml.safe_load(path.read_text())
    data["profiles"].update(snippet["profiles"])
    data.setdefault("pricing", {}).setdefault("models", {}).update(snippet["pricing"]["models"])
    if tiers:
        data["routing"]["tiers"] = tiers
    path.write_text(yaml.safe_dump(data))


def _eval_json(env: dict[str, str], path: Path, student: str) -> dict[str, Any]:
    done = cli(env, "distill", "eval", str(path), "--student", student, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_export_train_tier_and_shadow_evaluation_end_to_end(fake, tmp_path):
    path = run_twice(fake, tmp_path)
    env, data = env_for(fake), tmp_path / "set"
    exported = cli(env, "distill", "export", str(path), "--out", str(data))
    assert exported.returncode == 0, exported.stderr

    # the job is created, and the process leaves while it trains (exit 75)
    fake.batch_seconds = 5.0
    train = ["distill", "train", str(path), "--data", str(data), "--tier", "cheap",
             "--poll-seconds", "0.1"]
    left = cli(env, *train, "--no-wait")
    assert left.returncode == EXIT_PENDING, left.stderr
    assert fake.stats()["fine_tuning_jobs_created"] == 1
    job = re.search(r"fine-tuning job (ftjob-\S+) \(created\)", left.stdout).group(1)
    done = cli(env, *train)  # waits for the same job
    assert done.returncode == 0, done.stderr
    model, done_job = MODEL.search(done.stdout).groups()
    assert done_job == job and fake.stats()["fine_tuning_jobs_created"] == 1
    snippet = yaml.safe_load(done.stdout.split("\n\n", 1)[1])

    # the student in the teacher's shadow; and the base model it was made from, for contrast
    _add_to_pipeline(path, snippet)
    before = fake.stats()["by_model"].get(model, {}).get("requests", 0)
    report = _eval_json(env, path, "student")
    answered = fake.stats()["by_model"][model]["requests"] - before
    assert report["student_model"] == model and report["sent"] == report["sample"] == answered
    examples = pl.read_parquet(data / "examples.parquet")
    assert report["sample"] == examples.height  # every example (fewer than --sample)
    bodies = {row["ticket_id"]: row["body"] for row in tickets()}
    right = sum(fake.oracle_verdict(model, bodies[row_id])[0] == "right"
                for row_id in examples["row_id"])
    assert report["agreement"]["kind"] == "label"
    assert report["agreement"]["agreed"] == right == report["passed"]
    assert right >= examples.height * 0.7  # the fine-tuned model is the better student
    assert report["held_out"] == (examples["split"] == "validation").sum()
    cost = report["cost"]
    assert cost["paid_rows"] == N_TICKETS and cost["actual_usd"] > 0
    assert cost["escalation_share"] == pytest.approx(1 - right / examples.height)
    assert cost["would_be_usd"] < cost["actual_usd"]  # cheaper than refusing on the base model

    base = _eval_json(env, path, "cheap")
    assert base["agreement"]["agreed"] == 0 and base["passed"] == 0
    assert base["rejections"] == {"refusal": examples.height}
    assert base["cost"]["would_be_usd"] > cost["would_be_usd"]

    # a re-run pays for nothing twice
    calls = len(fake.log())
    again = _eval_json(env, path, "student")
    assert again["sent"] == 0 and again["agreement"] == report["agreement"]
    assert len(fake.log()) == calls

    # the fine-tuned model as the cascade's first tier
    _add_to_pipeline(path, snippet, tiers=["student", "strong"])
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="r3"), env=env)
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    r3 = ledger(tmp_path, "r3").filter(pl.col("dedup") == "none")
    kept = r3.filter(pl.col("tier") == "student")
    assert kept.height >= right and (kept["model"] == model).all()
    assert r3.filter(pl.col("escalated"))["route_reason"].str.contains("student rejected").all()
    assert fake.stats()["fine_tuning_jobs_created"] == 1


MID = "gpt-4.1-mini"  # a student the fake's oracle makes right on about half the tickets


def test_router_data_labels_the_rows_the_student_got_wrong_and_trains_a_router(
        fake, tmp_path, monkeypatch):
    monkeypatch.setitem(test_distill_export.ACCURACY, MID, {"hard": 0.5})
    path = run_twice(fake, tmp_path)
    data = yaml.safe_load(path.read_text())
    data["profiles"]["mid"] = {"provider": "openai", "model": MID, "max_tokens": 16,
                               "concurrency": 4, "timeout_s": 10}
    path.write_text(yaml.safe_dump(data))
    env, table = env_for(fake), tmp_path / "router" / "mid.parquet"

    refused = cli(env, "distill", "eval", str(path), "--student", "mid",
                  "--router-data", str(tmp_path / "mid.txt"))
    assert refused.returncode == EXIT_USAGE and ".parquet or .csv" in refused.stderr
    assert fake.stats()["by_model"].get(MID, {}).get("requests", 0) == 0  # refused up front

    done = cli(env, "distill", "eval", str(path), "--student", "mid", "--router-data", str(table))
    assert done.returncode == 0, done.stderr
    bodies = {row["ticket_id"]: row["body"] for row in tickets()}
    taught = teacher_right(fake)  # the rows evaluated: every teacher example
    wrong = {r for r in taught if fake.oracle_verdict(MID, bodies[r])[0] != "right"}
    assert 5 <= len(wrong) <= len(taught) - 5  # both classes, enough to train a router
    written = pl.read_parquet(table)
    assert set(written["row_id"]) == taught
    assert set(written.filter(pl.col("hard"))["row_id"]) == wrong
    assert (written.filter(pl.col("hard"))["why"] == "disagreed; rejected: refusal").all()
    assert written["text"].str.starts_with("Subject: Help\n\nQ").all()  # the rendered prompt
    texts, hard = load_training_table(table)
    assert texts == written["text"].to_list() and hard.tolist() == written["hard"].to_list()
    assert f"{len(taught)} row(s), {len(wrong)} hard" in done.stdout
    router = table.with_name("mid.router.npz")
    assert f"batchopt router train {table} --out {router}" in done.stdout
    assert "tiers: [mid, strong]" in done.stdout

    trained = cli(env, "router", "train", str(table), "--out", str(router),
                  "--backend", "model2vec")
    assert trained.returncode == 0, trained.stderr
    assert f"trained on {len(taught)} rows ({len(wrong)} hard)" in trained.stdout
    assert router.is_file() and not list(table.parent.glob(".*.tmp"))


def test_a_text_pipeline_is_compared_by_embedding_similarity(fake, tmp_path):
    """No oracle: answers are the fake's summaries, so a student cut at 5 tokens agrees less
    and fails the finish_reason validator; one that answers in full agrees on every row."""
    path = distill_pipeline(tmp_path)
    data = yaml.safe_load(path.read_text())
    for name, limit in (("full", 64), ("tiny", 5)):
        data["profiles"][name] = {"provider": "openai", "model": "gpt-4o-mini",
                                  "max_tokens": limit, "concurrency": 4, "timeout_s": 10}
    path.write_text(yaml.safe_dump(data))
    env = env_for(fake)
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="t1"), env=env)
    assert isinstance(summary, RunSummary) and summary.escalated == 0  # cheap answered all
    loaded = load_pipeline(path)
    full = evaluate(loaded, "full", teacher="cheap", sample=12, env=env)
    tiny = evaluate(loaded, "tiny", teacher="cheap", sample=12, env=env)
    assert full.agreement.kind == tiny.agreement.kind == "text"
    assert full.sample == tiny.sample == 12
    assert full.agreement.agreed == 12 and full.agreement.mean_similarity == pytest.approx(1.0)
    assert full.passed == 12 and tiny.passed == 0
    assert tiny.rejections == {"finish_reason": 12}
    assert tiny.agreement.mean_similarity < 0.95 and tiny.agreement.agreed < 12


def test_agreement_measures():
    from batchopt.services.embed import load_embedder

    assert label_agreement(["Refund", "login."], ["refund", None]).agreed == 1
    measured = json_agreement(['{"label": "refund", "urgent": true}', '{"label": "login"}'],
                              ['{"label": "refund", "urgent": false}', '{"label": "login"}'])
    assert (measured.agreed, measured.fields, measured.fields_agreed) == (1, 3, 2)
    teacher = ["The customer wants the money for order 10233 back."] * 3
    student = ["The customer wants the money for order 10233 back.",
               "The customer asks for a refund of order 10233.",
               "The jacket arrived with a broken zip."]
    embedder = load_embedder("sentence-transformers")
    text = text_agreement(teacher, student, embedder, agree_at=0.99)
    assert text.agreed == 1
    similar = text_agreement(teacher[:2], student[1:3], embedder, agree_at=0.6)
    assert similar.agreed == 1  # the paraphrase, not the unrelated answer


def test_an_unknown_fine_tuned_model_is_refused_by_the_fake_server(fake):
    import openai

    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="does not exist"):
        client.chat.completions.create(model="ft:gpt-4o-mini:batchopt::nope",
                                       messages=[{"role": "user", "content": "hi"}])


def _load_bench_student() -> Any:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_student.py"
    spec = importlib.util.spec_from_file_location("bench_student", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_student"] = module
    spec.loader.exec_module(module)
    return module


def test_the_student_benchmark_trains_a_classifier_on_the_export_at_a_tiny_size():
    bench = _load_bench_student()
    figures = bench.run_bench(200, seed=5, backend="model2vec", concurrency=8)
    teacher = figures.teacher
    assert teacher.train.height + teacher.validation.height == teacher.rows == 200
    assert teacher.validation.height >= 20 and teacher.cost_usd > 0
    assert set(teacher.train["label"]) <= set(bench.CATEGORIES)  # no refusal was exported
    student, baseline = figures.student["all"], figures.baseline
    assert student.rows == teacher.validation.height
    assert student.with_teacher > baseline.with_teacher + 0.3  # it learnt, from about 160 examples
    assert figures.curve[-1] == (teacher.train.height, pytest.approx(student.with_teacher))
    assert 0 < figures.job_usd < teacher.cost_usd
    lines = bench.report(figures, bench.TEACHER_ACCURACY)
    assert any(line.startswith("what it shows:") for line in lines)
    assert any(line.startswith("what it does not show: not a generative student") for line in lines)
