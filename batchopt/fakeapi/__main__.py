"""`python -m batchopt.fakeapi --port N --latency-ms X --batch-seconds S
[--invalid-share MODEL=SHARE] [--wrong-share MODEL=SHARE] [--judge-reject-share S]`: serve
until Ctrl-C."""

from __future__ import annotations

import argparse
import os

from batchopt.fakeapi.app import DEFAULT_BATCH_SECONDS
from batchopt.fakeapi.quality import quality_from_options
from batchopt.fakeapi.server import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m batchopt.fakeapi",
        description="Fake OpenAI/Anthropic server on 127.0.0.1 (no spending).",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="sleep before each model answer"
    )
    parser.add_argument(
        "--batch-seconds",
        type=float,
        default=DEFAULT_BATCH_SECONDS,
        help="how long after creation a batch ends",
    )
    parser.add_argument(
        "--invalid-share",
        action="append",
        default=[],
        metavar="MODEL=SHARE",
        help="share of MODEL's JSON answers that fail their schema (repeatable; MODEL * = all)",
    )
    parser.add_argument(
        "--wrong-share",
        action="append",
        default=[],
        metavar="MODEL=SHARE",
        help="share of MODEL's answers that are valid but wrong (repeatable)",
    )
    parser.add_argument(
        "--judge-reject-share",
        type=float,
        default=0.0,
        help="share of the other answers the judge says no to",
    )
    args = parser.parse_args(argv)
    try:
        quality = quality_from_options(
            os.environ.get("BATCHOPT_FAKE_QUALITY"),
            args.invalid_share,
            args.wrong_share,
            args.judge_reject_share,
        )
    except ValueError as exc:
        parser.error(str(exc))
    serve(
        port=args.port,
        latency_ms=args.latency_ms,
        batch_seconds=args.batch_seconds,
        quality=quality,
    )


if __name__ == "__main__":
    main()
