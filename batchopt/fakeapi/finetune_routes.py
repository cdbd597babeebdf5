"""Fine-tuning jobs on the fake server (OpenAI wire), and the models they make.

    POST /v1/fine_tuning/jobs              create from an uploaded `purpose=fine-tune` file
                                           (`model`, `training_file`, optional
                                           `validation_file`, `suffix`, `metadata`, `seed`,
                                           `hyperparameters`)
    GET  /v1/fine_tuning/jobs              list, newest first: `limit`, `after`, and
                                           `metadata[key]=value` filters like the real API
    GET  /v1/fine_tuning/jobs/{id}         the FineTuningJob
    POST /v1/fine_tuning/jobs/{id}/cancel  cancels a job that has not ended

Like a batch, a job has no background task: its status follows the clock. It is
`validating_files` for the first fifth of `batch_seconds` after creation, then `running`, and
`succeeded` once `batch_seconds` have passed, with `fine_tuned_model` =
`ft:<base>:batchopt:<suffix>:<job id without 'ftjob-'>`. A training file that is not chat
JSONL (each line `{"messages": [...]}` with an assistant message), or has fewer than
`MIN_EXAMPLES` lines, makes the job `failed` when validation ends, with `error` saying why.

Chat completions for a model named `ft:...` are answered only once a job here has made that
model (`check_model`); any other `ft:` name is refused as the real API refuses an unknown model.
The answers themselves come from `wire.openai_reply` like any model's; the oracle decides a
fine-tuned model's quality (see `oracle`: like its base unless told otherwise).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from batchopt.fakeapi import answers, batch_wire
from batchopt.fakeapi.batches import BatchStore, StoredFile
from batchopt.fakeapi.wire import BadRequest, json_object, json_response, openai_error_body

MIN_EXAMPLES = 10  # the real API's minimum
DEFAULT_EPOCHS = 3
_VALIDATING_SHARE = 0.2  # of the job's duration spent in validating_files
_ENDED = frozenset({"succeeded", "failed", "cancelled"})
_FT_PURPOSE = "fine-tune"


@dataclass
class FakeJob:
    """One fine-tuning job."""

    id: str
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    metadata: dict[str, str] | None
    seed: int
    n_epochs: int
    created_at: float
    ends_at: float
    problem: str | None = None  # why validation fails the job, if it does
    trained_tokens: int = 0
    cancelled_at: float | None = None

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "cancelled"
        validated_at = self.created_at + (self.ends_at - self.created_at) * _VALIDATING_SHARE
        if now < validated_at:
            return "validating_files"
        if self.problem is not None:
            return "failed"
        return "running" if now < self.ends_at else "succeeded"

    @property
    def fine_tuned_model(self) -> str:
        return f"ft:{self.model}:batchopt:{self.suffix or ''}:{self.id.removeprefix('ftjob-')}"

    def view(self, now: float) -> dict[str, Any]:
        """The FineTuningJob object."""
        status = self.status(now)
        ended = status in _ENDED
        finished = self.cancelled_at or self.ends_at
        return {
            "id": self.id,
            "object": "fine_tuning.job",
            "created_at": int(self.created_at),
            "finished_at": int(finished) if ended else None,
            "model": self.model,
            "fine_tuned_model": self.fine_tuned_model if status == "succeeded" else None,
            "organization_id": "org-batchopt-fake",
            "status": status,
            "hyperparameters": {"n_epochs": self.n_epochs, "batch_size": 1,
                                "learning_rate_multiplier": 1.0},
            "training_file": self.training_file,
            "validation_file": self.validation_file,
            "result_files": [],
            "trained_tokens": self.trained_tokens if status == "succeeded" else None,
            "error": ({"code": "invalid_training_file", "message": self.problem,
                       "param": "training_file"} if status == "failed" else None),
            "seed": self.seed,
            "estimated_finish": None if ended else int(self.ends_at),
            "integrations": None,
            "metadata": self.metadata,
            "method": {"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": self.n_epochs, "batch_size": 1, "learning_rate_multiplier": 1.0}}},
        }


class FineTuneRoutes:
    """The fine-tuning endpoints; files come from the batch store (one files API)."""

    def __init__(self, files: BatchStore, next_id: Callable[[], str]) -> None:
        self.files = files
        self._next_id = next_id
        self._lock = threading.Lock()
        self._jobs: dict[str, FakeJob] = {}
        self.created = 0

    def register(self, router: web.UrlDispatcher) -> None:
        """Add the fine-tuning routes to `router`."""
        router.add_post("/v1/fine_tuning/jobs", self.create)
        router.add_get("/v1/fine_tuning/jobs", self.listing)
        router.add_get("/v1/fine_tuning/jobs/{id}", self.get)
        router.add_post("/v1/fine_tuning/jobs/{id}/cancel", self.cancel)

    def clear(self) -> None:
        """Forget every job and zero the count."""
        with self._lock:
            self._jobs.clear()
            self.created = 0

    def stats(self) -> dict[str, int]:
        """`fine_tuning_jobs_created` (since the last reset) and how many models they made."""
        now = self.files.clock()
        with self._lock:
            made = sum(1 for j in self._jobs.values() if j.status(now) == "succeeded")
            return {"fine_tuning_jobs_created": self.created, "fine_tuned_models": made}

    def check_model(self, model: Any) -> None:
        """BadRequest unless `model` is not a fine-tuned name, or one a job here has made."""
        if not isinstance(model, str) or not model.startswith("ft:"):
            return
        now = self.files.clock()
        with self._lock:
            made = {j.fine_tuned_model for j in self._jobs.values() if j.status(now) == "succeeded"}
        if model not in made:
            raise BadRequest(
                f"The model `{model}` does not exist or you do not have access to it."
            )

    # ---- handlers -----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/fine_tuning/jobs."""
        try:
            data = json_object(await request.read())
            job = self._new_job(data)
        except BadRequest as exc:
            return _error(400, str(exc))
        with self._lock:
            self._jobs[job.id] = job
            self.created += 1
        return json_response(job.view(self.files.clock()))

    async def listing(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/fine_tuning/jobs?limit=&after=&metadata[k]=v."""
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return _error(400, "limit: must be an integer")
        if not 1 <= limit <= 100:
            return _error(400, "limit: must be from 1 to 100")
        wanted = {k[len("metadata["):-1]: v for k, v in request.query.items()
                  if k.startswith("metadata[") and k.endswith("]")}
        now = self.files.clock()
        with self._lock:
            jobs = list(self._jobs.values())[::-1]
        chosen = [j.view(now) for j in jobs
                  if all((j.metadata or {}).get(k) == v for k, v in wanted.items())]
        listed = batch_wire.page(chosen, limit, request.query.get("after"))
        return json_response({"object": "list", "data": listed["data"],
                              "has_more": listed["has_more"]})

    async def get(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/fine_tuning/jobs/{id}."""
        job = self._job(request.match_info["id"])
        if job is None:
            return _error(404, f"Could not find fine-tune: {request.match_info['id']}")
        return json_response(job.view(self.files.clock()))

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/fine_tuning/jobs/{id}/cancel."""
        job = self._job(request.match_info["id"])
        if job is None:
            return _error(404, f"Could not find fine-tune: {request.match_info['id']}")
        now = self.files.clock()
        with self._lock:
            if job.status(now) in _ENDED:
                return _error(400, f"Job {job.id} has already {job.status(now)}")
            job.cancelled_at = now
        return json_response(job.view(now))

    # ---- helpers ------------------------------------------------------------------------------

    def _job(self, job_id: str) -> FakeJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _new_job(self, data: dict[str, Any]) -> FakeJob:
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: a non-empty string is required")
        training = self._ft_file(data.get("training_file"), "training_file")
        validation = data.get("validation_file")
        if validation is not None:
            self._ft_file(validation, "validation_file")
        suffix = data.get("suffix")
        if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
            raise BadRequest("suffix: a string of up to 64 characters")
        metadata = data.get("metadata")
        if metadata is not None:
            metadata = batch_wire.openai_metadata(metadata)
        seed = data.get("seed")
        epochs = (data.get("hyperparameters") or {}).get("n_epochs", "auto")
        epochs = epochs if isinstance(epochs, int) and epochs > 0 else DEFAULT_EPOCHS
        problem, tokens = _check_training(training.data)
        now = self.files.clock()
        return FakeJob(
            id="ftjob-" + self._next_id(), model=model, training_file=training.id,
            validation_file=validation, suffix=suffix or None, metadata=metadata,
            seed=seed if isinstance(seed, int) else int(now) % 100_000,
            n_epochs=epochs, created_at=now, ends_at=now + self.files.batch_seconds,
            problem=problem, trained_tokens=tokens * epochs,
        )

    def _ft_file(self, file_id: Any, name: str) -> StoredFile:
        stored = self.files.file(file_id) if isinstance(file_id, str) else None
        if stored is None:
            raise BadRequest(f"{name}: no such file {file_id!r}")
        if stored.purpose != _FT_PURPOSE:
            raise BadRequest(f"{name}: the file's purpose must be '{_FT_PURPOSE}', "
                             f"not '{stored.purpose}'")
        return stored


def _check_training(data: bytes) -> tuple[str | None, int]:
    """(why the file is not usable chat training data or None, its tokens)."""
    lines = [line for line in data.splitlines() if line.strip()]
    tokens = 0
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except ValueError:
            return f"line {number} is not JSON", 0
        messages = item.get("messages") if isinstance(item, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return f"line {number}: 'messages' must be a list of objects", 0
        if not any(m.get("role") == "assistant" for m in messages):
            return f"line {number}: no assistant message to learn from", 0
        tokens += sum(answers.cached_count(answers.content_text(m.get("content")), "gpt-4o")
                      for m in messages)
    if len(lines) < MIN_EXAMPLES:
        return (f"the training file has {len(lines)} example(s); at least {MIN_EXAMPLES} "
                "are needed"), 0
    return None, tokens


def _error(status: int, message: str) -> web.Response:
    return json_response(openai_error_body(status, message), status)
