"""`batchopt distill train`: a fine-tuning job on an exported set, across invocations.

A training job is a state machine in `<cache>/<pipeline>/distill/<fingerprint>/state.sqlite`
(the run state of `execute.state`; its `meta` table), the fingerprint being that of the training
and validation files, the base model, the endpoint and the suffix. Like a batch submission:

    1. the files are uploaded (purpose `fine-tune`) and their ids recorded;
    2. the intent to create the job (its tag) is recorded before the create call;
    3. the job id is recorded the moment the create call returns;
    4. the job is polled until it ends; its fine-tuned model id is recorded.

So every invocation with the same files and base model moves the same job on and never creates
a second one: a process killed after step 3 polls the job it recorded; one killed between 2 and
3 (the create call answered, the id never written) finds the job by its tag (`metadata`) and
adopts it; after success the model id is printed and nothing is created or asked. `--no-wait`
returns pending (exit 75) while the job trains; `RunLock` keeps two processes off one job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchopt.distill.export import TRAIN_FILE, VALIDATION_FILE
from batchopt.errors import (
    EXIT_OK,
    EXIT_PENDING,
    ConfigError,
    TerminalProviderError,
    TransientProviderError,
)
from batchopt.execute.state import RunLock, RunState
from batchopt.hashing import stable_hash

if TYPE_CHECKING:
    from batchopt.config.pipeline import LoadedPipeline
    from batchopt.providers.base import ProviderSettings
    from batchopt.providers.finetune import JobStatus, OpenAIFineTuner

TAG_KEY = "batchopt_distill"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """One `distill train` invocation."""

    data: Path
    tier: str
    base_model: str | None = None
    suffix: str | None = None
    wait: bool = True
    poll_seconds: float = 30.0
    cache_dir: Path | None = None


@dataclass(frozen=True)
class TrainOutcome:
    """Where the job stands after this invocation."""

    job_id: str
    status: str
    base_model: str
    fine_tuned_model: str | None
    state_dir: Path
    created: bool  # this invocation created the job
    adopted: bool  # found by its tag after a create call whose answer was lost
    trained_tokens: int | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.fine_tuned_model else EXIT_PENDING


def train(loaded: LoadedPipeline, options: TrainOptions, env: dict[str, str] | None = None,
          make_tuner: Callable[[ProviderSettings], OpenAIFineTuner] | None = None
          ) -> TrainOutcome:
    """Move the fine-tuning job of `options.data` on (see the module docstring)."""
    import os

    from batchopt.providers.registry import traits_of
    from batchopt.run.settings import provider_settings

    env = dict(os.environ) if env is None else env
    name, profile = loaded.profile(options.tier)
    if not traits_of(profile.provider, profile.model).capabilities.fine_tuning:
        raise ConfigError(f"distill train --tier {name}: fine-tuning needs an openai profile, "
                          f"not provider '{profile.provider}'")
    settings = provider_settings(name, profile, env)
    train_bytes, validation_bytes = _read_set(options.data)
    base = options.base_model or profile.model
    fingerprint = stable_hash({
        "train": stable_hash(train_bytes.decode("utf-8", "replace")),
        "validation": stable_hash(validation_bytes.decode("utf-8", "replace")),
        "base": base, "endpoint": settings.base_url, "suffix": options.suffix,
    }, 16)
    cache = options.cache_dir or loaded.resolve(loaded.config.cache.path)
    directory = cache / loaded.config.name / "distill" / fingerprint
    with RunLock(directory, f"distill-{fingerprint}"):
        state = RunState.open(directory)
        try:
            done = state.get("done")
            if done is not None:  # finished before: say so, ask nothing
                return TrainOutcome(done["job_id"], "succeeded", done["base_model"],
                                    done["fine_tuned_model"], directory, False, False,
                                    done.get("trained_tokens"))
            if make_tuner is None:
                from batchopt.providers.finetune import OpenAIFineTuner

                make_tuner = OpenAIFineTuner
            tuner = make_tuner(settings)
            try:
                job_id, created, adopted = _job(state, tuner, fingerprint, base, options,
                                                train_bytes, validation_bytes)
                status = _follow(tuner, job_id, options)
            finally:
                tuner.close()
            return _settle(state, status, directory, created, adopted)
        finally:
            state.close()


def _read_set(folder: Path) -> tuple[bytes, bytes]:
    train_path = folder / TRAIN_FILE
    if not train_path.is_file():
        raise ConfigError(f"--data {folder}: no {TRAIN_FILE} (write one with "
                          "`batchopt distill export`)")
    validation_path = folder / VALIDATION_FILE
    validation = validation_path.read_bytes() if validation_path.is_file() else b""
    return train_path.read_bytes(), validation


def _job(state: RunState, tuner: OpenAIFineTuner, fingerprint: str, base: str,
         options: TrainOptions, train_bytes: bytes, validation_bytes: bytes
         ) -> tuple[str, bool, bool]:
    """(the job's id, whether this call created it, whether it adopted it by its tag)."""
    job = state.get("job")
    if job is not None:
        return str(job["job_id"]), False, False
    tag = {TAG_KEY: fingerprint}
    if state.get("intent") is not None:  # a create call may have made it: find it first
        found = tuner.find_jobs(tag)
        if found:
            state.set("job", {"job_id": found[0], "adopted": True})
            return found[0], False, True
    files = state.get("files")
    if files is None:
        files = {"train": tuner.upload(f"batchopt-{fingerprint}-train.jsonl", train_bytes),
                 "validation": tuner.upload(f"batchopt-{fingerprint}-validation.jsonl",
                                            validation_bytes) if validation_bytes else None}
        state.set("files", files)
    state.set("intent", {"tag": tag, "base_model": base, "at": time.time()})
    job_id = tuner.create(base, files["train"], files["validation"], tag, options.suffix)
    state.set("job", {"job_id": job_id, "adopted": False})
    return job_id, True, False


def _follow(tuner: OpenAIFineTuner, job_id: str, options: TrainOptions) -> JobStatus:
    """The job's status: once, or (waiting) until it ends. A transient failure to ask counts as
    still training."""
    from batchopt.providers.finetune import JobStatus

    while True:
        try:
            status = tuner.retrieve(job_id)
        except TransientProviderError as exc:
            log.warning("warning: could not ask about fine-tuning job %s (%s); it is still "
                        "recorded", job_id, exc)
            status = JobStatus(job_id, "unknown", "")
        if status.ended or not options.wait:
            return status
        time.sleep(options.poll_seconds)


def _settle(state: RunState, status: JobStatus, directory: Path, created: bool,
            adopted: bool) -> TrainOutcome:
    if status.status == "succeeded" and status.fine_tuned_model:
        state.set("done", {"job_id": status.job_id, "base_model": status.base_model,
                           "fine_tuned_model": status.fine_tuned_model,
                           "trained_tokens": status.trained_tokens})
    elif status.ended:
        state.set("ended", {"job_id": status.job_id, "status": status.status,
                            "error": status.error})
        raise TerminalProviderError(
            f"fine-tuning job {status.job_id} {status.status}"
            + (f": {status.error}" if status.error else "")
            + f"; to try again with a new job, remove {directory}")
    return TrainOutcome(status.job_id, status.status, status.base_model, status.fine_tuned_model,
                        directory, created, adopted, status.trained_tokens)


def profile_snippet(loaded: LoadedPipeline, tier: str, model: str, profile_name: str,
                    teacher: str | None = None) -> str:
    """YAML for a profile that uses fine-tuned `model` through `tier`'s endpoint and key, asked
    as the `teacher` was (its own prompt variant and max_tokens, if it has them), and the price
    assumed for it."""
    import yaml

    from batchopt.distill.ftprice import assumed_price
    from batchopt.ledger.pricing import PriceTable

    profiles = loaded.config.profiles
    source = profiles[tier]
    asked = profiles.get(teacher or "", source)
    profile: dict[str, Any] = {"provider": "openai", "model": model}
    for key in ("base_url", "api_key_env", "concurrency", "timeout_s"):
        if getattr(source, key) is not None:
            profile[key] = getattr(source, key)
    profile["max_tokens"], profile["temperature"] = asked.max_tokens, asked.temperature
    for key in ("system", "template", "context"):
        if getattr(asked, key) is not None:
            profile[key] = getattr(asked, key)
    if asked.examples is not None:
        profile["examples"] = [e.model_dump() for e in asked.examples]
    overrides = {n: p.model_dump() for n, p in loaded.config.pricing.models.items()}
    price = assumed_price(PriceTable.load(overrides=overrides), "openai", model)
    text = yaml.safe_dump({"profiles": {profile_name: profile},
                           "pricing": {"models": {model: price}}}, sort_keys=False)
    return text + ("# the price is assumed from the base model's (batchopt/distill/ftprice.py);"
                   " check it\n")
