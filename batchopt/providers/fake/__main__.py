"""`python -m batchopt.providers.fake --port N --latency-ms X --batch-seconds S`: serve until
Ctrl-C."""

from __future__ import annotations

import argparse

from batchopt.providers.fake.app import DEFAULT_BATCH_SECONDS
from batchopt.providers.fake.server import serve


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m batchopt.providers.fake",
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
    args = parser.parse_args(argv)
    serve(port=args.port, latency_ms=args.latency_ms, batch_seconds=args.batch_seconds)


if __name__ == "__main__":
    main()
