"""The shipped sample tickets: reproducible, and labelled as the dedup tests expect."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
SHARES = {"exact": 0.15, "near": 0.10, "paraphrase": 0.15, "hard_negative": 0.10}


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@pytest.fixture(scope="module")
def tickets() -> pl.DataFrame:
    return pl.read_parquet(SAMPLE / "tickets.parquet")


@pytest.fixture(scope="module")
def pairs(tickets: pl.DataFrame) -> pl.DataFrame:
    """Each derived ticket next to its source (`*_src` columns)."""
    labels = pl.read_parquet(SAMPLE / "tickets_labels.parquet")
    derived = tickets.join(labels, on="ticket_id").filter(pl.col("source_ticket_id").is_not_null())
    return derived.join(tickets, left_on="source_ticket_id", right_on="ticket_id", suffix="_src")


def _rows(pairs: pl.DataFrame, relation: str) -> list[dict]:
    rows = pairs.filter(pl.col("relation") == relation).to_dicts()
    assert rows, relation
    return rows


def test_rerunning_the_script_reproduces_the_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SAMPLE / "make_tickets.py"), "--out-dir", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )
    assert "hard_negative" in done.stdout
    for name in ("tickets.parquet", "tickets_labels.parquet"):
        assert_frame_equal(pl.read_parquet(tmp_path / name), pl.read_parquet(SAMPLE / name))
    assert not list(tmp_path.glob("*.tmp"))


def test_schema_and_ids(tickets: pl.DataFrame) -> None:
    assert tickets.schema == pl.Schema({
        "ticket_id": pl.String, "created_at": pl.Date, "channel": pl.String,
        "product": pl.String, "customer_tier": pl.String, "subject": pl.String, "body": pl.String,
    })
    assert 250 <= tickets.height <= 350
    ids = tickets["ticket_id"]
    assert ids.null_count() == 0 and ids.n_unique() == tickets.height
    assert ids.str.contains(r"^T-\d{6}$").all()
    assert set(tickets["channel"]) == {"email", "chat", "web"}
    assert set(tickets["customer_tier"]) == {"free", "pro", "enterprise"}
    assert tickets["product"].n_unique() == 8
    words = tickets["body"].map_elements(lambda b: len(b.split()), return_dtype=pl.Int64)
    assert words.min() >= 40 and words.max() <= 150
    assert tickets["body"].str.contains("> On ").any()  # quoted replies for boilerplate stripping


def test_labels_cover_every_ticket_with_the_planned_shares(tickets: pl.DataFrame) -> None:
    labels = pl.read_parquet(SAMPLE / "tickets_labels.parquet")
    assert labels.columns == ["ticket_id", "source_ticket_id", "relation"]
    assert sorted(labels["ticket_id"]) == sorted(tickets["ticket_id"])
    originals = labels.filter(pl.col("relation") == "original")
    assert originals["source_ticket_id"].null_count() == originals.height
    derived = labels.filter(pl.col("relation") != "original")
    assert derived["source_ticket_id"].null_count() == 0
    assert set(derived["source_ticket_id"]) <= set(originals["ticket_id"])
    shares = labels["relation"].value_counts(normalize=True)
    share = dict(zip(shares["relation"], shares["proportion"], strict=True))
    assert set(share) == {"original", *SHARES}
    for relation, expected in SHARES.items():
        assert abs(share[relation] - expected) <= 0.05, relation


def test_exact_copies_are_identical(pairs: pl.DataFrame) -> None:
    for row in _rows(pairs, "exact"):
        assert (row["subject"], row["body"]) == (row["subject_src"], row["body_src"])
        assert row["ticket_id"] != row["source_ticket_id"]


def test_near_copies_differ_only_in_whitespace_case_and_width(pairs: pl.DataFrame) -> None:
    for row in _rows(pairs, "near"):
        assert (row["subject"], row["body"]) != (row["subject_src"], row["body_src"])
        assert normalise(row["subject"]) == normalise(row["subject_src"])
        assert normalise(row["body"]) == normalise(row["body_src"])


def test_paraphrases_reword_the_same_request(pairs: pl.DataFrame) -> None:
    for row in _rows(pairs, "paraphrase"):
        assert normalise(row["body"]) != normalise(row["body_src"])
        assert row["product"] == row["product_src"]


def test_hard_negatives_are_never_the_same_text(tickets: pl.DataFrame, pairs: pl.DataFrame) -> None:
    for row in _rows(pairs, "hard_negative"):
        assert normalise(row["subject"] + "\n" + row["body"]) != normalise(
            row["subject_src"] + "\n" + row["body_src"])
    # Nor the same normalised text as any other ticket.
    labels = pl.read_parquet(SAMPLE / "tickets_labels.parquet")
    keyed = tickets.join(labels, on="ticket_id").with_columns(
        key=pl.concat_str("subject", "body", separator="\n").map_elements(
            normalise, return_dtype=pl.String))
    negatives = keyed.filter(pl.col("relation") == "hard_negative")
    others = keyed.filter(pl.col("relation") != "hard_negative")
    assert negatives["key"].n_unique() == negatives.height
    assert not set(negatives["key"]) & set(others["key"])
