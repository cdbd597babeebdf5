"""Claims on requests across runs that share a response cache, so two runs never pay for one
request side by side.

Before a run sends a request (online, or in a new batch) it claims the request's key here; a
key another live run holds is not sent but waited for: its answer arrives in the shared cache,
where the waiting run reads it as a cache hit. A claim is given up (released) once its request
is answered or has failed, and it lapses by itself when its holder cannot be working on it:

- the claim's time is up (`ttl`: a request's longest retry for online claims, a batch's
  lifetime for batch claims);
- its holder process, on this host, is gone (killed, or exited), unless the claim is a batch
  claim whose request is still in an open batch of the holder's run (that run collects it when
  it runs again).

A claim made by the same run id is this run's own (a run resumed after a kill takes over what
it claimed before). Stored with diskcache (SQLite) in `<cache>/claims/`, apart from the answers:
one transaction per group of keys, so claiming costs tens of microseconds a request.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from batchopt.records import Request, Result

FOLDER = "claims"
_HOST = socket.gethostname()


@dataclass(frozen=True)
class Holder:
    """Who holds a claim."""

    run_id: str
    pid: int
    host: str
    state: str | None  # the holder's run state (state.sqlite) for a batch claim, else None
    # when the holder process started (/proc, clock ticks since boot): a pid reused by another
    # process after the holder died is not the holder (None: not known, the pid alone decides)
    started: int | None = None

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host})"


class Claims:
    """This run's claims on request keys, in the folder shared by every run of a cache."""

    def __init__(self, cache_folder: Path, run_id: str) -> None:
        import diskcache

        self.run_id = run_id
        self._store: Any = diskcache.Cache(str(cache_folder / FOLDER), eviction_policy="none",
                                           size_limit=2**62)
        self._store.expire()  # drop the lapsed claims of earlier runs

    def take(self, keys: Sequence[str], ttl: float, state: Path | None = None
             ) -> dict[str, Holder]:
        """Claim every key that no other live run holds; return the holders of the others
        (the keys left out). `state` marks batch claims (see the module docstring)."""
        me = json.dumps(asdict(Holder(self.run_id, os.getpid(), _HOST,
                                      str(state) if state else None, _started(os.getpid()))))
        held: dict[str, Holder] = {}
        with self._store.transact():
            current = {key: _holder(self._store.get(key)) for key in keys}
            live = _live(current, self.run_id)
            for key in keys:
                holder = current[key]
                if holder is not None and key in live:
                    held[key] = holder
                else:
                    self._store.set(key, me, expire=ttl)
        return held

    def holders(self, keys: Iterable[str]) -> dict[str, Holder]:
        """Of `keys`, those another live run holds, with their holders."""
        current = {key: _holder(self._store.get(key)) for key in keys}
        live = _live(current, self.run_id)
        return {key: h for key, h in current.items() if h is not None and key in live}

    def release(self, keys: Iterable[str]) -> None:
        """Give up this run's claims on `keys` (answered, failed, or not sent after all)."""
        keys = list(keys)
        if not keys:
            return
        with self._store.transact():
            for key in keys:
                holder = _holder(self._store.get(key))
                if holder is not None and holder.run_id == self.run_id:
                    self._store.delete(key)

    def close(self) -> None:
        self._store.close()


def _holder(raw: Any) -> Holder | None:
    try:
        return Holder(**json.loads(raw)) if raw is not None else None
    except (TypeError, ValueError):
        return None  # not a claim (damaged): free


def _live(current: dict[str, Holder | None], run_id: str) -> set[str]:
    """The keys whose holder is another run that may still be working on them."""
    live: set[str] = set()
    by_state: dict[str, list[str]] = {}
    for key, holder in current.items():
        if holder is None or holder.run_id == run_id:
            continue
        if holder.host != _HOST or _alive(holder.pid, holder.started):
            live.add(key)
        elif holder.state:
            by_state.setdefault(holder.state, []).append(key)
    for state, keys in by_state.items():
        live |= _open_in(Path(state), keys)
    return live


def _alive(pid: int, started: int | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _started(pid) if started is not None else None
    return now is None or now == started


def _started(pid: int) -> int | None:
    """The start time of process `pid` (field 22 of /proc/<pid>/stat), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its end
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def _open_in(state: Path, keys: list[str]) -> set[str]:
    """Of `keys`, those in an open batch of the run whose state file is `state`."""
    if not state.exists():
        return set()
    try:
        db = sqlite3.connect(f"{state.as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            found: set[str] = set()
            for i in range(0, len(keys), 500):
                part = keys[i:i + 500]
                rows = db.execute(
                    "SELECT i.key FROM items i JOIN submissions s ON s.tag = i.tag "
                    "WHERE s.state IN ('submitting', 'pending') AND i.key IN "
                    f"({','.join('?' * len(part))})", part).fetchall()
                found |= {row[0] for row in rows}
            return found
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return set(keys)  # cannot tell: wait rather than pay twice (the claim lapses anyway)


def wait_seconds(started: float) -> float:
    """How long a run waiting on another's claims sleeps between looks: short at first."""
    return min(2.0, 0.05 + (time.monotonic() - started) / 20)


@dataclass(frozen=True)
class SharedCache:
    """What an executor needs to share a response cache with runs on other run ids."""

    claims: Claims
    lookup: Callable[[str], Result | None]  # the saved answer for a key, whoever paid for it
    on_wait: Callable[[dict[str, Holder], str], None]  # tell the user whom it waits for


class ClaimGate:
    """An executor's side of the claims: `admit` asks `claim` (which claims requests for the
    run and returns the keys another run holds) about requests about to be sent, keeps those
    another run holds in `deferred` and the keys this run claimed in `claimed`."""

    def __init__(self, claim: Callable[[list[Request]], set[str]] | None) -> None:
        self._claim = claim
        self.deferred: list[Request] = []  # held by another run: not sent
        self.claimed: list[str] = []  # claimed for this run (to release when done)

    def admit(self, taken: list[Request], *, stopped: bool = False) -> list[Request]:
        """Of `taken`, those this run may send (all of them without claims, or once stopped:
        what is not sent then fails, it is not waited for)."""
        if self._claim is None or stopped:
            return taken
        held = self._claim(taken)
        self.deferred += [r for r in taken if r.key in held]
        ready = [r for r in taken if r.key not in held]
        self.claimed += [r.key for r in ready]
        return ready

    def take_claimed(self) -> list[str]:
        """The keys claimed so far, forgotten here (the caller releases them)."""
        claimed, self.claimed = self.claimed, []
        return claimed
