"""benchmarks/bench_demo.py measures what it says: the wall time and the longest silence of a
command whose output goes to a pipe (the figures themselves are printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_demo_reports_the_longest_silence_and_the_exit(tmp_path: Path) -> None:
    command = (f"{sys.executable} -c \"import time; print('a', flush=True); time.sleep(1.2); "
               "print('b', flush=True); raise SystemExit(3)\"")
    log = tmp_path / "stamped.log"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_demo.py"),
                             "--command", command, "--log", str(log)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr  # the command failed: so does the benchmark
    assert "(exit 3)" in result.stdout
    silence = next(line for line in result.stdout.splitlines() if "longest silence" in line)
    seconds = float(silence.split()[2])
    assert 1.1 <= seconds < 30, silence
    assert "ended by: b" in silence
    assert [line.split("] ", 1)[1] for line in log.read_text().splitlines()] == ["a", "b"]
