"""batchopt's semantic dedup step side by side with semhash, same static model, same rows.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_semhash.py                 # 100k and 1M
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_semhash.py --rows 100000 --shapes tickets

Needs the `bench` extra (`pip install 'batchopt[bench,semantic]'`: semhash, psutil). Both tools
get the same model2vec static model, distilled offline from the packaged all-MiniLM-L6-v2 by
`batchopt.services.embed.distill_model2vec` (built once into $BATCHOPT_MODELS_DIR, default
~/.cache/batchopt/models, about 20 s). Nothing is downloaded.

Two data shapes, generated here with ground truth (every row carries the label of the request
it makes; rows with the same label need the same answer, rows with different labels do not):

* distinct: mostly distinct rows (random sentences over the model's word list); about 15 % of
  the bases are written 2-3 times with another greeting, sign-off, typo or case (true
  duplicates), about 8 % get a hard negative: the same sentence with its number changed or a
  "not" added.
* tickets: support tickets from the intents and templates of tests/data/dedup_labelled.py;
  the label is the intent plus its facts (order number, amount, product, place, day, ...).
  Order numbers come from a small pool, so many tickets differ only in a number, product or
  place from another one, and intents with few possible facts form large dense clusters.

Plus the labelled set itself (tests/data/dedup_labelled.parquet, 553 rows).

Each tool runs in a fresh child process, so its peak RSS (ru_maxrss) is its own; the clock runs
from the rows in memory (read from Parquet before the clock) to every row's representative, and
includes imports, model load, exact dedup and embedding for both:

* batchopt: `batchopt.dedup.step.dedup_table` (exact, then `semantic_dedup`, what `batchopt
  dedup` and the pipeline run), model2vec backend, default guards, k = 10 neighbours.
* semhash: `SemHash.from_records(texts, model=StaticModel)` + `self_deduplicate(threshold)`.

Scores per tool: rows/s, peak RSS, wrong merges (rows whose representative has another label,
and what differs between the two), recall (rows merged into a representative of their own label,
over the most that could be: rows minus distinct labels).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests" / "data" / "dedup_labelled.parquet"
SEMHASH_THRESHOLD = 0.9  # semhash's own default for self_deduplicate


# ---------------------------------------------------------------- data


def _labelled_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "dedup_labelled", ROOT / "tests" / "data" / "dedup_labelled.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _words(model_dir: Path) -> list[str]:
    vocab = json.loads((model_dir / "tokenizer.json").read_text())["model"]["vocab"]
    return sorted(w for w in vocab if w.isascii() and w.isalpha() and len(w) >= 4)


def make_distinct(n: int, model_dir: Path, seed: int = 11) -> dict[str, list]:
    """Mostly distinct rows: random sentences, a few rewritten, a few hard negatives."""
    lab = _labelled_module()
    rng = random.Random(seed)
    words = _words(model_dir)
    cols: dict[str, list] = {"text": [], "group": [], "intent": [], "facts": []}

    def add(text: str, group: str, change: str) -> None:
        cols["text"].append(text)
        cols["group"].append(group)
        cols["intent"].append(change)  # "base", "number" or "negation"
        cols["facts"].append("")

    base = 0
    while len(cols["text"]) < n:
        base += 1
        picked = rng.sample(words, rng.randint(7, 13))
        number = rng.randrange(100, 100_000) if rng.random() < 0.4 else None
        if number is not None:
            picked.insert(rng.randrange(1, len(picked)), f"{number}")

        def sentence(parts: list[str]) -> str:
            text = " ".join(parts)
            return text[0].upper() + text[1:] + rng.choice([".", "?", "."])

        text = sentence(picked)
        group = f"d{base}"
        add(text, group, "base")
        if rng.random() < 0.15:  # true duplicates: the same request, dressed differently
            for _ in range(rng.choice([1, 1, 2])):
                add(lab.dress(rng, text), group, "base")
        if rng.random() < 0.08:  # hard negative: another number, or negated
            if number is not None:
                other = [f"{number + rng.choice([1, -1, 10])}" if w == f"{number}" else w
                         for w in picked]  # fmt: skip
                add(lab.dress(rng, sentence(other)), f"{group}n", "number")
            else:
                cut = rng.randrange(2, len(picked))
                other = [*picked[:cut], "not", *picked[cut:]]
                add(lab.dress(rng, sentence(other)), f"{group}n", "negation")
    return {k: v[:n] for k, v in cols.items()}


def make_tickets(n: int, seed: int = 12) -> dict[str, list]:
    """Support tickets; the label is intent + facts; dense neighbourhoods by construction."""
    lab = _labelled_module()
    rng = random.Random(seed)
    intents = list(lab.INTENTS)
    order_pool = max(500, n // 12)  # many orders one apart: 10233 next to 10234
    cols: dict[str, list] = {"text": [], "group": [], "intent": [], "facts": []}
    while len(cols["text"]) < n:
        intent = rng.choice(intents)
        names, templates = lab.INTENTS[intent]
        slots = lab.draw_slots(rng, names)
        if "order" in slots:
            slots["order"] = 10_000 + rng.randrange(order_pool)
        facts = "|".join(f"{k}={slots[k]}" for k in sorted(slots))
        for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 5])):
            text = lab.dress(rng, lab.render(rng, rng.choice(templates), slots))
            cols["text"].append(text)
            cols["group"].append(f"{intent}|{facts}")
            cols["intent"].append(intent)
            cols["facts"].append(facts)
    return {k: v[:n] for k, v in cols.items()}


def dataset(shape: str, n: int, model_dir: Path, cache: Path) -> Path:
    """Parquet with id, text, group, intent, facts (generated once per shape and size)."""
    import polars as pl

    if shape == "labelled":
        return LABELLED
    path = cache / f"{shape}-{n}.parquet"
    if not path.exists():
        cols = make_distinct(n, model_dir) if shape == "distinct" else make_tickets(n)
        frame = pl.DataFrame(cols).with_row_index("id").with_columns(
            pl.format("r{}", pl.col("id")).alias("id")
        )
        frame.write_parquet(path)
    return path


# ---------------------------------------------------------------- children


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_batchopt(data: Path, out: Path, model: Path, threshold: float) -> dict[str, Any]:
    import polars as pl

    rows = pl.read_parquet(data, columns=["id", "text"])
    start = time.perf_counter()
    from batchopt.dedup.step import SemanticSettings, dedup_table

    settings = SemanticSettings(threshold=threshold, backend="model2vec", model=str(model))
    groups = dedup_table(rows, "id", "text", settings)
    seconds = time.perf_counter() - start
    groups.select("id", pl.col("representative_id").alias("rep")).write_parquet(out)
    return {"seconds": seconds}


def child_semhash(data: Path, out: Path, model: Path, threshold: float) -> dict[str, Any]:
    import polars as pl

    rows = pl.read_parquet(data, columns=["id", "text"])
    texts = rows["text"].to_list()
    start = time.perf_counter()
    from model2vec import StaticModel
    from semhash import SemHash

    static = StaticModel.from_pretrained(model, force_download=False)
    result = SemHash.from_records(texts, model=static).self_deduplicate(threshold=threshold)
    seconds = time.perf_counter() - start
    # every text -> the text it is kept as (its own, or the one it duplicates)
    rep_text = {text: text for text in result.selected}
    rep_text.update((d.record, d.duplicate_of) for d in result.filtered)
    first = rows.group_by("text", maintain_order=True).agg(pl.col("id").first().alias("rep"))
    mapping = pl.DataFrame(
        {"text": list(rep_text), "rep_text": list(rep_text.values())}, schema=[
            ("text", pl.String), ("rep_text", pl.String)]  # fmt: skip
    ).join(first.rename({"text": "rep_text"}), on="rep_text", how="left")
    rows.join(mapping, on="text", how="left").select("id", "rep").write_parquet(out)
    return {"seconds": seconds}


def child_main(tool: str, data: Path, out: Path, model: Path, threshold: float) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    run = child_batchopt if tool == "batchopt" else child_semhash
    result = run(data, out, model, threshold)
    result["peak_mib"] = _peak_mib()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # whole child, reading included
    print("RESULT " + json.dumps(result), flush=True)


def run_child(
    tool: str, data: Path, model: Path, threshold: float, work: Path, timeout: float
) -> dict[str, Any]:
    out = work / f"{tool}-{data.stem}-{threshold}.parquet"
    cmd = [sys.executable, __file__, "--child", tool, "--data", str(data), "--out", str(out),
           "--model", str(model), "--threshold", str(threshold)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    import psutil

    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, text=True, env=env)
        started, seen = time.monotonic(), 0.0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                seen = max(seen, psutil.Process(proc.pid).memory_info().rss / 2**20)
            if time.monotonic() - started > timeout:
                proc.kill()
                proc.wait()
                # what a run cut short shows: it took longer and used at least this much
                return {"timed_out": True, "seconds": timeout, "peak_mib": seen}
            time.sleep(0.5)
        stdout.seek(0)
        stderr.seek(0)
        out_text, err_text = stdout.read(), stderr.read()
    lines = [ln for ln in out_text.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{tool} child failed ({proc.returncode}):\n{err_text[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["assignments"] = out
    return result


# ---------------------------------------------------------------- scoring


def _change(row: dict[str, Any], rep: dict[str, Any], opposites: dict[str, str]) -> str:
    """What differs between a row and the representative it was wrongly merged into."""
    if row["intent"] in ("base", "number", "negation"):  # distinct shape
        a, b = row["group"], rep["group"]
        return (row["intent"] if a == b + "n" else rep["intent"]) if a.rstrip("n") == b.rstrip(
            "n"
        ) else "unrelated"
    if "change" in row:  # labelled set
        return row["change"] or rep["change"] or "other group"
    if row["intent"] != rep["intent"]:
        pair = {row["intent"], rep["intent"]}
        for a, b in opposites.items():
            if pair == {a, b}:
                return "negation/opposite"
        return "intent" if row["facts"] == rep["facts"] else "intent+facts"
    mine = dict(kv.split("=", 1) for kv in row["facts"].split("|"))
    theirs = dict(kv.split("=", 1) for kv in rep["facts"].split("|"))
    return "+".join(k for k in sorted(mine) if mine[k] != theirs.get(k))


def score(data: Path, assignments: Path) -> dict[str, Any]:
    import polars as pl

    truth = pl.read_parquet(data)
    if "intent" not in truth.columns:  # the labelled set
        truth = truth.with_columns(pl.lit("").alias("intent"), pl.lit("").alias("facts"))
    got = pl.read_parquet(assignments)
    frame = truth.join(got, on="id", how="left")
    assert frame["rep"].null_count() == 0, "a row without representative"
    rep_cols = frame.select(
        pl.col("id").alias("rep"), *(pl.col(c).alias(f"rep_{c}") for c in
                                     ("group", "intent", "facts", "change") if c in frame.columns)
    )  # fmt: skip
    frame = frame.join(rep_cols, on="rep", how="left")
    follower = pl.col("id") != pl.col("rep")
    same = pl.col("group") == pl.col("rep_group")
    right = frame.filter(follower & same).height
    wrong = frame.filter(follower & ~same)
    possible = frame.height - frame["group"].n_unique()
    opposites = {a: b for a, (b, _) in _labelled_module().OPPOSITES.items()}
    kinds: Counter[str] = Counter()
    for row in wrong.iter_rows(named=True):
        mine = {k: row[k] for k in ("group", "intent", "facts", "change") if k in row}
        theirs = {k: row[f"rep_{k}"] for k in mine}
        kinds[_change(mine, theirs, opposites)] += 1
    return {
        "wrong": wrong.height,
        "wrong_kinds": dict(kinds.most_common(4)),
        "recall": right / possible if possible else 1.0,
        "merged": frame.filter(follower).height,
    }


# ---------------------------------------------------------------- main


def ensure_model() -> Path:
    from batchopt.services.embed import default_model2vec_path, distill_model2vec

    folder = default_model2vec_path()
    if not (folder / "config.json").is_file():
        print(f"distilling the model2vec model into {folder} (offline, about 20 s) ...")
        distill_model2vec()
    return folder


def _row(label: str, r: dict[str, Any], n: int) -> str:
    if r.get("timed_out"):
        rate, secs, peak = (f"<{n / r['seconds']:,.0f}", f">{r['seconds']:.0f}",
                            f">{r['peak_mib']:,.0f}")
        return (f"  {label:<22} {rate:>10} {secs:>8} {'':>8} {peak:>9}"
                f"   stopped: not done after {r['seconds']:.0f} s (peak RSS seen so far)")
    kinds = ", ".join(f"{k} {v}" for k, v in r["wrong_kinds"].items()) or "-"
    return (
        f"  {label:<22} {n / r['seconds']:>10,.0f} {r['seconds']:>8.1f} "
        f"{r['cpu_seconds']:>8.1f} {r['peak_mib']:>9,.0f} {r['wrong']:>7,} {r['recall']:>7.3f}"
        f"   {kinds}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--shapes", default="distinct,tickets")
    parser.add_argument("--no-labelled", action="store_true", help="skip the labelled set")
    parser.add_argument("--threshold", type=float, default=None,
                        help="batchopt's threshold (default: its default for model2vec)")
    parser.add_argument("--semhash-threshold", default=str(SEMHASH_THRESHOLD),
                        help="comma-separated; the first is used for the ratios")
    parser.add_argument("--cache", type=Path, default=None,
                        help="generated data (default: a temp dir, removed afterwards)")
    parser.add_argument("--tools", default="batchopt,semhash", help="which tools to run")
    parser.add_argument("--timeout", type=float, default=3600, help="per child, seconds")
    # child mode
    parser.add_argument("--child", choices=["batchopt", "semhash"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.data, args.out, args.model, args.threshold)
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(ROOT))
    from batchopt.config.sections import default_threshold

    threshold = args.threshold if args.threshold is not None else default_threshold("model2vec")
    semhash_thresholds = [float(t) for t in args.semhash_threshold.split(",")]
    model = ensure_model()
    runs: list[tuple[str, int]] = [] if args.no_labelled else [("labelled", 553)]
    runs += [(s, int(n)) for n in args.rows.split(",") for s in args.shapes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_semhash-") as tmp:
        cache = args.cache or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tmp)
        print(
            f"model: {model}; batchopt threshold {threshold} (guards on, k=10); semhash "
            f"threshold {', '.join(map(str, semhash_thresholds))}; {os.cpu_count()} cores"
        )
        header = (
            f"  {'tool':<22} {'rows/s':>10} {'seconds':>8} {'cpu s':>8} {'peak MiB':>9} "
            f"{'wrong':>7} {'recall':>7}   wrong merges by what differs"
        )
        for shape, n in runs:
            started = time.perf_counter()
            data = dataset(shape, n, model, cache)
            import polars as pl

            n = pl.scan_parquet(data).select(pl.len()).collect().item()
            gen = time.perf_counter() - started
            print(f"\n{shape}, {n:,} rows (data ready in {gen:.1f} s)")
            print(header)
            tools = args.tools.split(",")
            ours: dict[str, Any] | None = None
            if "batchopt" in tools:
                ours = run_child("batchopt", data, model, threshold, work, args.timeout)
                if ours.get("timed_out"):
                    print(_row(f"batchopt @{threshold}", ours, n), flush=True)
                    continue
                ours.update(score(data, ours["assignments"]))
                print(_row(f"batchopt @{threshold}", ours, n), flush=True)
            theirs_first: dict[str, Any] | None = None
            for t in semhash_thresholds if "semhash" in tools else []:
                theirs = run_child("semhash", data, model, t, work, args.timeout)
                if not theirs.get("timed_out"):
                    theirs.update(score(data, theirs["assignments"]))
                theirs_first = theirs_first or theirs
                print(_row(f"semhash @{t}", theirs, n), flush=True)
            if ours is None or theirs_first is None:
                continue
            speed = theirs_first["seconds"] / ours["seconds"]
            memory = ours["peak_mib"] / theirs_first["peak_mib"]
            if theirs_first.get("timed_out"):  # bounds, not figures
                print(f"  ratios batchopt/semhash@{semhash_thresholds[0]}: rows/s more than "
                      f"x{speed:.2f}, peak RSS at most x{memory:.2f} (semhash stopped after "
                      f"{theirs_first['seconds']:.0f} s); wrong merges {ours['wrong']:,} vs "
                      "(not finished)", flush=True)
                continue
            print(
                f"  ratios batchopt/semhash@{semhash_thresholds[0]}: rows/s x{speed:.2f}, "
                f"peak RSS x{memory:.2f}; wrong merges {ours['wrong']:,} vs "
                f"{theirs_first['wrong']:,}",
                flush=True,
            )

if __name__ == "__main__":
    main()
