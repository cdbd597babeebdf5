"""Framework overhead and rate-limit accuracy of the online path, against the fake server.

    python benchmarks/bench_online.py [--rows 10000] [--concurrency 64]

Part 1: N distinct rows with zero server latency, through `batchopt run` (read, render, dedup,
cache, send, fan out, ledger, outputs: the whole run, in process) and through a bare
`AsyncOpenAI` loop at the same concurrency, same client transport, same server. Prints both
rows/s and their ratio (target >= 0.9).

Part 2: 200 ms server latency and an RPM limit: prints the achieved request rate, measured from
the fake server's own request timestamps, as a share of the limit (target >= 95%).

The fake server runs in its own process, so it does not share the GIL with the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import polars as pl
import yaml

from batchopt.config.pipeline import load_pipeline
from batchopt.run.runner import RunOptions, run_pipeline

SYSTEM = "Summarise the ticket in one sentence."
TEMPLATE = "Ticket {{ ticket_id }}: {{ body }}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`python -m batchopt.fakeapi` in a child process."""

    def __init__(self, latency_ms: float) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchopt.fakeapi",
                "--port",
                str(self.port),
                "--latency-ms",
                str(latency_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "listening" not in line:
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/_fake/reset", method="POST"))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def make_rows(n: int, folder: Path) -> Path:
    words = [
        "order",
        "refund",
        "parcel",
        "invoice",
        "login",
        "password",
        "charge",
        "delivery",
        "warranty",
        "screen",
    ]
    bodies = [
        f"Hello, about order #{100000 + i}: " + " ".join(words[(i * 7 + j) % 10] for j in range(40))
        for i in range(n)
    ]
    path = folder / "rows.parquet"
    pl.DataFrame({"ticket_id": [f"R{i:07d}" for i in range(n)], "body": bodies}).write_parquet(path)
    return path


def write_pipeline(folder: Path, data: Path, concurrency: int, rpm: int | None) -> Path:
    profile = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "max_tokens": 32,
        "concurrency": concurrency,
        "max_attempts": 3,
        "timeout_s": 30,
    }
    if rpm:
        profile["rpm"] = rpm
    spec = {
        "name": "bench",
        "input": {"path": str(data), "id_column": "ticket_id"},
        "output": {"path": str(folder / "out.parquet")},
        "ledger": {"path": str(folder / "ledger")},
        "cache": {"path": str(folder / "cache")},
        "prompt": {"system": SYSTEM, "template": TEMPLATE, "output_column": "summary"},
        "default_profile": "openai",
        "profiles": {"openai": profile},
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_batchopt(pipeline: Path, base_url: str, run_id: str) -> tuple[float, int]:
    env = {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": base_url}
    loaded = load_pipeline(pipeline)
    started = time.perf_counter()
    summary = run_pipeline(loaded, RunOptions(run_id=run_id), env=env)
    return time.perf_counter() - started, summary.sent


async def bare_loop(prompts: list[str], base_url: str, concurrency: int, raw: bool) -> None:
    """The loop a user would write by hand. `raw` makes the same generic `post` call batchopt's
    provider makes (dict in, dict out); otherwise the typed `chat.completions.create`."""
    import openai

    http_client = openai.DefaultAioHttpClient() if hasattr(openai, "DefaultAioHttpClient") else None
    client = openai.AsyncOpenAI(
        api_key="bench", base_url=base_url, max_retries=0, http_client=http_client
    )
    queue = list(reversed(prompts))

    async def worker() -> None:
        while queue:
            prompt = queue.pop()
            body = {
                "model": "gpt-4o-mini",
                "max_tokens": 32,
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": prompt},
                ],
            }
            if raw:
                await client.post("/chat/completions", body=body, cast_to=object)
            else:
                await client.chat.completions.create(**body)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()


def part_overhead(rows: int, concurrency: int) -> None:
    server = ServerProcess(latency_ms=0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            data = make_rows(rows, folder)
            frame = pl.read_parquet(data)
            prompts = [f"Ticket {t}: {b}" for t, b in frame.iter_rows()]
            base_url = server.url + "/v1"
            # Warm both paths (imports, tokenizer, connection set-up) on a small slice.
            asyncio.run(bare_loop(prompts[:200], base_url, concurrency, raw=True))
            bare_s = {}
            for raw in (False, True):
                server.reset()
                started = time.perf_counter()
                asyncio.run(bare_loop(prompts, base_url, concurrency, raw=raw))
                bare_s[raw] = time.perf_counter() - started
            server.reset()

            pipeline = write_pipeline(folder, data, concurrency, rpm=None)
            ours_s, sent = run_batchopt(pipeline, base_url, "bench-1")
            served = server.get("/_fake/stats")["requests"]  # type: ignore[index]
    finally:
        server.close()
    typed_rate, raw_rate, ours_rate = rows / bare_s[False], rows / bare_s[True], rows / ours_s
    print(f"rows={rows} concurrency={concurrency} server latency=0 ms")
    print(
        f"  bare loop, chat.completions.create : {typed_rate:6.0f} rows/s ({bare_s[False]:.2f} s)"
    )
    print(f"  bare loop, client.post (same call) : {raw_rate:6.0f} rows/s ({bare_s[True]:.2f} s)")
    print(
        f"  batchopt run (whole run)           : {ours_rate:6.0f} rows/s ({ours_s:.2f} s; "
        f"sent {sent}, server saw {served})"
    )
    print(f"  ratio batchopt / bare create()     : {ours_rate / typed_rate:.3f}")
    print(
        f"  ratio batchopt / bare post()       : {ours_rate / raw_rate:.3f}  (target >= 0.9: "
        f"the framework's own cost against the same SDK call)"
    )


def part_rate_limit(rpm: int, requests: int, concurrency: int) -> None:
    server = ServerProcess(latency_ms=200)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            data = make_rows(requests, folder)
            pipeline = write_pipeline(folder, data, concurrency, rpm=rpm)
            run_batchopt(pipeline, server.url + "/v1", "bench-rpm")
            log = server.get("/_fake/log")
    finally:
        server.close()
    stamps = sorted(entry["t"] for entry in log)  # type: ignore[union-attr]
    span = stamps[-1] - stamps[0]
    achieved = (len(stamps) - 1) / span * 60.0 if span > 0 else float("inf")
    print(f"rpm limit={rpm} requests={len(stamps)} concurrency={concurrency} latency=200 ms")
    print(f"  achieved rate         : {achieved:8.0f} requests/min over {span:.1f} s")
    print(f"  share of the limit    : {achieved / rpm:.3f}  (target >= 0.95)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rpm", type=int, default=3_000)
    parser.add_argument("--rpm-requests", type=int, default=600)
    args = parser.parse_args()
    part_overhead(args.rows, args.concurrency)
    part_rate_limit(args.rpm, args.rpm_requests, args.concurrency)


if __name__ == "__main__":
    main()
