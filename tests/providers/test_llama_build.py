"""The set-up's llama.cpp build is portable: no AVX-512, AMX or VNNI, in its compiled features
or in its code. A `-march=native` build on an AVX-512/AMX Xeon crashed at the first generation
there, and pip's wheel cache would have carried it to other machines."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from batchopt.providers.llama_build import (
    build_features,
    check_installed_build,
    instructions_beyond_baseline,
)

NATIVE_ZEN4 = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
               "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 "
               "| OPENMP = 1 | REPACK = 1 | ")
PORTABLE = ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
            "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")


@pytest.mark.local_model
def test_the_installed_llama_cpp_build_is_portable() -> None:
    pytest.importorskip("llama_cpp")
    check = check_installed_build()
    assert "AVX2" in check.features, check.features  # the baseline is there
    assert check.beyond, "no llama.cpp library found to read"
    assert check.cpu_specific == [], (
        "llama.cpp was built for one CPU; rebuild it portably: rm -rf .wheels && make setup")


def test_compiled_features_past_the_baseline_are_caught() -> None:
    from batchopt.providers.llama_build import BuildCheck

    native = BuildCheck(features=build_features(NATIVE_ZEN4), beyond={})
    assert native.cpu_specific == ["compiled with AVX512", "compiled with AVX512_VBMI",
                                   "compiled with AVX512_VNNI", "compiled with AVX512_BF16"]
    assert BuildCheck(features=build_features(PORTABLE), beyond={}).cpu_specific == []


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("objdump") is None,
                    reason="needs gcc and objdump")
@pytest.mark.parametrize("flags, expect", [
    (["-mavx2", "-mfma"], False),
    (["-mavx512f"], True),
])
def test_instructions_past_the_baseline_are_found_in_a_library(
    tmp_path: Path, flags: list[str], expect: bool
) -> None:
    source = tmp_path / "axpy.c"
    source.write_text("void axpy(float *restrict y, const float *restrict x, float a, int n) {\n"
                      "  for (int i = 0; i < n; i++) y[i] += a * x[i];\n}\n")
    library = tmp_path / "libaxpy.so"
    subprocess.run(["gcc", "-O3", "-shared", "-fPIC", "-mprefer-vector-width=512", *flags,
                    str(source), "-o", str(library)], check=True)
    found = instructions_beyond_baseline(library)
    assert bool(found) is expect, found
    if expect:
        assert any("zmm" in line for line in found)


def test_one_reading_of_the_feature_line_for_both_checks() -> None:
    """The set-up's check and `batchopt doctor` read the features with one parser: only the CPU
    section, only instruction sets, and on ARM only SVE/SME count as past the baseline."""
    from batchopt.doctor.llama import describe_build
    from batchopt.providers.llama_build import BuildCheck

    with_gpu = PORTABLE + "CUDA : ARCHS = 890 | F16 = 1 | "
    assert build_features(with_gpu) == ["SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"]
    arm = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | DOTPROD = 1 | REPACK = 1 | "
    assert BuildCheck(features=build_features(arm), beyond={}).cpu_specific == []
    sve = arm + "SVE = 1 | SVE_CNT = 16 | "
    assert BuildCheck(features=build_features(sve), beyond={}).cpu_specific == [
        "compiled with SVE"]
    assert describe_build(NATIVE_ZEN4).endswith(
        "needs AVX512, AVX512_VBMI, AVX512_VNNI, AVX512_BF16")
