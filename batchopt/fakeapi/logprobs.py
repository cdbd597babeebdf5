"""Token log-probabilities for the fake server's OpenAI answers (`"logprobs": true`).

The answer is split into the tokens the fake bills it as (the model's encoding, see
`batchopt.fakeapi.tokens`), so there is one entry per completion token. Each entry's
logprob is drawn deterministically from the oracle's verdict, so that a confidence threshold
separates most right answers from most wrong ones, but not all:

- right (and every answer the oracle did not decide): 95% of answers are confident, each token
  uniform in [-0.05, -0.001]; the other 5% are unsure, with a mean token logprob uniform in
  [-1.2, -0.2];
- wrong: 90% of answers have a mean token logprob uniform in [-2.5, -0.7]; the other 10% are
  confidently wrong, mean uniform in [-0.3, -0.001].

Answers the oracle did not decide (no oracle, or no item matched) are always confident.

An answer with a drawn mean spreads it over its tokens (each token's weight uniform in
[0.5, 1.5], rescaled so the mean is exact). So, with a mean-logprob threshold of -0.5, about
96% of right answers are above it and about 90% of wrong ones below; with -0.2, 95% of right
answers are above it.

`top_logprobs: n` lists the chosen token and n-1 made-up alternatives (`<alt1>`, ...) sharing
the remaining probability (halving each time), most likely first.
"""

from __future__ import annotations

import math
from typing import Any

from batchopt.fakeapi import tokens
from batchopt.fakeapi.oracle import RIGHT, WRONG, Verdict, hash_unit

CONFIDENT = (-0.05, -0.001)
UNSURE_RIGHT = (-1.2, -0.2)
WRONG_MEAN = (-2.5, -0.7)
CONFIDENTLY_WRONG = (-0.3, -0.001)
UNSURE_RIGHT_SHARE = 0.05
CONFIDENTLY_WRONG_SHARE = 0.10


def token_bytes(text: str, model: str) -> list[bytes]:
    """`text` split into the tokens it is billed as, each as its bytes."""
    if not text:
        return []
    encoding = tokens.encoding(tokens.encoding_name(model))
    return [encoding.decode_single_token_bytes(t) for t in encoding.encode(text)]


def _between(bounds: tuple[float, float], u: float) -> float:
    low, high = bounds
    return low + (high - low) * u


def mean_logprob(verdict: Verdict, model: str) -> float | None:
    """The answer's drawn mean token logprob, or None when it is confident token by token."""
    if verdict.kind not in (RIGHT, WRONG) or verdict.match is None:
        return None
    level = hash_unit("logprob-level", model, verdict.match, verdict.kind)
    spread = hash_unit("logprob-mean", model, verdict.match, verdict.kind)
    if verdict.kind == RIGHT:
        return _between(UNSURE_RIGHT, spread) if level < UNSURE_RIGHT_SHARE else None
    if level < CONFIDENTLY_WRONG_SHARE:
        return _between(CONFIDENTLY_WRONG, spread)
    return _between(WRONG_MEAN, spread)


def token_logprobs(verdict: Verdict, model: str, text: str, count: int) -> list[float]:
    """`count` logprobs for the tokens of `text`, the answer `verdict` chose for `model`."""
    seed = verdict.match if verdict.match is not None else text
    mean = mean_logprob(verdict, model)
    units = [hash_unit("logprob-token", model, seed, str(i)) for i in range(count)]
    if mean is None:
        return [_between(CONFIDENT, u) for u in units]
    weights = [0.5 + u for u in units]
    scale = mean * count / sum(weights) if weights else 0.0
    return [w * scale for w in weights]


def openai_logprobs(verdict: Verdict, model: str, text: str, top: int) -> dict[str, Any]:
    """The `choices[0].logprobs` object of a chat completion answering `text`."""
    pieces = token_bytes(text, model)
    values = token_logprobs(verdict, model, text, len(pieces))
    content = []
    for piece, value in zip(pieces, values, strict=True):
        token = piece.decode("utf-8", errors="replace")
        content.append(
            {
                "token": token,
                "logprob": value,
                "bytes": list(piece),
                "top_logprobs": _top(token, piece, value, top),
            }
        )
    return {"content": content, "refusal": None}


def _top(token: str, piece: bytes, value: float, top: int) -> list[dict[str, Any]]:
    if top <= 0:
        return []
    entries = [{"token": token, "logprob": value, "bytes": list(piece)}]
    rest = max(1e-12, 1.0 - math.exp(value))
    for j in range(1, top):
        alt = f"<alt{j}>"
        share = rest * 0.5**j
        entries.append({"token": alt, "logprob": math.log(share), "bytes": list(alt.encode())})
    entries.sort(key=lambda e: -e["logprob"])
    return entries
