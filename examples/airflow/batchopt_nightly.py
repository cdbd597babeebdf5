"""Nightly batchopt pipeline through the providers' batch APIs (Airflow 2.7+ and 3.x).

    submit            batchopt run PIPELINE --run-id {{ ds_nodash }} --date {{ ds }} --mode batch
                      --no-wait
    wait_for_batches  batchopt status PIPELINE --run-id ... --date ..., every poke, until 0
    collect           batchopt run PIPELINE --run-id ... --date ... --mode batch --wait

The contract: `run --no-wait` submits and exits 75 while batches are out at the provider;
`status` exits 75 while there is something to wait for (batches still running, or another
process advancing the run) and 0 once there is not; the final `run` collects the batches and
writes the outputs and the ledger (0). The run id is the logical date, so every poke, retry or
clear of a night's tasks resumes that night's run: batches already submitted are polled and
collected, never submitted or paid for twice. `--date {{ ds }}` is that night for batchopt:
`${date}` in the pipeline's paths (`input.path: data/day=${date}`), the ledger's logical_date
and the report's days, so a backfill (`airflow dags backfill`) reads and counts each night.
1 is a run that finished with too many failed rows, 2 a config or usage error; both fail the
task.

Settings, read when the DAG file is parsed (set them for the scheduler and the workers alike):
    BATCHOPT_PIPELINE       pipeline YAML (default pipelines/summarize.yaml; a trigger may override
                            it as the `pipeline` param). A relative path needs BATCHOPT_PROJECT_DIR.
    BATCHOPT_PROFILE        profile from the YAML (default: the YAML's default_profile)
    BATCHOPT_PROJECT_DIR    folder the commands run in (Airflow runs them in a temporary folder)
    BATCHOPT_POKE_SECONDS   how often wait_for_batches re-runs (default 600)
Read when a task runs: BATCHOPT_BIN, the batchopt executable (default `batchopt` on PATH).
"""

from __future__ import annotations

import os
import shlex
from datetime import timedelta

import pendulum

try:  # Airflow 3, or Airflow 2 with apache-airflow-providers-standard
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.sensors.bash import BashSensor
except ImportError:  # Airflow 2 without the standard provider
    from airflow.operators.bash import BashOperator
    from airflow.sensors.bash import BashSensor

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

EXIT_DONE = 0
EXIT_PENDING = 75  # EX_TEMPFAIL: batches still out at the provider; run again with the same id
POKE_SECONDS = float(os.environ.get("BATCHOPT_POKE_SECONDS", "600"))
WAIT_TIMEOUT = timedelta(hours=25)  # the providers' 24 h batch window, plus slack

# Every command: go to the project folder (if one is set), then call batchopt with the night's
# run id. Values from params are shell-quoted (the `shquote` filter below).
_PREAMBLE = (
    "{% if params.project_dir %}cd {{ params.project_dir | shquote }} || exit 2\n{% endif %}"
    'BATCHOPT="${BATCHOPT_BIN:-batchopt}"\n'
)
_ARGS = (
    "{{ params.pipeline | shquote }} --run-id {{ ds_nodash }} --date {{ ds }}"
    "{% if params.profile %} --profile {{ params.profile | shquote }}{% endif %}"
)

# 75 (pending) is a success for submit: the sensor waits for the batches. Any other non-zero
# code fails the task. (BashOperator would skip on 99; skip_on_exit_code=None turns that off.)
SUBMIT_COMMAND = (
    _PREAMBLE + '"$BATCHOPT" run ' + _ARGS + " --mode batch --no-wait\n"
    "rc=$?\n"
    f'if [ "$rc" -eq {EXIT_DONE} ] || [ "$rc" -eq {EXIT_PENDING} ]; then exit 0; fi\n'
    'exit "$rc"\n'
)
# Asks the provider about the batches; spends nothing. 75: poke again later; 0: nothing left to
# wait for; anything else fails the sensor at once.
STATUS_COMMAND = _PREAMBLE + '"$BATCHOPT" status ' + _ARGS + "\n"
# Collects the ended batches and writes outputs and ledger (blocks if the sensor was marked
# successful by hand while batches were out). On a finished run it sends and spends nothing.
COLLECT_COMMAND = _PREAMBLE + '"$BATCHOPT" run ' + _ARGS + " --mode batch --wait\n"


with DAG(
    dag_id="batchopt_nightly",
    description="Nightly batchopt pipeline through the providers' batch APIs",
    schedule="@daily",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "pipeline": os.environ.get("BATCHOPT_PIPELINE", "pipelines/summarize.yaml"),
        "profile": os.environ.get("BATCHOPT_PROFILE", ""),
        "project_dir": os.environ.get("BATCHOPT_PROJECT_DIR", ""),
    },
    user_defined_filters={"shquote": lambda value: shlex.quote(str(value))},
    tags=["batchopt"],
) as dag:
    submit = BashOperator(task_id="submit", bash_command=SUBMIT_COMMAND, skip_on_exit_code=None)
    # retry_exit_code (Airflow 2.7+): 75 pokes again later; any other non-zero code fails the
    # sensor at once (without it, every non-zero code would poke again until the timeout).
    wait_for_batches = BashSensor(
        task_id="wait_for_batches",
        bash_command=STATUS_COMMAND,
        retry_exit_code=EXIT_PENDING,
        mode="reschedule",
        poke_interval=POKE_SECONDS,
        timeout=WAIT_TIMEOUT.total_seconds(),
    )
    collect = BashOperator(task_id="collect", bash_command=COLLECT_COMMAND, skip_on_exit_code=None)

    submit >> wait_for_batches >> collect
