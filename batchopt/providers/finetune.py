"""OpenAI fine-tuning through the official SDK: upload training files, create a job, poll it.

Each method makes one attempt (the SDK's own retries are off, as for every provider): a create
call the SDK retried after a timeout could leave two jobs behind. Failures become
`TransientProviderError` (connection, timeout, 408/409/429, 5xx) or `TerminalProviderError`,
with the provider's message and never the API key. Jobs carry the caller's tag as `metadata`,
which `find_jobs` matches, so a caller that lost a create call's answer can find its job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchopt.errors import ConfigError, TerminalProviderError, TransientProviderError
from batchopt.providers.base import ProviderSettings
from batchopt.providers.sdk_common import PLACEHOLDER_KEY, scrub, upstream_message

ENDED = ("succeeded", "failed", "cancelled")
_TRANSIENT = {408, 409, 429}


@dataclass(frozen=True)
class JobStatus:
    """A fine-tuning job as the provider reports it."""

    job_id: str
    status: str  # validating_files | queued | running | succeeded | failed | cancelled
    base_model: str
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class OpenAIFineTuner:
    """Fine-tuning calls against one OpenAI (or compatible) endpoint."""

    def __init__(self, settings: ProviderSettings) -> None:
        from batchopt.providers.openai import openai_sdk  # the one module importing the SDK

        openai = self._sdk = openai_sdk()
        self._key = settings.api_key or (PLACEHOLDER_KEY if settings.base_url else None)
        if not self._key:
            raise ConfigError("fine-tuning: no API key for the openai profile")
        self._client = openai.OpenAI(api_key=self._key, base_url=settings.base_url,
                                     max_retries=0, timeout=settings.timeout_s)

    def close(self) -> None:
        self._client.close()

    def upload(self, name: str, data: bytes) -> str:
        """Upload a JSONL training or validation file; its file id."""
        made = self._call(lambda: self._client.files.create(file=(name, data),
                                                            purpose="fine-tune"))
        return str(made.id)

    def create(self, base_model: str, training_file: str, validation_file: str | None,
               tag: dict[str, str], suffix: str | None = None) -> str:
        """Create the job; its id."""
        extra: dict[str, Any] = {}
        if validation_file:
            extra["validation_file"] = validation_file
        if suffix:
            extra["suffix"] = suffix
        job = self._call(lambda: self._client.fine_tuning.jobs.create(
            model=base_model, training_file=training_file, metadata=dict(tag), **extra))
        return str(job.id)

    def retrieve(self, job_id: str) -> JobStatus:
        """The job's status."""
        return _status(self._call(lambda: self._client.fine_tuning.jobs.retrieve(job_id)))

    def find_jobs(self, tag: dict[str, str]) -> list[str]:
        """Ids of jobs whose metadata holds every item of `tag`, newest first (the listing is
        filtered by the server and checked again here)."""
        def listing() -> list[str]:
            found = []
            for job in self._client.fine_tuning.jobs.list(limit=100, metadata=dict(tag)):
                metadata = job.metadata or {}
                if all(metadata.get(k) == v for k, v in tag.items()):
                    found.append(str(job.id))
            return found

        return self._call(listing)

    def cancel(self, job_id: str) -> JobStatus:
        """Ask the provider to cancel the job."""
        return _status(self._call(lambda: self._client.fine_tuning.jobs.cancel(job_id)))

    def _call(self, call: Any) -> Any:
        sdk = self._sdk
        try:
            return call()
        except sdk.APITimeoutError:
            raise TransientProviderError("openai fine-tuning: timed out") from None
        except sdk.APIConnectionError as exc:
            raise TransientProviderError(
                f"openai fine-tuning: connection failed: {self._clean(exc)}") from None
        except sdk.APIStatusError as exc:
            status = int(exc.status_code)
            message = f"openai fine-tuning: HTTP {status}: {self._clean(exc)}"
            if status in _TRANSIENT or status >= 500:
                raise TransientProviderError(message, status=status) from None
            raise TerminalProviderError(message, status=status) from None
        except sdk.OpenAIError as exc:
            raise TerminalProviderError(
                f"openai fine-tuning: {type(exc).__name__}: {self._clean(exc)}") from None

    def _clean(self, exc: Exception) -> str:
        return scrub(upstream_message(exc), [self._key])


def _status(job: Any) -> JobStatus:
    error = job.error.message if job.error is not None and job.error.message else None
    return JobStatus(job_id=str(job.id), status=str(job.status), base_model=str(job.model),
                     fine_tuned_model=job.fine_tuned_model, trained_tokens=job.trained_tokens,
                     error=error)
