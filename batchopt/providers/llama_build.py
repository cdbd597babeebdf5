"""Is the installed llama.cpp build portable, or made for one CPU?

llama-cpp-python compiles llama.cpp at install time, by default with `-march=native`: the library
then uses whatever the build machine had (AVX-512, AMX, VNNI) and a wheel cached on one machine
crashes or misbehaves on another. The set-up builds for a baseline (x86-64 with AVX2, FMA, F16C);
this module tells, without running any model, whether a build stays within it: from the features
llama.cpp says it was compiled with, and from the instructions in its shared libraries.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Compiled-in features past the baseline: any of these set to 1 means a CPU-specific build.
BEYOND_BASELINE = ("AVX512", "AMX", "AVX_VNNI", "AVXVNNI", "SVE", "SME")
# AT&T-syntax operands and mnemonics that only AVX-512 or AMX code has: 512-bit registers, the
# opmask registers, tile loads, stores and dot products.
_BEYOND_INSTRUCTIONS = re.compile(r"%zmm\d|%k[0-7]\b|\btile(loadd|stored|zero)|\btdpb|tilecfg")
_FEATURE = re.compile(r"([A-Z][A-Z0-9_]*)\s*=\s*(\d+)")


@dataclass(frozen=True)
class BuildCheck:
    """What was found: compiled features and, per library, a few instructions past the
    baseline (empty when there are none)."""

    features: dict[str, int]
    beyond: dict[str, list[str]]

    @property
    def cpu_specific(self) -> list[str]:
        """Why the build is tied to a CPU, one reason a line; empty for a portable build."""
        reasons = [f"compiled with {name}" for name, on in self.features.items()
                   if on and name.startswith(BEYOND_BASELINE)]
        reasons += [f"{lib}: {', '.join(found)}" for lib, found in self.beyond.items() if found]
        return reasons


def compiled_features(system_info: str) -> dict[str, int]:
    """`llama_print_system_info()`'s "CPU : SSE3 = 1 | AVX2 = 1 | ..." as a dict."""
    return {name: int(value) for name, value in _FEATURE.findall(system_info)}


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
        features=compiled_features(text),
        beyond={p.name: instructions_beyond_baseline(p) for p in libraries},
    )
