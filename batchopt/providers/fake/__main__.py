"""`python -m batchopt.providers.fake --port N --latency-ms X`: serve until Ctrl-C."""

from __future__ import annotations

import argparse

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
    args = parser.parse_args(argv)
    serve(port=args.port, latency_ms=args.latency_ms)


if __name__ == "__main__":
    main()
