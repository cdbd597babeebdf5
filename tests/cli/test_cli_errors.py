"""Bad input: a one-line error naming what is wrong, exit 2, nothing written, nothing spent."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import message_lines, pipeline_dict, write_pipeline, write_tickets

from batchopt.cli.main import main


def _invoke(args: list[str], env: dict[str, str | None]):
    return CliRunner().invoke(main, args, env=env)


@pytest.fixture
def env(fake) -> dict[str, str | None]:
    return {"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "sk-test",
            "ANTHROPIC_BASE_URL": fake.anthropic_base_url, "ANTHROPIC_API_KEY": "sk-ant-test"}


def _assert_refused(result, fake, folder: Path, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = message_lines(result.output)  # a log's progress lines may come before the error
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0]
    assert not (folder / "out").exists()
    assert fake.stats()["requests"] == 0


def test_bad_yaml(fake, env, tmp_path):
    path = write_pipeline(tmp_path, text="name: x\nprompt: {template: [\n")
    _assert_refused(_invoke(["run", str(path)], env), fake, tmp_path, str(path), "invalid YAML")


def test_unknown_key(fake, env, tmp_path):
    data = pipeline_dict()
    data["profiles"]["openai"]["temprature"] = 0.2
    path = write_pipeline(tmp_path, data)
    _assert_refused(_invoke(["run", str(path)], env), fake, tmp_path,
                    "profiles.openai.temprature: unknown key")


def test_missing_env_var_in_yaml(fake, env, tmp_path):
    data = pipeline_dict()
    data["output"]["path"] = "${NIGHTLY_DIR}/out.parquet"
    path = write_pipeline(tmp_path, data)
    env = {**env, "NIGHTLY_DIR": None}
    _assert_refused(_invoke(["run", str(path)], env), fake, tmp_path,
                    "output.path: environment variable NIGHTLY_DIR is not set")


def test_missing_api_key(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    _assert_refused(_invoke(["run", str(path)], {**env, "OPENAI_API_KEY": None}), fake, tmp_path,
                    "OPENAI_API_KEY")


def test_missing_column(fake, env, tmp_path):
    data = pipeline_dict()
    data["prompt"]["template"] = "{{ subject }} {{ body }} {{ priority }}"
    path = write_pipeline(tmp_path, data)
    _assert_refused(_invoke(["run", str(path)], env), fake, tmp_path,
                    "missing column(s) 'priority'", "tickets.parquet")


def test_null_ids(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    write_tickets(tmp_path / "data" / "tickets.parquet", [
        {"ticket_id": "T1", "subject": "a", "body": "b"},
        {"ticket_id": None, "subject": "a", "body": "c"},
    ])
    _assert_refused(_invoke(["run", str(path)], env), fake, tmp_path,
                    "row 1: id column 'ticket_id' is null")


def test_unknown_profile(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    _assert_refused(_invoke(["run", str(path), "--profile", "gpu"], env), fake, tmp_path,
                    "profile 'gpu' not found")


def test_model_without_a_price(fake, env, tmp_path):
    data = pipeline_dict()
    data["profiles"]["openai"]["model"] = "my-finetune-v1"
    path = write_pipeline(tmp_path, data)
    _assert_refused(_invoke(["run", str(path)], env), fake, tmp_path, "my-finetune-v1",
                    "pricing.models")


def test_validate_and_schema_commands(tmp_path):
    path = write_pipeline(tmp_path)
    # validate checks the keys a run needs
    keys = {"OPENAI_API_KEY": "sk-test-0001", "ANTHROPIC_API_KEY": "sk-ant-test-0002"}
    ok = CliRunner(env=keys).invoke(main, ["validate", str(path)])
    assert ok.exit_code == 0 and "valid" in ok.output
    schema = CliRunner().invoke(main, ["schema"])
    assert schema.exit_code == 0 and '"profiles"' in schema.output


def test_overrides_point_a_pipeline_at_another_partition(fake, env, tmp_path):
    path = write_pipeline(tmp_path)
    day2 = write_tickets(tmp_path / "day2" / "t.parquet", [
        {"ticket_id": "D2-1", "subject": "Late", "body": "Parcel 88 is late."},
    ])
    out = tmp_path / "elsewhere"
    result = _invoke(["run", str(path), "--input", str(day2), "--output", str(out / "o.parquet"),
                      "--ledger", str(out / "ledger"), "--cache-dir", str(out / "cache"),
                      "--run-id", "d2", "--quiet"], env)
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out / "o.parquet")["ticket_id"].to_list() == ["D2-1"]
    assert (out / "ledger" / "pipeline=tickets" / "run_id=d2" / "part.parquet").exists()
    assert not (tmp_path / "out").exists()
    assert fake.stats()["requests"] == 1
