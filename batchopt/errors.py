"""The exceptions batchopt raises, and the exit code each one maps to.

    BatchoptError                      base; exit 1
    ├── ConfigError                    pipeline YAML, profile, env var, CLI usage; exit 2
    ├── InputError                     the input data (file, column, row); exit 2
    ├── BudgetExceededError            the budget guard refused to spend; exit 3
    ├── RunLockedError                 another process is advancing the same run; exit 75
    └── ProviderError                  a model call failed
        ├── TransientProviderError     worth retrying (429, 5xx, timeout, connection)
        └── TerminalProviderError      retrying cannot help (400, 401, bad output)

Messages are one line and name what is wrong (file, key path, row, column); they never carry
secrets.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED_ROWS = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_PENDING = 75
EXIT_INTERRUPTED = 130


class BatchoptError(Exception):
    """Base of every error batchopt raises on purpose."""

    exit_code = EXIT_FAILED_ROWS


class ConfigError(BatchoptError):
    """The pipeline YAML, a profile, an env var or a command-line option is wrong."""

    exit_code = EXIT_USAGE


class NoBatchAPIError(ConfigError):
    """The endpoint a profile sends to has no batch API (an OpenAI-compatible server such as
    llama.cpp's): found on the first batch call, before anything is paid; the run must go
    online."""


class InputError(BatchoptError):
    """The input data cannot be used as the pipeline says (file, column, row)."""

    exit_code = EXIT_USAGE


class BudgetExceededError(BatchoptError):
    """The budget guard refused to spend."""

    exit_code = EXIT_BUDGET


class RunLockedError(BatchoptError):
    """Another batchopt process holds this run's lock: nothing was sent; try again later."""

    exit_code = EXIT_PENDING


class ProviderError(BatchoptError):
    """A model call failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientProviderError(ProviderError):
    """A failure that a later attempt may not see (rate limit, 5xx, timeout, reset)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class TerminalProviderError(ProviderError):
    """A failure that retrying cannot mend (bad request, auth, invalid structured output)."""
