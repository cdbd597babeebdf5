"""Security: templates cannot reach Python internals nor exhaust the machine, column text is never
code, API keys never reach a file or a message, and the fake server listens on 127.0.0.1 only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from faults import tally
from faults.bad_input_helpers import assert_refused, cli_env, invoke
from helpers import fake_env, file_contents, pipeline_dict, write_pipeline, write_tickets

from batchopt.config.pipeline import load_pipeline
from batchopt.run.runner import RunOptions, prepare

BATCHOPT = Path(sys.executable).parent / "batchopt"

ESCAPES = {  # template -> what the one-line error says
    "mro walk": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "blocked by the sandbox"),
    "cycler globals": ("{{ cycler.__init__.__globals__ }}", "blocked by the sandbox"),
    "joiner os": ("{{ joiner.__init__.__globals__.os.system('id') }}", "blocked by the sandbox"),
    "namespace globals": ("{{ namespace.__init__.__globals__ }}", "blocked by the sandbox"),
    "template reference": ("{{ self._TemplateReference__context }}", "blocked by the sandbox"),
    "attr filter": ("{{ body|attr('__class__') }}", "blocked by the sandbox"),
    "format reference": ("{% set f = '{0.__class__.__mro__}'.format %}{{ f(body) }}",
                         "blocked by the sandbox"),
    "attr format": ("{{ ('{0.__class__}'|attr('format'))(body) }}", "blocked by the sandbox"),
    "format_map": ("{{ '{x.__class__}'.format_map({'x': body}) }}", "blocked by the sandbox"),
    "dunder call": ("{{ body.__len__() }}", "blocked by the sandbox"),
    "mutation": ("{% set x = [] %}{{ x.append(body) }}", "blocked by the sandbox"),
    "power bomb": ("{{ 9 ** 999999999 }}", "blocked by the sandbox (9 ** 999999999 is too large"),
    "string bomb": ("{{ body * 10**10 }}", "blocked by the sandbox (a repeated string"),
    "list bomb": ("{{ [body] * 10**9 }}", "blocked by the sandbox (a repeated string or list"),
    "output bomb": ("{% for a in range(99999) %}{% for b in range(99999) %}{{ body }}"
                    "{% endfor %}{% endfor %}", "the prompt passes 10,000,000 characters"),
    "range bomb": ("{{ range(10**9)|list|length }}", "Range too big"),
    "lipsum bomb": ("{{ lipsum(10**6) }}", "missing column(s) 'lipsum'"),  # no such global
    "division": ("{{ body|length / 0 }}", "ZeroDivisionError"),
}


@pytest.fixture
def env(fake) -> dict[str, str | None]:
    return cli_env(fake)


@pytest.mark.parametrize("case", list(ESCAPES))
def test_template_cannot_escape_the_sandbox(fake, env, tmp_path, case):
    template, message = ESCAPES[case]
    data = pipeline_dict()
    data["prompt"]["template"] = "{{ subject }}: " + template
    path = write_pipeline(tmp_path, data)
    tally.add("bad inputs tried")
    result = invoke(["run", str(path), "--quiet"], env)
    where = "tickets.parquet: " if case == "lipsum bomb" else "prompt.template: row 'T1': "
    assert_refused(result, fake, tmp_path, where, message)


def test_a_tier_template_is_sandboxed_too(fake, env, tmp_path):
    data = pipeline_dict()
    data["profiles"]["openai"]["template"] = "{{ cycler.__init__.__globals__ }}"
    path = write_pipeline(tmp_path, data)
    tally.add("bad inputs tried")
    assert_refused(invoke(["run", str(path), "--quiet"], env), fake, tmp_path,
                   "profiles.openai.template: row 'T1': blocked by the sandbox")


def test_escape_strings_in_column_text_are_sent_as_text(fake, env, tmp_path):
    data = pipeline_dict()
    data["prompt"]["template"] = "{{ body }}"
    path = write_pipeline(tmp_path, data)
    texts = [template for template, _ in ESCAPES.values()] + ["{{ 7*7 }}", "{% raw %}x"]
    write_tickets(tmp_path / "data" / "tickets.parquet", [
        {"ticket_id": f"T{i:02d}", "subject": "s", "body": text} for i, text in enumerate(texts)])
    plan = prepare(load_pipeline(path), RunOptions(), env={"OPENAI_API_KEY": "sk-x"})
    assert sorted(r.user for r in plan.requests.values()) == sorted(texts)
    result = invoke(["run", str(path), "--quiet"], env)
    assert result.exit_code == 0, result.output
    assert fake.stats()["requests"] == len(texts)
    out = pl.read_parquet(tmp_path / "out" / "outputs.parquet").sort("ticket_id")
    answer = out.filter(pl.col("body") == "{{ 7*7 }}")["summary"][0]
    assert "{{ 7*7 }}" in answer and "49" not in answer  # the fake echoes the prompt's words


# ---- API keys never written nor printed ----------------------------------------------------

OPENAI_KEY = "sk-proj-Zq7Xk2LmN9pQ4rS8tU1vW3yA5bC6dE0fOPENAI"
ANTHROPIC_KEY = "sk-ant-api03-Hh4Jj5Kk6Ll7Mm8Nn9Pp0Qq1Rr2ANTHROPIC"
SECRETS = [OPENAI_KEY, ANTHROPIC_KEY, OPENAI_KEY[-8:], ANTHROPIC_KEY[-8:], "Zq7Xk2LmN9pQ",
           "Hh4Jj5Kk6Ll7"]


def _cmd(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BATCHOPT), *args], env=env, capture_output=True, text=True,
                          timeout=180)


def _leaks(blob: bytes | str) -> list[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return [s for s in SECRETS if s.encode() in data]


def _leaking_files(folder: Path) -> list[tuple[str, list[str]]]:
    return [(str(p), _leaks(file_contents(p))) for p in folder.rglob("*")
            if p.is_file() and _leaks(file_contents(p))]


def test_a_key_in_a_compressed_parquet_file_is_found(tmp_path):
    """The grep would be blind without decoding: zstd hides the key from a byte search."""
    path = tmp_path / "x.parquet"
    pl.DataFrame({"error": [f"HTTP 401: Incorrect API key provided: {OPENAI_KEY}. row {i}"
                            for i in range(50)]}).write_parquet(path)  # like a ledger's errors
    assert OPENAI_KEY.encode() not in path.read_bytes()
    assert _leaking_files(tmp_path) == [(str(path), SECRETS[:1] + [OPENAI_KEY[-8:], SECRETS[4]])]


@pytest.mark.parametrize("mode", ["online", "batch"])
@pytest.mark.parametrize("profile", ["openai", "anthropic"])
def test_no_file_or_message_of_a_run_holds_the_keys(bfake, tmp_path, mode, profile):
    """Runs that fail (401, errored batch rows) and succeed, then every other command; every file
    under the project (outputs, ledger, cache, run state, report, temp files, a home folder) and
    every stream is read back for either key or a recognisable piece of one."""
    data = pipeline_dict(execution={"mode": mode, "poll_seconds": 0.05})
    path = write_pipeline(tmp_path, data)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = fake_env(bfake, OPENAI_KEY, ANTHROPIC_KEY, HOME=str(home), TMPDIR=str(tmp),
                   XDG_CACHE_HOME=str(home / ".cache"))
    if mode == "online":
        bfake.set_faults([{"status": 401, "count": 3}])  # the body echoes the presented key
    else:
        bfake.set_faults([{"batch": "errors", "rows": 2}])
    streams = []
    first = _cmd(env, "run", str(path), "--profile", profile, "--run-id", "a")
    streams += [first.stdout, first.stderr]
    assert first.returncode == (1 if mode == "online" else 0), first.stderr
    bfake.clear_faults()
    done = _cmd(env, "run", str(path), "--profile", profile, "--run-id", "b")
    assert done.returncode == 0, done.stderr
    ledger = tmp_path / "out" / "ledger"
    for args in (
        ["status", str(path), "--profile", profile, "--run-id", "b"],
        ["plan", str(path), "--profile", profile, "--json"],
        ["report", "--run-id", "a", "--ledger", str(ledger), "--outputs",
         str(tmp_path / "out" / "outputs.parquet"), "-o", str(tmp_path / "out" / "a.html")],
        ["ledger", "query", "SELECT * FROM ledger", "--ledger", str(ledger), "--format", "csv"],
    ):
        other = _cmd(env, *args)
        assert other.returncode == 0, (args, other.stderr)
        streams += [other.stdout, other.stderr]
    streams += [done.stdout, done.stderr]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".yaml"
               and "data" not in p.relative_to(tmp_path).parts]
    names = {p.name for p in written}
    assert {"part.parquet", "outputs.parquet", "cache.db", "a.html"} <= names, names
    if mode == "batch":
        assert "state.sqlite" in names
    assert _leaking_files(tmp_path) == []
    assert [s for s in streams if _leaks(s)] == []
    ledger_a = pl.read_parquet(ledger / "pipeline=tickets" / "run_id=a" / "part.parquet")
    if mode == "online":  # the failures were recorded, key-free
        assert (ledger_a["status"] == "failed").sum() == 4
    else:
        assert ledger_a["retry_reason"].drop_nulls().len() >= 2


def test_a_401_never_echoes_the_key_on_stderr(fake, tmp_path):
    path = write_pipeline(tmp_path)
    env = fake_env(fake, OPENAI_KEY, ANTHROPIC_KEY)
    fake.set_faults([{"status": 401, "count": 20}])
    result = _cmd(env, "run", str(path), "--run-id", "a")
    assert result.returncode == 1
    assert _leaks(result.stdout + result.stderr) == [] and _leaking_files(tmp_path / "out") == []
    ledger = pl.read_parquet(tmp_path / "out" / "ledger" / "pipeline=tickets" / "run_id=a"
                             / "part.parquet")
    errors = " ".join(e for e in ledger["error"].to_list() if e)
    assert "Incorrect API key provided" in errors and _leaks(errors) == []


def test_a_masked_echo_of_the_key_is_scrubbed(fake, tmp_path):
    path = write_pipeline(tmp_path)
    env = fake_env(fake, OPENAI_KEY, ANTHROPIC_KEY)
    masked = f"Incorrect API key provided: sk-proj-{'*' * 30}{OPENAI_KEY[-8:]}."
    fake.set_faults([{"status": 401, "count": 20, "message": masked}])
    result = _cmd(env, "run", str(path), "--run-id", "a")
    assert _leaking_files(tmp_path / "out") == []
    assert _leaks(result.stdout + result.stderr) == []


# ---- the fake server listens on 127.0.0.1 only ---------------------------------------------

def _listeners(port: int) -> list[str]:
    """Local addresses of the sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, state = fields[1], fields[3]
            host, _, hex_port = address.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(host)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_fake_server_in_a_thread_listens_on_loopback_only(fake_server):
    assert _listeners(fake_server.port) == ["0100007F"]  # 127.0.0.1, little-endian hex


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc")
def test_fake_server_command_listens_on_loopback_only(tmp_path):
    child = subprocess.Popen([str(BATCHOPT), "fake-server", "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("fake server listening on http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        assert _listeners(port) == ["0100007F"]
    finally:
        child.terminate()
        child.wait(timeout=10)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.org"])
def test_fake_server_refuses_any_other_host(host):
    tally.add("bad inputs tried")
    result = invoke(["fake-server", "--host", host], {})
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: fake-server --host {host}: refused; the fake server answers any API key, so it "
        "listens on 127.0.0.1 only")


def test_fake_server_accepts_the_loopback_names():
    help_text = invoke(["fake-server", "--help"], {}).output
    assert "--host" in help_text and "127.0.0.1" in help_text
