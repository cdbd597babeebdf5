"""Mutation testing of the money-critical code (issue 20): pricing, the budget, fan-out, cache
keys and the dedup guards' fact parsing.

    python scripts/mutation.py                 # every target, from a fresh ./mutants
    python scripts/mutation.py budget guards   # some targets only
    python scripts/mutation.py --report        # print the last run's report again

mutmut (configured under [tool.mutmut] in pyproject.toml) copies the sources into ./mutants,
runs the targeted tests there once to learn which tests reach which function, then runs only
those tests against each mutant. Nothing outside ./mutants is written. The report gives killed
/ survived / timeout per file and each survivor's diff; survivors named in docs/mutation.md
(equivalent mutants, with the reason) are listed apart. Exit 1 if any other mutant survived.
Not part of the test suite: see docs/mutation.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mutation.md"
SEP = "ǁ"  # mutmut's separator of class and method in a mutant's name

# target -> mutant-name patterns (module.function); mutmut mutates whole files, so the budget
# and guard targets name the functions that are theirs.
TARGETS: dict[str, list[str]] = {
    # a call's price and cost, and the table with a pipeline's overrides (not the price file's
    # validation messages, the table's version hash or self-hosted time pricing)
    "pricing": [
        f"batchopt.ledger.pricing.x_{name}__mutmut_*" for name in ("token_usd", "daily_cost")
    ] + [
        f"batchopt.ledger.pricing.x{SEP}PriceTable{SEP}{name}__mutmut_*"
        for name in ("load", "_match", "price", "cost")
    ],
    "budget": [
        *(f"batchopt.run.budget.x{SEP}Budget{SEP}{name}__mutmut_*"
          for name in ("__init__", "add", "reached", "left", "most", "reserve", "release",
                       "estimate", "check_estimate")),
        "batchopt.run.cost.x_result_cost__mutmut_*",
        "batchopt.run.cost.x_max_request_cost__mutmut_*",
        "batchopt.run.cost.x_request_cost__mutmut_*",
        "batchopt.run.cost.x_expected_usage__mutmut_*",
    ],
    # what carries answers and money from a group to its rows (not the schema typing or IO)
    "fanout": [
        "batchopt.run.fanout.x_group_results__mutmut_*",
        "batchopt.run.fanout.x__result_facts__mutmut_*",
        "batchopt.run.fanout.x_ledger_facts__mutmut_*",
        "batchopt.run.fanout.x_output_table__mutmut_*",
        f"batchopt.run.fanout.x{SEP}LedgerTotals{SEP}*",
    ],
    "cache_keys": [
        "batchopt.hashing.*",
        "batchopt.prompts.requests.x_request_keyer__mutmut_*",
        "batchopt.prompts.requests.x_build_requests__mutmut_*",
    ],
    "guards": [
        *(f"batchopt.dedup.facts.x_{name}__mutmut_*"
          for name in ("_decimal", "_plain", "_amount", "_date", "extract", "_facts", "_kept",
                       "_token", "_word", "_classify", "_fact")),
        "batchopt.dedup.guards.x_veto__mutmut_*",
    ],
}


def _mutmut(*args: str) -> int:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.call([sys.executable, "-m", "mutmut", *args], cwd=ROOT, env=env)


def _results(patterns: list[str]) -> dict[str, tuple[str, str]]:
    """mutant name -> (source file, status) for the mutants matching `patterns`."""
    os.chdir(ROOT)
    from mutmut.__main__ import status_by_exit_code, walk_mutatable_files
    from mutmut.mutation.data import SourceFileMutationData

    found: dict[str, tuple[str, str]] = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            if any(fnmatch.fnmatch(name, p) for p in patterns):
                found[name] = (str(path), status_by_exit_code[code])
    return found


def _equivalents() -> set[str]:
    """Mutant names docs/mutation.md lists as equivalent (in back-quotes at a line's start)."""
    if not DOC.exists():
        return set()
    names = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("-* ")
        if text.startswith("`batchopt.") and "__mutmut_" in text:
            names.add(text[1:].split("`", 1)[0])
    return names


def report(targets: list[str]) -> int:
    from mutmut.__main__ import get_diff_for_mutant

    equivalent = _equivalents()
    unexplained = 0
    pending = False
    for target in targets:
        found = _results(TARGETS[target])
        print(f"\n== {target}")
        by_file: dict[str, Counter[str]] = {}
        for path, status in found.values():
            pending |= status == "not checked"
            by_file.setdefault(path, Counter())[status] += 1
        for path, counts in sorted(by_file.items()):
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            print(f"  {path}: {sum(counts.values())} mutants: {summary}")
        untested: Counter[str] = Counter()
        for name, (path, status) in sorted(found.items()):
            if status in ("killed", "caught by type check", "not checked"):
                continue
            if status == "no tests":  # no selected test reaches the function: one line for it
                untested[name.partition("__mutmut_")[0]] += 1
                continue
            known = name in equivalent and status == "survived"
            unexplained += not known
            print(f"\n  {status}{' (equivalent: docs/mutation.md)' if known else ''}: {name}")
            if not known:
                print("    " + get_diff_for_mutant(name, path=path).replace("\n", "\n    "))
        for function, count in sorted(untested.items()):
            unexplained += count
            print(f"\n  no tests reach {function}: {count} mutant(s) unchecked")
    print(f"\n{unexplained} mutant(s) not killed and not listed as equivalent"
          + (" (the run is not finished: some are not checked yet)" if pending else ""))
    return 1 if unexplained else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", choices=[[], *TARGETS], metavar="TARGET",
                        help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--report", action="store_true", help="report the last run only")
    parser.add_argument("--keep", action="store_true",
                        help="reuse ./mutants (mutmut's stats and results) instead of a fresh copy")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    targets = args.targets or list(TARGETS)
    if not args.report:
        if not args.keep:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        patterns = [p for t in targets for p in TARGETS[t]]
        start = time.monotonic()
        code = _mutmut("run", "--max-children", str(args.max_children), *patterns)
        print(f"\nmutmut run: exit {code} after {time.monotonic() - start:.0f} s")
        if code:
            return code
    return report(targets)


if __name__ == "__main__":
    sys.exit(main())
