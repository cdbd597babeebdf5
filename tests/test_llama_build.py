"""The set-up's llama.cpp build is portable: no AVX-512, AMX or VNNI, in its compiled features
or in its code. A `-march=native` build on an AVX-512/AMX Xeon crashed at the first generation
there, and pip's wheel cache would have carried it to other machines."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from batchopt.providers.llama_build import (
    check_installed_build,
    compiled_features,
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
    assert check.features.get("AVX2") == 1, check.features  # the baseline is there
    assert check.beyond, "no llama.cpp library found to read"
    assert check.cpu_specific == [], (
        "llama.cpp was built for one CPU; rebuild it portably: rm -rf .wheels && make setup")


def test_compiled_features_past_the_baseline_are_caught() -> None:
    from batchopt.providers.llama_build import BuildCheck

    native = BuildCheck(features=compiled_features(NATIVE_ZEN4), beyond={})
    assert native.cpu_specific == ["compiled with AVX512", "compiled with AVX512_VBMI",
                                   "compiled with AVX512_VNNI", "compiled with AVX512_BF16"]
    assert BuildCheck(features=compiled_features(PORTABLE), beyond={}).cpu_specific == []


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
