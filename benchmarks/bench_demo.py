"""How long `make demo` takes after set-up, and how long its log stays silent.

    python benchmarks/bench_demo.py [--command "make demo"] [--log demo.log]

Runs the command from the repository root the way cron or CI would: its output (stdout and
stderr together) goes to a pipe, not a terminal, so no progress bar is drawn. The demo's outputs,
ledger and cache go to a fresh temporary folder (BATCHOPT_OUT), so the first run pays for every
request and the second is answered from the cache, as on a new machine. Each line is stamped as
it arrives. Prints the wall time, the longest silence between two lines (with the line that
ended it) and whether the issue's targets hold: at most 180 s in all, no silence over 30 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 180.0
TARGET_SILENCE = 30.0


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run(command: str, env: dict[str, str]) -> tuple[list[tuple[float, str]], int, float]:
    """The command's lines with their arrival times (seconds from start), its exit code and
    its wall time."""
    start = time.perf_counter()
    process = subprocess.Popen(shlex.split(command), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                               bufsize=1)
    assert process.stdout is not None
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in process.stdout]
    code = process.wait()
    return lines, code, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", default="make demo")
    parser.add_argument("--log", type=Path, help="write the stamped lines here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-demo-") as out:
        env = {**os.environ, "BATCHOPT_OUT": out}
        env.pop("TERM", None)
        lines, code, wall = run(args.command, env)

    previous, silence, after = 0.0, 0.0, ""
    for at, text in lines:
        if at - previous > silence:
            silence, after = at - previous, text
        previous = at
    if wall - previous > silence:
        silence, after = wall - previous, "(the command's exit)"
    if args.log:
        args.log.write_text("".join(f"[{at:7.1f}s] {text}\n" for at, text in lines))

    print(f"command          {args.command} (exit {code})")
    print(f"machine          {os.cpu_count()} cores · {cpu_name()} · Python "
          f"{platform.python_version()}")
    print(f"wall time        {wall:.1f} s (target <= {TARGET_SECONDS:.0f} s): "
          f"{'ok' if wall <= TARGET_SECONDS else 'OVER'}")
    print(f"longest silence  {silence:.1f} s, ended by: {after[:100]} (target <= "
          f"{TARGET_SILENCE:.0f} s): {'ok' if silence <= TARGET_SILENCE else 'OVER'}")
    print(f"lines            {len(lines)}")
    if code != 0:
        print("the command failed; its last lines:")
        for _, text in lines[-15:]:
            print(f"  {text}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
