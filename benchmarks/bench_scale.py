"""Time and memory of `batchopt plan` per stage, at sizes up to ten million rows (issue 10).

    python benchmarks/bench_scale.py                              # 100k and 1M rows
    python benchmarks/bench_scale.py --rows 10000000 --keep-data  # one size; data kept
    python benchmarks/bench_scale.py --rows 100000 --engine local,ray  # both engines, a ratio

For each size the script generates short support tickets as Parquet in a temporary folder (in
its own child process), writes a pipeline YAML beside them (openai profile, so no local model;
compression on; exact dedup; semantic dedup with the model2vec static embedder; the embedding
cache in a fresh folder, so embeddings are computed cold as on a night of new data), then runs
what `batchopt plan` runs (`runner.prepare` without keys, then `estimate.estimate_job`: read,
compress, render, exact and semantic dedup, tiers, routing, requests with their token counts,
context check, estimate; nothing is sent) in a fresh child process, so peaks do not mix.

`--engine local,ray` runs each size once per engine (`--engine` of `batchopt run`; each run in
its own child with its own cold embedding cache) and prints each engine's total and the ratio
ray/local, over the whole plan and over the row-local stages the engine runs (compress and render;
on Ray that includes starting a local Ray with one worker per core, charged to its own line).
Only the row-local stages move to Ray; the other stages run in the driver either way. On Ray,
compress and render run in worker processes: their time shows as `engine.map_rows` and their
memory is not in the driver's RSS columns.

The data: 28% of rows are drawn as exact copies of an earlier ticket (30% of those with extra
spaces or line breaks that normalisation folds), 14% reword an earlier ticket with the same facts
(semantic candidates), 10% repeat an earlier ticket with another order number or amount (which
the guards must keep apart), the rest are new tickets (15% of them with a signature or a quoted
reply for the boilerplate step). Every ask names an order, serial or account number drawn from
rows/2 values, so new tickets rarely collide: exact followers end near 30% of rows.

Stages are timed without touching batchopt: the functions `prepare` and `plan_run` call are
wrapped (module attributes replaced in the child) with a timer that charges each moment to the
innermost running stage, so a stage's seconds are its own, not its callees'. Memory per stage
is the kernel's peak RSS (VmHWM in /proc/self/status), reset at every stage change by writing
"5" to /proc/self/clear_refs (Linux >= 4.0), so each stage's peak is its own (exact, not
sampled); "RSS after" is VmRSS when the stage last ended: what it left allocated. polars'
allocator and Python's arenas do not always hand freed memory back, so "RSS after" is an upper
bound on what is still referenced. If clear_refs cannot be written, peaks fall back to
ru_maxrss (the process's peak so far) and are marked so.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHUNK_ROWS = 500_000  # rows per generated Parquet file
POOL_SIZE = 200_000  # recent tickets that copies, rewordings and number changes draw from
ROW_LOCAL = "row-local: engine.map_rows (own)"
RAY_START = "row-local: start local Ray (ray.init)"
ROW_LOCAL_STAGES = (ROW_LOCAL, RAY_START, "compress (+ token counts)", "render (jinja)")

PRODUCTS = [
    "PulseBand 2 fitness tracker", "Summit Shell jacket", "HearthTemp smart thermostat",
    "AeroBrew kettle", "Nimbus router", "TrailMax boots", "Lumen desk lamp", "Orbit earbuds",
    "CloudVault Pro", "Nomad 40L backpack", "AeroBlend 900 blender", "TrailRunner 3 shoes",
]
# (subject, phrasings); {o} order number, {a} amount, {p} product
ASKS: list[tuple[str, tuple[str, ...]]] = [
    ("Refund request", (
        "I want a refund for order #{o}.", "Please refund my money for order #{o}.",
        "How do I get my money back for order #{o}?", "I would like order #{o} refunded.")),
    ("Where is my order?", (
        "Order #{o} has not arrived yet.", "My parcel #{o} is late.",
        "Where is my order #{o}? It was due last week.", "Still waiting for order #{o}.")),
    ("Charged twice", (
        "I was charged ${a} twice for order #{o}.", "You billed me ${a} two times for #{o}.",
        "Double charge of ${a} on my card for order #{o}.",
        "My card shows ${a} taken twice for order #{o}.")),
    ("Product not working", (
        "My {p} (serial {o}) stopped working.", "The {p} with serial {o} is broken.",
        "My {p}, serial {o}, does not turn on anymore.", "My {p} (serial {o}) died after a week.")),
    ("Cancel my order", (
        "Cancel my order #{o}, please.", "Please cancel order #{o}.",
        "I no longer want order #{o}.", "Can you stop order #{o} before it ships?")),
    ("Change delivery address", (
        "Change the address on order #{o}.", "Update my delivery address for #{o}.",
        "Ship order #{o} to my new address.", "I moved; order #{o} needs a new address.")),
    ("Wrong size", (
        "The {p} from order #{o} does not fit.", "The {p} (order #{o}) fits badly, can I swap it?",
        "Wrong size on my {p}, order #{o}.", "My {p} from #{o} is too small, I need a bigger one."
    )),
    ("Cannot log in", (
        "I cannot log in to account {o}.", "Login fails for my account {o}.",
        "I am locked out of account {o}.", "The app will not let me sign in to account {o}.")),
    ("Price adjustment", (
        "The {p} from order #{o} dropped to ${a} a day after I bought it.",
        "I paid more than the new price of ${a} for the {p} (order #{o}).",
        "Can I get the difference on order #{o}? The {p} is now ${a}.",
        "The {p} is on sale for ${a}; please refund the difference on #{o}.")),
]
OPENERS = ["", "Hi, ", "Hello team, ", "Good morning, ", "Hey, "]
CLOSERS = ["", " Thanks.", " Thank you!", " Please help.", " Regards."]
SIGNATURE = "\n\nBest regards,\nJamie\nSent from my phone"
QUOTED = "\n\nOn Mon, 3 Mar 2025 at 10:02, Support <help@example.com> wrote:\n> Thanks for " \
    "reaching out.\n> We are looking into it."
CHANNELS = ["email", "chat", "web", "phone"]
AMOUNTS = [19, 20, 35, 49, 99, 149, 179, 200, 350]


def _text(params: tuple[int, ...]) -> tuple[str, str, str]:
    """(product, subject, body) of a ticket's parameters."""
    ask, phrasing, product, order, amount, opener, closer, extra = params
    subject, phrasings = ASKS[ask]
    body = OPENERS[opener] + phrasings[phrasing].format(
        o=order, a=AMOUNTS[amount], p=PRODUCTS[product]) + CLOSERS[closer]
    if extra == 1:
        body += SIGNATURE
    elif extra == 2:
        body += QUOTED
    return PRODUCTS[product], subject, body


def _messy(text: str, rng: random.Random) -> str:
    """The same text with whitespace that exact dedup's normalisation folds."""
    choice = rng.randrange(3)
    if choice == 0:
        return text.replace(" ", "  ", 1)
    if choice == 1:
        return text + "\n"
    return " " + text


def generate(rows: int, folder: Path, seed: int = 10) -> dict[str, int]:
    """Write `rows` tickets as Parquet files under `folder`; returns how many of each kind."""
    import polars as pl

    rng = random.Random(seed)
    orders = max(1_000, rows // 2)  # order numbers drawn from a range that grows with the job
    pool: list[tuple[int, ...]] = []
    kinds = {"new": 0, "exact": 0, "reworded": 0, "number_changed": 0}
    folder.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, rows, CHUNK_ROWS)):
        size = min(CHUNK_ROWS, rows - start)
        products, subjects, bodies = [], [], []
        for _ in range(size):
            roll = rng.random()
            if pool and roll < 0.28:
                params = rng.choice(pool)
                product, subject, body = _text(params)
                if rng.random() < 0.3:
                    body = _messy(body, rng)
                kinds["exact"] += 1
            elif pool and roll < 0.42:  # same facts, other words
                base = rng.choice(pool)
                params = (base[0], rng.randrange(4), base[2], base[3], base[4],
                          rng.randrange(len(OPENERS)), rng.randrange(len(CLOSERS)), base[7])
                product, subject, body = _text(params)
                kinds["reworded"] += 1
            elif pool and roll < 0.52:  # same words, another order number or amount
                base = list(rng.choice(pool))
                if ASKS[base[0]][1][base[1]].count("{a}") and rng.random() < 0.5:
                    base[4] = (base[4] + rng.randrange(1, len(AMOUNTS))) % len(AMOUNTS)
                else:
                    base[3] = 100_000 + (base[3] - 100_000 + rng.randrange(1, orders)) % orders
                params = tuple(base)
                product, subject, body = _text(params)
                kinds["number_changed"] += 1
            else:
                extra = rng.random()
                params = (
                    rng.randrange(len(ASKS)), rng.randrange(4), rng.randrange(len(PRODUCTS)),
                    100_000 + rng.randrange(orders), rng.randrange(len(AMOUNTS)),
                    rng.randrange(len(OPENERS)), rng.randrange(len(CLOSERS)),
                    1 if extra < 0.1 else 2 if extra < 0.15 else 0,
                )
                product, subject, body = _text(params)
                kinds["new"] += 1
            if len(pool) < POOL_SIZE:
                pool.append(params)
            else:
                pool[rng.randrange(POOL_SIZE)] = params
            products.append(product)
            subjects.append(subject)
            bodies.append(body)
        ids = [f"T{i:09d}" for i in range(start, start + size)]
        pl.DataFrame({
            "ticket_id": ids,
            "created_at": [f"2026-11-{1 + i % 28:02d}" for i in range(start, start + size)],
            "channel": [CHANNELS[i % len(CHANNELS)] for i in range(start, start + size)],
            "product": products,
            "subject": subjects,
            "body": bodies,
        }).write_parquet(folder / f"part-{part:04d}.parquet")
    return kinds


PIPELINE = """\
name: bench_scale
input:
  path: {data}
  id_column: ticket_id
  columns: [ticket_id, created_at, channel, product, subject]
output:
  path: {work}/outputs.parquet
ledger:
  path: {work}/ledger
cache:
  path: {work}/cache
prompt:
  system: >-
    You are a support analyst. Summarise the customer's ticket in one short sentence that
    names the product and what the customer wants. Do not invent details.
  template: |-
    Product: {{{{ product }}}}
    Subject: {{{{ subject }}}}

    {{{{ body }}}}
  output_column: summary
compress:
  steps:
    - type: whitespace
    - type: boilerplate
    - type: repeated_lines
    - type: field_budget
      fields: {{body: 400}}
dedup:
  exact: true
  semantic:
    enabled: true
    threshold: 0.75
    backend: model2vec
    across_runs: true
baseline:
  provider: openai
  model: gpt-4o
default_profile: openai
profiles:
  openai:
    provider: openai
    model: gpt-4o-mini
    max_tokens: 64
"""


class StageClock:
    """Charges wall time and peak RSS to the innermost running stage."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.seconds: dict[str, float] = {}
        self.peak_kb: dict[str, int] = {}
        self.after_kb: dict[str, int] = {}
        self.order: list[str] = []
        self.resettable = _reset_peak()
        self.mark = time.perf_counter()

    def _close_segment(self) -> None:
        now = time.perf_counter()
        if self.stack:
            name = self.stack[-1]
            self.seconds[name] = self.seconds.get(name, 0.0) + now - self.mark
            peak = _status_kb("VmHWM") if self.resettable else _ru_maxrss_kb()
            self.peak_kb[name] = max(self.peak_kb.get(name, 0), peak)
        _reset_peak()
        self.mark = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._close_segment()
        if name not in self.order:
            self.order.append(name)
        self.stack.append(name)
        try:
            yield
        finally:
            self._close_segment()
            self.after_kb[name] = _status_kb("VmRSS")
            self.stack.pop()

    def wrap(self, owner: Any, attribute: str, name: str) -> None:
        """Replace `owner.attribute` (a module function or a class's method) by a timed one."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def _status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _ru_maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _instrument(clock: StageClock) -> None:
    """Wrap the functions `prepare` and `plan_run` call, at the names they are called by."""
    import batchopt.dedup.semantic as semantic
    import batchopt.dedup.step as step
    import batchopt.plan.estimate as estimate
    import batchopt.prompts.compress as compress
    import batchopt.run.row_stages as row_stages
    import batchopt.run.runner as runner
    import batchopt.run.steps as steps
    import batchopt.run.tiers as tiers
    import batchopt.services.embed as embed
    import batchopt.services.token_counters as token_counters
    from batchopt.engines.local import LocalEngine
    from batchopt.services.embed_cache import EmbeddingCache

    try:
        import batchopt.engines.ray_engine as ray_engine
        from batchopt.engines.ray_engine import RayEngine
    except ImportError:  # no Ray installed: only the local engine can run
        ray_engine = RayEngine = None

    for owner, attribute, name in [
        (runner, "prepare", "prepare (glue)"),
        (steps, "read_rows", "read parquet + checks"),
        (LocalEngine, "map_rows", ROW_LOCAL),
        (RayEngine, "map_rows", ROW_LOCAL),
        (ray_engine, "ensure_ray", RAY_START),
        (compress, "compress_rows", "compress (+ token counts)"),
        (row_stages, "render_prompts", "render (jinja)"),
        (steps, "exact_groups", "exact dedup"),
        (step, "semantic_dedup", "semantic: glue (dicts of vectors/texts)"),
        (embed, "load_embedder", "semantic: load embedder"),
        (EmbeddingCache, "embed", "semantic: embed (+ disk cache)"),
        (semantic, "semantic_groups", "semantic: group columns"),
        (semantic, "neighbours", "semantic: neighbours (IVF)"),
        (semantic, "extract_many", "semantic: guard facts"),
        (semantic, "veto_many", "semantic: guard vetoes"),
        (semantic, "_cluster", "semantic: greedy clustering loop"),
        (semantic, "_buckets", "semantic: buckets (k-means, assign)"),
        (token_counters, "calibrate", "calibrate (ledger)"),
        (runner, "make_tier", "tiers"),
        (steps, "route_groups", "route groups"),
        (tiers, "request_columns", "requests (hash + count tokens)"),
        (steps, "first_requests", "first_requests (glue)"),
        (steps, "fit_context", "context check"),
        (runner, "read_history", "read history (ledger)"),
        (estimate, "estimate_job", "estimate"),
    ]:
        if owner is not None:
            clock.wrap(owner, attribute, name)


def _holders(plan: Any) -> dict[str, float]:
    """MB held by what the Plan keeps, per holder: frames and arrays by their own size
    (`estimated_size`, `nbytes`), Python objects (the few left) sized on a sample."""
    import sys as _sys

    def deep(obj: Any, seen: set[int]) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        size = _sys.getsizeof(obj)
        if isinstance(obj, dict):
            size += sum(deep(k, seen) + deep(v, seen) for k, v in obj.items())
        elif isinstance(obj, list | tuple | set | frozenset):
            size += sum(deep(v, seen) for v in obj)
        elif hasattr(obj, "__dict__"):
            size += deep(vars(obj), seen)
        elif hasattr(obj, "__slots__"):
            size += sum(deep(getattr(obj, s), seen) for s in obj.__slots__ if hasattr(obj, s))
        return size

    def sampled(mapping: dict[Any, Any], shared: set[int] | None = None) -> float:
        items = list(mapping.items())[:2000]
        if not items:
            return 0.0
        seen = set(shared or ())
        per = sum(deep(k, seen) + deep(v, seen) for k, v in items) / len(items)
        return (per * len(mapping) + _sys.getsizeof(mapping)) / 2**20

    requests, routes, key_tier = plan.requests, plan.routes, plan.key_tier
    out = {"plan.rows (polars frame)": plan.rows.estimated_size() / 2**20}
    # columns since issue 10: their arrays' bytes (a lookup index counts once built)
    out[f"plan.requests ({len(requests):,} requests as columns)"] = requests.nbytes() / 2**20
    out[f"plan.routes ({len(routes.reps):,} groups as columns, with the representatives' "
        "row positions)"] = routes.nbytes() / 2**20
    out[f"plan.key_tier (the table's + {len(key_tier.added):,} added)"] = (
        key_tier.nbytes() / 2**20)
    if plan.skipped or plan.overflow:
        system = {id(plan.tiers[t].spec.system) for t in plan.tiers}  # shared by every request
        out[f"plan.skipped + overflow ({len(plan.overflow):,} Python objects)"] = (
            sampled(plan.skipped, system) + sampled(plan.overflow))
    if plan.semantic is not None:
        # one (rows, dim) array (memory-mapped from the cache folder when there is one: its
        # pages count only while resident) and an id index; texts are read from plan.rows
        import numpy as np

        array = plan.semantic.vectors.array
        mapped = isinstance(array, np.memmap) or isinstance(getattr(array, "base", None),
                                                            np.memmap)
        out[f"plan.semantic.vectors ({len(array):,} x {array.shape[1]} float32"
            f"{', memory-mapped' if mapped else ''})"] = array.nbytes / 2**20
    return out


def run_one(data: Path, work: Path, engine: str = "local") -> dict[str, Any]:
    """The plan path on `data` with `engine`, instrumented; called in a fresh child process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if engine == "ray":  # a local Ray, quiet and offline; a short folder: its sockets' paths
        # must stay under 107 bytes (AF_UNIX)
        folder = work.parent / "r"  # removed with the data unless --keep-data or --data-dir
        if len(str(folder)) > 40:
            folder = Path(tempfile.mkdtemp(prefix="bo_ray_"))
        os.environ.setdefault("BATCHOPT_RAY_TMPDIR", str(folder))
    import batchopt.run.runner as runner
    from batchopt.config.pipeline import load_pipeline

    if os.environ.get("BENCH_BUCKETS_OF"):  # bucketed semantic dedup, buckets of about N rows
        import batchopt.dedup.semantic as semantic

        target = int(os.environ["BENCH_BUCKETS_OF"])
        semantic.BUCKET_TARGET = target
        semantic.BUCKET_ROWS = semantic.BUCKET_MAX = target * 3 // 2

    yaml_path = work / "pipeline.yaml"
    yaml_path.write_text(PIPELINE.format(data=data, work=work))
    loaded = load_pipeline(yaml_path, env={})
    clock = StageClock()
    _instrument(clock)
    import batchopt.plan.estimate as estimate

    start_kb = _status_kb("VmRSS")
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    plan = runner.prepare(loaded, runner.RunOptions(engine=engine), {}, require_keys=False)
    job = estimate.estimate_job(plan, None)  # what plan_run does when the response cache is empty
    total = time.perf_counter() - started
    holders = _holders(plan)
    return {
        "engine": engine,
        "load": (load_before, os.getloadavg()[0]),  # other work on the machine skews the ratio
        "rows": plan.rows.height,
        "total_s": total,
        "start_rss_mb": start_kb / 1024,
        "end_rss_mb": _status_kb("VmRSS") / 1024,
        # ru_maxrss follows VmHWM's resets: the run's peak is the highest stage peak
        "peak_rss_mb": max([*clock.peak_kb.values(), _status_kb("VmHWM"),
                            0 if clock.resettable else _ru_maxrss_kb()]) / 1024,
        "peak_source": "VmHWM reset per stage" if clock.resettable else "ru_maxrss so far",
        "stages": [
            {"stage": name, "seconds": clock.seconds.get(name, 0.0),
             "peak_mb": clock.peak_kb.get(name, 0) / 1024,
             "after_mb": clock.after_kb.get(name, 0) / 1024}
            for name in clock.order
        ],
        "exact": job.exact_followers,
        "semantic": job.semantic_followers,
        "distinct": job.distinct,
        "vetoed": int(plan.rows["veto_guard"].is_not_null().sum()),
        "input_tokens": sum(t.input_tokens for t in job.tiers),
        "cost_usd": job.cost_usd,
        "holders_mb": holders,
    }


def _print(result: dict[str, Any], kinds: dict[str, int], gen_s: float) -> None:
    rows = result["rows"]
    print(f"\n=== {rows:,} rows, engine {result['engine']}  (generated in {gen_s:.0f} s: "
          f"{kinds})")
    print(f"plan: {result['total_s']:.1f} s = {rows / result['total_s']:,.0f} rows/s; "
          f"peak RSS {result['peak_rss_mb']:,.0f} MB (after imports "
          f"{result['start_rss_mb']:,.0f} MB, at end {result['end_rss_mb']:,.0f} MB); "
          f"peaks: {result['peak_source']}")
    print(f"{'stage (own time, callees excluded)':44s} {'seconds':>9s} {'rows/s':>12s} "
          f"{'share':>6s} {'peak RSS MB':>12s} {'RSS after MB':>13s}")
    for s in result["stages"]:
        rate = rows / s["seconds"] if s["seconds"] > 0 else float("inf")
        print(f"{s['stage']:44s} {s['seconds']:9.2f} {rate:12,.0f} "
              f"{s['seconds'] / result['total_s']:6.1%} {s['peak_mb']:12,.0f} "
              f"{s['after_mb']:13,.0f}")
    print(f"dedup: exact followers {result['exact']:,}, semantic followers "
          f"{result['semantic']:,}, distinct requests {result['distinct']:,}, vetoed by guards "
          f"{result['vetoed']:,}; input tokens {result['input_tokens']:,}; "
          f"estimate ${result['cost_usd']:,.2f}")
    print("held by the Plan when prepare returns (MB, Python objects sized on a sample):")
    for name, mb in result["holders_mb"].items():
        print(f"  {name:58s} {mb:10,.0f}")
    sys.stdout.flush()


def _compare(results: dict[str, dict[str, Any]]) -> None:
    """Each engine's total and row-local seconds on the same rows, and the ratio to local."""
    def row_local(result: dict[str, Any], *, start: bool = True) -> float:
        return sum(s["seconds"] for s in result["stages"] if s["stage"] in ROW_LOCAL_STAGES
                   and (start or s["stage"] != RAY_START))

    base = results.get("local")
    rows = next(iter(results.values()))["rows"]
    print(f"\n--- engines on the same {rows:,} rows ({os.cpu_count()} cores)")
    print(f"{'engine':8s} {'plan total s':>13s} {'row-local s':>12s} {'(w/o Ray start)':>16s} "
          f"{'total ratio':>12s} {'row-local ratio':>16s} {'(w/o start)':>12s} "
          f"{'load avg before/after':>22s}")
    for engine, result in results.items():
        ratios = ("", "", "")
        if base is not None:
            ratios = (f"{result['total_s'] / base['total_s']:.2f}x",
                      f"{row_local(result) / row_local(base):.2f}x",
                      f"{row_local(result, start=False) / row_local(base, start=False):.2f}x")
        print(f"{engine:8s} {result['total_s']:13.1f} {row_local(result):12.1f} "
              f"{row_local(result, start=False):16.1f} {ratios[0]:>12s} {ratios[1]:>16s} "
              f"{ratios[2]:>12s} {result['load'][0]:>14.1f} / {result['load'][1]:<5.1f}")
    same = {(r["rows"], r["exact"], r["semantic"], r["distinct"], r["input_tokens"])
            for r in results.values()}
    print("same plan on every engine (rows, followers, distinct requests, input tokens): "
          f"{'yes' if len(same) == 1 else 'NO: ' + repr(same)}")
    sys.stdout.flush()


def _child(args: list[str], limit_gb: float, timeout_s: float) -> str:
    """Run this script with `args` in a child; kill it past `limit_gb` RSS or `timeout_s`."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                            text=True)
    started, worst = time.monotonic(), 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            match = re.search(r"^VmRSS:\s+(\d+) kB", status.read_text(), re.MULTILINE)
            worst = max(worst, int(match.group(1)) if match else 0)
        except OSError:
            pass
        if worst > limit_gb * 2**20 or time.monotonic() - started > timeout_s:
            proc.kill()
            proc.wait()
            raise SystemExit(f"stopped {args}: RSS {worst / 2**20:.1f} GiB, "
                             f"{time.monotonic() - started:.0f} s (limits {limit_gb} GiB, "
                             f"{timeout_s:.0f} s)")
        time.sleep(0.5)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"child {args} failed with exit code {proc.returncode}")
    return out.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000",
                        help="comma-separated sizes (default 100000,1000000)")
    parser.add_argument("--data-dir", type=Path,
                        help="where to generate the data (default: a temporary folder)")
    parser.add_argument("--keep-data", action="store_true", help="leave the data in place")
    parser.add_argument("--max-rss-gb", type=float, default=20.0,
                        help="kill a size's child past this RSS (default 20)")
    parser.add_argument("--timeout-min", type=float, default=25.0,
                        help="kill a size's child after this long (default 25)")
    parser.add_argument("--generate", nargs=2, metavar=("ROWS", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local",
                        help="comma-separated engines to run each size on: local, ray "
                             "(default local; local,ray prints the ratio ray/local)")
    parser.add_argument("--warm-cache", action="store_true",
                        help="keep an earlier run's work folder (its embedding cache): the "
                             "embed stage reads instead of computing; said in the output")
    parser.add_argument("--buckets-of", type=int,
                        help="semantic dedup bucket by bucket with buckets of about N rows "
                             "(default: the step's own rule, buckets above 1.5M representatives)")
    parser.add_argument("--one", nargs=3, metavar=("DATA", "WORK", "ENGINE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        print(json.dumps(generate(int(args.generate[0]), Path(args.generate[1]))))
        return
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), Path(args.one[1]), args.one[2])))
        return

    if args.buckets_of:
        os.environ["BENCH_BUCKETS_OF"] = str(args.buckets_of)  # read by the children
    sizes = [int(s.replace("_", "")) for s in args.rows.split(",") if s.strip()]
    engines = [e.strip() for e in args.engine.split(",") if e.strip()]
    if not engines or any(e not in ("local", "ray") for e in engines):
        parser.error(f"--engine {args.engine}: choose from local, ray")
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    timeout = args.timeout_min * 60
    print(f"data and caches under {root}; {os.cpu_count()} cores")
    try:
        for size in sizes:
            data, work = root / f"rows_{size}", root / f"work_{size}"
            started = time.perf_counter()
            marker = root / f"rows_{size}.kinds.json"  # outside the input folder (read whole)
            if marker.exists():
                kinds = json.loads(marker.read_text())
            else:
                shutil.rmtree(data, ignore_errors=True)  # a half-written earlier attempt
                kinds = json.loads(_child(["--generate", str(size), str(data)],
                                          args.max_rss_gb, timeout))
                marker.write_text(json.dumps(kinds))
            gen_s = time.perf_counter() - started
            results = {}
            for engine in engines:
                run_work = work if engine == "local" else work.with_name(f"{work.name}_{engine}")
                if args.warm_cache and (run_work / "cache").is_dir():
                    print(f"embedding cache WARM: kept from an earlier run in {run_work}")
                else:
                    shutil.rmtree(run_work, ignore_errors=True)  # a cold embedding cache
                    run_work.mkdir(parents=True)
                results[engine] = json.loads(_child(
                    ["--one", str(data), str(run_work), engine], args.max_rss_gb, timeout))
                _print(results[engine], kinds, gen_s)
            if len(results) > 1:
                _compare(results)
    finally:
        if not args.keep_data and args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
