"""Tiering in whole runs against the fake server: rules, cascades online and through batch APIs,
what the ledger says of each row, and the budget guard."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.errors import EXIT_BUDGET, BudgetExceededError
from batchopt.ledger.pricing import PriceTable
from batchopt.records import Usage
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

SHORT = "Where is my order?"
LONG = ("My order arrived with the wrong colour, the box was damaged, the invoice shows the "
        "wrong address and the tracking page still says it is in transit, what now?")


def _tickets(n_short: int = 6, n_long: int = 4) -> list[dict[str, str]]:
    bodies = [f"{SHORT} #{100 + i}" for i in range(n_short)]
    bodies += [f"{LONG} #{200 + i}" for i in range(n_long)]
    return [{"ticket_id": f"T{i:02d}", "subject": "Order", "body": body}
            for i, body in enumerate(bodies)]


def _pipeline(tmp_path: Path, routing: dict, **extra: object) -> Path:
    data = pipeline_dict(routing=routing, **extra)
    data["profiles"]["cheap"] = {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 16,
                                 "concurrency": 2, "timeout_s": 10}
    data["profiles"]["strong"] = {"provider": "openai", "model": "gpt-4o", "max_tokens": 64,
                                  "concurrency": 2, "timeout_s": 10}
    path = write_pipeline(tmp_path, data)
    pl.DataFrame(_tickets()).write_parquet(tmp_path / "data" / "tickets.parquet")
    return path


def _env(fake) -> dict[str, str]:
    return fake_env(fake, "sk-test-route-01", "sk-ant-test-route-02")


def _run(path: Path, fake, **options: object):
    return run_pipeline(load_pipeline(path), RunOptions(**options), env=_env(fake))


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet")


CASCADE = {"strategy": "cascade", "tiers": ["cheap", "strong"],
           "validators": [{"type": "finish_reason"}, {"type": "refusal"}]}


def test_rules_send_each_row_to_its_tier_and_say_why(fake, tmp_path):
    routing = {"strategy": "rules", "tiers": ["cheap", "strong"], "default_tier": "cheap",
               "rules": [{"name": "long", "when": {"prompt_tokens": {"gt": 25}}, "tier": "strong"}]}
    summary = _run(_pipeline(tmp_path, routing), fake, run_id="r1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = _ledger(tmp_path, "r1").sort("row_id")
    long_rows = ledger["row_id"].is_in([f"T{i:02d}" for i in range(6, 10)])
    assert (ledger.filter(long_rows)["model"] == "gpt-4o").all()
    assert (ledger.filter(~long_rows)["model"] == "gpt-4o-mini").all()
    assert (ledger.filter(long_rows)["tier"] == "strong").all()
    assert ledger.filter(long_rows)["route_reason"].str.contains("rule 'long'").all()
    assert (ledger.filter(~long_rows)["route_reason"] == "default").all()
    by_model = fake.stats()["by_model"]
    assert by_model["gpt-4o"]["requests"] == 4 and by_model["gpt-4o-mini"]["requests"] == 6


def test_a_cascade_escalates_what_its_validators_reject_and_pays_for_both(fake, tmp_path):
    summary = _run(_pipeline(tmp_path, CASCADE), fake, run_id="c1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = _ledger(tmp_path, "c1").sort("row_id")
    up = ledger.filter(pl.col("escalated"))
    assert sorted(up["row_id"]) == [f"T{i:02d}" for i in range(6, 10)]  # the cut answers
    assert (up["tier"] == "strong").all() and (up["model"] == "gpt-4o").all()
    assert up["route_reason"].str.contains("finish_reason").all()
    stay = ledger.filter(~pl.col("escalated"))
    assert (stay["tier"] == "cheap").all() and (stay["earlier_attempts_usd"] == 0).all()

    # each escalated row's cost = its cheap attempt + its own, as the fake server billed them
    log = fake.log()
    cheap_calls = [e for e in log if e["model"] == "gpt-4o-mini"]
    strong_calls = [e for e in log if e["model"] == "gpt-4o"]
    assert len(cheap_calls) == 10 and len(strong_calls) == 4
    cut = sorted(e["cost_usd"] for e in cheap_calls if e["output_tokens"] == 16)
    assert sorted(up["earlier_attempts_usd"]) == pytest.approx(cut, rel=1e-9)
    own = up["cost_usd"] - up["earlier_attempts_usd"]
    assert sorted(own) == pytest.approx(sorted(e["cost_usd"] for e in strong_calls), rel=1e-9)
    assert abs(ledger["cost_usd"].sum() - fake.bill()["online_usd"]) < 1e-12
    billed = {e["id"]: e for e in log}
    for column in ("input_tokens", "output_tokens"):
        assert ledger[column].sum() == sum(e[column] for e in log)
    for row in up.iter_rows(named=True):
        # the row's tokens are both calls' (issue 20: they used to be the strong call's only)
        assert row["input_tokens"] > billed[row["request_id"]]["input_tokens"]
        levers = sum(row[c] for c in row if c.startswith("saved_"))
        assert levers == pytest.approx(row["baseline_cost_usd"] - row["cost_usd"])
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert outputs.height == 10 and outputs["ticket_id"].n_unique() == 10  # once per row
    assert summary.escalated == 4 and summary.tiers == {"cheap": 6, "strong": 4}


# A negotiated contract for both tiers, the same in the pipeline and at the fake server, whose
# batch discount is not a half (so a discount applied as `1 - discount` shows).
CONTRACT = {"gpt-4o-mini": {"input": 0.12, "output": 0.5, "cached_input": 0.06},
            "gpt-4o": {"input": 2.0, "output": 8.0, "cached_input": 1.0}}
CONTRACT_DISCOUNT = 0.3


@pytest.mark.parametrize("contract", [False, True], ids=["list-price", "contract"])
def test_a_cascade_through_batch_apis_takes_two_rounds_with_only_escalated_rows_in_the_second(
    fake, tmp_path, contract
):
    fake.batch_seconds = 0.2
    extra: dict = {}
    if contract:
        extra["pricing"] = {"models": {m: {**r, "batch_discount": CONTRACT_DISCOUNT}
                                       for m, r in CONTRACT.items()}}
        fake.set_prices({m: {**r, "batch": 1 - CONTRACT_DISCOUNT} for m, r in CONTRACT.items()})
    path = _pipeline(tmp_path, CASCADE, execution={"mode": "batch", "poll_seconds": 0.1},
                     **extra)
    summary = _run(path, fake, run_id="cb")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    stats = fake.stats()
    assert stats["batches_created"] == 2 and stats["batch_requests"] == 10 + 4
    second = [e for e in fake.log() if e["model"] == "gpt-4o"]
    assert len(second) == 4 and {e["wire"] for e in second} == {"openai-batch"}
    ledger = _ledger(tmp_path, "cb")
    assert (ledger["mode"] == "batch").all() and int(ledger["escalated"].sum()) == 4
    assert ledger.filter(pl.col("escalated"))["batch_id"].n_unique() == 1
    # both tiers at the batch price, as the fake server billed them: the first tier's cut
    # answers in the escalated rows' earlier attempts
    bill, up = fake.bill(), ledger.filter(pl.col("escalated"))
    assert bill["online_usd"] == 0 and set(bill["by_model"]) == {"gpt-4o-mini", "gpt-4o"}
    cut = [e["cost_usd"] for e in fake.log() if e["model"] == "gpt-4o-mini"
           and e["output_tokens"] == 16]
    assert sorted(up["earlier_attempts_usd"]) == pytest.approx(sorted(cut), rel=1e-9)
    assert abs(ledger["cost_usd"].sum() - bill["batch_usd"]) < 1e-12


def test_a_cascade_in_no_wait_batch_mode_moves_on_across_invocations(fake, tmp_path):
    import time

    from batchopt.run.runner import RunPending

    fake.batch_seconds = 0.5
    path = _pipeline(tmp_path, CASCADE, execution={"mode": "batch", "poll_seconds": 0.1})
    assert isinstance(_run(path, fake, run_id="nw", wait=False), RunPending)  # cheap batch out
    time.sleep(0.6)
    assert isinstance(_run(path, fake, run_id="nw", wait=False), RunPending)  # strong batch out
    assert fake.stats()["batches_created"] == 2
    time.sleep(0.6)
    done = _run(path, fake, run_id="nw", wait=False)
    assert isinstance(done, RunSummary) and done.exit_code == 0 and done.escalated == 4
    assert fake.stats()["batches_created"] == 2 and len(fake.log()) == 14


def test_the_budget_guard_refuses_a_run_estimated_over_it(fake, tmp_path):
    path = _pipeline(tmp_path, CASCADE, budget={"max_usd": 0.000001})
    with pytest.raises(BudgetExceededError, match="budget.max_usd.*nothing was sent"):
        _run(path, fake, run_id="b1")
    assert fake.stats()["requests"] == 0
    assert not (tmp_path / "out" / "outputs.parquet").exists()


def test_the_budget_guard_stops_sending_when_spend_reaches_it(fake, tmp_path):
    # The first round (all on the cheap tier) fits; the escalations to the strong tier do not.
    prices = PriceTable.load()
    cheap = prices.price("openai", "gpt-4o-mini")
    first_round = 10 * prices.cost(cheap, Usage(80, 16))
    # no escalation expected up front (else the pre-send check, which counts the plan's
    # assumed 20%, refuses the run): this is the in-flight stop
    path = _pipeline(tmp_path, {**CASCADE, "assume_escalation": 0.0},
                     budget={"max_usd": first_round + 0.0001})
    summary = _run(path, fake, run_id="b2")
    assert isinstance(summary, RunSummary) and summary.exit_code == EXIT_BUDGET
    assert any("budget" in note for note in summary.notes)
    ledger = _ledger(tmp_path, "b2")
    # a row whose escalation the budget stopped keeps its paid cheap answer, unverified
    stopped = ledger.filter(pl.col("status") == "unverified: budget")
    assert stopped.height >= 1 and stopped["model"].eq("gpt-4o-mini").all()
    assert ledger["status"].ne("failed").all()
    strong_paid = sum(e["model"] == "gpt-4o" for e in fake.log())
    assert strong_paid < 4  # not every escalation was sent
    assert (tmp_path / "out" / "outputs.parquet").exists()  # outputs and ledger kept
    assert ledger["cost_usd"].sum() <= first_round + 0.0001


def test_a_router_trained_by_the_cli_sends_hard_rows_to_the_strong_tier(fake, tmp_path):
    from click.testing import CliRunner

    from batchopt.cli.main import main

    easy = [f"Subject: Order\n\n{SHORT} #{i}" for i in range(40)]
    hard = [f"Subject: Order\n\n{LONG} #{i}" for i in range(40)]
    pl.DataFrame({"text": easy + hard, "label": ["easy"] * 40 + ["hard"] * 40}).write_csv(
        tmp_path / "history.csv"
    )
    trained = CliRunner().invoke(main, ["router", "train", str(tmp_path / "history.csv"),
                                        "--out", str(tmp_path / "router.npz"),
                                        "--backend", "model2vec"])
    assert trained.exit_code == 0, trained.output
    assert "held-out AUC" in trained.output and (tmp_path / "router.npz").exists()

    routing = {"strategy": "classifier", "tiers": ["cheap", "strong"],
               "classifier": {"path": str(tmp_path / "router.npz"), "threshold": 0.5,
                              "backend": "model2vec"}}
    summary = _run(_pipeline(tmp_path / "p", routing), fake, run_id="k1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = _ledger(tmp_path / "p", "k1")
    long_rows = ledger["row_id"].is_in([f"T{i:02d}" for i in range(6, 10)])
    assert (ledger.filter(long_rows)["tier"] == "strong").all()
    assert (ledger.filter(~long_rows)["tier"] == "cheap").all()
    assert ledger["route_reason"].str.starts_with("classifier p(hard)=").all()


def test_a_judge_on_the_strong_tier_decides_what_escalates_and_its_calls_are_paid(fake, tmp_path):
    # The fake's oracle makes the judge (gpt-4o) say "yes" to the short tickets' answers and
    # "no" to the long ones'.
    items = [{"match": f"#{100 + i}", "answer": "yes", "difficulty": "easy"} for i in range(6)]
    items += [{"match": f"#{200 + i}", "answer": "no", "difficulty": "easy"} for i in range(4)]
    fake.set_oracle(items, models={"gpt-4o": {"easy": 1.0}, "gpt-4o-mini": {"easy": 1.0}})
    routing = {"strategy": "cascade", "tiers": ["cheap", "strong"],
               "validators": [{"type": "refusal"}, {"type": "judge", "tier": "strong"}]}
    summary = _run(_pipeline(tmp_path, routing), fake, run_id="j1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = _ledger(tmp_path, "j1")
    up = ledger.filter(pl.col("escalated"))
    assert sorted(up["row_id"]) == [f"T{i:02d}" for i in range(6, 10)]
    assert up["route_reason"].str.contains("judge").all()
    strong_calls = [e for e in fake.log() if e["model"] == "gpt-4o"]
    assert len(strong_calls) == 10 + 4  # a judge call per cheap answer, then the escalations
    kept = ledger.filter(~pl.col("escalated"))
    assert (kept["earlier_attempts_usd"] > 0).all()  # the judge's call is on the row's bill
    assert (kept["cost_usd"] > kept["earlier_attempts_usd"]).all()


def test_a_tier_may_ask_in_its_own_prompt_variant(fake, tmp_path):
    path = _pipeline(tmp_path, CASCADE)
    import yaml

    data = yaml.safe_load(path.read_text())
    data["profiles"]["strong"].update({"system": "Be thorough.",
                                       "template": "VARIANT {{ subject }}: {{ body }}"})
    path.write_text(yaml.safe_dump(data))
    summary = _run(path, fake, run_id="v1")
    assert isinstance(summary, RunSummary) and summary.escalated == 4
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet").sort("ticket_id")
    answers = dict(zip(outputs["ticket_id"], outputs["summary"], strict=True))
    # the fake answers "Summary: " + the first words of the user message it was sent
    assert all(answers[f"T{i:02d}"].startswith("Summary: VARIANT Order:") for i in range(6, 10))
    assert not any(answers[f"T{i:02d}"].startswith("Summary: VARIANT") for i in range(6))
    data["profiles"]["strong"]["template"] = "{{ body | nosuchfilter }}"
    path.write_text(yaml.safe_dump(data))
    from batchopt.errors import ConfigError

    before = fake.stats()["requests"]
    with pytest.raises(ConfigError, match="profiles.strong.template"):
        _run(path, fake, run_id="v2")
    assert fake.stats()["requests"] == before  # refused before anything was sent


def test_the_classifier_reuses_the_semantic_steps_vectors(fake, tmp_path, monkeypatch):
    from batchopt.routing import train_router_from_texts
    from batchopt.services import embed

    embedder = embed.load_embedder("model2vec")
    texts = [f"Subject: Order\n\n{SHORT} #{i}" for i in range(30)]
    texts += [f"Subject: Order\n\n{LONG} #{i}" for i in range(30)]
    hard = pl.Series([False] * 30 + [True] * 30).to_numpy()
    train_router_from_texts(texts, hard, embedder).save(tmp_path / "router.npz")
    routing = {"strategy": "classifier", "tiers": ["cheap", "strong"],
               "classifier": {"path": str(tmp_path / "router.npz"), "backend": "model2vec"}}
    semantic = {"semantic": {"enabled": True, "backend": "model2vec", "threshold": 0.95}}
    path = _pipeline(tmp_path / "p", routing, dedup=semantic)

    loads: list[tuple[object, ...]] = []
    real = embed.load_embedder

    def counted(*args: object, **kwargs: object) -> embed.Embedder:
        loads.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(embed, "load_embedder", counted)
    summary = _run(path, fake, run_id="reuse")
    assert len(loads) == 1  # the semantic step's; the classifier used its vectors
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = _ledger(tmp_path / "p", "reuse").filter(pl.col("dedup") == "none")
    long_rows = ledger["row_id"].is_in([f"T{i:02d}" for i in range(6, 10)])
    assert (ledger.filter(long_rows)["tier"] == "strong").all()
    assert (ledger.filter(~long_rows)["tier"] == "cheap").all()


def test_a_rule_tests_the_input_column_not_its_compressed_text(fake, tmp_path):
    """Point 12a: boilerplate removal drops the quoted reply's 'On ..., Bob wrote:' line from
    the prompt, but a rule on `column: body` still sees it in the input and routes the row."""
    routing = {"strategy": "rules", "tiers": ["cheap", "strong"], "default_tier": "cheap",
               "rules": [{"name": "reply", "when": {"column": "body", "matches": r"wrote:"},
                          "tier": "strong"}]}
    path = _pipeline(tmp_path, routing, compress={"steps": [{"type": "boilerplate"}]})
    reply = ("Where is my refund for order #777?\n\n"
             "On Monday, Bob wrote:\n> Your refund is on its way.\n> Bob")
    tickets = [{"ticket_id": "T01", "subject": "Refund", "body": reply},
               {"ticket_id": "T02", "subject": "Order", "body": "Where is my order #778?"}]
    pl.DataFrame(tickets).write_parquet(tmp_path / "data" / "tickets.parquet")
    summary = _run(path, fake, run_id="b1")
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = _ledger(tmp_path, "b1").sort("row_id")
    assert ledger["tier"].to_list() == ["strong", "cheap"]
    assert ledger["model"].to_list() == ["gpt-4o", "gpt-4o-mini"]
    assert ledger["route_reason"][0].startswith("rule 'reply'")
    assert ledger["route_reason"][1] == "default"
    assert ledger["compression_tokens_saved"][0] > 0  # the prompt lost the quoted reply
    outputs = pl.read_parquet(tmp_path / "out" / "outputs.parquet")
    assert not any(c.startswith("__") for c in outputs.columns)
