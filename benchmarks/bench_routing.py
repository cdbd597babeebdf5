"""Cost and quality of the routing strategies on a labelled set, against the fake server.

    python benchmarks/bench_routing.py                 # 4,000 evaluation rows, 2,000 training
    python benchmarks/bench_routing.py --quick         # 300 + 300 rows, about 15 s
    python benchmarks/bench_routing.py --rows 5000 --seed 3 --strategies single-strong,cascade

The set (benchmarks/routing_set.py) is support tickets to file under one of six categories,
about 80% easy (one plain issue) and 20% hard (several issues, or one ambiguous one). The fake
server's answer oracle knows each ticket's label and answers right or wrong per model and
difficulty with the accuracies printed at the end (--cheap-easy etc. change them), with OpenAI
log-probabilities that are confident on most right answers and unsure on most wrong ones.

Each strategy is one whole run (`run_pipeline`, online, exact dedup, its own cache) over the
evaluation rows, with two OpenAI tiers: cheap gpt-4o-mini (logprobs on) and strong gpt-4o.

    single-strong  every row on gpt-4o: the reference
    single-cheap   every row on gpt-4o-mini
    rules          multi-issue words or a long prompt -> gpt-4o, else gpt-4o-mini
    classifier     a router trained on the training split (its own markers) at threshold 0.5
    cascade        gpt-4o-mini first; refusals and unsure answers (mean logprob < -0.5) are
                   asked again of gpt-4o

For each it prints the cost (the ledger's cost_usd, escalations' earlier attempts included) as a
share of single-strong's; the share of rows answered right; the right answers kept: how many of
the rows single-strong answered right this strategy answered right too (the target measure),
and the count of right answers against single-strong's (may pass 100%: the cheap model is
sometimes right where the strong one is not); the share of rows (and of hard rows) answered by
gpt-4o, escalations, and seconds. Then the classifier's threshold curve (one run per threshold,
0.1 ... 0.9), and whether the best strategy keeps >= 95% of single-strong's right answers at
<= 35% of its cost.

Nothing is spent: requests go to an in-process fake server through the env given to the run;
the process's own OPENAI_* variables are neither read nor changed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedders are packaged; never fetch

import numpy as np
import polars as pl
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routing_set import CATEGORIES, Task, make_splits, normalise_answer, oracle_items  # noqa: E402

from batchopt.config.pipeline import load_pipeline  # noqa: E402
from batchopt.fakeapi import FakeServer  # noqa: E402
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline  # noqa: E402

CHEAP_MODEL, STRONG_MODEL = "gpt-4o-mini", "gpt-4o"
STRATEGIES = ("single-strong", "single-cheap", "rules", "classifier", "cascade")
THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))
TARGET_KEPT, TARGET_COST = 95.0, 35.0

# Accuracy of the fake models: the chance a row of that difficulty is answered right, drawn per
# (model, ticket). gpt-4o-mini-class models file plain one-issue tickets almost always right
# and get multi-issue or ambiguous ones right well under half the time; gpt-4o-class models
# are near perfect on plain tickets and right on most hard ones.
ACCURACY = {
    CHEAP_MODEL: {"easy": 0.96, "hard": 0.40},
    STRONG_MODEL: {"easy": 0.995, "hard": 0.95},
}

SYSTEM = (
    "Classify the customer support ticket into exactly one category: "
    + ", ".join(CATEGORIES)
    + ". When a ticket raises several issues, choose the one the customer wants dealt with "
    "first. Reply with the category only."
)
MULTI_ISSUE_WORDS = r"(?i)\b(also|on top of that|another thing|separately|besides that)\b"
LONG_PROMPT_TOKENS = 40
RULES = [
    {"name": "multi-issue words", "when": {"prompt_matches": MULTI_ISSUE_WORDS}, "tier": "strong"},
    {"name": "long", "when": {"prompt_tokens": {"gt": LONG_PROMPT_TOKENS}}, "tier": "strong"},
]
CASCADE_VALIDATORS = [
    {"type": "refusal"},
    {"type": "confidence", "min_mean_logprob": -0.5},
]


@dataclass
class Outcome:
    """One strategy's run, scored against the labels."""

    name: str
    rows: int
    cost_usd: float
    right: np.ndarray  # per evaluation row, in set order: answered right
    on_strong: np.ndarray  # per evaluation row: answered by the strong tier
    hard: np.ndarray  # per evaluation row: labelled hard
    escalated: int
    failed: int
    seconds: float

    @property
    def strong_tier(self) -> int:
        return int(self.on_strong.sum())

    @property
    def hard_up_pct(self) -> float:
        """The share of hard rows answered by the strong tier."""
        return 100.0 * int((self.on_strong & self.hard).sum()) / max(1, int(self.hard.sum()))

    def cost_pct(self, reference: Outcome) -> float:
        return 100.0 * self.cost_usd / reference.cost_usd

    def kept_pct(self, reference: Outcome) -> float:
        """Of the rows the reference answered right, the share this one answered right too."""
        return 100.0 * int((self.right & reference.right).sum()) / int(reference.right.sum())

    def count_pct(self, reference: Outcome) -> float:
        """Right answers against the reference's, as counts."""
        return 100.0 * int(self.right.sum()) / int(reference.right.sum())

    def meets(self, reference: Outcome) -> bool:
        return self.kept_pct(reference) >= TARGET_KEPT and self.cost_pct(reference) <= TARGET_COST


# ---------------------------------------------------------------------------------------------
# Pipelines and runs


def pipeline_dict(data_path: Path, routing: dict[str, Any], concurrency: int) -> dict[str, Any]:
    def profile(model: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "provider": "openai",
            "model": model,
            "max_tokens": 8,
            "concurrency": concurrency,
            "max_attempts": 3,
            "timeout_s": 30,
        }
        if params:
            out["params"] = params
        return out

    return {
        "name": "routing_bench",
        "input": {"path": str(data_path), "id_column": "ticket_id"},
        "output": {"path": "out/outputs.parquet"},
        "ledger": {"path": "out/ledger"},
        "cache": {"path": "out/cache"},
        "prompt": {"system": SYSTEM, "template": "{{ text }}", "output_column": "category"},
        "dedup": {"exact": True},
        "baseline": {"provider": "openai", "model": STRONG_MODEL},
        "default_profile": "strong",
        "profiles": {
            "cheap": profile(CHEAP_MODEL, {"logprobs": True}),
            "strong": profile(STRONG_MODEL),
        },
        "routing": routing,
    }


def routing_for(
    strategy: str, router_path: Path | None, threshold: float, backend: str
) -> dict[str, Any]:
    tiers = ["cheap", "strong"]
    if strategy == "single-strong":
        return {"strategy": "single", "tiers": ["strong"]}
    if strategy == "single-cheap":
        return {"strategy": "single", "tiers": ["cheap"]}
    if strategy == "rules":
        return {"strategy": "rules", "tiers": tiers, "default_tier": "cheap", "rules": RULES}
    if strategy == "classifier":
        assert router_path is not None
        return {
            "strategy": "classifier",
            "tiers": tiers,
            "classifier": {"path": str(router_path), "threshold": threshold, "backend": backend},
        }
    if strategy == "cascade":
        return {"strategy": "cascade", "tiers": tiers, "validators": CASCADE_VALIDATORS}
    raise ValueError(f"unknown strategy {strategy!r}")


def fake_env(fake: FakeServer) -> dict[str, str]:
    """The process env without any real provider settings, pointed at the fake server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update({"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "sk-fake-bench-routing"})
    return env


def run_strategy(
    name: str,
    routing: dict[str, Any],
    tasks: list[Task],
    data_path: Path,
    folder: Path,
    fake: FakeServer,
    concurrency: int,
) -> Outcome:
    folder.mkdir(parents=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline_dict(data_path, routing, concurrency)))
    started = time.perf_counter()
    summary = run_pipeline(load_pipeline(path), RunOptions(run_id="bench"), env=fake_env(fake))
    seconds = time.perf_counter() - started
    if not isinstance(summary, RunSummary):
        raise RuntimeError(f"{name}: the run did not finish ({summary!r})")
    ledger = pl.read_parquet(
        folder / "out" / "ledger" / "pipeline=routing_bench" / "run_id=bench" / "part.parquet"
    )
    outputs = pl.read_parquet(folder / "out" / "outputs.parquet")
    answers = dict(zip(outputs["ticket_id"], outputs["category"], strict=True))
    right = np.array([normalise_answer(answers.get(t.ticket_id)) == t.answer for t in tasks])
    strong_rows = set(ledger.filter(pl.col("model") == STRONG_MODEL)["row_id"])
    cost = float(ledger["cost_usd"].fill_null(0).sum())
    if abs(cost - summary.cost_usd) > 1e-9 + 1e-6 * cost:
        raise RuntimeError(f"{name}: ledger cost {cost} != run summary {summary.cost_usd}")
    return Outcome(
        name=name,
        rows=len(tasks),
        cost_usd=cost,
        right=right,
        on_strong=np.array([t.ticket_id in strong_rows for t in tasks]),
        hard=np.array([t.difficulty == "hard" for t in tasks]),
        escalated=int(ledger["escalated"].fill_null(False).sum()),
        failed=summary.failed_rows,
        seconds=seconds,
    )


# ---------------------------------------------------------------------------------------------
# The router


def train_router(
    train: list[Task], backend: str, labels: str, fake: FakeServer, path: Path
) -> dict[str, Any]:
    """Train on the training split and save to `path`; returns the router's metrics."""
    from batchopt.routing import train_router_from_texts
    from batchopt.services.embed import load_embedder

    texts = [t.text for t in train]
    if labels == "difficulty":
        hard = np.array([t.difficulty == "hard" for t in train])
    else:  # cheap-wrong: what a history of the cheap tier's checked answers would say
        hard = np.array([fake.oracle_verdict(CHEAP_MODEL, t.text)[0] != "right" for t in train])
    router = train_router_from_texts(texts, hard, load_embedder(backend))
    router.save(path)
    return router.metrics


def default_backend() -> str:
    """model2vec when its distilled model is on disk (fast), else the packaged MiniLM."""
    from batchopt.services.embed import default_model2vec_path

    found = (default_model2vec_path() / "config.json").is_file()
    return "model2vec" if found else "sentence-transformers"


# ---------------------------------------------------------------------------------------------
# Printing


def pct(value: float) -> str:
    return f"{value:6.1f}%"


def table(outcomes: Sequence[Outcome], reference: Outcome) -> list[str]:
    head = (
        f"{'strategy':<15}{'cost $':>10}{'cost/strong':>12}{'right':>9}{'kept':>9}"
        f"{'right/strong':>13}{'on gpt-4o':>11}{'hard up':>9}{'escalated':>11}{'failed':>8}{'s':>7}"
    )
    lines = [head, "-" * len(head)]
    for o in outcomes:
        lines.append(
            f"{o.name:<15}{o.cost_usd:>10.4f}{pct(o.cost_pct(reference)):>12}"
            f"{pct(100 * o.right.mean()):>9}{pct(o.kept_pct(reference)):>9}"
            f"{pct(o.count_pct(reference)):>13}{pct(100 * o.strong_tier / o.rows):>11}"
            f"{pct(o.hard_up_pct):>9}{pct(100 * o.escalated / o.rows):>11}"
            f"{o.failed:>8}{o.seconds:>7.1f}"
        )
    return lines


def curve_table(points: Sequence[tuple[float, Outcome]], reference: Outcome) -> list[str]:
    head = (
        f"{'threshold':>9}{'cost/strong':>13}{'right':>9}{'kept':>9}{'right/strong':>13}"
        f"{'on gpt-4o':>11}{'hard up':>9}{'meets':>7}{'s':>7}"
    )
    lines = [head, "-" * len(head)]
    for threshold, o in points:
        lines.append(
            f"{threshold:>9.1f}{pct(o.cost_pct(reference)):>13}{pct(100 * o.right.mean()):>9}"
            f"{pct(o.kept_pct(reference)):>9}{pct(o.count_pct(reference)):>13}"
            f"{pct(100 * o.strong_tier / o.rows):>11}{pct(o.hard_up_pct):>9}"
            f"{'yes' if o.meets(reference) else 'no':>7}"
            f"{o.seconds:>7.1f}"
        )
    return lines


def best_line(outcomes: Sequence[Outcome], reference: Outcome) -> str:
    """The cheapest strategy that meets the target, else the nearest miss, and by how much."""
    others = [o for o in outcomes if o is not reference]
    if not others:
        return "best strategy: none to compare (only single-strong was run)"
    meeting = [o for o in others if o.meets(reference)]
    if meeting:
        best = min(meeting, key=lambda o: o.cost_usd)
    else:
        affordable = [o for o in others if o.cost_pct(reference) <= TARGET_COST]
        pool = affordable or others
        best = max(pool, key=lambda o: (o.kept_pct(reference), -o.cost_usd))
    kept, cost = best.kept_pct(reference), best.cost_pct(reference)
    verdict = "MEETS" if best.meets(reference) else "MISSES"
    line = (
        f"best strategy: {best.name}, keeping {kept:.1f}% of single-strong's right answers "
        f"at {cost:.1f}% of its cost: {verdict} the target (>= {TARGET_KEPT:.0f}% kept at "
        f"<= {TARGET_COST:.0f}% cost)"
    )
    if not best.meets(reference):
        gaps = []
        if kept < TARGET_KEPT:
            gaps.append(f"{TARGET_KEPT - kept:.1f} points short on kept")
        if cost > TARGET_COST:
            gaps.append(f"{cost - TARGET_COST:.1f} points over on cost")
        line += f" ({', '.join(gaps)})"
    return line


def measured_accuracy(outcome: Outcome, tasks: list[Task]) -> str:
    hard = np.array([t.difficulty == "hard" for t in tasks])
    easy_acc = outcome.right[~hard].mean() if (~hard).any() else float("nan")
    hard_acc = outcome.right[hard].mean() if hard.any() else float("nan")
    return f"easy {easy_acc:.3f} hard {hard_acc:.3f}"


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=None, help="evaluation rows (default 4000; 300 with --quick)"
    )
    parser.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="training rows for the router (default 2000; 300 with --quick)",
    )
    parser.add_argument("--seed", type=int, default=11, help="seed of the labelled set")
    parser.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma-separated, of {', '.join(STRATEGIES)} "
        "(single-strong is always run: it is the reference)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a test")
    parser.add_argument("--no-curve", action="store_true", help="skip the threshold curve")
    parser.add_argument(
        "--backend",
        choices=("model2vec", "sentence-transformers"),
        default=None,
        help="the router's embedder (default: model2vec if its "
        "distilled model is on disk, else sentence-transformers)",
    )
    parser.add_argument(
        "--router-labels",
        choices=("difficulty", "cheap-wrong"),
        default="difficulty",
        help="what 'hard' means when training the router: the set's difficulty "
        "label, or that gpt-4o-mini answered the training row wrong",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    for model, short in ((CHEAP_MODEL, "cheap"), (STRONG_MODEL, "strong")):
        for level in ("easy", "hard"):
            parser.add_argument(
                f"--{short}-{level}",
                type=float,
                default=ACCURACY[model][level],
                help=f"fake {model} accuracy on {level} rows",
            )
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STRATEGIES]
    if unknown:
        parser.error(
            f"unknown strategies: {', '.join(unknown)} (choose from {', '.join(STRATEGIES)})"
        )
    args.strategies = ["single-strong"] + [s for s in STRATEGIES[1:] if s in wanted]
    args.rows = args.rows or (300 if args.quick else 4000)
    args.train_rows = args.train_rows or (300 if args.quick else 2000)
    return args


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    accuracy = {
        CHEAP_MODEL: {"easy": args.cheap_easy, "hard": args.cheap_hard},
        STRONG_MODEL: {"easy": args.strong_easy, "hard": args.strong_hard},
    }
    train, evaluation = make_splits(args.train_rows, args.rows, args.seed)
    hard_share = sum(t.difficulty == "hard" for t in evaluation) / len(evaluation)
    kinds = {
        k: sum(t.kind == k for t in evaluation) for k in ("single", "long", "multi", "ambiguous")
    }
    out(
        f"routing benchmark: {len(evaluation)} evaluation rows ({100 * (1 - hard_share):.1f}% "
        f"easy: {kinds['single']} plain, {kinds['long']} long; {100 * hard_share:.1f}% hard: "
        f"{kinds['multi']} multi-issue, {kinds['ambiguous']} ambiguous), {len(train)} training "
        f"rows, seed {args.seed}"
    )
    backend = args.backend or default_backend()
    total_started = time.perf_counter()
    with FakeServer() as fake, tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        root = Path(tmp)
        fake.set_oracle(oracle_items(evaluation + train), models=accuracy)
        data_path = root / "data" / "evaluation.parquet"
        data_path.parent.mkdir()
        pl.DataFrame(
            {"ticket_id": [t.ticket_id for t in evaluation], "text": [t.text for t in evaluation]}
        ).write_parquet(data_path)

        router_path = None
        if "classifier" in args.strategies:
            started = time.perf_counter()
            router_path = root / "router.npz"
            metrics = train_router(train, backend, args.router_labels, fake, router_path)
            auc = metrics.get("auc")
            auc_text = f"{auc:.3f}" if isinstance(auc, int | float) else "n/a"
            out(
                f"router: {backend}, trained on {len(train)} rows labelled by "
                f"{args.router_labels}, held-out ROC AUC {auc_text}, "
                f"{time.perf_counter() - started:.1f} s"
            )

        outcomes: list[Outcome] = []
        for name in args.strategies:
            routing = routing_for(name, router_path, 0.5, backend)
            outcomes.append(
                run_strategy(
                    name, routing, evaluation, data_path, root / name, fake, args.concurrency
                )
            )
        reference = outcomes[0]
        out("")
        out(
            "strategies (cost/strong: cost as a share of single-strong's; right: rows answered "
            "right; kept: of the rows single-strong answered right, the share this one did too; "
            "right/strong: right answers as a count against single-strong's; on gpt-4o: rows "
            "answered by gpt-4o; hard up: the share of the hard rows answered by gpt-4o)"
        )
        for line in table(outcomes, reference):
            out(line)

        if router_path is not None and not args.no_curve:
            points = []
            for threshold in THRESHOLDS:
                routing = routing_for("classifier", router_path, threshold, backend)
                o = run_strategy(
                    f"classifier@{threshold}",
                    routing,
                    evaluation,
                    data_path,
                    root / f"curve-{threshold}",
                    fake,
                    args.concurrency,
                )
                points.append((threshold, o))
            out("")
            out("classifier threshold curve (a row goes to gpt-4o when p(hard) >= threshold)")
            for line in curve_table(points, reference):
                out(line)

    out("")
    out(best_line(outcomes, reference))
    cheap = next((o for o in outcomes if o.name == "single-cheap"), None)
    out(
        f"fake accuracy (share right, drawn per model and ticket): {CHEAP_MODEL} easy "
        f"{accuracy[CHEAP_MODEL]['easy']} hard {accuracy[CHEAP_MODEL]['hard']}; {STRONG_MODEL} "
        f"easy {accuracy[STRONG_MODEL]['easy']} hard {accuracy[STRONG_MODEL]['hard']}; wrong "
        'answers are another category or "I don\'t know."; logprobs as in '
        "batchopt/fakeapi/logprobs.py (95% of right answers confident, 90% of wrong ones "
        "unsure)"
    )
    measured = f"measured: {STRONG_MODEL} {measured_accuracy(reference, evaluation)}"
    if cheap is not None:
        measured += f"; {CHEAP_MODEL} {measured_accuracy(cheap, evaluation)}"
    out(measured)
    out(f"total {time.perf_counter() - total_started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
