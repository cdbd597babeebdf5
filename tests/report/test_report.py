"""`batchopt report`: one run's page, self-contained, escaped, and drawn by a real browser.

The ledger comes from real runs against the fake server: run r1 online with one request refused
(a failed row, and the error text carries `</script>`), run r2 in batch mode on the same input
(response-cache hits, exact dedup, the batch discount). r1 is moved back a day so the per-day
chart has two days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from helpers import fake_env, pipeline_dict, write_pipeline

from batchopt.cli.main import main
from batchopt.config.pipeline import load_pipeline
from batchopt.errors import InputError
from batchopt.ledger import LEVER_COLUMNS
from batchopt.report import load, render_report, write_report
from batchopt.report.charts import usd
from batchopt.report.data import LEVERS
from batchopt.report.page import script_json
from batchopt.run.runner import RunOptions, RunSummary, run_pipeline

EVIL = "</script><script>window.__pwned = 1</script><!--"
TICKETS = [
    {"ticket_id": "T1", "subject": "Refund", "body": "Please refund order #10233."},
    {"ticket_id": "T2", "subject": "Refund", "body": "Please  refund order #10233. "},
    {"ticket_id": "T3", "subject": "Login", "body": "I cannot log in since Monday."},
    {"ticket_id": "T<4>", "subject": EVIL, "body": f"Order & {EVIL} again"},
]
CHARTS = ("waterfall", "models", "days")


@dataclasses.dataclass(frozen=True)
class Runs:
    root: Path
    ledger: Path
    outputs: dict[str, Path]


def _part(ledger: Path, run_id: str) -> Path:
    return ledger / "pipeline=tickets" / f"run_id={run_id}" / "part.parquet"


@pytest.fixture(scope="module")
def runs(fake_server, tmp_path_factory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("report")
    path = write_pipeline(root, pipeline_dict(execution={"poll_seconds": 0.05}))
    pl.DataFrame(TICKETS).write_parquet(root / "data" / "tickets.parquet")
    batch_seconds = fake_server.batch_seconds
    fake_server.reset()
    fake_server.latency_ms = 0
    outputs = {run_id: root / "out" / f"{run_id}.parquet" for run_id in ("r1", "r2")}
    try:
        fake_server.set_faults([{"status": 400, "count": 1, "message": f"refused {EVIL}"}])
        first = run_pipeline(load_pipeline(path), RunOptions(run_id="r1", output=outputs["r1"]),
                             env=fake_env(fake_server))
        fake_server.batch_seconds = 0.05
        second = run_pipeline(
            load_pipeline(path),
            RunOptions(run_id="r2", mode="batch", output=outputs["r2"]),
            env=fake_env(fake_server),
        )
    finally:
        fake_server.reset()
        fake_server.batch_seconds = batch_seconds
    assert isinstance(first, RunSummary) and first.failed_rows >= 1
    assert isinstance(second, RunSummary) and second.failed_rows == 0
    ledger = root / "out" / "ledger"
    # r1 as if it had run the day before
    part = _part(ledger, "r1")
    moved = pl.read_parquet(part).with_columns(pl.col("run_at") - dt.timedelta(days=1),
                                               pl.col("logical_date") - dt.timedelta(days=1))
    moved.write_parquet(part)
    yield Runs(root, ledger, outputs)


def _ledger_rows(runs: Runs, run_id: str) -> pl.DataFrame:
    return pl.read_parquet(_part(runs.ledger, run_id))


class _Scripts(HTMLParser):
    """The page's <script> elements as a browser splits them: attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._open, self._text = dict(attrs), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._open is not None:
            self.scripts.append((self._open, "".join(self._text)))
            self._open = None


def _parse(page: str) -> _Scripts:
    parser = _Scripts()
    parser.feed(page)
    parser.close()
    return parser


def _specs(page: str) -> dict[str, dict[str, Any]]:
    return {
        attrs["data-chart"].removeprefix("chart-"): json.loads(text)
        for attrs, text in _parse(page).scripts
        if attrs.get("type") == "application/json" and attrs.get("data-chart")
    }


def _values(spec: dict[str, Any]) -> list[dict[str, Any]]:
    data = spec.get("data") or spec["layer"][0]["data"]
    return data["values"]


@pytest.fixture(scope="module")
def page(runs: Runs) -> str:
    out = write_report(runs.ledger, "r2", runs.root / "r2.html", outputs=runs.outputs["r2"])
    return out.read_text(encoding="utf-8")


def test_the_waterfall_steps_are_the_ledger_levers_in_order():
    assert {column for column, _ in LEVERS} == set(LEVER_COLUMNS)
    assert [label for _, label in LEVERS] == [
        "Exact dedup", "Semantic dedup", "Response cache", "Compression", "Prompt caching",
        "Routing", "Batch discount",
    ]


def test_the_waterfall_numbers_are_the_ledger_sums(runs, page):
    rows = _ledger_rows(runs, "r2")
    data = load(runs.ledger, "r2")
    steps = {s.step: s for s in data.waterfall}
    assert [s.step for s in data.waterfall] == ["Baseline", *(lbl for _, lbl in LEVERS), "Actual"]
    assert steps["Baseline"].amount == pytest.approx(rows["baseline_cost_usd"].sum(), abs=1e-12)
    assert steps["Actual"].amount == pytest.approx(rows["cost_usd"].sum(), abs=1e-12)
    for column, label in LEVERS:
        assert steps[label].amount == pytest.approx(rows[column].sum(), abs=1e-12), label
    # the run exercised several levers; the others are still on the chart, at $0
    for label in ("Exact dedup", "Response cache", "Routing", "Batch discount"):
        assert steps[label].amount > 0, label
    assert steps["Semantic dedup"].amount == 0 and steps["Compression"].amount == 0
    # the floating bars end where the actual cost starts
    assert data.waterfall[-2].end == pytest.approx(steps["Actual"].amount, abs=1e-12)
    assert data.header.rows == rows.height
    assert data.header.cost_usd == pytest.approx(rows["cost_usd"].sum(), abs=1e-12)

    # ... and the page's chart carries the same numbers, every step labelled in dollars
    values = {v["step"]: v for v in _values(_specs(page)["waterfall"])}
    assert list(values) == [s.step for s in data.waterfall]
    for step in data.waterfall:
        assert values[step.step]["amount"] == pytest.approx(step.amount, abs=1e-15)
        assert values[step.step]["label"].lstrip("−").startswith("$")
    assert values["Semantic dedup"]["label"] == "$0"
    assert values["Baseline"]["label"] == usd(rows["baseline_cost_usd"].sum())


def test_the_page_is_self_contained(page):
    parsed = _parse(page)
    for tag, attrs in parsed.tags:
        for name in ("src", "href", "data", "srcset", "action"):
            value = attrs.get(name) or ""
            assert not re.match(r"\s*(https?:)?//", value), (tag, name, value)
    assert not any(tag in ("link", "iframe", "img") for tag, _ in parsed.tags)
    assert not any("src" in attrs for attrs, _ in parsed.scripts)
    # the inlined libraries name a few URLs in their code (SVG namespaces, the Vega editor);
    # nothing else on the page does
    bundle = max((text for _, text in parsed.scripts), key=len)
    assert "vegaEmbed" in bundle and len(bundle) > 100_000
    rest = page.replace(bundle, "")
    assert "http://" not in rest and "https://" not in rest
    assert "@import" not in rest and "url(" not in rest


def test_the_chart_specs_are_on_the_page(page):
    specs = _specs(page)
    assert set(specs) == set(CHARTS)
    for name, spec in specs.items():
        assert "layer" in spec or "mark" in spec, name
        assert "$schema" not in spec
        assert _values(spec), name
        assert f'id="chart-{name}"' in page
    days = _values(specs["days"])
    assert len(days) == 2  # r1 a day before r2
    models = _values(specs["models"])
    assert [m["label"] for m in models] == ["openai · openai/gpt-4o-mini"]


def test_user_text_cannot_break_out_of_the_page(runs, page):
    r1 = write_report(runs.ledger, "r1", runs.root / "r1.html", outputs=runs.outputs["r1"])
    for text in (page, r1.read_text(encoding="utf-8")):
        assert "<script>window.__pwned" not in text
        assert "&lt;/script&gt;&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;!--" in text
        assert "T&lt;4&gt;" in text
        scripts = _parse(text).scripts
        # the bundle, three specs, the embed options and the code that draws: nothing more
        assert len(scripts) == 6
        assert all("__pwned" not in body for _, body in scripts)

    # a model name reaches a chart spec: escaped inside the JSON, intact once parsed
    data = load(runs.ledger, "r2")
    evil = data.by_model.with_columns(pl.lit(EVIL).alias("model"))
    text = render_report(dataclasses.replace(data, by_model=evil), bundle="/* no charts */")
    scripts = _parse(text).scripts
    assert len(scripts) == 6
    models = _values(_specs(text)["models"])
    assert EVIL in models[0]["label"]
    assert "<script>window.__pwned" not in text

    encoded = script_json({"x": EVIL + "&\u2028"})
    assert not set("<>&\u2028") & set(encoded)
    assert json.loads(encoded) == {"x": EVIL + "&\u2028"}


def test_failures_are_listed_and_the_sample_shows_inputs_beside_outputs(runs, page):
    r1 = load(runs.ledger, "r1", outputs=runs.outputs["r1"])
    failed = _ledger_rows(runs, "r1").filter(pl.col("status") == "failed")
    assert r1.header.failed_rows == failed.height >= 1
    assert sorted(r1.failures["row_id"].to_list()) == sorted(failed["row_id"].to_list())
    assert all("refused" in error for error in r1.failures["error"].to_list())
    r1_page = render_report(r1, bundle="")
    assert "<h2>Failures</h2>\n<p>" in r1_page and "refused" in r1_page

    assert "<h2>Failures</h2>\n<p class=\"note\">none</p>" in page
    r2 = load(runs.ledger, "r2", outputs=runs.outputs["r2"], sample_size=3)
    assert r2.sample is not None
    assert (r2.sample.id_column, r2.sample.output_column) == ("ticket_id", "summary")
    assert set(r2.sample.input_columns) == {"subject", "body"}
    assert len(r2.sample.rows) == 3
    assert r2.sample.rows[0]["id"] == "T1" and r2.sample.rows[0]["output"]
    assert "Please refund order #10233." in page and "Summary:" in page

    bare = load(runs.ledger, "r2")
    assert bare.sample is None and "--outputs" in (bare.sample_note or "")
    assert "--outputs PATH" in render_report(bare, bundle="")


def test_a_cache_rerun_does_not_double_the_days_baseline(fake_server, tmp_path):
    """Point 7: a paid run and, the same day, a re-run answered wholly from the response cache:
    the day's baseline and spend are the paid run's, and the page says 1 run was a re-run."""
    path = write_pipeline(tmp_path, pipeline_dict())
    tickets = [t for t in TICKETS if t["ticket_id"] in ("T1", "T3")]
    pl.DataFrame(tickets).write_parquet(tmp_path / "data" / "tickets.parquet")
    fake_server.reset()
    fake_server.latency_ms = 0
    try:
        for run_id in ("p1", "p2"):
            summary = run_pipeline(load_pipeline(path), RunOptions(run_id=run_id),
                                   env=fake_env(fake_server))
            assert isinstance(summary, RunSummary) and summary.failed_rows == 0
    finally:
        fake_server.reset()
    ledger = tmp_path / "out" / "ledger"
    paid, rerun = _ledger_rows(Runs(tmp_path, ledger, {}), "p1"), \
        _ledger_rows(Runs(tmp_path, ledger, {}), "p2")
    assert set(rerun["mode"]) == {"cache"} and rerun["cost_usd"].sum() == 0
    assert paid["cost_usd"].sum() > 0
    data = load(ledger, "p2")
    assert data.by_day.height == 1
    (day,) = data.by_day.to_dicts()
    assert (day["runs"], day["cache_reruns"]) == (2, 1)
    assert day["distinct_rows"] == paid.height
    assert day["cost_usd"] == pytest.approx(paid["cost_usd"].sum(), abs=1e-12)
    assert day["baseline_cost_usd"] == pytest.approx(paid["baseline_cost_usd"].sum(), abs=1e-12)
    page = render_report(data, bundle="")
    assert "1 of these 2 run(s) were cache re-runs" in page
    (value,) = _values(_specs(page)["days"])
    assert value["cache_reruns"] == 1
    assert value["baseline"] == usd(paid["baseline_cost_usd"].sum())


def test_a_ledger_written_before_run_at_and_a_lever_existed(runs, tmp_path):
    old = tmp_path / "ledger"
    for run_id in ("r1", "r2"):
        target = _part(old, run_id)
        target.parent.mkdir(parents=True)
        rows = _ledger_rows(runs, run_id)
        # (logical_date came after run_at: such a ledger has neither)
        (rows.drop("run_at", "logical_date", "saved_prompt_cache_usd") if run_id == "r1"
         else rows) \
            .write_parquet(target)
    data = load(old, "r1")
    assert data.header.run_at is None
    assert data.undated_runs == ["r1"] and data.by_day.height == 1
    assert {s.step: s.amount for s in data.waterfall}["Prompt caching"] == 0
    only_old = tmp_path / "older"
    _part(only_old, "r1").parent.mkdir(parents=True)
    shutil.copy(_part(old, "r1"), _part(only_old, "r1"))
    data = load(only_old, "r1")
    assert data.by_day.height == 0 and data.undated_runs == ["r1"]
    assert "without run_at" in render_report(data, bundle="")


def test_cli_writes_the_report_and_refuses_with_exit_2(runs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "site" / "report.html"
    ok = runner.invoke(main, ["report", "--run-id", "r2", "--ledger", str(runs.ledger),
                              "--outputs", str(runs.outputs["r2"]), "-o", str(out)])
    assert ok.exit_code == 0, ok.output
    assert out.is_file() and str(out) in ok.output
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert (out.stat().st_mode & 0o777) == 0o644

    def refused(args: list[str], *needles: str) -> None:
        result = runner.invoke(main, ["report", *args, "-o", str(tmp_path / "x.html")])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        for needle in needles:
            assert needle in lines[0], lines[0]

    refused(["--run-id", "nope", "--ledger", str(runs.ledger)], "'nope'", "run ids: r1, r2")
    refused(["--run-id", "r1", "--ledger", str(tmp_path / "missing")], "no ledger files")
    refused(["--run-id", "r1", "--ledger", str(runs.ledger), "--pipeline", "other"],
            "'other'", "pipelines: tickets")
    refused(["--run-id", "r2", "--ledger", str(runs.ledger), "--outputs",
             str(tmp_path / "none.parquet")], "none.parquet")

    # the same run id in two pipelines: name one
    two = tmp_path / "two"
    shutil.copytree(runs.ledger, two / "ledger")
    shutil.copytree(two / "ledger" / "pipeline=tickets", two / "ledger" / "pipeline=other")
    refused(["--run-id", "r2", "--ledger", str(two / "ledger")], "other, tickets", "--pipeline")
    picked = runner.invoke(main, ["report", "--run-id", "r2", "--ledger", str(two / "ledger"),
                                  "--pipeline", "other", "-o", str(tmp_path / "other.html")])
    assert picked.exit_code == 0, picked.output
    assert not (tmp_path / "x.html").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_outputs_of_another_run_are_refused(runs, tmp_path):
    stray = tmp_path / "stray.parquet"
    pl.DataFrame({"ticket_id": ["X1"], "body": ["b"], "summary": ["s"]}).write_parquet(stray)
    with pytest.raises(InputError, match="no row of this file is in the run"):
        load(runs.ledger, "r2", outputs=stray)


# --- a real browser --------------------------------------------------------------------------

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "headless_shell")


def _browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def _chrome(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def _png_pixels(path: Path) -> bytes:
    """The PNG's filtered scanlines, decompressed: a blank page makes them nearly all zeros."""
    data, pos, chunks = path.read_bytes(), 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            chunks.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    return zlib.decompress(b"".join(chunks))


def _busy_share(path: Path) -> float:
    """Share of non-zero bytes in the filtered scanlines: how much of the image is not flat."""
    raw = _png_pixels(path)
    return 1 - raw.count(0) / len(raw)


@pytest.mark.browser
@pytest.mark.skipif(_browser() is None, reason="no Chromium here (install Debian's `chromium` "
                    "to draw the report in a real browser)")
def test_headless_chromium_draws_the_charts(page, runs, tmp_path):
    browser = _browser()
    assert browser is not None
    report = runs.root / "r2.html"
    dom = _chrome(browser, tmp_path / "profile", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for name in CHARTS:
        match = re.search(rf'<div class="chart[^"]*" id="chart-{name}"([^>]*)>(.*?)</div>\s*'
                          rf'<script type="application/json"', html, re.S)
        assert match, f"chart-{name} container missing from the DOM"
        attrs, inner = match.groups()
        assert 'data-rendered="true"' in attrs, f"chart-{name} did not render: {attrs}"
        assert "<svg" in inner and "<path" in inner, f"chart-{name} has no drawing"
    waterfall = re.search(r'id="chart-waterfall".*?</svg>', html, re.S)
    assert waterfall is not None
    drawn = waterfall.group(0)
    data = load(runs.ledger, "r2")
    for step in data.waterfall:  # every bar's name and dollar label is drawn as SVG text
        assert f">{step.step}<" in drawn
    assert usd(data.header.baseline_cost_usd) in drawn
    assert "#54a24b" in drawn.lower()  # the savings' green bars

    shot = tmp_path / "report.png"
    taken = _chrome(browser, tmp_path / "profile", f"--screenshot={shot}",
                    "--window-size=1200,2000", report.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    assert _png_size(shot) == (1200, 2000)
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    blank = tmp_path / "blank.png"
    _chrome(browser, tmp_path / "profile", f"--screenshot={blank}", "--window-size=1200,2000",
            blank_page.as_uri())
    assert shot.stat().st_size > 10 * blank.stat().st_size
    assert _busy_share(shot) > 20 * max(_busy_share(blank), 1e-4)
    try:
        from PIL import Image  # optional: look for the savings' green in the pixels
    except ImportError:
        return
    with Image.open(shot) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert any(rgb == (0x54, 0xA2, 0x4B) and count > 1000 for count, rgb in colors)
