"""What the fake batch endpoints accept and send: submission checks and the JSON objects.

The objects follow the real APIs: OpenAI `Batch` and `FileObject` (times in Unix seconds),
Anthropic `MessageBatch` (RFC 3339 times) and its results lines.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from batchopt.fakeapi.batches import ENDED_PHASES, FakeBatch, RowOutcome, StoredFile
from batchopt.fakeapi.wire import BadRequest

OPENAI_ENDPOINT = "/v1/chat/completions"
OPENAI_MAX_REQUESTS = 50_000
ANTHROPIC_MAX_REQUESTS = 100_000
EXPIRY_SECONDS = 24 * 3600
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_LINE_ERRORS = 100


# ---- submissions --------------------------------------------------------------------------------


def openai_input_rows(data: bytes) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """(rows, errors) of an OpenAI batch input file; any error fails the whole batch."""
    rows: list[tuple[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    for number, text in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        problem = _line_problem(text, seen)
        if isinstance(problem, tuple):
            code, message, param = problem
            errors.append({"code": code, "message": message, "param": param, "line": number})
            continue
        custom_id, body = problem["custom_id"], problem["body"]
        seen.add(custom_id)
        models.add(str(body.get("model")))
        rows.append((custom_id, body))
    if not rows and not errors:
        errors.append(_file_error("empty_file", "The input file has no requests."))
    if len(models) > 1:
        found = ", ".join(sorted(models))
        errors.append(_file_error("mismatched_model", f"One model per batch; found {found}."))
    if len(rows) > OPENAI_MAX_REQUESTS:
        errors.append(_file_error("too_many_requests", f"More than {OPENAI_MAX_REQUESTS}."))
    return rows, errors[:_MAX_LINE_ERRORS]


def _line_problem(text: str, seen: set[str]) -> dict[str, Any] | tuple[str, str, str | None]:
    try:
        item = json.loads(text)
    except ValueError:
        return "invalid_json_line", "This line is not parseable as valid JSON.", None
    if not isinstance(item, dict):
        return "invalid_request", "Each line must be a JSON object.", None
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return (
            "missing_required_parameter",
            "custom_id: a non-empty string is required.",
            "custom_id",
        )
    if custom_id in seen:
        return "duplicate_custom_id", f"The custom_id {custom_id!r} is not unique.", "custom_id"
    if item.get("method") != "POST":
        return "invalid_method", "method: only POST is supported.", "method"
    if item.get("url") != OPENAI_ENDPOINT:
        return "invalid_url", f"url: must be the batch's endpoint {OPENAI_ENDPOINT}.", "url"
    if not isinstance(item.get("body"), dict):
        return "invalid_body", "body: a JSON object is required.", "body"
    return item


def _file_error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": None}


def anthropic_rows(data: dict[str, Any]) -> list[tuple[str, Any]]:
    """The rows of an Anthropic batch create body; BadRequest when the body is invalid."""
    requests = data.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("requests: a non-empty list is required")
    if len(requests) > ANTHROPIC_MAX_REQUESTS:
        raise BadRequest(f"requests: at most {ANTHROPIC_MAX_REQUESTS} per batch")
    rows: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            raise BadRequest(f"requests.{i}.custom_id: must match {_CUSTOM_ID.pattern}")
        if custom_id in seen:
            raise BadRequest(f"requests.{i}.custom_id: {custom_id!r} is not unique")
        if not isinstance(item.get("params"), dict):
            raise BadRequest(f"requests.{i}.params: an object is required")
        seen.add(custom_id)
        rows.append((custom_id, item["params"]))
    return rows


def openai_metadata(value: Any) -> dict[str, str] | None:
    """Batch metadata as the real API limits it (16 pairs, keys 64, values 512 characters)."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 16:
        raise BadRequest("metadata: at most 16 key-value pairs")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
            raise BadRequest("metadata: string keys up to 64 and values up to 512 characters")
    return dict(value)


# ---- OpenAI objects -----------------------------------------------------------------------------


def openai_file(stored: StoredFile) -> dict[str, Any]:
    """The FileObject of a stored file."""
    return {
        "id": stored.id,
        "object": "file",
        "bytes": len(stored.data),
        "created_at": int(stored.created_at),
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "expires_at": int(stored.created_at) + 30 * 24 * 3600,
        "status_details": None,
    }


def openai_batch(batch: FakeBatch, now: float, status: str | None = None) -> dict[str, Any]:
    """The Batch object; `status` overrides the phase (`validating`, `cancelling` answers)."""
    phase = batch.phase(now)
    created = int(batch.created_at)
    ended = int(batch.ended_at)
    settled = batch.outcomes is not None
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": OPENAI_ENDPOINT,
        "model": _model(batch),
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": "24h",
        "status": status or phase,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": created,
        "in_progress_at": None if batch.errors or status == "validating" else created,
        "expires_at": created + EXPIRY_SECONDS,
        "finalizing_at": ended if phase in ("completed", "expired") else None,
        "completed_at": ended if phase == "completed" else None,
        "failed_at": created if phase == "failed" else None,
        "expired_at": ended if phase == "expired" else None,
        "cancelling_at": ended if batch.cancelled_at is not None else None,
        "cancelled_at": ended if phase == "cancelled" and status is None else None,
        "request_counts": {
            "total": len(batch.rows),
            "completed": batch.count("succeeded") if settled else 0,
            "failed": batch.count("errored") if settled else 0,
        },
        "metadata": batch.metadata,
    }


def _model(batch: FakeBatch) -> str | None:
    if not batch.rows:
        return None
    model = batch.rows[0][1].get("model")
    return model if isinstance(model, str) else None


def page(items: list[dict[str, Any]], limit: int, after: str | None) -> dict[str, Any]:
    """A cursor page of `items` (newest first) after the id `after`, as both APIs list."""
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    chosen = items[start : start + limit]
    return {
        "object": "list",
        "data": chosen,
        "first_id": chosen[0]["id"] if chosen else None,
        "last_id": chosen[-1]["id"] if chosen else None,
        "has_more": start + limit < len(items),
    }


# ---- Anthropic objects --------------------------------------------------------------------------


def anthropic_batch(
    batch: FakeBatch, now: float, base_url: str, canceling: bool = False
) -> dict[str, Any]:
    """The MessageBatch object; `canceling` renders the answer to a cancel request."""
    ended = batch.phase(now) in ENDED_PHASES and not canceling
    counts = {
        kind: batch.count(kind) if ended else 0
        for kind in ("succeeded", "errored", "canceled", "expired")
    }
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": "ended" if ended else "canceling" if canceling else "in_progress",
        "request_counts": {"processing": 0 if ended else len(batch.rows), **counts},
        "ended_at": _iso(batch.ended_at) if ended else None,
        "created_at": _iso(batch.created_at),
        "expires_at": _iso(batch.created_at + EXPIRY_SECONDS),
        "archived_at": None,
        "cancel_initiated_at": _iso(batch.cancelled_at) if batch.cancelled_at else None,
        "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def anthropic_result_line(outcome: RowOutcome) -> bytes:
    """One line of an Anthropic batch results file."""
    result: dict[str, Any] = {"type": outcome.kind}
    if outcome.kind == "succeeded":
        result["message"] = outcome.body
    elif outcome.kind == "errored":
        kind = "api_error" if outcome.status >= 500 else "invalid_request_error"
        result["error"] = {
            "type": "error",
            "error": {"type": kind, "message": outcome.message},
            "request_id": "req_" + outcome.ident,
        }
    line = {"custom_id": outcome.custom_id, "result": result}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
