"""One RPM limit, local engine against Ray engine: the achieved rate as the server saw it.

    python benchmarks/bench_ray_rate.py [--rpm 1200] [--seconds 20] [--latency-ms 200]

The same pipeline (distinct rows, `rpm` on its profile) runs with `execution.engine: local`
(one process, one `OnlineExecutor`) and `execution.engine: ray` (a local Ray; the calls go out
from `ray_send`'s sender actors, paced by one limiter actor). The rate is measured from the fake
server's own request timestamps ((requests - 1) / (last - first)), the server in its own
process; the target is at most the limit and at least 90% of it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml
from bench_online import ServerProcess, make_rows, write_pipeline

from batchopt.config.pipeline import load_pipeline
from batchopt.run.runner import RunOptions, run_pipeline


def one(engine: str, rpm: int, requests: int, concurrency: int, latency_ms: float
        ) -> tuple[float, float, float, int]:
    """(achieved requests/min, span s, wall s, requests the server saw) for one engine."""
    server = ServerProcess(latency_ms=latency_ms)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            pipeline = write_pipeline(folder, make_rows(requests, folder), concurrency, rpm)
            spec = yaml.safe_load(pipeline.read_text())
            spec["execution"] = {"engine": engine}
            pipeline.write_text(yaml.safe_dump(spec))
            env = {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": server.url + "/v1"}
            started = time.perf_counter()
            run_pipeline(load_pipeline(pipeline), RunOptions(run_id=f"bench-{engine}"), env=env)
            wall = time.perf_counter() - started
            log = server.get("/_fake/log")
    finally:
        server.close()
    stamps = sorted(entry["t"] for entry in log)  # type: ignore[union-attr]
    span = stamps[-1] - stamps[0]
    return (len(stamps) - 1) / span * 60.0, span, wall, len(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    args = parser.parse_args()
    requests = int(args.rpm * args.seconds / 60.0) + 1

    from batchopt.engines.ray_runtime import ensure_ray
    from batchopt.engines.ray_send import DEFAULT_WORKERS

    ray_tmp = tempfile.mkdtemp(prefix="bo-ray-")
    os.environ.setdefault("BATCHOPT_RAY_TMPDIR", ray_tmp)
    started = time.perf_counter()
    ray = ensure_ray()
    ray_start = time.perf_counter() - started
    # execution.ray_workers unset: one sender per CPU of the cluster
    senders = max(1, int(ray.cluster_resources().get("CPU", DEFAULT_WORKERS)))

    print(f"rpm limit={args.rpm} requests={requests} concurrency={args.concurrency} per sender, "
          f"server latency={args.latency_ms:g} ms, {os.cpu_count()} cores")
    print(f"  {'engine':<28} {'achieved/min':>12} {'share':>6} {'span s':>7} {'run s':>6}")
    for engine in ("local", "ray"):
        achieved, span, wall, seen = one(engine, args.rpm, requests, args.concurrency,
                                         args.latency_ms)
        label = engine if engine == "local" else f"ray ({senders} senders, 1 limiter)"
        assert seen == requests, (engine, seen)
        print(f"  {label:<28} {achieved:12.1f} {achieved / args.rpm:6.3f} {span:7.2f} "
              f"{wall:6.2f}")
    print(f"  (Ray start-up, not in the runs: {ray_start:.1f} s; target: share in [0.90, 1.00])")


if __name__ == "__main__":
    main()
