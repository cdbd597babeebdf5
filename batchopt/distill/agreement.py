"""How far a student's answers agree with the teacher's on the same prompts.

Three kinds of answer, three measures:

- `json` (the pipeline asks for `prompt.json_schema`): each top-level field of the teacher's
  object is compared exactly; a row agrees when every field does. Reports the share of fields and
  of rows that agree.
- `label` (every teacher answer in the sample is at most `LABEL_WORDS` words): exact match after
  trimming, case folding and dropping final punctuation.
- `text` (anything else): the cosine similarity of the two answers' embeddings (the project's
  embedder, offline); a row agrees at `agree_at` or above. Reports the mean similarity too.

A student call that failed (no answer) disagrees, with similarity 0. `per_row` says which rows
agreed, in the order given (what `distill eval --router-data` labels easy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

LABEL_WORDS = 3
AGREE_AT = 0.9
KINDS = ("auto", "json", "label", "text")


@dataclass(frozen=True)
class Agreement:
    """Agreement over a sample."""

    kind: str  # json | label | text
    rows: int
    agreed: int
    fields: int = 0  # json: fields compared
    fields_agreed: int = 0
    mean_similarity: float | None = None  # text: mean cosine
    per_row: tuple[bool, ...] = field(default=(), compare=False, repr=False)  # row agreed

    @property
    def share(self) -> float:
        return self.agreed / self.rows if self.rows else 0.0

    def describe(self) -> str:
        text = f"{self.agreed}/{self.rows} rows agree ({self.share:.1%}, {self.kind})"
        if self.kind == "json" and self.fields:
            text += f"; {self.fields_agreed}/{self.fields} fields agree"
        if self.mean_similarity is not None:
            text += f"; mean cosine similarity {self.mean_similarity:.3f}"
        return text


def choose_kind(asked: str, teacher: list[str], has_schema: bool) -> str:
    """The kind to measure: `asked`, or for `auto` json / label / text (module docstring)."""
    if asked != "auto":
        return asked
    if has_schema:
        return "json"
    short = all(len(answer.split()) <= LABEL_WORDS for answer in teacher)
    return "label" if teacher and short else "text"


def normalise_label(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .!?;:'\"")


def label_agreement(teacher: list[str], student: list[str | None]) -> Agreement:
    per_row = tuple(s is not None and normalise_label(t) == normalise_label(s)
                    for t, s in zip(teacher, student, strict=True))
    return Agreement("label", len(teacher), sum(per_row), per_row=per_row)


def json_agreement(teacher: list[str], student: list[str | None]) -> Agreement:
    fields = fields_agreed = 0
    per_row: list[bool] = []
    for t, s in zip(teacher, student, strict=True):
        mine, theirs = _object(t), _object(s)
        keys = list(mine)
        same = sum(1 for k in keys if k in theirs and theirs[k] == mine[k])
        fields += len(keys)
        fields_agreed += same
        whole = same == len(keys) if keys else mine == theirs
        per_row.append(s is not None and whole)
    return Agreement("json", len(teacher), sum(per_row), fields, fields_agreed,
                     per_row=tuple(per_row))


def text_agreement(teacher: list[str], student: list[str | None], embedder: Any,
                   agree_at: float = AGREE_AT) -> Agreement:
    """Cosine similarity by `embedder` (an object with `embed(texts) -> array`)."""
    import numpy as np

    answered = [i for i, s in enumerate(student) if s]
    similarities = np.zeros(len(teacher))
    if answered:
        left = _unit(embedder.embed([teacher[i] for i in answered]))
        right = _unit(embedder.embed([student[i] or "" for i in answered]))
        similarities[answered] = np.clip((left * right).sum(axis=1), -1.0, 1.0)
    per_row = tuple(bool(v) for v in similarities >= agree_at)
    mean = float(similarities.mean()) if len(teacher) else None
    return Agreement("text", len(teacher), sum(per_row), mean_similarity=mean, per_row=per_row)


def _unit(vectors: Any) -> Any:
    import numpy as np

    array = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1.0, norms)


def _object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"": value}
