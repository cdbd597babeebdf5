"""One check's outcome and the line `batchopt doctor` prints for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "FAIL", "skip"]
NAME_WIDTH = 12  # the longest name ("embeddings") and two spaces: lines print one by one


@dataclass(frozen=True)
class Check:
    """What one check found; `fix` says what to do about a FAIL or warn."""

    status: Status
    name: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        """`ok    llama.cpp  0.3.36, ...` or `FAIL  cache      ... -> what to do`."""
        text = f"{self.status:<6}{self.name:<{NAME_WIDTH}}{self.detail}"
        return f"{text} -> {self.fix}" if self.fix else text


def one_line(text: object, limit: int = 300) -> str:
    """An error message on one line, cut to `limit` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
