"""`batchopt doctor`: is every component a pipeline may use installed, and does it work?

Each check returns one `Check` (ok, warn, FAIL or skip, with what to do when it fails). The
checks that can crash the process (llama.cpp) run in a subprocess; the others import their
module in this one. `run_checks` yields them one by one, so the command can print each line as
soon as it is known. Nothing heavy is imported here: `batchopt --help` stays fast.
"""

from __future__ import annotations

from batchopt.doctor.result import Check
from batchopt.doctor.run import DoctorOptions, run_checks

__all__ = ["Check", "DoctorOptions", "run_checks"]
