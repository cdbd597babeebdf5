"""A real student, offline: a tiny classifier trained on the teacher's exported answers takes over
a labelling job.

    python benchmarks/bench_student.py                 # 3,000 tickets, about a minute on 2 cores
    python benchmarks/bench_student.py --rows 400      # a quick look
    python benchmarks/bench_student.py --backend sentence-transformers --cpu-usd-per-hour 0.04

The job: file support tickets (benchmarks/routing_set.py: six categories, about 80% easy, 20%
hard: several issues, or one ambiguous one) under one category. It is run once as a pipeline on
the strong tier (OpenAI gpt-4o) against an in-process fake server, whose oracle knows each
ticket's label and answers it right with the accuracies printed at the end; its wrong answers are
other categories (not refusals: a single-tier pipeline has no validators, so a refusal would be
exported as an example). Then `distill export` (the same function the command calls) turns the
run's ledger and response cache into the fine-tuning set, split by request key (80/20).

The student is a multinomial logistic regression (scikit-learn, C fixed in advance, not tuned on
the validation split) over the project's embeddings (batchopt.services.embed: model2vec when its
distilled model is on disk, else the packaged MiniLM) of the exported user prompts, predicting the
teacher's answer. On the export's validation split it reports agreement with the teacher and with
the ground-truth labels (the teacher's own for comparison, and a most-common-label baseline), by
difficulty; training seconds (embedding the training prompts and fitting); prediction rows/s
(embedding and predicting); and what the whole job costs answered by the student (its CPU
seconds, all threads, at --cpu-usd-per-hour) against the teacher's ledger cost. A learning curve
shows how agreement grows with the number of training examples.

Nothing is spent and nothing is downloaded (HF_HUB_OFFLINE=1; the embedders are packaged).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedders are packaged; never fetch

import numpy as np
import polars as pl
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from routing_set import CATEGORIES, REFUSAL, Task, make_tasks, normalise_answer  # noqa: E402

from batchopt.config.pipeline import load_pipeline  # noqa: E402
from batchopt.fakeapi import FakeServer  # noqa: E402
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline  # noqa: E402

TEACHER_MODEL = "gpt-4o"
TEACHER_ACCURACY = {"easy": 0.995, "hard": 0.95}  # as bench_routing's strong tier
CPU_USD_PER_HOUR = 0.05  # one on-demand cloud vCPU (e.g. AWS m7i.large: $0.1008/h for 2 vCPUs)
C = 10.0  # inverse regularisation of the logistic regression, fixed before any run
CURVE = (50, 200, 800)  # training examples for the learning curve (plus all of them)
SYSTEM = (
    "Classify the customer support ticket into exactly one category: "
    + ", ".join(CATEGORIES)
    + ". When a ticket raises several issues, choose the one the customer wants dealt with "
    "first. Reply with the category only."
)


@dataclass
class Teacher:
    """The teacher's run and the exported set."""

    rows: int
    cost_usd: float
    seconds: float
    train: pl.DataFrame  # the export's training examples: row_id, user, label
    validation: pl.DataFrame
    export_seconds: float
    summary: str  # how the ledger's rows came down to the examples


@dataclass
class Scores:
    """Agreement on a set of rows (shares in [0, 1])."""

    rows: int
    with_teacher: float
    with_truth: float


@dataclass
class Figures:
    """What the benchmark measured."""

    backend: str
    teacher: Teacher
    teacher_truth: float  # the teacher's right share on the validation rows
    student: dict[str, Scores]  # all / easy / hard, on the validation split
    baseline: Scores  # the most common training label, always
    hard_share: float  # of the validation rows, the hard ones
    missed_hard_share: float  # of the rows the student disagreed with the teacher on, hard ones
    load_seconds: float
    embed_seconds: float  # the training prompts
    fit_seconds: float
    train_cpu_seconds: float
    predict_rows_per_s: float  # validation rows, embedding and predicting
    job_cpu_seconds: float  # the whole job's prompts, embedding and predicting
    job_seconds: float
    cpu_usd_per_hour: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # examples -> with_teacher

    @property
    def train_seconds(self) -> float:
        return self.embed_seconds + self.fit_seconds

    @property
    def job_usd(self) -> float:
        return self.job_cpu_seconds * self.cpu_usd_per_hour / 3600

    @property
    def train_usd(self) -> float:
        return self.train_cpu_seconds * self.cpu_usd_per_hour / 3600


# ---------------------------------------------------------------------------------------------
# The teacher: a pipeline run on the fake server, then `distill export`


def oracle_items(tasks: list[Task]) -> list[dict[str, Any]]:
    """The fake's oracle items; wrong answers are other categories only (module docstring)."""
    return [{"match": t.match, "answer": t.answer, "difficulty": t.difficulty,
             "wrong": [w for w in t.wrong if w != REFUSAL]} for t in tasks]


def pipeline_dict(data_path: Path, concurrency: int) -> dict[str, Any]:
    return {
        "name": "student_bench",
        "input": {"path": str(data_path), "id_column": "ticket_id"},
        "output": {"path": "out/outputs.parquet"},
        "ledger": {"path": "out/ledger"},
        "cache": {"path": "out/cache"},
        "prompt": {"system": SYSTEM, "template": "{{ text }}", "output_column": "category"},
        "dedup": {"exact": True},
        "baseline": {"provider": "openai", "model": TEACHER_MODEL},
        "default_profile": "strong",
        "profiles": {"strong": {"provider": "openai", "model": TEACHER_MODEL, "max_tokens": 8,
                                "concurrency": concurrency, "max_attempts": 3,
                                "timeout_s": 30}},
        "routing": {"strategy": "single", "tiers": ["strong"]},
    }


def fake_env(fake: FakeServer) -> dict[str, str]:
    """The process env without any real provider settings, pointed at the fake server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_"))}
    env.update({"OPENAI_BASE_URL": fake.openai_base_url, "OPENAI_API_KEY": "sk-fake-bench"})
    return env


def run_teacher(tasks: list[Task], root: Path, concurrency: int,
                accuracy: dict[str, float]) -> Teacher:
    """Run the job on the teacher tier, export the set, read it back."""
    from batchopt.distill.export import export

    data_path = root / "data" / "tickets.parquet"
    data_path.parent.mkdir(parents=True)
    pl.DataFrame({"ticket_id": [t.ticket_id for t in tasks],
                  "text": [t.text for t in tasks]}).write_parquet(data_path)
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline_dict(data_path, concurrency)))
    with FakeServer() as fake:
        fake.set_oracle(oracle_items(tasks), models={TEACHER_MODEL: accuracy})
        env = fake_env(fake)
        started = time.perf_counter()
        summary = run_pipeline(load_pipeline(path), RunOptions(run_id="teacher"), env=env)
        seconds = time.perf_counter() - started
        if not isinstance(summary, RunSummary) or summary.exit_code != 0:
            raise RuntimeError(f"the teacher's run did not finish cleanly: {summary!r}")
        started = time.perf_counter()
        result = export(load_pipeline(path), root / "set", env=env)
        export_seconds = time.perf_counter() - started
    examples = pl.read_parquet(root / "set" / "examples.parquet").select(
        "split", "row_id", "user",
        pl.col("answer").map_elements(normalise_answer, return_dtype=pl.String).alias("label"))
    train = examples.filter(pl.col("split") == "train").drop("split")
    validation = examples.filter(pl.col("split") == "validation").drop("split")
    return Teacher(len(tasks), summary.cost_usd, seconds, train, validation, export_seconds,
                   result.collection.describe())


# ---------------------------------------------------------------------------------------------
# The student: logistic regression over prompt embeddings


def fit(vectors: np.ndarray, labels: Sequence[str]) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000).fit(vectors, list(labels))


def timed(work: Callable[[], Any]) -> tuple[Any, float, float]:
    """(what `work` returns, wall seconds, CPU seconds of this process, all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = work()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def scores(predicted: Sequence[str], teacher: Sequence[str], truth: Sequence[str]) -> Scores:
    p, t, g = np.array(predicted), np.array(teacher), np.array(truth)
    n = len(p)
    return Scores(n, float((p == t).mean()) if n else 0.0, float((p == g).mean()) if n else 0.0)


def by_difficulty(predicted: list[str], teacher: list[str], truth: list[str],
                  difficulty: list[str]) -> dict[str, Scores]:
    found = {"all": scores(predicted, teacher, truth)}
    for level in ("easy", "hard"):
        keep = [i for i, d in enumerate(difficulty) if d == level]
        found[level] = scores([predicted[i] for i in keep], [teacher[i] for i in keep],
                              [truth[i] for i in keep])
    return found


def learning_curve(train_vectors: np.ndarray, train_labels: list[str],
                   validation_vectors: np.ndarray, validation_labels: list[str]
                   ) -> list[tuple[int, float]]:
    """Agreement with the teacher on the validation split, trained on the first n examples."""
    points = []
    for n in [n for n in CURVE if n < len(train_labels)] + [len(train_labels)]:
        if len(set(train_labels[:n])) < 2:
            continue
        model = fit(train_vectors[:n], train_labels[:n])
        agreed = np.array(model.predict(validation_vectors)) == np.array(validation_labels)
        points.append((n, float(agreed.mean())))
    return points


def run_bench(rows: int, seed: int, backend: str, *, concurrency: int = 32,
              cpu_usd_per_hour: float = CPU_USD_PER_HOUR,
              accuracy: dict[str, float] | None = None) -> Figures:
    """The whole benchmark (module docstring); nothing printed."""
    from batchopt.services.embed import load_embedder

    tasks = make_tasks(rows, seed)
    by_id = {t.ticket_id: t for t in tasks}
    with tempfile.TemporaryDirectory(prefix="bench-student-") as tmp:
        teacher = run_teacher(tasks, Path(tmp), concurrency, accuracy or TEACHER_ACCURACY)
    embedder, load_seconds, _ = timed(lambda: load_embedder(backend))
    train_labels = teacher.train["label"].to_list()
    train_vectors, embed_seconds, embed_cpu = timed(
        lambda: embedder.embed(teacher.train["user"].to_list()))
    model, fit_seconds, fit_cpu = timed(lambda: fit(train_vectors, train_labels))
    val = teacher.validation
    val_tasks = [by_id[r] for r in val["row_id"]]
    if val["user"].to_list() != [t.text for t in val_tasks]:
        raise RuntimeError("the exported prompts are not the tickets' texts")
    val_vectors, val_seconds, _ = timed(lambda: embedder.embed(val["user"].to_list()))
    predicted, predict_seconds, _ = timed(lambda: list(model.predict(val_vectors)))
    truth = [t.answer for t in val_tasks]
    teacher_labels = val["label"].to_list()
    majority = Counter(train_labels).most_common(1)[0][0]
    hard = [t.difficulty == "hard" for t in val_tasks]
    missed = [h for h, p, t in zip(hard, predicted, teacher_labels, strict=True) if p != t]
    _, job_seconds, job_cpu = timed(lambda: model.predict(embedder.embed([t.text for t in tasks])))
    return Figures(
        backend=embedder.name, teacher=teacher,
        teacher_truth=scores(teacher_labels, teacher_labels, truth).with_truth,
        student=by_difficulty(predicted, teacher_labels, truth,
                              [t.difficulty for t in val_tasks]),
        baseline=scores([majority] * len(truth), teacher_labels, truth),
        hard_share=sum(hard) / max(len(hard), 1),
        missed_hard_share=sum(missed) / max(len(missed), 1),
        load_seconds=load_seconds, embed_seconds=embed_seconds, fit_seconds=fit_seconds,
        train_cpu_seconds=embed_cpu + fit_cpu,
        predict_rows_per_s=val.height / max(val_seconds + predict_seconds, 1e-9),
        job_cpu_seconds=job_cpu, job_seconds=job_seconds, cpu_usd_per_hour=cpu_usd_per_hour,
        curve=learning_curve(train_vectors, train_labels, val_vectors, teacher_labels),
    )


# ---------------------------------------------------------------------------------------------
# Printing


def pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def report(f: Figures, accuracy: dict[str, float]) -> list[str]:
    t = f.teacher
    lines = [
        f"teacher: {TEACHER_MODEL} on the fake server, {t.rows:,} tickets in {t.seconds:.1f} s, "
        f"ledger cost ${t.cost_usd:.4f}; distill export in {t.export_seconds:.1f} s: "
        f"{t.train.height:,} training and {t.validation.height:,} validation examples",
        f"  export: {t.summary}",
        f"student: logistic regression (C={C}) over {f.backend} embeddings of the exported user "
        f"prompts; embedder loaded in {f.load_seconds:.1f} s",
        f"  trained in {f.train_seconds:.2f} s: embedding {t.train.height:,} prompts "
        f"{f.embed_seconds:.2f} s, fitting {f.fit_seconds:.2f} s ({f.train_cpu_seconds:.2f} "
        "CPU s in all)",
        f"  predicts {f.predict_rows_per_s:,.0f} rows/s (embedding and predicting the "
        f"validation split)",
        "",
        f"on the export's validation split ({f.student['all'].rows} rows; easy "
        f"{f.student['easy'].rows}, hard {f.student['hard'].rows}):",
        f"{'':<28}{'with teacher':>13}{'with truth':>12}",
    ]
    for level in ("all", "easy", "hard"):
        s = f.student[level]
        lines.append(f"{'student, ' + level + ' rows':<28}{pct(s.with_teacher):>13}"
                     f"{pct(s.with_truth):>12}")
    lines += [
        f"{'teacher itself':<28}{'100.0%':>13}{pct(f.teacher_truth):>12}",
        f"{'most common label':<28}{pct(f.baseline.with_teacher):>13}"
        f"{pct(f.baseline.with_truth):>12}",
        "learning curve (training examples -> agreement with the teacher): "
        + ", ".join(f"{n:,} -> {pct(share)}" for n, share in f.curve),
        "",
        f"of the rows the student disagreed with the teacher on, {pct(f.missed_hard_share)} are "
        f"hard (hard rows are {pct(f.hard_share)} of the split)",
        "",
        f"the whole job ({t.rows:,} tickets) answered by the student: {f.job_cpu_seconds:.2f} CPU "
        f"s ({f.job_seconds:.2f} s wall) = ${f.job_usd:.8f} at ${f.cpu_usd_per_hour}/CPU-hour, "
        f"plus ${f.train_usd:.8f} to train it once; by the teacher: ${t.cost_usd:.4f} (ledger), "
        "which is also what the training labels cost (here the same job; in practice past runs)",
        f"fake teacher accuracy (share right, drawn per ticket): easy {accuracy['easy']}, hard "
        f"{accuracy['hard']}; its wrong answers are other categories",
        "",
        "what it shows: a narrow labelling task (six fixed labels) can be taken over by a tiny "
        "model trained on the teacher's validated, exported answers, offline, in seconds on a "
        "CPU, at a negligible fraction of the teacher's cost per job; it is least reliable on "
        "the hard rows (several issues, or ambiguous), which is where a router trained with "
        "`distill eval --router-data` would keep the teacher.",
        "what it does not show: not a generative student and not a fine-tuned LLM (it can only "
        "pick one of the labels it was trained on, and knows nothing the embeddings do not "
        "carry); the teacher's answers are the fake server's simulation (an oracle with set "
        "accuracies, not gpt-4o): its errors are random draws, which the classifier averages "
        "out (hence it can agree with the truth more often than the teacher does), while a real "
        "teacher's errors are systematic and would be learnt; the tickets are drawn from a few "
        "dozen templates shared by both splits, far narrower than real tickets; the teacher's "
        "cost is the ledger's at list prices for the fake's token counts, and the student's CPU "
        "price is an assumption.",
    ]
    return lines


def default_backend() -> str:
    """model2vec when its distilled model is on disk (fast), else the packaged MiniLM."""
    from batchopt.services.embed import default_model2vec_path

    found = (default_model2vec_path() / "config.json").is_file()
    return "model2vec" if found else "sentence-transformers"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3000, help="tickets in the job")
    parser.add_argument("--seed", type=int, default=11, help="seed of the tickets")
    parser.add_argument("--backend", choices=("model2vec", "sentence-transformers"),
                        default=None, help="the student's embedder (default: model2vec if its "
                        "distilled model is on disk, else sentence-transformers)")
    parser.add_argument("--cpu-usd-per-hour", type=float, default=CPU_USD_PER_HOUR,
                        help="price of one CPU-hour, for the student's cost")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--teacher-easy", type=float, default=TEACHER_ACCURACY["easy"])
    parser.add_argument("--teacher-hard", type=float, default=TEACHER_ACCURACY["hard"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = parse_args(argv)
    accuracy = {"easy": args.teacher_easy, "hard": args.teacher_hard}
    started = time.perf_counter()
    figures = run_bench(args.rows, args.seed, args.backend or default_backend(),
                        concurrency=args.concurrency, cpu_usd_per_hour=args.cpu_usd_per_hour,
                        accuracy=accuracy)
    for line in report(figures, accuracy):
        out(line)
    out(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
