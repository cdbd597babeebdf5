"""Is the installed llama.cpp build portable, or made for one CPU?

llama-cpp-python compiles llama.cpp at install time, by default with `-march=native`: the library
then uses whatever the build machine had (AVX-512, AMX, VNNI) and a wheel cached on one machine
crashes or misbehaves on another. The set-up builds for a baseline (x86-64 with AVX2, FMA, F16C);
this module tells, without running any model, whether a build stays within it: from the features
llama.cpp says it was compiled with, and from the instructions in its shared libraries.

Run as `python -m batchopt.providers.llama_build MODEL`, it is the probe `batchopt doctor` runs
in a subprocess (`probe`): a build made for another CPU dies there, not in the doctor.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ggml's names for the x86 features of the portable baseline (the Makefile's: x86-64-v3), and
# those of the features past it that ggml reports.
PORTABLE_X86 = frozenset({"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2"})
_X86_BEYOND = ("AVX512", "AMX", "AVX_VNNI", "AVXVNNI")
_ARM_BEYOND = ("SVE", "SME")
# Names in the CPU line that are not instruction sets.
NOT_ISA = frozenset({"LLAMAFILE", "OPENMP", "REPACK", "KLEIDIAI", "ACCELERATE", "BLAS", "METAL",
                     "CUDA", "VULKAN", "KOMPUTE", "GPUBLAS", "SYCL", "MATMUL_INT8", "WASM_SIMD",
                     "VSX", "RISCV_V"})
# AT&T-syntax operands and mnemonics that only AVX-512 or AMX code has: 512-bit registers, the
# opmask registers, tile loads, stores and dot products.
_BEYOND_INSTRUCTIONS = re.compile(r"%zmm\d|%k[0-7]\b|\btile(loadd|stored|zero)|\btdpb|tilecfg")


def build_features(system_info: str) -> list[str]:
    """The CPU features `llama_print_system_info()` says the build uses, e.g. ["AVX", "AVX2"]:
    its CPU section only, features set to 1, instruction sets only (older builds list every
    feature with 0 or 1, newer ones only those they use)."""
    cpu = next((part for part in system_info.split("CPU :")[1:2]), system_info)
    cpu = re.split(r"\b[A-Z][A-Za-z0-9]* : ", cpu)[0]  # stop at the next backend, if any
    found = re.findall(r"([A-Z][A-Z0-9_]*) = 1\b", cpu)
    return [name for name in dict.fromkeys(found) if name not in NOT_ISA]


def is_x86(features: list[str]) -> bool:
    return any(f in PORTABLE_X86 or f.startswith(_X86_BEYOND) for f in features)


def beyond_baseline(features: list[str]) -> list[str]:
    """The features of `features` past the portable baseline: on x86 any not in x86-64-v3, on
    ARM the scalable vector and matrix extensions."""
    if is_x86(features):
        return [f for f in features if f not in PORTABLE_X86]
    return [f for f in features if f.startswith(_ARM_BEYOND)]


@dataclass(frozen=True)
class BuildCheck:
    """What was found: compiled features and, per library, a few instructions past the
    baseline (empty when there are none)."""

    features: list[str]
    beyond: dict[str, list[str]]

    @property
    def cpu_specific(self) -> list[str]:
        """Why the build is tied to a CPU, one reason a line; empty for a portable build."""
        reasons = [f"compiled with {name}" for name in beyond_baseline(self.features)]
        reasons += [f"{lib}: {', '.join(found)}" for lib, found in self.beyond.items() if found]
        return reasons


def instructions_beyond_baseline(library: Path, limit: int = 3) -> list[str]:
    """Up to `limit` disassembled lines of `library` that use AVX-512 or AMX (needs objdump,
    which comes with the C compiler the set-up needs)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        raise FileNotFoundError("objdump not found (binutils): cannot read the library's code")
    listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)],
                             capture_output=True, text=True, check=True).stdout
    found: list[str] = []
    for line in listing.splitlines():
        if _BEYOND_INSTRUCTIONS.search(line):
            found.append(" ".join(line.split()[1:]))
            if len(found) >= limit:
                break
    return found


def check_installed_build() -> BuildCheck:
    """Check the llama.cpp that `import llama_cpp` loads (ImportError when there is none)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    text = info.decode() if isinstance(info, bytes) else str(info)
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    libraries = sorted(p for p in lib_dir.glob("*.so") if p.is_file())
    return BuildCheck(
        features=build_features(text),
        beyond={p.name: instructions_beyond_baseline(p) for p in libraries},
    )


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)  # flushed: the next stage may crash the process


def probe(model: str) -> None:
    """Import llama_cpp, load the GGUF file `model`, generate one token; a JSON line on stdout
    per stage reached (imported, loaded, generated)."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    _say(stage="imported", version=llama_cpp.__version__,
         system_info=info.decode(errors="replace") if isinstance(info, bytes) else str(info))
    start = time.perf_counter()
    llm = llama_cpp.Llama(model_path=model, n_ctx=256, seed=0, verbose=False)
    _say(stage="loaded", seconds=time.perf_counter() - start)
    out = llm.create_completion("Once upon a time", max_tokens=1, temperature=0.0)
    tokens = int((out.get("usage") or {}).get("completion_tokens") or 0)
    _say(stage="generated", tokens=tokens, seconds=time.perf_counter() - start)


if __name__ == "__main__":
    probe(sys.argv[1])
