"""`batchopt distill train`: a fine-tuning job on the fake server through the real SDK, with the
submit-and-exit contract of batch runs: exit 75 while training, the job id recorded the moment
it is created, never a second job for the same set, the model id once it is done."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_distill_export import KEY, cli, env_for, run_twice

from batchopt.config.pipeline import load_pipeline
from batchopt.distill.export import export
from batchopt.distill.train import TrainOptions, train
from batchopt.errors import EXIT_FAILED_ROWS, EXIT_PENDING, EXIT_USAGE, TransientProviderError
from batchopt.execute.state import RunState
from batchopt.providers.finetune import OpenAIFineTuner

MODEL = re.compile(r"fine-tuned model: (ft:gpt-4o-mini:batchopt::\S+) \(job (ftjob-\S+?)[,)]")


@pytest.fixture
def exported(fake, tmp_path) -> tuple[Path, Path]:
    """(the pipeline, the folder of its exported set)."""
    path = run_twice(fake, tmp_path)
    export(load_pipeline(path), tmp_path / "set", env=env_for(fake))
    return path, tmp_path / "set"


def _states(folder: Path) -> list[Path]:
    return sorted((folder / "out" / "cache" / "tickets" / "distill").glob("*"))


def _recorded_job(folder: Path) -> str | None:
    for directory in _states(folder):
        if not (directory / "state.sqlite").exists():
            continue
        try:
            state = RunState.open(directory)
        except Exception:  # noqa: BLE001 - being created by the child at this moment
            continue
        try:
            job = state.get("job")
        finally:
            state.close()
        if job:
            return str(job["job_id"])
    return None


def _train(path: Path, data: Path, *extra: str) -> list[str]:
    return ["distill", "train", str(path), "--data", str(data), "--tier", "cheap",
            "--poll-seconds", "0.1", *extra]


def test_no_wait_exits_75_while_training_then_gives_the_model_and_creates_nothing_more(
    fake, tmp_path, exported
):
    path, data = exported
    env = env_for(fake)
    fake.batch_seconds = 5.0
    first = cli(env, *_train(path, data, "--no-wait"))
    assert first.returncode == EXIT_PENDING, first.stderr
    assert fake.stats()["fine_tuning_jobs_created"] == 1
    job = _recorded_job(tmp_path)
    assert job is not None and f"fine-tuning job {job} (created)" in first.stdout

    # still training (in this process: a second CLI start may outlast the job): polled, not made
    again = train(load_pipeline(path), TrainOptions(data=data, tier="cheap", wait=False), env)
    assert again.exit_code == EXIT_PENDING and again.job_id == job and not again.created
    assert again.status in ("validating_files", "running")
    assert fake.stats()["fine_tuning_jobs_created"] == 1

    deadline = time.time() + 30
    while not fake.stats()["fine_tuned_models"] and time.time() < deadline:
        time.sleep(0.1)
    done = cli(env, *_train(path, data, "--no-wait"))
    assert done.returncode == 0, done.stderr
    model, done_job = MODEL.search(done.stdout).groups()
    assert done_job == job and model.endswith(job.removeprefix("ftjob-"))
    snippet = yaml.safe_load(done.stdout.split("\n\n", 1)[1])
    assert snippet["profiles"]["student"]["model"] == model
    assert snippet["profiles"]["student"]["provider"] == "openai"
    assert snippet["pricing"]["models"][model]["input"] == pytest.approx(0.30)  # 2 x gpt-4o-mini

    after = cli(env, *_train(path, data))  # done before: prints the model, asks nothing
    assert after.returncode == 0 and MODEL.search(after.stdout).groups() == (model, job)
    assert fake.stats()["fine_tuning_jobs_created"] == 1 and fake.stats()["fine_tuned_models"] == 1
    for file in (tmp_path / "out" / "cache" / "tickets" / "distill").rglob("*"):
        assert not file.is_file() or KEY.encode() not in file.read_bytes(), file


def test_a_run_killed_between_creating_the_job_and_its_end_follows_the_same_job(
    fake, tmp_path, exported
):
    from test_distill_export import BATCHOPT

    path, data = exported
    env = env_for(fake)
    fake.batch_seconds = 4.0
    child = subprocess.Popen([str(BATCHOPT), *_train(path, data)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _recorded_job(tmp_path) is None and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL  # killed while it waited for the job
    job = _recorded_job(tmp_path)
    assert job is not None and fake.stats()["fine_tuning_jobs_created"] == 1

    done = cli(env, *_train(path, data))
    assert done.returncode == 0, done.stderr
    assert MODEL.search(done.stdout).group(2) == job
    assert fake.stats()["fine_tuning_jobs_created"] == 1


class _LosesTheAnswer(OpenAIFineTuner):
    """The create call reaches the provider, but its answer never comes back."""

    def create(self, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
        super().create(*args, **kwargs)
        raise TransientProviderError("openai fine-tuning: connection failed: reset by peer")


def test_a_job_whose_create_answer_was_lost_is_found_by_its_tag_not_created_again(
    fake, exported
):
    path, data = exported
    loaded, env = load_pipeline(path), env_for(fake)
    options = TrainOptions(data=data, tier="cheap", wait=False)
    fake.batch_seconds = 0.3
    with pytest.raises(TransientProviderError):
        train(loaded, options, env, make_tuner=_LosesTheAnswer)
    assert fake.stats()["fine_tuning_jobs_created"] == 1
    resumed = train(loaded, options, env)
    assert resumed.adopted and not resumed.created
    time.sleep(0.35)
    done = train(loaded, options, env)
    assert done.fine_tuned_model and done.job_id == resumed.job_id
    assert fake.stats()["fine_tuning_jobs_created"] == 1


def test_a_failed_job_says_why_and_is_not_created_again(fake, tmp_path, exported):
    path, data = exported
    lines = (data / "train.jsonl").read_text().splitlines()[:3]
    small = tmp_path / "small"
    small.mkdir()
    (small / "train.jsonl").write_text("\n".join(lines) + "\n")
    fake.batch_seconds = 0.2
    env = env_for(fake)
    for _ in range(2):
        done = cli(env, *_train(path, small))
        assert done.returncode == EXIT_FAILED_ROWS
        assert "failed: the training file has 3 example(s)" in done.stderr
        assert "remove" in done.stderr
    assert fake.stats()["fine_tuning_jobs_created"] == 1


def test_a_tier_that_is_not_openai_or_a_missing_set_is_a_usage_error(fake, tmp_path, exported):
    path, data = exported
    env = env_for(fake)
    wrong_tier = cli(env, "distill", "train", str(path), "--data", str(data), "--tier",
                     "anthropic")
    assert wrong_tier.returncode == EXIT_USAGE and "needs an openai profile" in wrong_tier.stderr
    no_set = cli(env, *_train(path, tmp_path / "nothing"))
    assert no_set.returncode == EXIT_USAGE and "no train.jsonl" in no_set.stderr
    assert fake.stats()["fine_tuning_jobs_created"] == 0


def _lines(n: int) -> bytes:
    import json

    return b"".join(json.dumps({"messages": [
        {"role": "user", "content": f"Q{i:03d}: which label?"},
        {"role": "assistant", "content": "refund"}]}).encode() + b"\n" for i in range(n))


def test_the_fake_lists_by_tag_cancels_and_judges_a_fine_tuned_model_like_its_base_or_better(
    fake
):
    from batchopt.providers.base import ProviderSettings

    fake.batch_seconds = 0.3
    tuner = OpenAIFineTuner(ProviderSettings("openai", "gpt-4o-mini",
                                             base_url=fake.openai_base_url, api_key="sk-x"))
    try:
        upload = tuner.upload("train.jsonl", _lines(12))
        kept = tuner.create("gpt-4o-mini", upload, None, {"batchopt_distill": "a"})
        dropped = tuner.create("gpt-4o-mini", upload, None, {"batchopt_distill": "b"})
        assert tuner.find_jobs({"batchopt_distill": "a"}) == [kept]
        assert tuner.cancel(dropped).status == "cancelled"
        time.sleep(0.35)
        made = tuner.retrieve(kept)
        assert made.status == "succeeded" and tuner.retrieve(dropped).status == "cancelled"
    finally:
        tuner.close()
    assert fake.stats()["fine_tuning_jobs_created"] == 2 and fake.stats()["fine_tuned_models"] == 1
    items = [{"match": f"Q{i:03d}:", "answer": "refund", "difficulty": "hard"} for i in range(200)]
    fake.set_oracle(items, models={"gpt-4o-mini": {"hard": 0.5}, "ft:gpt-4o-mini": {"hard": 0.8}})
    base_right = {i for i in range(200)
                  if fake.oracle_verdict("gpt-4o-mini", f"Q{i:03d}:")[0] == "right"}
    tuned_right = {i for i in range(200)
                   if fake.oracle_verdict(made.fine_tuned_model, f"Q{i:03d}:")[0] == "right"}
    assert base_right < tuned_right  # right wherever its base is, and on more
    assert 0.7 < len(tuned_right) / 200 < 0.9
