"""Fact safety: a fact the answer needs survives compression where a careless compressor cuts.

Each row puts a fact (order number, amount, date, error code) after a quoted reply, between
quoted blocks, at the end of a long field, right before a signature, inside a line that looks
like a disclaimer, or in a line that looks like a repeat. Each row also names boilerplate that
must be gone, so the test fails both ways: a compressor that keeps everything fails too.
"""

from __future__ import annotations

import polars as pl
import pytest

from batchopt.config.compress import parse_compress
from batchopt.prompts.compress import compress_rows
from batchopt.tokens import count_tokens

MODEL = "gpt-4o"
FILLER = " ".join(
    f"Sentence {i} of background that says nothing the answer needs, only context."
    for i in range(60)
)
QUOTE = (
    "> On Mon, 2 Sep 2024 at 10:01, Northpeak Support <support@northpeak.example> wrote:\n"
    "> Hi Ana,\n> Could you confirm the order number so we can look into this?\n> Best, Alex"
)
SIG = "-- \nAna Souza\nOperations | Harbor & Pine LLC\n+1 (555) 201-3344"
DISCLAIMER = (
    "CONFIDENTIALITY NOTICE: This e-mail and any attachments are confidential and intended only "
    "for the addressee. If you received it in error, please delete it."
)

# (row id, body, facts that must stay, boilerplate that must go)
ROWS: list[tuple[str, str, list[str], list[str]]] = [
    (
        "after_quote",
        f"Hi,\n\nSee below.\n\n{QUOTE}\n\nThe order is NP-4410021, paid $129.00.",
        ["NP-4410021", "$129.00"],
        ["Could you confirm", "wrote:"],
    ),
    (
        "between_quotes",
        f"{QUOTE}\n\nMy card was charged on September 14 for order NP-7781234.\n\n"
        "> Can you tell us a bit more about what happened?\n> Best, Sam\n\nThanks",
        ["September 14", "NP-7781234"],
        ["tell us a bit more", "Best, Alex", "Best, Sam"],
    ),
    (
        "interleaved",
        "> What error do you see?\nError E-4409 every time.\n> Which device?\n"
        "A Pixel 7 on Android 14.\n> Best, Casey",
        ["E-4409", "Pixel 7"],
        ["What error do you see", "Which device"],
    ),
    (
        "end_of_long_field",
        f"Hello,\n\n{FILLER}\n\nFinally: the refund due is $1,249.50 for order NP-9900112.",
        ["$1,249.50", "NP-9900112"],
        ["Sentence 30 of background"],
    ),
    (
        "start_of_long_field",
        f"Order NP-3300777 arrived broken.\n\n{FILLER}",
        ["NP-3300777"],
        ["Sentence 30 of background"],
    ),
    (
        "before_dash_signature",
        f"The app shows error E-5003 since 3 October.\n\nThanks,\n{SIG}",
        ["E-5003", "3 October"],
        ["Harbor & Pine", "555"],
    ),
    (
        "before_signoff_name",
        "Please refund $64.50 for order #2567007.\n\nKind regards,\nGrace Miller\nSenior Buyer",
        ["$64.50", "#2567007"],
        ["Kind regards", "Senior Buyer"],
    ),
    (
        "fact_below_signoff",
        "I returned the lamp.\n\nThanks,\nOrder NP-1203344, refund $49.99\n\nSent from my iPhone",
        ["NP-1203344", "$49.99"],
        ["Sent from my iPhone"],
    ),
    (
        "courtesy_line_with_fact",
        "My parcel is late.\n\nThanks,\nDana\nThanks for your help with order NP-4455667.",
        ["NP-4455667"],
        [],
    ),
    (
        "disclaimer_lookalike",
        "This e-mail is confidential, but my order NP-5566778 was charged twice on 2024-09-08."
        f"\n\nThanks,\nAna\n\n{DISCLAIMER}",
        ["NP-5566778", "2024-09-08"],
        ["CONFIDENTIALITY NOTICE", "please delete it"],
    ),
    (
        "disclaimer_sentence_with_fact",
        "If you received it in error, note that invoice INV-20931 is still unpaid. "
        "Please consider the environment before printing this email.",
        ["INV-20931"],
        ["consider the environment"],
    ),
    (
        "repeat_lookalike",
        "Order NP-1111111 still not delivered\nOrder NP-1111112 still not delivered\n"
        "Order NP-1111111 still not delivered",
        ["NP-1111111", "NP-1111112"],
        [],
    ),
    (
        "repeat_with_amount",
        "Charge of $20.00 on 5 Sep\nCharge of $20.00 on 6 Sep\nCharge of $20.00 on 5 Sep\n"
        "Charge of $20.00 on 5 Sep",
        ["5 Sep", "6 Sep"],
        [],
    ),
    (
        "outlook_history_after_fact",
        "Tracking number 1Z999AA10123456784 shows delivered on 12 Sep but nothing arrived."
        "\n\nBest regards,\nLiam\n\n-----Original Message-----\nFrom: Northpeak Support\n"
        "Sent: 11 September 2024 09:00\nTo: Liam\nSubject: Your order\n\nIt has shipped.",
        ["1Z999AA10123456784", "12 Sep"],
        ["Original Message", "It has shipped", "Best regards"],
    ),
    (
        "html_fact",
        "<p>Hi,</p><p>The <b>error code</b> is <strong>E-2210</strong>&nbsp;&nbsp;since "
        "<em>Monday</em>.</p><br><br><br><p>Thanks,<br>Ana</p>",
        ["E-2210", "error code", "Monday"],
        ["<p>", "<strong>", "&nbsp;"],
    ),
]

CONFIG = parse_compress(
    {
        "steps": [
            {"type": "whitespace"},
            {"type": "boilerplate"},
            {"type": "repeated_lines"},
            {"type": "field_budget", "fields": {"body": 120}, "keep_tail_share": 0.3},
        ]
    }
)


@pytest.fixture(scope="module")
def compressed() -> dict[str, str]:
    frame = pl.DataFrame(
        {"ticket_id": [r[0] for r in ROWS], "body": [r[1] for r in ROWS]},
        schema={"ticket_id": pl.String, "body": pl.String},
    )
    out, report = compress_rows(frame, CONFIG, ["body"], MODEL)
    assert (report["compression_tokens_saved"] >= 0).all()
    return dict(zip(out["ticket_id"], out["body"], strict=True))


def test_at_least_twelve_rows() -> None:
    assert len(ROWS) >= 12


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_fact_survives(compressed: dict[str, str], row: tuple[str, str, list[str], list[str]]):
    row_id, _, facts, _ = row
    for fact in facts:
        assert fact in compressed[row_id], f"{row_id}: lost {fact!r}:\n{compressed[row_id]}"


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_boilerplate_removed(
    compressed: dict[str, str], row: tuple[str, str, list[str], list[str]]
) -> None:
    row_id, body, _, gone = row
    for text in gone:
        assert text in body  # the row really has it
        assert text not in compressed[row_id], f"{row_id}: kept {text!r}"


def test_long_fields_fit_budget_and_mark_the_cut(compressed: dict[str, str]) -> None:
    for row_id in ("end_of_long_field", "start_of_long_field"):
        text = compressed[row_id]
        assert count_tokens(text, MODEL) <= 120
        assert "tokens cut" in text


def test_repeats_dropped(compressed: dict[str, str]) -> None:
    assert compressed["repeat_lookalike"].count("NP-1111111") == 1
    assert compressed["repeat_with_amount"].count("5 Sep") == 1
