"""Claims on requests across runs sharing a response cache (`batchopt.execute.claims`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from batchopt.execute.claims import FOLDER, Claims
from batchopt.execute.state import RunState


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _forge(tmp_path, key: str, **holder) -> None:
    """Write a claim as another process would have."""
    import diskcache

    store = diskcache.Cache(str(tmp_path / FOLDER))
    base = {"run_id": "other", "pid": os.getpid(), "host": os.uname().nodename, "state": None}
    store.set(key, json.dumps(base | holder), expire=600)
    store.close()


def test_a_key_is_held_by_the_first_run_that_takes_it(tmp_path):
    a, b = Claims(tmp_path, "a"), Claims(tmp_path, "b")
    assert a.take(["k1", "k2"], ttl=60) == {}
    held = b.take(["k2", "k3"], ttl=60)
    assert list(held) == ["k2"] and held["k2"].run_id == "a"
    assert set(a.holders(["k1", "k2", "k3"])) == {"k3"}  # b holds k3; a's own are not "held"
    a.release(["k1", "k2", "k3"])  # k3 is b's: a cannot release it
    assert set(b.holders(["k1", "k2", "k3"])) == set()
    assert set(a.holders(["k3"])) == {"k3"}
    assert b.take(["k2"], ttl=60) == {}


def test_the_same_run_id_takes_over_its_own_claims(tmp_path):
    _forge(tmp_path, "k", run_id="r1", pid=os.getppid())
    assert Claims(tmp_path, "r1").take(["k"], ttl=60) == {}
    assert set(Claims(tmp_path, "r2").holders(["k"])) == {"k"}


def test_a_claim_lapses_with_its_time_or_its_dead_holder(tmp_path):
    _forge(tmp_path, "alive", pid=os.getppid())
    _forge(tmp_path, "dead", pid=_dead_pid())
    _forge(tmp_path, "elsewhere", pid=_dead_pid(), host="another-host")  # cannot be checked
    claims = Claims(tmp_path, "me")
    assert set(claims.holders(["alive", "dead", "elsewhere"])) == {"alive", "elsewhere"}
    claims.take(["short"], ttl=0.05)
    import time

    time.sleep(0.1)
    assert Claims(tmp_path, "other").take(["short"], ttl=60) == {}


def test_a_dead_holders_batch_claim_lives_while_its_batch_is_open(tmp_path):
    state_dir = tmp_path / "run"
    state = RunState.open(state_dir)
    state.begin_submission("A.r1.0", 1, "openai", "m", ["open", "closed"])
    state.record_batch_id("A.r1.0", "batch_1")
    state.begin_submission("A.r1.1", 1, "openai", "m", ["done"])
    state.record_batch_id("A.r1.1", "batch_2")
    state.mark_collected("A.r1.1", "ended", "errored")
    dead = _dead_pid()
    for key in ("open", "done", "unsent"):
        _forge(tmp_path, key, run_id="A", pid=dead, state=str(state.path))
    claims = Claims(tmp_path, "B")
    assert set(claims.holders(["open", "done", "unsent"])) == {"open"}
    held = claims.take(["open", "done", "unsent"], ttl=60, state=tmp_path / "B.sqlite")
    assert list(held) == ["open"]
    state.close()


def test_a_damaged_claim_is_free(tmp_path):
    import diskcache

    store = diskcache.Cache(str(tmp_path / FOLDER))
    store.set("k", "not json")
    store.close()
    assert Claims(tmp_path, "me").take(["k"], ttl=60) == {}


def test_a_pid_reused_by_another_process_is_not_the_holder(tmp_path):
    from batchopt.execute.claims import _started

    parent = os.getppid()
    if _started(parent) is None:
        import pytest

        pytest.skip("no /proc here: the pid alone decides")
    _forge(tmp_path, "same", pid=parent, started=_started(parent))
    _forge(tmp_path, "reused", pid=parent, started=_started(parent) - 1)  # an earlier process
    _forge(tmp_path, "older format", pid=parent)  # written before start times were recorded
    claims = Claims(tmp_path, "me")
    assert set(claims.holders(["same", "reused", "older format"])) == {"same", "older format"}
    assert claims.take(["reused"], ttl=60) == {}
    assert Claims(tmp_path, "other").holders(["reused"])["reused"].started == _started(
        os.getpid())
