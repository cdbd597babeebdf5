"""`batchopt dedup`, `batchopt router train` and `batchopt fake-server`: look at the duplicates
before paying, train the classifier router, rehearse against fake endpoints.

Registered on the `batchopt` group by `batchopt.cli.main`; heavy modules load inside the
commands, so `batchopt --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from batchopt.cli.common import GUARD_NAMES, PATH, ErrorGroup, limit_option


@click.command()
@click.argument("input_path", metavar="INPUT", type=PATH)
@click.option("--id-column", required=True, help="Column that identifies a row")
@click.option("--text-column", required=True, help="Column to compare")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.9,
              show_default=True, help="Cosine similarity for a semantic merge")
@click.option("--backend", type=click.Choice(["sentence-transformers", "model2vec"]),
              default="sentence-transformers", show_default=True)
@click.option("--model", help="Embedding model folder (default: the packaged all-MiniLM-L6-v2)")
@click.option("--no-semantic", is_flag=True, help="Exact dedup only")
@click.option("--guard-off", multiple=True,
              type=click.Choice(list(GUARD_NAMES)),
              help="Switch a guard off (repeatable)")
@click.option("--out", "out_path", type=PATH, required=True, help="groups.parquet to write")
@click.option("--sample", type=int, default=5, show_default=True, help="Largest groups to show")
@limit_option
def dedup(
    input_path: Path, id_column: str, text_column: str, threshold: float, backend: str,
    model: str | None, no_semantic: bool, guard_off: tuple[str, ...], out_path: Path, sample: int,
    limit: int | None,
) -> None:
    """Look before paying: group INPUT's rows by exact and guarded semantic duplicates.

    Exit codes: 0 written, 2 bad input, model or usage."""
    from batchopt.cli.progress import print_dedup_report
    from batchopt.dedup.guards import GuardConfig
    from batchopt.dedup.step import SemanticSettings, dedup_table
    from batchopt.io.reader import read_rows
    from batchopt.io.writer import write_parquet_atomic

    rows = read_rows(input_path, id_column, [text_column], keep_columns=[text_column],
                     limit=limit)
    settings = None if no_semantic else SemanticSettings(
        threshold=threshold, backend=backend, model=model,
        guards=GuardConfig(**{name: False for name in guard_off}),
    )
    groups = dedup_table(rows, id_column, text_column, settings)
    write_parquet_atomic(groups, out_path)
    print_dedup_report(groups, rows.select(
        [id_column, text_column]).rename({id_column: "id", text_column: "text"}), out_path, sample,
        limit=limit)


@click.group(cls=ErrorGroup)
def router() -> None:
    """Train the router that the `classifier` routing strategy loads.

    Exit codes: 0 trained, 2 bad data, model or usage."""


@router.command("train")
@click.argument("data", type=PATH)
@click.option("--out", "out_path", type=PATH, required=True, help="Router file (.npz) to write")
@click.option("--backend", type=click.Choice(["sentence-transformers", "model2vec"]),
              default="sentence-transformers", show_default=True,
              help="Embedder; the pipeline's routing.classifier must name the same")
@click.option("--model", type=PATH, help="Embedding model folder (default: the packaged one)")
@click.option("--seed", type=int, default=0, show_default=True)
def router_train(data: Path, out_path: Path, backend: str, model: Path | None, seed: int) -> None:
    """Train a router on DATA (CSV or Parquet: `text`, the rendered prompt, and `label`
    easy/hard, or `hard` true/false) and print its held-out AUC and threshold curve.

    Exit codes: 0 trained, 2 bad data, model or usage."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download a model at run time
    from batchopt.routing import load_training_table, train_router_from_texts
    from batchopt.services.embed import load_embedder

    texts, hard = load_training_table(data)
    embedder = load_embedder(backend, model)
    trained = train_router_from_texts(texts, hard, embedder, seed=seed)
    written = trained.save(out_path)
    m = trained.metrics
    click.echo(f"{written}: trained on {m['rows']:,} rows ({m['hard_rows']:,} hard) with "
               f"{embedder.name}; held-out AUC {m['auc']:.3f} on {m['test_rows']:,} rows")
    click.echo("threshold  share sent strong  hard rows caught")
    for point in m["curve"]:
        click.echo(f"{point['threshold']:>9.1f}  {point['share_strong']:>17.1%}  "
                   f"{point['hard_recall']:>16.1%}")


@click.command("fake-server")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Only 127.0.0.1 (or localhost): the fake server answers any API key")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--latency-ms", type=float, default=0.0, show_default=True)
@click.option("--batch-seconds", type=float, default=1.0, show_default=True,
              help="A batch ends this long after it is created")
@click.option("--invalid-share", "invalid_share", multiple=True, metavar="MODEL=SHARE",
              help="Share of MODEL's JSON answers that fail their schema (MODEL * for every "
                   "model); repeatable")
@click.option("--wrong-share", "wrong_share", multiple=True, metavar="MODEL=SHARE",
              help="Share of MODEL's answers that are valid but wrong (the judge says no to "
                   "them); repeatable")
@click.option("--judge-reject-share", type=float, default=0.0, show_default=True,
              help="Share of the other answers the judge says no to as well")
def fake_server(host: str, port: int, latency_ms: float, batch_seconds: float,
                invalid_share: tuple[str, ...], wrong_share: tuple[str, ...],
                judge_reject_share: float) -> None:
    """Serve fake OpenAI and Anthropic endpoints on 127.0.0.1, to rehearse without spending.

    Runs until interrupted (Ctrl-C stops it cleanly). JSON answers are drawn per row from the
    schema; a judge call (a message asking for "yes or no") is answered yes, or no to the
    answers made wrong by --wrong-share. The quality settings may also come from the
    environment variable BATCHOPT_FAKE_QUALITY, a JSON object such as
    {"invalid_share": {"gpt-4o-mini": 0.1}, "wrong_share": {}, "judge_reject_share": 0};
    the options override it.

    Exit codes: 0 stopped, 2 a --host other than 127.0.0.1 or localhost, or bad usage."""
    from batchopt.errors import ConfigError
    from batchopt.fakeapi.quality import quality_from_options
    from batchopt.fakeapi.server import serve

    if host not in ("127.0.0.1", "localhost"):
        raise ConfigError(f"fake-server --host {host}: refused; the fake server answers any API "
                          "key, so it listens on 127.0.0.1 only")
    try:
        quality = quality_from_options(os.environ.get("BATCHOPT_FAKE_QUALITY"), invalid_share,
                                       wrong_share, judge_reject_share)
    except ValueError as exc:
        raise ConfigError(f"fake-server: {exc}") from None

    serve(port=port, latency_ms=latency_ms, batch_seconds=batch_seconds, quality=quality)
