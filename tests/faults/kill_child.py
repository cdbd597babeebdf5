"""The child side of the kill tests: `batchopt run` that dies by SIGKILL at a named point.

Production code is not changed: a kill point is a wrapper this module puts around one function
or method of batchopt in the child process only, which sends SIGKILL to its own process before
or after the n-th call (`KillAt`). So a child can be stopped exactly at a stage boundary (the
`RunObserver.stage` calls), between a result's arrival and its write, between a batch's
creation and the write of its id, and so on. Random points are the test's own SIGKILL, sent
from outside at a moment it picks.

Two ways to start a child:

    python tests/faults/kill_child.py run <batchopt run arguments>   a fresh interpreter; the
                                                      kill point in $BATCHOPT_FAULTS_KILL
    python tests/faults/kill_child.py serve           a fork server (see `serve`)

A fresh interpreter spends about two seconds importing the SDKs and loading the tokenizers
before it reads a row, so the many kill points of the default suite go through the fork
server instead: one process imports that once, then forks a child per run. The child calls the
same `batchopt.cli.main.main(["run", ...])` the console script calls, in its own process (own pid,
own file locks, killed by the kernel like any other); polars and pyarrow, which start threads
when imported, are imported only in the child, after the fork.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import inspect
import json
import os
import random
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Any

KILL_ENV = "BATCHOPT_FAULTS_KILL"


@dataclass(frozen=True)
class KillAt:
    """Where a child kills itself.

    `target` is "stage:<name>" (the n-th `RunObserver.stage(name)` call: before the stage
    starts) or "<module>:<attribute path>" of a function, method, coroutine function or async
    generator function, looked up where the caller looks it up (e.g. `batchopt.run.runner:finish`,
    `batchopt.execute.state:RunState.record_batch_id`). `when` is before or after the n-th
    call (an async generator: after its n-th item was consumed, before the next one is handed
    over). `arg`, if set, counts only calls that have this string among their arguments.
    `settings` are module constants to set first ("module:NAME", value).
    """

    target: str
    when: str = "before"
    nth: int = 1
    arg: str | None = None
    settings: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> KillAt:
        data = json.loads(text)
        data["settings"] = tuple(tuple(item) for item in data.get("settings") or ())
        return cls(**data)


def die() -> None:
    """SIGKILL this process: no handler, no flush, no cleanup, as a lost machine would."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached


def install(kill: KillAt) -> None:
    """Put the kill point in place (in the child process, before batchopt runs)."""
    for name, value in kill.settings:
        module, attr = name.split(":")
        setattr(importlib.import_module(module), attr, value)
    if kill.target.startswith("stage:"):
        stage = kill.target.split(":", 1)[1]
        runner = importlib.import_module("batchopt.run.runner")
        _wrap(runner.RunObserver, "stage", kill, lambda args: len(args) > 1 and args[1] == stage)
        return
    module_name, path = kill.target.split(":")
    owner: Any = importlib.import_module(module_name)
    *parents, attr = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)

    def wanted(args: tuple[Any, ...]) -> bool:
        return kill.arg is None or any(isinstance(a, str) and a == kill.arg for a in args)

    _wrap(owner, attr, kill, wanted)


def _wrap(owner: Any, attr: str, kill: KillAt, wanted: Any) -> None:
    original = inspect.getattr_static(owner, attr)
    if isinstance(original, staticmethod | classmethod):
        raise ValueError(f"{kill.target}: static and class methods are not supported")
    original = getattr(owner, attr) if inspect.isclass(owner) else original
    calls = [0]

    def hit(args: tuple[Any, ...]) -> bool:
        if not wanted(args):
            return False
        calls[0] += 1
        return calls[0] == kill.nth

    if inspect.isasyncgenfunction(original):
        @functools.wraps(original)
        async def agen(*args: Any, **kwargs: Any) -> Any:
            items = 0
            async for item in original(*args, **kwargs):
                if items == kill.nth:
                    die()
                items += 1
                yield item

        setattr(owner, attr, agen)
    elif inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def coro(*args: Any, **kwargs: Any) -> Any:
            now = hit(args)
            if now and kill.when == "before":
                die()
            result = await original(*args, **kwargs)
            if now:
                die()
            return result

        setattr(owner, attr, coro)
    else:
        @functools.wraps(original)
        def plain(*args: Any, **kwargs: Any) -> Any:
            now = hit(args)
            if now and kill.when == "before":
                die()
            result = original(*args, **kwargs)
            if now:
                die()
            return result

        setattr(owner, attr, plain)


def run_cli(argv: list[str], kill: KillAt | None) -> int:
    """`batchopt <argv>` in this process, with the kill point in place; its exit code."""
    if kill is not None:
        install(kill)
    from batchopt.cli.main import main

    try:
        main(argv, prog_name="batchopt")
    except SystemExit as done:
        code = done.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    return 0


# ---- the fork server -------------------------------------------------------------------------


def warm() -> None:
    """Import what every run needs and load both tokenizers, without starting a thread."""
    import aiohttp  # noqa: F401
    import anthropic  # noqa: F401
    import click  # noqa: F401
    import diskcache  # noqa: F401
    import jinja2  # noqa: F401
    import openai  # noqa: F401
    import pydantic  # noqa: F401
    import yaml  # noqa: F401

    from batchopt.tokens import count_tokens

    count_tokens("warm up", "gpt-4o-mini")
    count_tokens("warm up", "gpt-4-0613")
    for threaded in ("polars", "pyarrow", "torch"):
        assert threaded not in sys.modules, f"{threaded} must be imported after the fork"
    threads = _threads()
    assert threads == 1, f"the fork server has {threads} threads; a fork would lose them"


def _threads() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 1


def serve() -> None:
    """Answer JSON commands, one a line on stdin, with one JSON line each on stdout:

    {"op": "start", "argv": [...], "env": {...}, "cwd": "...", "log": "...", "kill": KillAt}
        fork a child that runs `batchopt <argv>` (stdout and stderr to `log`) -> {"pid": N}
    {"op": "wait", "pid": N, "timeout": S}
        wait for it -> {"status": exit code, or -signal; "timeout": true if it was killed
        because it outlived S seconds}
    {"op": "poll", "pid": N} -> {"status": ... or null while it runs}

    At the end of stdin, children not waited for are killed and reaped.
    """
    warm()
    children: set[int] = set()
    out = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=out, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "start":
            pid = os.fork()
            if pid == 0:
                _child(command)
            children.add(pid)
            reply: dict[str, Any] = {"pid": pid}
        elif op == "poll":
            done, status = os.waitpid(command["pid"], os.WNOHANG)
            reply = {"status": None}
            if done:
                children.discard(done)
                reply = {"status": os.waitstatus_to_exitcode(status)}
        elif op == "wait":
            reply = _wait(command["pid"], float(command.get("timeout") or 300))
            children.discard(command["pid"])
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), file=out, flush=True)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _wait(pid: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"status": os.waitstatus_to_exitcode(status)}
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return {"status": os.waitstatus_to_exitcode(status), "timeout": True}
        time.sleep(0.005)


def _child(command: dict[str, Any]) -> None:
    """In the forked child: become `batchopt run`, then exit with its code (never returns)."""
    code = 1
    try:
        log = os.open(command["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the child's stdin for its whole life
        os.environ.clear()
        os.environ.update(command["env"])
        os.chdir(command["cwd"])
        random.seed()
        kill = command.get("kill")
        code = run_cli(command["argv"], KillAt.from_json(kill) if kill else None)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve()
        return 0
    if argv[:1] == ["run"]:
        kill = os.environ.get(KILL_ENV)
        return run_cli(argv, KillAt.from_json(kill) if kill else None)
    print("usage: kill_child.py serve | run <batchopt run arguments>", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
