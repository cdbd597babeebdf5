"""Checking structured (JSON-schema) answers when they come back."""

from __future__ import annotations

import json
from dataclasses import replace

from batchopt.records import Request, Result


def check_structured(request: Request, result: Result) -> Result:
    """Parse and validate a JSON-schema answer; a bad one becomes a failed (but billed) result."""
    if request.json_schema is None or not result.ok:
        return result
    import jsonschema

    try:
        parsed = result.parsed if result.parsed is not None else json.loads(result.text or "")
    except json.JSONDecodeError as exc:
        return replace(result, status="failed", error=f"answer is not JSON ({exc.msg})")
    try:
        jsonschema.validate(parsed, request.json_schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return replace(
            result, status="failed", parsed=parsed,
            error=f"answer does not match prompt.json_schema at {where}: {exc.message}",
        )
    return replace(result, parsed=parsed)
