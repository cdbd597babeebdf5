"""The faults the fake provider server can be told to inject, from their JSON form.

Model-call faults (`Fault`) and batch faults (`BatchFault`, an object with a `batch` key) arrive
mixed in one JSON list (`parse_faults`); `state.ServerState` queues them apart (see
`batchopt.fakeapi.app` for the shapes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_FAULT_KEYS = {"kind", "status", "retry_after", "retry_after_ms", "delay_ms", "message", "count"}
# What a `kind` fault does to one model call (see `batchopt.fakeapi.app`); the first two
# never reach the model and are not billed, the others are billed as a normal answer.
FAULT_KINDS = frozenset({"reset", "malformed", "timeout", "truncated", "no_usage", "max_tokens"})
UNBILLED_KINDS = frozenset({"reset", "malformed"})
BATCH_EFFECTS = frozenset(
    {"expire", "errors", "invalid", "upload_delay", "ack_delay", "truncate_results", "shuffle"}
)
_BATCH_FAULT_KEYS = {"batch", "done_share", "rows", "delay_ms", "message", "times", "count"}


@dataclass(frozen=True)
class Fault:
    """What to do to one model call instead of (or before) answering it: answer with an error
    `status`, or do `kind` to it (one of FAULT_KINDS), after `delay_ms`."""

    status: int | None = None
    kind: str | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    delay_ms: float = 0.0
    message: str | None = None


@dataclass(frozen=True)
class BatchFault:
    """What to do to one batch submission; `effects` is a subset of BATCH_EFFECTS."""

    effects: frozenset[str]
    done_share: float = 0.5
    rows: int = 1
    delay_ms: float = 0.0
    message: str | None = None
    times: int = 1


def parse_faults(data: Any) -> list[Fault | BatchFault]:
    """Faults from their JSON form (a list of objects, or one object); `count` repeats one.

    An object with a `batch` key is a BatchFault, any other a Fault. Raises ValueError naming
    what is wrong.
    """
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("faults must be a JSON list of objects")
    faults: list[Fault | BatchFault] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"fault {i} is not an object")
        if "batch" in item:
            faults.extend([_batch_fault(item, i)] * _count(item, i))
            continue
        unknown = set(item) - _FAULT_KEYS
        if unknown:
            raise ValueError(f"fault {i} has unknown keys: {sorted(unknown)}")
        status = item.get("status")
        if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
            raise ValueError(f"fault {i}: status must be an int from 400 to 599")
        kind = item.get("kind")
        if kind is not None and kind not in FAULT_KINDS:
            raise ValueError(f"fault {i}: kind must be one of {sorted(FAULT_KINDS)}")
        if kind is not None and status is not None:
            raise ValueError(f"fault {i}: a kind and a status exclude each other")
        if status is None and kind is None and not item.get("delay_ms"):
            raise ValueError(f"fault {i} needs a status, a kind or a delay_ms")
        if kind == "timeout" and not item.get("delay_ms"):
            raise ValueError(f"fault {i}: kind 'timeout' needs a delay_ms")
        count = _count(item, i)
        fault = Fault(
            status=status,
            kind=kind,
            retry_after=_number(item, "retry_after", i),
            retry_after_ms=_number(item, "retry_after_ms", i),
            delay_ms=_number(item, "delay_ms", i) or 0.0,
            message=str(item["message"]) if item.get("message") is not None else None,
        )
        faults.extend([fault] * count)
    return faults


def _batch_fault(item: dict[str, Any], i: int) -> BatchFault:
    unknown = set(item) - _BATCH_FAULT_KEYS
    if unknown:
        raise ValueError(f"fault {i} has unknown keys: {sorted(unknown)}")
    kinds = item["batch"]
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(kinds, list) or not kinds or not set(kinds) <= BATCH_EFFECTS:
        raise ValueError(f"fault {i}: batch must be one or a list of {sorted(BATCH_EFFECTS)}")
    share = _number(item, "done_share", i)
    if share is not None and share > 1:
        raise ValueError(f"fault {i}: done_share must be from 0 to 1")
    delay = _number(item, "delay_ms", i) or 0.0
    if {"upload_delay", "ack_delay"} & set(kinds) and not delay:
        raise ValueError(f"fault {i}: upload_delay and ack_delay need a delay_ms")
    return BatchFault(
        effects=frozenset(kinds),
        done_share=0.5 if share is None else share,
        rows=_positive_int(item, "rows", i),
        delay_ms=delay,
        message=str(item["message"]) if item.get("message") is not None else None,
        times=_positive_int(item, "times", i),
    )


def _count(item: dict[str, Any], i: int) -> int:
    return _positive_int(item, "count", i)


def _positive_int(item: dict[str, Any], key: str, i: int) -> int:
    value = item.get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"fault {i}: {key} must be a positive int")
    return value


def _number(item: dict[str, Any], key: str, i: int) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"fault {i}: {key} must be a non-negative number")
    return float(value)
