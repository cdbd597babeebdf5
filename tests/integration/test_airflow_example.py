"""The example Airflow DAG (examples/airflow/batchopt_nightly.py).

The syntax check always runs. The rest needs Airflow, which `make test` installs in a venv of
its own (.venv-airflow, as Airflow advises) and runs this file with; elsewhere they skip. With it,
`dag.test()` runs the DAG against a fake `batchopt` (a shell script that follows the exit-code
contract and logs its calls) and against the real CLI and the fake provider server:

    make .venv-airflow/.installed && \
        .venv-airflow/bin/python -m pytest tests/integration/test_airflow_example.py

AIRFLOW_HOME defaults to a temporary folder here; its SQLite database is migrated once.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.airflow

ROOT = Path(__file__).resolve().parents[2]
DAG_DIR = ROOT / "examples" / "airflow"
DAG_FILE = DAG_DIR / "batchopt_nightly.py"


def test_dag_file_parses_and_names_its_tasks():
    tree = ast.parse(DAG_FILE.read_text(), filename=str(DAG_FILE))
    assert ast.get_docstring(tree)
    task_ids = {
        kw.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "task_id" and isinstance(kw.value, ast.Constant)
    }
    assert task_ids == {"submit", "wait_for_batches", "collect"}


# ---- with Airflow -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow() -> Iterator[ModuleType]:
    """Airflow with a migrated SQLite database in AIRFLOW_HOME (a temporary folder by default)
    and examples/airflow as its DAGs folder. Set before Airflow is first imported: it reads its
    configuration then."""
    if importlib.util.find_spec("airflow") is None:
        pytest.skip("Airflow is not installed")
    with (
        tempfile.TemporaryDirectory(prefix="batchopt-airflow-") as home,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("AIRFLOW_HOME", os.environ.get("AIRFLOW_HOME", home))
        env.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAG_DIR))
        env.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        module = pytest.importorskip("airflow")
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield module


def _load_dag(monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[ModuleType, Any]:
    """Import the DAG file afresh with `env` set (the poke interval is read at parse time)."""
    monkeypatch.setenv("BATCHOPT_POKE_SECONDS", "1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("batchopt_nightly", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.dag


def _run_dag(dag: Any, day: int, conf: dict[str, str]) -> str:
    """dag.test() for 2026-11-`day` with `conf` overriding params; the run's final state.

    Each test has its own day: Airflow 2.11's dag.test() fails to clear an earlier run of the same
    day (NoReferencedTableError for ab_user)."""
    logical_date = datetime(2026, 11, day, tzinfo=UTC)
    parameters = inspect.signature(dag.test).parameters
    date_arg = "logical_date" if "logical_date" in parameters else "execution_date"  # Airflow 2
    run = dag.test(**{date_arg: logical_date}, run_conf=conf)
    return str(run.state)


FAKE_BATCHOPT = r"""#!/usr/bin/env bash
# A fake batchopt that follows the contract: the first `run --no-wait` submits (75); `status`
# says 75 for PENDING calls, then FINAL (0: nothing left to wait for); `run --wait` collects and
# finishes (0). A run id never submitted is exit 2.
here="$(dirname "$0")"
pending=__PENDING__
final=__FINAL__
run_id=""
prev=""
for arg in "$@"; do
  [ "$prev" = "--run-id" ] && run_id="$arg"
  prev="$arg"
done
polls=$(cat "$here/polls" 2>/dev/null || echo 0)
case "$1" in
  run)
    if [[ " $* " == *" --no-wait "* ]]; then
      if [ ! -e "$here/submitted-$run_id" ]; then touch "$here/submitted-$run_id"; rc=75
      elif [ -e "$here/finished-$run_id" ]; then rc=0
      else rc=75
      fi
    elif [ -e "$here/submitted-$run_id" ]; then touch "$here/finished-$run_id"; rc=0
    else rc=2
    fi ;;
  status)
    if [ ! -e "$here/submitted-$run_id" ]; then rc=2
    elif [ -e "$here/finished-$run_id" ]; then rc=0
    else
      polls=$((polls + 1)); echo "$polls" > "$here/polls"
      if [ "$polls" -le "$pending" ]; then rc=75; else rc=$final; fi
    fi ;;
  *) rc=2 ;;
esac
{ printf '%s\t' "$rc"; printf '%q ' "$@"; printf '\n'; } >> "$here/calls.log"
exit "$rc"
"""


def _fake_batchopt(folder: Path, pending: int, final: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "batchopt"
    text = FAKE_BATCHOPT.replace("__PENDING__", str(pending)).replace("__FINAL__", str(final))
    script.write_text(text)
    script.chmod(0o755)
    return script


def _calls(log: Path) -> list[tuple[int, list[str]]]:
    """(exit code, argv) of each logged call, in order."""
    if not log.exists():
        return []
    calls = []
    for line in log.read_text().splitlines():
        rc, _, args = line.partition("\t")
        calls.append((int(rc), shlex.split(args)))  # bash's printf %q quoting
    return calls


def _run_ids(calls: list[tuple[int, list[str]]]) -> set[str]:
    return {argv[argv.index("--run-id") + 1] for _, argv in calls}


def _kind(argv: list[str]) -> str:
    if argv[0] == "run":
        return "run --no-wait" if "--no-wait" in argv else "run --wait"
    return argv[0]


def test_dag_has_three_tasks_in_order_with_the_contract_commands(airflow, monkeypatch):
    _, dag = _load_dag(monkeypatch)
    assert dag.dag_id == "batchopt_nightly"
    assert set(dag.task_dict) == {"submit", "wait_for_batches", "collect"}
    submit, wait, collect = (dag.task_dict[t] for t in ("submit", "wait_for_batches", "collect"))
    assert submit.downstream_task_ids == {"wait_for_batches"}
    assert wait.downstream_task_ids == {"collect"}
    assert collect.downstream_task_ids == set()
    assert not dag.catchup
    assert wait.mode == "reschedule"
    assert wait.timeout == 25 * 3600
    assert wait.poke_interval == 1  # BATCHOPT_POKE_SECONDS
    for task in (submit, collect):
        assert not task.skip_on_exit_code  # exit 99 must not turn into "skipped"
    assert '"$BATCHOPT" run' in submit.bash_command
    assert "--run-id {{ ds_nodash }} --date {{ ds }}" in submit.bash_command
    assert "--mode batch --no-wait" in submit.bash_command
    assert '[ "$rc" -eq 75 ]' in submit.bash_command
    assert "--mode batch --wait" in collect.bash_command
    assert wait.retry_exit_code == 75  # pending: poke again; any other failure fails at once
    # The sensor asks `status` (spends nothing); `collect` then collects and finishes.
    assert '"$BATCHOPT" status' in wait.bash_command
    assert "--run-id {{ ds_nodash }}" in wait.bash_command


def test_dag_runs_the_contract_with_one_run_id(airflow, monkeypatch, tmp_path):
    fake = _fake_batchopt(tmp_path / "bin", pending=2, final=0)
    _, dag = _load_dag(monkeypatch, BATCHOPT_BIN=str(fake))
    pipeline = tmp_path / "my pipelines" / "nightly.yaml"  # a space: the path must be quoted
    state = _run_dag(dag, 24, {"pipeline": str(pipeline), "profile": "openai"})

    calls = _calls(fake.parent / "calls.log")
    assert state == "success", calls
    assert [(rc, _kind(argv)) for rc, argv in calls] == [
        (75, "run --no-wait"),  # submit: 75 counts as success
        (75, "status"),  # wait_for_batches: pending, rescheduled
        (75, "status"),
        (0, "status"),  # nothing left to wait for
        (0, "run --wait"),  # collect: collected and finished
    ]
    assert _run_ids(calls) == {"20261124"}  # {{ ds_nodash }}
    assert {argv[argv.index("--date") + 1] for _, argv in calls} == {"2026-11-24"}  # {{ ds }}
    for _, argv in calls:
        assert argv[1] == str(pipeline)
        assert argv[argv.index("--profile") + 1] == "openai"
        if argv[0] == "run":
            assert argv[argv.index("--mode") + 1] == "batch"


def test_a_failing_poll_fails_the_sensor_at_once(airflow, monkeypatch, tmp_path):
    fake = _fake_batchopt(tmp_path / "bin", pending=1, final=2)
    _, dag = _load_dag(monkeypatch, BATCHOPT_BIN=str(fake))
    state = _run_dag(dag, 23, {"pipeline": str(tmp_path / "p.yaml"), "profile": ""})

    calls = _calls(fake.parent / "calls.log")
    assert state == "failed", calls
    # No retry of the sensor, no wait for the 25 h timeout, no collect.
    assert [(rc, _kind(argv)) for rc, argv in calls] == [
        (75, "run --no-wait"),
        (75, "status"),
        (2, "status"),
    ]
    assert all("--profile" not in argv for _, argv in calls)


# ---- with Airflow and the real batchopt CLI ---------------------------------------------------


def _batch_cli_available() -> bool:
    try:
        from batchopt.cli.main import main
    except ImportError:
        return False
    run = main.commands.get("run")
    return (
        "status" in main.commands
        and run is not None
        and any("--no-wait" in getattr(p, "secondary_opts", []) for p in run.params)
    )


REAL_BATCHOPT = """#!/usr/bin/env bash
# The real batchopt CLI (this interpreter's), logging each call and its exit code.
"__PYTHON__" -c 'import sys; sys.argv[0]="batchopt"; from batchopt.cli.main import main; main()' \\
    "$@"
rc=$?
{ printf '%s\\t' "$rc"; printf '%q ' "$@"; printf '\\n'; } >> "$(dirname "$0")/calls.log"
exit "$rc"
"""


def test_dag_runs_the_real_cli_against_the_fake_provider(airflow, monkeypatch, tmp_path, request):
    if not _batch_cli_available():
        pytest.skip("this batchopt has no batch mode (run --no-wait, status) yet")
    from helpers import write_pipeline

    fake = request.getfixturevalue("fake")
    folder = tmp_path / "project dir"
    pipeline = write_pipeline(folder)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "batchopt"
    wrapper.write_text(REAL_BATCHOPT.replace("__PYTHON__", sys.executable))
    wrapper.chmod(0o755)
    log = bin_dir / "calls.log"

    monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-openai-key")
    previous = fake.batch_seconds
    fake.batch_seconds = 8  # a call takes about 3 s: pending for a poke or two
    try:
        _, dag = _load_dag(monkeypatch, BATCHOPT_BIN=str(wrapper))
        # A relative pipeline path, resolved in project_dir (tasks run in a temporary folder).
        state = _run_dag(dag, 22, {"pipeline": pipeline.name, "project_dir": str(folder)})
    finally:
        fake.batch_seconds = previous

    calls = _calls(log)
    assert state == "success", calls
    kinds = [(rc, _kind(argv)) for rc, argv in calls]
    assert kinds[0] == (75, "run --no-wait")  # submitted, pending
    assert (75, "status") in kinds[1:-2]  # the sensor waited at least once
    assert kinds[-2:] == [(0, "status"), (0, "run --wait")]
    run_id = "20261122"
    assert _run_ids(calls) == {run_id}
    assert (folder / "out" / "outputs.parquet").exists()
    assert any(p.name == f"run_id={run_id}" for p in (folder / "out" / "ledger").rglob("*"))
    stats = fake.stats()
    assert stats["batches_created"] == 1
    assert stats["by_wire"]["openai-batch"]["requests"] == stats["requests"] > 0

    # The same night again (a cleared DAG run, a retry): nothing submitted or paid again.
    rerun = subprocess.run(
        [str(wrapper), "run", pipeline.name, "--run-id", run_id, "--mode", "batch", "--no-wait"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert fake.stats()["batches_created"] == 1
    assert fake.stats()["requests"] == stats["requests"]
    status = subprocess.run(
        [str(wrapper), "status", pipeline.name, "--run-id", run_id],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stdout + status.stderr


def test_dag_backfills_three_nights_of_a_cascade_across_providers(airflow, monkeypatch, tmp_path,
                                                                   request):
    """Three nights of a batch cascade openai -> anthropic -> openai, one DAG run a night as a
    backfill runs them: each night reads its own partition (`${date}`), the sensor never sees
    exit 1, and the ledger counts each night on its own day."""
    import polars as pl
    import yaml
    from helpers import pipeline_dict

    from batchopt.ledger.store import connect

    fake = request.getfixturevalue("fake")
    folder = tmp_path / "project"
    nights = {17: "2026-11-17", 18: "2026-11-18", 19: "2026-11-19"}
    data = pipeline_dict(
        routing={"strategy": "cascade", "tiers": ["cheap", "mid", "strong"],
                 "validators": [{"type": "finish_reason"}]},
        execution={"mode": "batch", "poll_seconds": 0.2},
    )
    data["input"]["path"] = "data/day=${date}"
    data["output"]["path"] = "out/day=${date}/outputs.parquet"
    data["profiles"] = {  # cheap and mid cut every answer short: each row visits all three
        "cheap": {"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 4},
        "mid": {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "max_tokens": 4},
        "strong": {"provider": "openai", "model": "gpt-4o", "max_tokens": 64},
    }
    data["default_profile"] = "cheap"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(data))
    for day, night in nights.items():
        (folder / "data" / f"day={night}").mkdir(parents=True)
        pl.DataFrame([{"ticket_id": f"{day}-{i}", "subject": "Order",
                       "body": f"Night {night}: where is order #{day * 100 + i}?"}
                      for i in range(day - 14)]).write_parquet(
            folder / "data" / f"day={night}" / "part.parquet")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "batchopt"
    wrapper.write_text(REAL_BATCHOPT.replace("__PYTHON__", sys.executable))
    wrapper.chmod(0o755)
    for name, value in (("OPENAI_BASE_URL", fake.openai_base_url), ("OPENAI_API_KEY", "sk-o"),
                        ("ANTHROPIC_BASE_URL", fake.anthropic_base_url),
                        ("ANTHROPIC_API_KEY", "sk-ant-a")):
        monkeypatch.setenv(name, value)
    previous = fake.batch_seconds
    fake.batch_seconds = 4  # pending for a poke or two
    try:
        _, dag = _load_dag(monkeypatch, BATCHOPT_BIN=str(wrapper))
        states = [_run_dag(dag, day, {"pipeline": "pipeline.yaml", "project_dir": str(folder)})
                  for day in nights]
    finally:
        fake.batch_seconds = previous

    calls = _calls(bin_dir / "calls.log")
    assert states == ["success"] * 3, calls
    assert all(rc in (0, 75) for rc, _ in calls), calls  # the sensor never saw 1 (nor 2)
    assert _run_ids(calls) == {night.replace("-", "") for night in nights.values()}
    for day, night in nights.items():
        outputs = pl.read_parquet(folder / "out" / f"day={night}" / "outputs.parquet")
        assert sorted(outputs["ticket_id"]) == sorted(f"{day}-{i}" for i in range(day - 14))
        assert outputs["summary"].null_count() == 0
    assert fake.stats()["batches_created"] == 9  # three tiers a night, each once
    con = connect(folder / "out" / "ledger")
    trend = con.sql("SELECT CAST(day AS VARCHAR), runs, rows FROM daily_trend ORDER BY day")
    assert trend.fetchall() == [(night, 1, day - 14) for day, night in nights.items()]
    bill = fake.bill()
    assert set(bill["by_model"]) == {"gpt-4o-mini", "claude-3-5-haiku-20241022", "gpt-4o"}
    ((spent,),) = con.sql("SELECT sum(cost_usd) FROM ledger").fetchall()
    assert abs(spent - bill["batch_usd"]) < 1e-12 and bill["online_usd"] == 0
