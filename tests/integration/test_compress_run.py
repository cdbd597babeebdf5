"""Compression in a whole run: the ledger counts the tokens it removed, and the saving."""

from __future__ import annotations

import polars as pl
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.ledger.pricing import PriceTable
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline
from batchopt.tokens import count_tokens

QUOTED = ("Where is order #4411?\n\nOn Mon, Nov 2, 2026 at 9:00 AM Support <help@shop.example> "
          "wrote:\n> Thanks for writing in. Your order is being prepared and will ship soon.\n"
          "> Tracking numbers are sent by e-mail once the parcel leaves our warehouse.\n"
          "> Kind regards, the support team")


def test_compressed_prompts_are_sent_and_the_ledger_counts_the_saving(fake, tmp_path):
    data = pipeline_dict(compress={"steps": [{"type": "whitespace"}, {"type": "boilerplate"}]})
    path = write_pipeline(tmp_path, data)
    rows = [{"ticket_id": "Q1", "subject": "Order", "body": QUOTED},
            {"ticket_id": "P1", "subject": "Login", "body": "I cannot log in since Monday."}]
    pl.DataFrame(rows).write_parquet(tmp_path / "data" / "tickets.parquet")
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="z1"), env=fake_env(fake))
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    assert list(summary.compression) == ["whitespace", "boilerplate"]
    assert summary.compression["boilerplate"] > 20
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=z1"
                             / "part.parquet").sort("row_id")
    quoted, plain = ledger.row(by_predicate=pl.col("row_id") == "Q1", named=True), \
        ledger.row(by_predicate=pl.col("row_id") == "P1", named=True)
    assert quoted["compression_tokens_saved"] > 20 and plain["compression_tokens_saved"] == 0
    # the baseline's prompt is the uncompressed one, on the baseline model (docs/ledger.md)
    assert quoted["baseline_input_tokens"] == count_tokens(
        "Summarise the ticket in one sentence.") + count_tokens(f"Subject: Order\n\n{QUOTED}")
    price = PriceTable.load().price("openai", "gpt-4o-mini")
    assert abs(quoted["saved_compression_usd"]
               - quoted["compression_tokens_saved"] * price.input / 1e6) < 1e-15
    assert quoted["saved_compression_usd"] > 0 and plain["saved_compression_usd"] == 0
    for row in (quoted, plain):
        levers = sum(v for k, v in row.items() if k.startswith("saved_"))
        assert abs(levers - (row["baseline_cost_usd"] - row["cost_usd"])) < 1e-12
    billed = {e["input_tokens"] for e in fake.log()}
    assert quoted["input_tokens"] in billed  # what was sent is the compressed prompt
    answer = pl.read_parquet(tmp_path / "out" / "outputs.parquet").filter(
        pl.col("ticket_id") == "Q1")["summary"].item()
    assert "4411" in answer  # the fact the answer needs was kept
