"""The cheap checks: Python, the provider SDKs against constraints.txt, plain imports, the cache.

The SDKs are imported, not only looked up: a release that installed but cannot import (a
pydantic or httpx it does not accept) fails here, not at the first request of a run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import re
import shutil
import sys
import tempfile
from pathlib import Path

from batchopt.doctor.result import Check, one_line

MIN_PYTHON = (3, 11)
SETUP = "make setup (or pip install -e '.[local,semantic]')"
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")


def check_python() -> Check:
    """batchopt needs the Python its pyproject names (3.11+)."""
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return Check("FAIL", "python", f"{version} at {sys.executable}; batchopt needs 3.11+",
                     "make setup PYTHON=python3.11")
    return Check("ok", "python", f"{version} ({sys.executable})")


def constraints_file() -> Path | None:
    """constraints.txt beside the package source (a checkout), or None (an installed wheel)."""
    import batchopt

    path = Path(batchopt.__file__).resolve().parents[1] / "constraints.txt"
    return path if path.is_file() else None


def read_pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a pip constraints file, by normalised name (PEP 503)."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_sdk(dist: str, module: str, constraints: Path | None) -> Check:
    """The SDK imports, and is the release constraints.txt pins (CI was green with that one)."""
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return Check("FAIL", dist, "not installed", f"pip install -e . ({dist} is a dependency)")
    try:
        importlib.import_module(module)
    except Exception as exc:
        return Check("FAIL", dist, f"{version} installed but `import {module}` fails: "
                     f"{type(exc).__name__}: {one_line(exc, 200)}", SETUP)
    if constraints is None:
        return Check("ok", dist, version)
    pin = read_pins(constraints).get(normalise(dist))
    if pin is None:
        return Check("ok", dist, f"{version} (not pinned in {constraints.name})")
    if pin != version:
        return Check("FAIL", dist, f"{version}, but {constraints} pins {pin}",
                     f"pip install -c {constraints} '{dist}=={pin}'")
    return Check("ok", dist, f"{version} (as pinned in {constraints.name})")


def check_import(name: str, module: str, fix: str) -> Check:
    """`import module` works; its version is shown."""
    try:
        imported = importlib.import_module(module)
    except Exception as exc:
        return Check("FAIL", name, f"`import {module}` fails: {type(exc).__name__}: "
                     f"{one_line(exc, 200)}", fix)
    return Check("ok", name, str(getattr(imported, "__version__", "imported")))


def check_cache_dir(folder: Path, source: str) -> Check:
    """Create and remove a temp file in `folder`; folders made for the test are removed too."""
    folder = Path(folder).expanduser().absolute()
    created: list[Path] = []
    try:
        missing: list[Path] = []
        probe = folder
        while not probe.exists() and probe.parent != probe:
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            path.mkdir()
            created.append(path)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".batchopt-doctor-"):
            pass
        free = shutil.disk_usage(folder).free / 1e9
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return Check("FAIL", "cache", f"{folder} ({source}) is not writable: {reason}",
                     "point --cache-dir (or the pipeline's cache.path) at a writable folder")
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
    return Check("ok", "cache", f"{folder} writable, {free:,.1f} GB free ({source})")
