"""Progress as plain lines on stderr, for a run whose stderr is a file, a pipe or a cron log.

A progress bar draws only on a terminal; in a log, a run of several minutes would say nothing
until its summary. So, when stderr is not a terminal, the run prints a line as each stage starts
and, from a daemon thread, a line whenever `interval` seconds passed without one: requests done
out of those to send, their rate and the money spent so far while sending, else how long the
current stage has run (embedding, loading a model and waiting on batches say nothing themselves).

    [    0s] read: started
    [    1s] semantic dedup: started
    [   11s] semantic dedup: running for 10s
    [   14s] send: 215 requests to send
    [   24s] send: 120/215 requests (12.0/s) · spent $0.0031

Times count from the observer's start; every line is flushed as written.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from batchopt.errors import ConfigError
from batchopt.plan.figures import usd

PROGRESS_SECONDS_ENV = "BATCHOPT_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 10.0
_MONEY_STAGES = ("send", "batch")  # stages whose lines show the spend even while it is $0


def progress_seconds(env: Mapping[str, str] | None = None) -> float:
    """The most seconds between two progress lines: $BATCHOPT_PROGRESS_SECONDS, else 10."""
    raw = (os.environ if env is None else env).get(PROGRESS_SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_PROGRESS_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{PROGRESS_SECONDS_ENV}={raw!r}: not a number of seconds above 0")
    return seconds


def clock_time(seconds: float) -> str:
    """Elapsed time, short: 42s, 12m05s, 3h02m."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class LogProgress:
    """The run's progress as lines on `stream`, at least one every `interval` seconds.

    `clock` and `heartbeat=False` are for tests, which then call `tick` themselves."""

    def __init__(self, stream: TextIO, interval: float = DEFAULT_PROGRESS_SECONDS, *,
                 clock: Callable[[], float] = time.monotonic, heartbeat: bool = True) -> None:
        self.stream, self.interval, self._clock = stream, interval, clock
        self._lock = threading.Lock()
        self._start = self._last = self._stage_at = clock()
        self._stage: str | None = None
        self._total = self._done = 0
        self._send_at: float | None = None  # when the first request went out
        self._spent = 0.0
        self._broken = False  # the stream refused a write: no more lines
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if heartbeat:
            self._thread = threading.Thread(target=self._beat, name="batchopt-progress",
                                            daemon=True)
            self._thread.start()

    def stage(self, name: str) -> None:
        """A stage began: say how the sending (or batch) that ended went, if one did, then the
        new stage (sending says itself how many requests it has, in `sending`)."""
        with self._lock:
            if self._stage != name:
                self._end_stage()
            self._stage, self._stage_at = name, self._clock()
            if name != "send":
                self._write(f"{name}: started")

    def sending(self, total: int) -> None:
        """`total` more requests are about to be sent (a run may send in several rounds)."""
        with self._lock:
            self._total += total
            if self._send_at is None:
                self._send_at = self._clock()
            self._write(f"send: {total:,} requests to send")

    def answered(self) -> None:
        """One request was answered, or failed for good."""
        with self._lock:
            self._done += 1

    def spent(self, amount: float) -> None:
        """Answers arrived that cost this much (what the ledger will charge them)."""
        with self._lock:
            self._spent += amount

    def line(self, text: str) -> None:
        """A line of its own (a batch's status), stamped like the others."""
        with self._lock:
            self._write(text)

    def tick(self) -> float:
        """One heartbeat: a line on where the run stands, if none was written for `interval`.
        Returns the seconds until the next line is due."""
        with self._lock:
            now = self._clock()
            if self._stage is None:
                return self.interval
            if now - self._last < self.interval:
                return self._last + self.interval - now
            if self._stage == "send":
                self._write(self._send_line())
            else:
                money = (f" · spent {usd(self._spent)}"
                         if self._spent or self._stage in _MONEY_STAGES else "")
                self._write(f"{self._stage}: running for {clock_time(now - self._stage_at)}"
                            + money)
            return self.interval

    def close(self) -> None:
        """Stop the heartbeat; say how sending (or batch) ended if the run stopped in it.
        Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            self._end_stage()
            self._stage = None

    def _end_stage(self) -> None:
        """The closing line of a stage that spends: requests and spend, or time and spend."""
        if self._stage == "send":
            self._write(self._send_line())
        elif self._stage == "batch":
            took = clock_time(self._clock() - self._stage_at)
            self._write(f"batch: {took} in this stage · spent {usd(self._spent)}")

    def _send_line(self) -> str:
        took = self._clock() - (self._send_at if self._send_at is not None else self._start)
        rate = f" ({self._done / took:,.1f}/s)" if took > 0 else ""
        return f"send: {self._done:,}/{self._total:,} requests{rate} · spent {usd(self._spent)}"

    def _write(self, text: str) -> None:
        """One stamped line, flushed (the lock is held). A log that cannot be written (a closed
        pipe) silences the progress, never the run."""
        now = self._clock()
        self._last = now
        if self._broken:
            return
        try:
            self.stream.write(f"[{clock_time(now - self._start):>6}] {text}\n")
            self.stream.flush()
        except (OSError, ValueError):
            self._broken = True

    def _beat(self) -> None:
        wait = self.interval
        while not self._stop.wait(wait):
            wait = max(self.tick(), 0.001)
