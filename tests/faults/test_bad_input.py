"""Hostile and broken input through `batchopt run`: one line naming the file, row, column or key,
exit 2, no output, ledger or cache file, and not one request at the fake server.

`tests/cli/test_cli_errors.py` already covers plain invalid YAML, a misspelt profile key, a missing
`${VAR}`, a missing API key, a missing column, null ids, an unknown profile and an unpriced
model; this module covers the rest of the issue's list, and what a prompt too long for the
model's context does under each `on_context_overflow`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from faults import tally
from faults.bad_input_helpers import assert_refused, cli_env, invoke, written_files
from helpers import pipeline_dict, write_pipeline, write_tickets

LONG = " ".join(f"word{i}" for i in range(400))  # about 1,200 tokens


@pytest.fixture
def env(fake) -> dict[str, str | None]:
    return cli_env(fake)


def _run(path: Path, env: dict[str, str | None], *extra: str):
    tally.add("bad inputs tried")
    return invoke(["run", str(path), "--quiet", *extra], env)


def _yaml(tmp_path: Path, text: str | bytes) -> Path:
    path = write_pipeline(tmp_path)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _with(**changes: Any) -> dict[str, Any]:
    """pipeline_dict() with dotted keys set ("profiles.openai.max_tokens": "lots")."""
    data = pipeline_dict()
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    return data


# ---- the pipeline YAML ---------------------------------------------------------------------

_VALID = yaml.safe_dump(pipeline_dict())
_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10 if prev else ['x'] * 10)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e"], "abcdef", strict=True)
)

YAML_CASES = {
    "unclosed bracket": ("name: x\nprompt: {template: [\n", ["invalid YAML at line 3"]),
    "key given twice": (_VALID + "name: other\n", ["key 'name' is given twice", "line"]),
    "NUL character": (_VALID.replace("Summarise", "Summ\x00arise"),
                      ["unacceptable character #x0000", "line"]),
    "impossible date": (_VALID + "description: 2026-02-30\n",
                        ["'2026-02-30' is not a valid date", "line"]),
    "nested too deep": ("[" * 5000, ["nested too deep"]),
    "alias bomb": (_BOMB, ["expands to more than 1,000,000 values"]),
    "recursive alias": ("a: &x [*x]\n", ["expands to more than"]),
    "not a mapping": ("- a\n- b\n", ["a pipeline must be a YAML mapping"]),
    "empty file": ("", ["a pipeline must be a YAML mapping"]),
    "not UTF-8": (_VALID.encode().replace(b"Summarise", b"Summ\xe9rise"),
                  ["cannot read pipeline file", "can't decode byte 0xe9"]),
    "python tag": (_VALID + "x: !!python/object/apply:os.system [id]\n",
                   ["could not determine a constructor"]),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_broken_yaml(fake, env, tmp_path, case):
    text, needles = YAML_CASES[case]
    path = _yaml(tmp_path, text)
    assert_refused(_run(path, env), fake, tmp_path, str(path), *needles)


CONFIG_CASES = {
    "misspelt top-level key": (dict(pipeline_dict(), promt={}), ["promt: unknown key"]),
    "misspelt nested key": (_with(input__id_colum="x"), ["input.id_colum: unknown key"]),
    "string for an int": (_with(profiles__openai__max_tokens="lots"),
                          ["profiles.openai.max_tokens: Input should be a valid integer"]),
    "list for a float": (_with(profiles__openai__temperature=[0.1]),
                         ["profiles.openai.temperature: Input should be a valid number"]),
    "string for a section": (_with(input="data/tickets.parquet"),
                             ["input: Input should be a valid dictionary"]),
    "number out of range": (_with(profiles__openai__temperature=7),
                            ["profiles.openai.temperature: Input should be less than or equal"]),
    "unknown provider": (_with(profiles__openai__provider="opneai"),
                         ["profiles.openai.provider: Input should be 'openai'"]),
    "required key missing": ({k: v for k, v in pipeline_dict().items() if k != "prompt"},
                             ["prompt: required key is missing"]),
    "bad overflow policy": (_with(profiles__openai__on_context_overflow="ignore"),
                            ["profiles.openai.on_context_overflow: Input should be 'fail'"]),
    "template syntax": (_with(prompt__template="{{ body "),
                        ["prompt.template: invalid template (line 1)"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_wrong_keys_and_types(fake, env, tmp_path, case):
    data, needles = CONFIG_CASES[case]
    path = write_pipeline(tmp_path, data)
    where = [] if case == "template syntax" else [str(path)]  # a template error names its key
    assert_refused(_run(path, env), fake, tmp_path, *where, *needles)


def test_missing_env_var_for_a_named_key(fake, env, tmp_path):
    path = write_pipeline(tmp_path, _with(profiles__anthropic__api_key_env="TEAM_CLAUDE_KEY"))
    assert_refused(_run(path, {**env, "TEAM_CLAUDE_KEY": None}, "--profile", "anthropic"), fake,
                   tmp_path, "profiles.anthropic: environment variable TEAM_CLAUDE_KEY")


def test_missing_env_var_inside_a_list(fake, env, tmp_path):
    data = _with(prompt__examples=[{"input": "${EXAMPLE_IN}", "output": "x"}])
    path = write_pipeline(tmp_path, data)
    assert_refused(_run(path, {**env, "EXAMPLE_IN": None}), fake, tmp_path,
                   "prompt.examples[0].input: environment variable EXAMPLE_IN is not set")


# ---- the input data ------------------------------------------------------------------------

def _tickets_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "tickets.parquet"


def _string_column_with_bytes(values: list[bytes]) -> pa.Array:
    """An Arrow string array holding these bytes as they are (no UTF-8 check)."""
    offsets = [0]
    for value in values:
        offsets.append(offsets[-1] + len(value))
    return pa.Array.from_buffers(pa.string(), len(values), [
        None, pa.array(offsets, type=pa.int32()).buffers()[1], pa.py_buffer(b"".join(values))])


def test_misspelt_template_column_gets_a_suggestion(fake, env, tmp_path):
    path = write_pipeline(tmp_path, _with(prompt__template="{{ subject }} {{ bdy }}"))
    assert_refused(_run(path, env), fake, tmp_path, str(_tickets_file(tmp_path)),
                   "missing column(s) 'bdy'", "did you mean 'body' for 'bdy'?")


def test_misspelt_id_column_gets_a_suggestion(fake, env, tmp_path):
    path = write_pipeline(tmp_path, _with(input__id_column="ticket_ids"))
    assert_refused(_run(path, env), fake, tmp_path, "missing column(s) 'ticket_ids'",
                   "did you mean 'ticket_id' for 'ticket_ids'?")


def test_duplicate_ids_across_files_name_both(fake, env, tmp_path):
    path = write_pipeline(tmp_path, _with(input__path="data"), tickets=False)
    a = write_tickets(tmp_path / "data" / "a.parquet",
                      [{"ticket_id": "T1", "subject": "s", "body": "one"}])
    b = write_tickets(tmp_path / "data" / "b.parquet", [
        {"ticket_id": "T0", "subject": "s", "body": "zero"},
        {"ticket_id": "T1", "subject": "s", "body": "two"}])
    assert_refused(_run(path, env), fake, tmp_path, f"{a}: row 0: id 'T1'",
                   f"is not unique (also at {b}: row 1")


def test_duplicate_ids_in_one_file_name_the_rows(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    write_tickets(_tickets_file(tmp_path), [
        {"ticket_id": t, "subject": "s", "body": str(i)} for i, t in enumerate("ABCB")])
    assert_refused(_run(path, env), fake, tmp_path, "row 1: id 'B' in column 'ticket_id'",
                   "also at row 3")


def test_null_id_in_a_later_file_names_that_file(fake, env, tmp_path):
    path = write_pipeline(tmp_path, _with(input__path="data/*.parquet"), tickets=False)
    write_tickets(tmp_path / "data" / "a.parquet", [{"ticket_id": "A", "subject": "s",
                                                     "body": "b"}])
    b = write_tickets(tmp_path / "data" / "b.parquet", [
        {"ticket_id": "B", "subject": "s", "body": "b"},
        {"ticket_id": None, "subject": "s", "body": "c"}])
    assert_refused(_run(path, env), fake, tmp_path, f"{b}: row 1: id column 'ticket_id' is null")


def test_invalid_utf8_in_a_string_column(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    pq.write_table(pa.table({
        "ticket_id": ["T1", "T2"], "subject": ["a", "b"],
        "body": _string_column_with_bytes([b"fine", b"caf\xe9 latte"]),
    }), _tickets_file(tmp_path))
    assert_refused(_run(path, env), fake, tmp_path,
                   f"{_tickets_file(tmp_path)}: row 1: column 'body' is not valid UTF-8",
                   "byte 0xe9 at offset 3")


def test_invalid_utf8_in_a_binary_column(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    pq.write_table(pa.table({
        "ticket_id": ["T1", "T2", "T3"], "subject": ["a", "b", "c"],
        "body": pa.array([b"ok", "café".encode(), b"\xff\xfe"], type=pa.binary()),
    }), _tickets_file(tmp_path))
    assert_refused(_run(path, env), fake, tmp_path, "row 2: column 'body' is not valid UTF-8",
                   "byte 0xff at offset 0")


def test_binary_column_of_utf8_text_is_read_as_text(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    pq.write_table(pa.table({
        "ticket_id": ["T1"], "subject": ["a"],
        "body": pa.array(["café au lait".encode()], type=pa.binary()),
    }), _tickets_file(tmp_path))
    result = _run(path, env)
    assert result.exit_code == 0, result.output
    assert fake.stats()["requests"] == 1
    from batchopt.config.pipeline import load_pipeline
    from batchopt.run.runner import RunOptions, prepare

    plan = prepare(load_pipeline(path), RunOptions(), env={"OPENAI_API_KEY": "sk-x"})
    assert [r.user for r in plan.requests.values()] == ["Subject: a\n\ncafé au lait"]


def test_nul_character_in_a_prompt_column(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    write_tickets(_tickets_file(tmp_path), [
        {"ticket_id": "T1", "subject": "a", "body": "fine"},
        {"ticket_id": "T2", "subject": "a\x00b", "body": "x"},
        {"ticket_id": "T3", "subject": "c", "body": "y\x00"}])
    assert_refused(_run(path, env), fake, tmp_path,
                   f"{_tickets_file(tmp_path)}: row 1: column 'subject' holds a NUL character",
                   "(2 row(s) in all)")


def test_other_control_characters_are_kept_and_sent(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    write_tickets(_tickets_file(tmp_path), [
        {"ticket_id": "T1", "subject": "bell\x07", "body": "esc \x1b[31m red \x1b[0m\ttab"}])
    result = _run(path, env)
    assert result.exit_code == 0, result.output
    assert fake.stats()["requests"] == 1


def test_file_with_no_rows(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    pl.DataFrame({"ticket_id": [], "subject": [], "body": []},
                 schema={c: pl.String for c in ("ticket_id", "subject", "body")}
                 ).write_parquet(_tickets_file(tmp_path))
    assert_refused(_run(path, env), fake, tmp_path,
                   f"{_tickets_file(tmp_path)}: input has no rows")


def test_file_of_zero_bytes(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    _tickets_file(tmp_path).write_bytes(b"")
    assert_refused(_run(path, env), fake, tmp_path,
                   f"{_tickets_file(tmp_path)}: not a readable Parquet file", "0 bytes")


@pytest.mark.parametrize("content", [b"ticket_id,body\nT1,hello\n", b"PAR1" + os.urandom(64),
                                     b"\x89PNG\r\n\x1a\n" + bytes(200)])
def test_parquet_file_that_is_not_parquet(fake, env, tmp_path, content):
    path = write_pipeline(tmp_path)
    _tickets_file(tmp_path).write_bytes(content)
    assert_refused(_run(path, env), fake, tmp_path,
                   f"{_tickets_file(tmp_path)}: not a readable Parquet file")


def test_truncated_parquet_file(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    file = _tickets_file(tmp_path)
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    assert_refused(_run(path, env), fake, tmp_path, f"{file}: not a readable Parquet file")


def test_missing_input_file(fake, env, tmp_path):
    path = write_pipeline(tmp_path, _with(input__path="data/tickets-2026-13-01.parquet"))
    assert_refused(_run(path, env), fake, tmp_path, "tickets-2026-13-01.parquet: input file "
                   "not found")


def test_template_that_fails_on_a_row(fake, env, tmp_path):
    path = write_pipeline(tmp_path, _with(prompt__template="{{ subject }} {{ body.missing }}"))
    assert_refused(_run(path, env), fake, tmp_path, "prompt.template: row 'T1': cannot render")


# ---- a prompt longer than the model's context ----------------------------------------------

def _overflow_pipeline(tmp_path: Path, policy: str | None, **extra: Any) -> Path:
    profile = {"context_tokens": 200}
    if policy is not None:
        profile["on_context_overflow"] = policy
    data = pipeline_dict(**extra)
    data["profiles"]["openai"].update(profile)
    data["profiles"]["anthropic"].update(profile)
    path = write_pipeline(tmp_path, data)
    write_tickets(_tickets_file(tmp_path), [
        {"ticket_id": "T1", "subject": "Refund", "body": "Please refund order #10233."},
        {"ticket_id": "T2", "subject": "Login", "body": "I cannot log in."},
        {"ticket_id": "T3", "subject": "Essay", "body": "Order #55501 for $49.99. " + LONG},
        {"ticket_id": "T4", "subject": "Late", "body": "Parcel 88 is late."}])
    return path


def _ledger(tmp_path: Path, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / f"run_id={run_id}"
                           / "part.parquet").sort("row_id")


@pytest.mark.parametrize("policy", [None, "fail"])
def test_prompt_over_the_context_fails_before_anything_is_sent(fake, env, tmp_path, policy):
    path = _overflow_pipeline(tmp_path, policy)
    line = assert_refused(_run(path, env), fake, tmp_path,
                          f"{_tickets_file(tmp_path)}: row 2: prompt of ",
                          "plus max_tokens 32 exceeds the context of 200 tokens of gpt-4o-mini",
                          "set profiles.openai.on_context_overflow to skip or truncate",
                          "(1 row(s) in all)")
    tokens = int(line.split("prompt of ")[1].split(" tokens")[0].replace(",", ""))
    assert tokens > 500


def test_plan_refuses_the_same_row(fake, env, tmp_path):
    path = _overflow_pipeline(tmp_path, None)
    tally.add("bad inputs tried")
    assert_refused(invoke(["plan", str(path)], env), fake, tmp_path, "row 2: prompt of ")


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_skip_leaves_the_row_unsent_and_says_so_in_the_ledger(bfake, env, tmp_path, mode):
    path = _overflow_pipeline(tmp_path, "skip", max_failed_share=0.5,
                              execution={"mode": mode, "poll_seconds": 0.05})
    result = _run(path, env, "--run-id", "r1")
    assert result.exit_code == 0, result.output
    assert bfake.stats()["requests"] == 3
    assert max(e["input_tokens"] for e in bfake.log()) < 200  # the long prompt never went
    ledger = _ledger(tmp_path, "r1")
    t3 = ledger.filter(pl.col("row_id") == "T3").row(0, named=True)
    assert (t3["status"], t3["mode"], t3["overflow"], t3["cost_usd"], t3["attempts"]) == (
        "failed", "failed", "skipped", 0.0, 0)
    assert t3["error"].startswith("skipped: prompt of ")
    assert "exceeds the context of 200 tokens" in t3["error"]
    assert "profiles.openai.on_context_overflow" in t3["error"]
    others = ledger.filter(pl.col("row_id") != "T3")
    assert others["overflow"].null_count() == 3 and (others["status"] == "ok").all()
    out = pl.read_parquet(tmp_path / "out" / "outputs.parquet").sort("ticket_id")
    assert out["summary"].to_list()[2] is None and out["summary"].null_count() == 1


def test_skip_counts_as_a_failed_row(fake, env, tmp_path):
    path = _overflow_pipeline(tmp_path, "skip")
    result = _run(path, env, "--run-id", "r1")
    assert result.exit_code == 1, result.output  # max_failed_share 0: one row has no answer
    assert fake.stats()["requests"] == 3


def test_truncate_cuts_the_middle_to_fit_and_marks_the_row(fake, env, tmp_path):
    path = _overflow_pipeline(tmp_path, "truncate")
    result = _run(path, env, "--run-id", "r1")
    assert result.exit_code == 0, result.output
    assert fake.stats()["requests"] == 4
    ledger = _ledger(tmp_path, "r1")
    t3 = ledger.filter(pl.col("row_id") == "T3").row(0, named=True)
    assert (t3["status"], t3["overflow"], t3["error"]) == ("ok", "truncated", None)
    assert t3["estimated_input_tokens"] + 32 <= 200
    assert ledger.filter(pl.col("row_id") != "T3")["overflow"].null_count() == 3
    # the head (order number and amount) and the tail survive; the middle is marked as cut
    sent = max(fake.log(), key=lambda e: e["input_tokens"])
    assert sent["input_tokens"] <= 200
    again = _run(path, env, "--run-id", "r2")  # the cut prompt is cached like any other
    assert again.exit_code == 0 and fake.stats()["requests"] == 4
    assert _ledger(tmp_path, "r2")["mode"].to_list().count("cache") == 4


def test_truncate_keeps_the_head_and_the_tail(tmp_path):
    from batchopt.config.pipeline import load_pipeline
    from batchopt.run.runner import RunOptions, prepare

    path = _overflow_pipeline(tmp_path, "truncate")
    plan = prepare(load_pipeline(path), RunOptions(), env={"OPENAI_API_KEY": "sk-x"})
    group = plan.rows.filter(pl.col("ticket_id") == "T3")["group_id"][0]
    user = plan.requests[group].user
    assert plan.overflow == {group: "truncated"}
    assert "Order #55501 for $49.99." in user and user.rstrip().endswith("word399")
    assert "tokens cut …]" in user and "word200" not in user
    assert written_files(tmp_path) == []


def test_api_model_context_comes_from_the_price_table():
    from batchopt.ledger.pricing import PriceTable

    prices = PriceTable.load()
    assert prices.context_tokens("openai", "gpt-4o-mini-2024-07-18") == 128_000
    assert prices.context_tokens("anthropic", "claude-3-5-haiku-20241022") == 200_000
    assert prices.context_tokens("openai", "claude-3-5-haiku") is None  # never across providers
    assert prices.context_tokens("openai", "my-finetune") is None


# ---- paths that leave the project folder ---------------------------------------------------

def _confined(**changes: Any) -> dict[str, Any]:
    data = _with(**changes)
    data["paths"] = {"confine": True}
    return data


ESCAPES = {
    "output.path": {"output__path": "../elsewhere/outputs.parquet"},
    "ledger.path": {"ledger__path": "/tmp/batchopt-ledger-escape"},
    "cache.path": {"cache__path": "out/../../cache"},
    "input.path": {"input__path": "../data/tickets.parquet"},
    "prompt.context_file": {"prompt__context_file": "../../etc/hostname"},
}


@pytest.mark.parametrize("key", list(ESCAPES))
def test_path_outside_the_project_is_refused_when_confined(fake, env, tmp_path, key):
    project = tmp_path / "project"
    path = write_pipeline(project, _confined(**ESCAPES[key]))
    assert_refused(_run(path, env), fake, project, str(path), f"{key}: ",
                   f"is outside the project folder {project}", "(paths.confine)")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "cache").exists()


def test_escape_through_an_env_var_is_refused(fake, env, tmp_path):
    project = tmp_path / "project"
    path = write_pipeline(project, _confined(output__path="${NIGHTLY}/outputs.parquet"))
    assert_refused(_run(path, {**env, "NIGHTLY": "../.."}), fake, project,
                   "output.path: ", "is outside the project folder")


def test_dotdot_after_a_wildcard_is_refused(fake, env, tmp_path):
    path = write_pipeline(tmp_path, _confined(input__path="data/*/../../../*.parquet"))
    assert_refused(_run(path, env), fake, tmp_path,
                   "input.path: '..' after a wildcard may leave the project folder")


def test_symlinked_input_file_pointing_outside_is_refused(fake, env, tmp_path):
    project = tmp_path / "project"
    path = write_pipeline(project, _confined(input__path="data"), tickets=False)
    outside = write_tickets(tmp_path / "secret" / "tickets.parquet")
    (project / "data").mkdir(parents=True)
    (project / "data" / "t.parquet").symlink_to(outside)
    assert_refused(_run(path, env), fake, project, "input.path: ", str(outside),
                   "is outside the project folder")


def test_paths_inside_the_project_and_unconfined_pipelines_run(fake, env, tmp_path):
    project = tmp_path / "project"
    inside = write_pipeline(project, _confined(output__path="./out/../out/o.parquet"))
    result = _run(inside, env)
    assert result.exit_code == 0, result.output
    free = write_pipeline(tmp_path / "free", _with(output__path="../elsewhere/o.parquet"))
    assert _run(free, env).exit_code == 0  # confine is off by default
    assert (tmp_path / "elsewhere" / "o.parquet").exists()


def test_a_wider_root_allows_a_shared_folder(fake, env, tmp_path):
    project = tmp_path / "repo" / "pipelines"
    data = _confined(input__path="../shared/tickets.parquet")
    data["paths"]["root"] = ".."
    path = write_pipeline(project, data, tickets=False)
    write_tickets(tmp_path / "repo" / "shared" / "tickets.parquet")
    result = _run(path, env)
    assert result.exit_code == 0, result.output
