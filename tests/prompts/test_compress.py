"""Compression steps: behaviour, token accounting, order, switches, plugin hook, config errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from batchopt.config.compress import parse_compress
from batchopt.errors import ConfigError, InputError
from batchopt.prompts.compress import (
    SAVED_COLUMN,
    compress_rows,
    cut_to_budget,
    drop_repeated_lines,
    load_plugin,
    normalise_whitespace,
    report_columns,
    strip_boilerplate,
    trim_examples,
    trim_few_shot_text,
)
from batchopt.tokens import count_tokens

MODEL = "gpt-4o"


def shout(text: str, *, budget_tokens: int | None) -> str:
    """A test plugin: upper-cases, and keeps the first `budget_tokens` words."""
    words = text.upper().split()
    return " ".join(words[:budget_tokens] if budget_tokens else words)


def not_a_str(text: str, *, budget_tokens: int | None) -> int:
    return 3


def explode(text: str, *, budget_tokens: int | None) -> str:
    raise RuntimeError("model unavailable")


def frame(**columns: list[str | None]) -> pl.DataFrame:
    return pl.DataFrame(columns, schema={k: pl.String for k in columns})


# ---- step functions --------------------------------------------------------------------------


def test_whitespace_collapses_and_strips_markup() -> None:
    text = "<div><p>Hello&nbsp;&nbsp; <b>world</b></p>\r\n\r\n\r\n\r\n  **bold**  and _it_</div>"
    assert normalise_whitespace(text) == "Hello world\n\nbold and it"
    assert normalise_whitespace("snake_case_name and a*b*c") == "snake_case_name and a*b*c"
    assert normalise_whitespace("Reply to <support@northpeak.example>") == (
        "Reply to <support@northpeak.example>"
    )
    assert normalise_whitespace("# Heading\ntext", markdown=False) == "# Heading\ntext"
    assert normalise_whitespace("<b>x</b>", html_tags=False) == "<b>x</b>"


def test_boilerplate_switches() -> None:
    text = "Hi,\n\nOrder NP-1 is late.\n\nThanks,\nAna\n\n> On Mon, Bob wrote:\n> old"
    assert strip_boilerplate(text) == "Order NP-1 is late."
    kept_quote = strip_boilerplate(text, quoted=False)
    assert "> old" in kept_quote and "Ana" not in kept_quote
    kept_sig = strip_boilerplate(text, signatures=False)
    assert "Thanks,\nAna" in kept_sig and "> old" not in kept_sig
    assert strip_boilerplate(text, greetings=False).startswith("Hi,")
    assert strip_boilerplate("Ticket X\nREF-TRACKING 99", extra_patterns=[r"^REF-.*$"]) == (
        "Ticket X"
    )
    disclaimer = "Lamp broken.\n\nSent from my iPhone"
    assert strip_boilerplate(disclaimer) == "Lamp broken."
    assert strip_boilerplate(disclaimer, disclaimers=False) == disclaimer


def test_closing_courtesy_lines_go_wherever_the_writer_put_them() -> None:
    body = "Order NP-7 arrived broken. Please send a new one."
    variants = [
        f"{body}\n\nThanks,\nDana Ruiz\nThank you so much for your help.",
        f"{body}\n\nThank you so much for your help.\n\nThanks,\nDana Ruiz",
        f"{body}\nHave a nice day!",
        f"{body}\n\nKind regards,\nDana Ruiz\n(submitted via shop.example/help)\n"
        "Looking forward to hearing from you.",
    ]
    assert {strip_boilerplate(v) for v in variants} == {body}
    # Thanks that carries a request is not a courtesy line.
    asked = f"{body}\nThanks for refunding the $12.00 shipping too."
    assert strip_boilerplate(asked) == asked
    # A field that is nothing but thanks is left with its thanks, not emptied.
    assert strip_boilerplate("Thank you for your help.") == "Thank you for your help."


def test_boilerplate_leaves_plain_text_alone() -> None:
    text = "Order NP-1 arrived broken.\nPlease send a new one."
    assert strip_boilerplate(text) is text


def test_repeated_lines() -> None:
    assert drop_repeated_lines("a\nb\na\n\nb\nc") == "a\nb\n\nc"
    assert drop_repeated_lines("ok\nok", min_chars=3) == "ok\nok"
    assert drop_repeated_lines("x1\nx2") == "x1\nx2"


def test_cut_to_budget_keeps_head_and_tail() -> None:
    text = "HEAD " + " ".join(f"w{i}" for i in range(500)) + " TAIL"
    out = cut_to_budget(text, 60, MODEL, keep_tail_share=0.3)
    assert out.startswith("HEAD ") and out.endswith(" TAIL")
    assert "tokens cut" in out
    assert count_tokens(out, MODEL) <= 60
    assert cut_to_budget("short", 60, MODEL) == "short"
    head_only = cut_to_budget(text, 60, MODEL, keep_tail_share=0.0, marker="<cut {n}>")
    assert head_only.startswith("HEAD ") and "TAIL" not in head_only and "<cut " in head_only


def test_trim_examples_drops_whole_examples_from_the_end() -> None:
    examples = ["Q: one\nA: 1", "Q: two\nA: 2", "Q: three\nA: 3"]
    budget = count_tokens("\n\n".join(examples[:2]), MODEL)
    assert trim_examples(examples, budget, MODEL) == examples[:2]
    assert trim_examples(examples, 1, MODEL) == []
    assert trim_examples(examples, 1, MODEL, min_examples=1) == examples[:1]
    text = "\n\n".join(examples)
    assert trim_few_shot_text(text, budget, MODEL) == "\n\n".join(examples[:2])
    assert trim_few_shot_text(text, 10_000, MODEL) == text


# ---- compress_rows ---------------------------------------------------------------------------

BODY = (
    "Hi,\n\nOrder NP-1 is   late.\nOrder NP-1 is   late.\n\nThanks,\nAna\n\n> On Mon, B wrote:\n> x"
)


def test_report_accounts_for_every_step() -> None:
    config = parse_compress(
        {"steps": [{"type": "whitespace"}, {"type": "boilerplate"}, {"type": "repeated_lines"}]}
    )
    rows = frame(body=[BODY, None, "clean text"], subject=["  Late  ", "x", "y"])
    out, report = compress_rows(rows, config, ["body", "subject"], MODEL)
    assert out["body"].to_list() == ["Order NP-1 is late.", None, "clean text"]
    assert out["subject"].to_list() == ["Late", "x", "y"]
    assert report.columns == report_columns(config)
    assert all(report[c].dtype == pl.Int64 for c in report.columns)
    before = count_tokens(BODY, MODEL) + count_tokens("  Late  ", MODEL)
    after = count_tokens("Order NP-1 is late.", MODEL) + count_tokens("Late", MODEL)
    assert report[SAVED_COLUMN].to_list() == [before - after, 0, 0]
    steps = report.drop(SAVED_COLUMN)
    assert steps.sum_horizontal().to_list() == report[SAVED_COLUMN].to_list()
    ws = normalise_whitespace(BODY)
    ws_body = count_tokens(BODY, MODEL) - count_tokens(ws, MODEL)
    ws_subject = count_tokens("  Late  ", MODEL) - count_tokens("Late", MODEL)
    assert report["compress_whitespace_tokens"][0] == ws_body + ws_subject
    no_repeats = strip_boilerplate(ws)
    assert report["compress_repeated_lines_tokens"][0] == (
        count_tokens(no_repeats, MODEL) - count_tokens("Order NP-1 is late.", MODEL)
    )
    assert out["body"][0] == drop_repeated_lines(strip_boilerplate(ws))


def test_order_matters() -> None:
    text = "Order NP-1 late.\n\n\n\nOrder NP-1    late.\nThanks,\nAna"
    first = parse_compress({"steps": [{"type": "repeated_lines"}, {"type": "whitespace"}]})
    second = parse_compress({"steps": [{"type": "whitespace"}, {"type": "repeated_lines"}]})
    out1, _ = compress_rows(frame(body=[text]), first, ["body"], MODEL)
    out2, rep2 = compress_rows(frame(body=[text]), second, ["body"], MODEL)
    # Before whitespace runs "NP-1    late." differs from "NP-1 late."; after, it is a repeat.
    assert out1["body"][0].count("NP-1") == 2
    assert out2["body"][0].count("NP-1") == 1
    assert rep2["compress_repeated_lines_tokens"][0] > 0


def test_disabled_step_and_disabled_section() -> None:
    config = parse_compress(
        {"steps": [{"type": "whitespace", "enabled": False}, {"type": "boilerplate"}]}
    )
    out, report = compress_rows(
        frame(body=["a   b\n\nSent from my iPhone"]), config, ["body"], MODEL
    )
    assert out["body"][0] == "a   b"
    assert report["compress_whitespace_tokens"][0] == 0
    assert report["compress_boilerplate_tokens"][0] > 0
    off = parse_compress({"enabled": False, "steps": [{"type": "whitespace"}]})
    rows = frame(body=["a   b"])
    out, report = compress_rows(rows, off, ["body"], MODEL)
    assert out.equals(rows) and report[SAVED_COLUMN].to_list() == [0]


def test_step_columns_and_field_budget() -> None:
    long = " ".join(f"word{i}" for i in range(400)) + " END-42"
    config = parse_compress(
        {
            "steps": [
                {"type": "whitespace", "columns": ["subject"]},
                {"type": "field_budget", "fields": {"body": 50}},
            ]
        }
    )
    rows = frame(subject=["a    b"], body=[long + "   x"])
    out, report = compress_rows(rows, config, ["subject", "body"], MODEL)
    assert out["subject"][0] == "a b"
    assert out["body"][0].endswith("END-42   x") and "tokens cut" in out["body"][0]
    assert count_tokens(out["body"][0], MODEL) <= 50
    assert report["compress_field_budget_tokens"][0] == (
        count_tokens(long + "   x", MODEL) - count_tokens(out["body"][0], MODEL)
    )


def test_few_shot_list_and_text_columns() -> None:
    examples = ["Q: a\nA: 1", "Q: b\nA: 2", "Q: c\nA: 3"]
    budget = count_tokens("\n\n".join(examples[:2]), MODEL)
    rows = pl.DataFrame(
        {"shots": [examples, examples[:1]], "shots_text": ["\n\n".join(examples), "Q: z\nA: 0"]},
        schema={"shots": pl.List(pl.String), "shots_text": pl.String},
    )
    config = parse_compress(
        {"steps": [{"type": "few_shot", "columns": ["shots", "shots_text"], "max_tokens": budget}]}
    )
    out, report = compress_rows(rows, config, ["shots", "shots_text"], MODEL)
    assert out["shots"].to_list() == [examples[:2], examples[:1]]
    assert out["shots_text"][0] == "\n\n".join(examples[:2])
    saved = 2 * (count_tokens("\n\n".join(examples), MODEL) - budget)
    assert report["compress_few_shot_tokens"].to_list() == [saved, 0]


def test_duplicate_step_types_get_distinct_columns() -> None:
    config = parse_compress({"steps": [{"type": "whitespace"}, {"type": "whitespace"}]})
    assert report_columns(config) == [
        "compress_whitespace_tokens",
        "compress_whitespace_2_tokens",
        SAVED_COLUMN,
    ]


def test_unknown_column_is_a_config_error() -> None:
    config = parse_compress({"steps": [{"type": "field_budget", "fields": {"bdy": 10}}]})
    with pytest.raises(ConfigError, match=r"compress\.steps\[0\]\.fields\.bdy: 'bdy' is not"):
        compress_rows(frame(body=["x"]), config, ["body"], MODEL)


# ---- plugin ----------------------------------------------------------------------------------


def test_plugin_from_this_module() -> None:
    config = parse_compress(
        {"steps": [{"type": "plugin", "entry_point": f"{__name__}:shout", "budget_tokens": 2}]}
    )
    out, report = compress_rows(frame(body=["one two three four"]), config, ["body"], MODEL)
    assert out["body"][0] == "ONE TWO"
    assert report["compress_plugin_tokens"][0] == (
        count_tokens("one two three four", MODEL) - count_tokens("ONE TWO", MODEL)
    )


def test_plugin_from_a_module_on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_lingua.py").write_text(
        textwrap.dedent(
            """
            def compress(text, *, budget_tokens=None):
                return text.replace("very ", "")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = parse_compress({"steps": [{"type": "plugin", "entry_point": "my_lingua:compress"}]})
    out, _ = compress_rows(frame(body=["a very very long day"]), config, ["body"], MODEL)
    assert out["body"][0] == "a long day"
    sys.modules.pop("my_lingua", None)


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
        (f"{__name__}:missing", "has no 'missing'"),
        (f"{__name__}:MODEL", "is not callable"),
    ],
)
def test_plugin_load_errors_name_the_entry_point(entry_point: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"'{entry_point}'.*{message}"):
        load_plugin(entry_point)


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [(f"{__name__}:not_a_str", "returned int"), (f"{__name__}:explode", "failed")],
)
def test_plugin_run_errors_name_the_entry_point(entry_point: str, message: str) -> None:
    config = parse_compress({"steps": [{"type": "plugin", "entry_point": entry_point}]})
    with pytest.raises(InputError, match=rf"'{entry_point}'.*{message}"):
        compress_rows(frame(body=["x"]), config, ["body"], MODEL)


# ---- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [
                {"type": "whitespace"},
                {"type": "boilerplate"},
                {"type": "field_budget", "fields": {"body": 0}},
            ],
            r"compress\.steps\[2\]\.fields\.body: budget must be > 0",
        ),
        ([{"type": "field_budget", "fields": {}}], r"compress\.steps\[0\]\.fields: must give"),
        (
            [{"type": "field_budget", "fields": {"b": 5}, "keep_tail_share": 1.5}],
            r"compress\.steps\[0\]\.keep_tail_share: must be between 0 and 1",
        ),
        (
            [{"type": "field_budget", "fields": {"b": 5}, "marker": "cut {x}"}],
            r"compress\.steps\[0\]\.marker",
        ),
        ([{"type": "boilerplate", "quotd": True}], r"compress\.steps\[0\]\.quotd: unknown key"),
        (
            [{"type": "boilerplate", "extra_patterns": ["ok", "(unclosed"]}],
            r"compress\.steps\[0\]\.extra_patterns\[1\]: invalid regular expression",
        ),
        (
            [{"type": "boilerplate", "extra_patterns": [".*"]}],
            r"extra_patterns\[0\]: '\.\*' matches the empty string",
        ),
        ([{"type": "few_shot", "max_tokens": 10}], r"compress\.steps\[0\]\.columns: required"),
        (
            [{"type": "few_shot", "columns": ["s"], "max_tokens": 0}],
            r"compress\.steps\[0\]\.max_tokens: must be > 0",
        ),
        (
            [{"type": "plugin", "entry_point": "nocolon"}],
            r"compress\.steps\[0\]\.entry_point: 'nocolon' is not of the form",
        ),
        ([{"type": "gzip"}], r"compress\.steps\[0\]: .*'gzip'"),
        ([{"type": "whitespace", "columns": []}], r"compress\.steps\[0\]\.columns: must list"),
    ],
)
def test_config_errors_name_the_key(steps: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_compress({"steps": steps})


def test_config_defaults() -> None:
    config = parse_compress({"steps": [{"type": "field_budget", "fields": {"body": 100}}]})
    step = config.steps[0]
    assert config.enabled and step.enabled
    assert step.keep_tail_share == 0.3 and step.marker == "[… {n} tokens cut …]"
