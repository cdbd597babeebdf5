"""`batchopt validate` checks what a run would trip on, for free: the API keys, the templates in
the sandbox, and the columns the YAML names against the input's schema (no rows read)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import pipeline_dict, write_pipeline

from batchopt.cli.main import main

KEYS = {"OPENAI_API_KEY": "sk-test-0001", "ANTHROPIC_API_KEY": "sk-ant-test-0002",
        "HF_HUB_OFFLINE": "1"}


def _validate(path: Path, *args: str, **env: str | None):
    return CliRunner(env={**KEYS, **env}).invoke(main, ["validate", str(path), *args])


def _error(result) -> str:
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


def test_a_valid_pipeline_passes_and_says_what_it_checked(tmp_path):
    out = _validate(write_pipeline(tmp_path))
    assert out.exit_code == 0, out.output
    assert "  keys: openai (OPENAI_API_KEY set)" in out.stdout
    assert "  templates: prompt.template renders in the sandbox" in out.stdout
    assert "3 column(s) in its schema; found body, subject, ticket_id (no rows read)" in out.stdout


def test_an_unset_key_names_the_variable_and_the_profile(tmp_path):
    path = write_pipeline(tmp_path)
    line = _error(_validate(path, OPENAI_API_KEY=None))
    assert line == ("error: profiles.openai: environment variable OPENAI_API_KEY (the API key) "
                    "is not set")
    # --profile checks that profile only; the anthropic one has its key
    assert _validate(path, "--profile", "anthropic", OPENAI_API_KEY=None).exit_code == 0
    assert "ANTHROPIC_API_KEY" in _error(_validate(path, "--profile", "anthropic",
                                                   ANTHROPIC_API_KEY=None))


def test_routing_checks_every_tier_and_a_profile_s_own_key_variable(tmp_path):
    profiles = pipeline_dict()["profiles"]
    profiles["anthropic"] = {**profiles["anthropic"], "api_key_env": "MY_CLAUDE_KEY"}
    path = write_pipeline(tmp_path, pipeline_dict(
        profiles=profiles, routing={"strategy": "rules", "tiers": ["openai", "anthropic"],
                                     "rules": [{"when": {"column": "subject", "equals": "x"},
                                                "tier": "anthropic"}]}))
    assert "profiles.anthropic: environment variable MY_CLAUDE_KEY" in _error(_validate(path))
    assert _validate(path, MY_CLAUDE_KEY="k").exit_code == 0


def test_a_local_profile_needs_no_key(tmp_path):
    profiles = {"local": {"provider": "local", "model": "qwen", "max_tokens": 8}}
    path = write_pipeline(tmp_path, pipeline_dict(profiles=profiles, default_profile="local"))
    out = _validate(path, OPENAI_API_KEY=None, ANTHROPIC_API_KEY=None)
    assert out.exit_code == 0, out.output
    assert "keys: local (no key needed)" in out.stdout


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}", "{{ body.__class__ }}", "{{ subject.__init__.__globals__ }}",
])
def test_a_sandbox_escape_is_an_error_naming_the_key(tmp_path, template):
    prompt = {**pipeline_dict()["prompt"], "template": template}
    line = _error(_validate(write_pipeline(tmp_path, pipeline_dict(prompt=prompt))))
    assert line.startswith("error: prompt.template: blocked by the sandbox (access to attribute")


def test_a_profile_s_own_template_is_checked_too(tmp_path):
    profiles = pipeline_dict()["profiles"]
    profiles["anthropic"] = {**profiles["anthropic"], "template": "{{ body.__class__ }}"}
    line = _error(_validate(write_pipeline(tmp_path, pipeline_dict(profiles=profiles))))
    assert line.startswith("error: profiles.anthropic.template: blocked by the sandbox")


def test_a_syntax_error_is_an_error_naming_the_key(tmp_path):
    prompt = {**pipeline_dict()["prompt"], "template": "Subject: {{ subject }\n{% if body %}"}
    line = _error(_validate(write_pipeline(tmp_path, pipeline_dict(prompt=prompt))))
    assert line.startswith("error: prompt.template: invalid template (line 1)")


def test_a_misspelt_template_column_names_the_key_and_close_matches(tmp_path):
    prompt = {**pipeline_dict()["prompt"], "template": "{{ subjet }}: {{ body }}"}
    line = _error(_validate(write_pipeline(tmp_path, pipeline_dict(prompt=prompt))))
    assert line.startswith("error: prompt.template: no column 'subjet' in ")
    assert line.endswith("(columns: ticket_id, subject, body); did you mean 'subject'?")


def test_a_misspelt_id_column_and_other_named_columns(tmp_path):
    data = pipeline_dict(input={"path": "data/tickets.parquet", "id_column": "ticket_ID"})
    line = _error(_validate(write_pipeline(tmp_path / "id", data)))
    assert line.startswith("error: input.id_column: no column 'ticket_ID' in ")
    assert line.endswith("did you mean 'ticket_id'?")

    data = pipeline_dict(input={"path": "data/tickets.parquet", "id_column": "ticket_id",
                                "columns": ["ticket_id", "bdy"]})
    assert "error: input.columns: no column 'bdy'" in _error(
        _validate(write_pipeline(tmp_path / "cols", data)))

    data = pipeline_dict(routing={"strategy": "rules", "tiers": ["openai", "anthropic"],
                                  "rules": [{"when": {"column": "priorty", "equals": "high"},
                                             "tier": "anthropic"}]})
    assert "error: routing.rules[0].when[0].column: no column 'priorty'" in _error(
        _validate(write_pipeline(tmp_path / "rules", data)))


def test_only_the_schema_is_read_and_no_input_skips_it(tmp_path, monkeypatch):
    path = write_pipeline(tmp_path)
    (tmp_path / "data" / "tickets.parquet").unlink()
    assert _error(_validate(path)).startswith("error: input.path: ")
    out = _validate(path, "--no-input")
    assert out.exit_code == 0 and "input: not checked (--no-input)" in out.stdout

    # a folder of files: the first file's schema, never a row
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(2):
        pl.DataFrame({"ticket_id": [f"T{i}"], "subject": ["s"], "body": ["b"]}).write_parquet(
            folder / f"part-{i}.parquet")
    monkeypatch.setattr(pl, "read_parquet", lambda *a, **k: pytest.fail("rows were read"))
    monkeypatch.setattr(pl.LazyFrame, "collect", lambda *a, **k: pytest.fail("rows were read"))
    out = _validate(path, "--input", str(folder))
    assert out.exit_code == 0, out.output
    assert f"input: {folder}: 3 column(s)" in out.stdout
