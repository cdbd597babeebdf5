from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import pipeline_dict, write_pipeline

from batchopt.config.loader import interpolate
from batchopt.config.pipeline import json_schema, load_pipeline
from batchopt.errors import ConfigError


def test_valid_pipeline_loads_and_resolves_paths_against_yaml_folder(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path / "p")
    loaded = load_pipeline(path)
    assert loaded.config.name == "tickets"
    assert loaded.resolve(loaded.config.input.path) == (tmp_path / "p" / "data" / "tickets.parquet")
    name, profile = loaded.profile(None)
    assert (name, profile.provider) == ("openai", "openai")
    assert loaded.profile("anthropic")[1].provider == "anthropic"


def test_unknown_profile_names_the_choices(tmp_path: Path) -> None:
    loaded = load_pipeline(write_pipeline(tmp_path))
    with pytest.raises(
        ConfigError, match=r"profile 'nope' not found \(profiles: anthropic, openai\)"
    ):
        loaded.profile("nope")


def test_unknown_key_names_its_path_and_file(tmp_path: Path) -> None:
    data = pipeline_dict()
    data["prompt"]["templat"] = "x"
    path = write_pipeline(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert str(path) in message and "prompt.templat: unknown key" in message
    assert "\n" not in message


def test_wrong_type_and_missing_key_are_named(tmp_path: Path) -> None:
    data = pipeline_dict()
    data["profiles"]["openai"]["max_tokens"] = "many"
    del data["input"]["id_column"]
    with pytest.raises(ConfigError) as info:
        load_pipeline(write_pipeline(tmp_path, data))
    message = str(info.value)
    assert "profiles.openai.max_tokens:" in message
    assert "input.id_column: required key is missing" in message


def test_default_profile_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="default_profile 'gone' is not one of the profiles"):
        load_pipeline(write_pipeline(tmp_path, pipeline_dict(default_profile="gone")))


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, text="name: x\ninput: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+, column \d+"):
        load_pipeline(path)


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_pipeline(write_pipeline(tmp_path, text="- a\n- b\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pipeline file not found"):
        load_pipeline(tmp_path / "nope.yaml")


def test_interpolation_with_defaults_and_missing_var(tmp_path: Path) -> None:
    tree = {"a": "${X}/y", "b": ["${Y:-dflt}", 3], "c": {"d": "${Z:-}"}}
    assert interpolate(tree, {"X": "xx"}) == {"a": "xx/y", "b": ["dflt", 3], "c": {"d": ""}}
    with pytest.raises(ConfigError, match=r"b\[0\]: environment variable Y is not set"):
        interpolate({"b": ["${Y}"]}, {})


def test_missing_env_var_in_pipeline_names_key_and_file(tmp_path: Path) -> None:
    data = pipeline_dict()
    data["output"]["path"] = "${NIGHTLY_OUT}/o.parquet"
    path = write_pipeline(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, env={})
    assert str(info.value) == f"{path}: output.path: environment variable NIGHTLY_OUT is not set"
    loaded = load_pipeline(path, env={"NIGHTLY_OUT": "/data/day1"})
    assert loaded.config.output.path == "/data/day1/o.parquet"


def test_model_path_only_for_local(tmp_path: Path) -> None:
    data = pipeline_dict()
    data["profiles"]["openai"]["model_path"] = "x.gguf"
    with pytest.raises(ConfigError, match="model_path is only for provider 'local'"):
        load_pipeline(write_pipeline(tmp_path, data))


def test_json_schema_validates_the_shipped_pipeline() -> None:
    import jsonschema
    import yaml

    schema = json_schema()
    json.dumps(schema)
    shipped = Path(__file__).resolve().parents[2] / "pipelines" / "summarize.yaml"
    jsonschema.validate(yaml.safe_load(shipped.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "bogus": 1}, schema)


def test_routing_tiers_must_be_profiles_and_a_json_validator_needs_a_schema(tmp_path: Path) -> None:
    data = pipeline_dict(routing={"strategy": "cascade", "tiers": ["openai", "gold"],
                                  "validators": [{"type": "refusal"}]})
    with pytest.raises(ConfigError, match=r"routing.tiers\[1\]: 'gold' is not one of the profiles"):
        load_pipeline(write_pipeline(tmp_path / "a", data))
    data["routing"] = {"strategy": "cascade", "tiers": ["openai", "anthropic"],
                       "validators": [{"type": "json_schema"}]}
    with pytest.raises(ConfigError, match=r"validators\[0\].*needs prompt.json_schema"):
        load_pipeline(write_pipeline(tmp_path / "b", data))
    data["routing"]["validators"] = [{"type": "refusal"}]
    data["budget"] = {"max_usd": 2.5}
    loaded = load_pipeline(write_pipeline(tmp_path / "c", data))
    assert loaded.config.routing is not None and loaded.config.budget.max_usd == 2.5
