"""The report page: one HTML file with the chart library, the specs and the tables inlined.

Every piece of text from the ledger or the outputs goes through `html.escape`; the specs sit in
`<script type="application/json">` blocks with `<`, `>` and `&` written as JSON escapes, so no
value can close a script tag or open one.
"""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from typing import Any

import polars as pl

from batchopt.report.charts import usd
from batchopt.report.data import MAX_FAILURES, ReportData

EMBED_OPTIONS = {"renderer": "svg", "actions": False}

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 32px 0 8px; }
.meta { color: #555; margin: 0 0 12px; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.figure { border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.figure b { display: block; font-size: 18px; }
.figure span { color: #666; font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left;
         vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 420px; white-space: pre-wrap; word-break: break-word; }
.chart { margin: 8px 0; min-height: 40px; }
.note { color: #666; font-style: italic; }
"""

# Renders every chart; marks its container data-rendered, or shows the error in it.
_SCRIPT = """
(function () {
  var blocks = document.querySelectorAll('script[type="application/json"][data-chart]');
  blocks.forEach(function (block) {
    var target = document.getElementById(block.getAttribute('data-chart'));
    var options = JSON.parse(document.getElementById('embed-options').textContent);
    vegaEmbed(target, JSON.parse(block.textContent), options).then(function () {
      target.setAttribute('data-rendered', 'true');
    }).catch(function (error) {
      target.setAttribute('data-error', String(error));
      target.textContent = 'This chart could not be drawn: ' + error;
    });
  });
})();
"""


def script_json(value: Any) -> str:
    """JSON that is safe as the text of a <script> element: no `<`, `>` or `&` left raw."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def script_code(code: str) -> str:
    """JavaScript source made safe to inline: `</script` cannot end the element early."""
    return code.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")


def _figure(value: str, label: str) -> str:
    return f'<div class="figure"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _cell(value: Any, kind: str = "") -> str:
    if value is None:
        text = ""
    elif kind == "usd":
        text = usd(float(value))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = f"{value:,}"
    else:
        text = str(value)
    css = ' class="num"' if kind in ("usd", "num") else ' class="text"' if kind == "text" else ""
    return f"<td{css}>{escape(text)}</td>"


def _table(frame: pl.DataFrame, columns: list[tuple[str, str, str]]) -> str:
    """A table of `frame`'s columns: (column, heading, kind) with kind usd, num, text or ''."""
    head = "".join(
        f'<th{" class=num" if kind in ("usd", "num") else ""}>{escape(title)}</th>'
        for _, title, kind in columns
    )
    body = "".join(
        "<tr>" + "".join(_cell(row[name], kind) for name, _, kind in columns) + "</tr>"
        for row in frame.iter_rows(named=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart(name: str, spec: dict[str, Any]) -> str:
    return (
        f'<div class="chart" id="chart-{name}"></div>\n'
        f'<script type="application/json" data-chart="chart-{name}">{script_json(spec)}</script>'
    )


def _header(data: ReportData) -> str:
    h = data.header
    when = h.run_at.strftime("%Y-%m-%d %H:%M:%S UTC") if h.run_at else "unknown (older ledger)"
    share = f"{h.saved_share:.1%}" if h.saved_share is not None else "–"
    figures = "".join([
        _figure(f"{h.rows:,}", "rows"),
        _figure(usd(h.cost_usd), "spent"),
        _figure(usd(h.baseline_cost_usd), "baseline (the naive way)"),
        _figure(usd(h.saved_usd), "saved"),
        _figure(share, "saved share"),
        _figure(f"{h.failed_rows:,}", "failed rows"),
    ])
    return (
        f"<h1>{escape(h.pipeline)} · run {escape(h.run_id)}</h1>\n"
        f'<p class="meta">pipeline <b>{escape(h.pipeline)}</b> · run id <b>{escape(h.run_id)}</b>'
        f" · run at {escape(when)} · prices {escape(h.price_version or '–')}</p>\n"
        f'<div class="figures">{figures}</div>'
    )


def _waterfall(data: ReportData, spec: dict[str, Any]) -> str:
    frame = pl.DataFrame(
        [{"step": s.step, "amount": s.amount if s.kind == "total" else -s.amount,
          "after": s.end} for s in data.waterfall],
        schema={"step": pl.String, "amount": pl.Float64, "after": pl.Float64},
    )
    table = _table(frame, [("step", "step", ""), ("amount", "amount", "usd"),
                           ("after", "running total", "usd")])
    caption = (
        '<p class="meta">From what the naive way would have cost (every row sent to the '
        "baseline model online at full price) down through each lever, in the order a row meets "
        "them, to what was spent. Green: what a lever saved; red: a lever that cost more (a "
        "cascade's escalations).</p>"
    )
    return f"<h2>Savings waterfall</h2>\n{caption}\n{_chart('waterfall', spec)}\n{table}"


def _models(data: ReportData, spec: dict[str, Any]) -> str:
    table = _table(data.by_model, [
        ("tier", "tier", ""), ("provider", "provider", ""), ("model", "model", ""),
        ("rows", "rows", "num"), ("billed_rows", "billed rows", "num"),
        ("failed_rows", "failed", "num"), ("cost_usd", "cost", "usd"),
        ("baseline_cost_usd", "baseline", "usd"),
    ])
    return f"<h2>Cost by model and tier</h2>\n{_chart('models', spec)}\n{table}"


def _days(data: ReportData, spec: dict[str, Any]) -> str:
    parts = [f"<h2>Cost per day across runs of {escape(data.header.pipeline)}</h2>"]
    if data.by_day.height:
        reruns = int(data.by_day["cache_reruns"].sum())
        runs = int(data.by_day["runs"].sum())
        parts.append(
            '<p class="note">Spent: what the day\'s runs paid. Baseline: each row answered that '
            "day counted once, however many runs answered it, so a re-run served from the "
            f"response cache adds nothing. {reruns} of these {runs} run(s) were cache re-runs "
            "(sent nothing, spent $0).</p>"
        )
        parts.append(_chart("days", spec))
        parts.append(_table(data.by_day, [
            ("day", "day (UTC)", ""), ("runs", "runs", "num"),
            ("cache_reruns", "cache re-runs", "num"), ("distinct_rows", "rows", "num"),
            ("cost_usd", "spent", "usd"), ("baseline_cost_usd", "baseline", "usd"),
        ]))
    if data.undated_runs:
        parts.append(
            f'<p class="note">{len(data.undated_runs)} run(s) without run_at (written before '
            f"the ledger recorded it) are left out: {escape(', '.join(data.undated_runs))}</p>"
        )
    return "\n".join(parts)


def _failures(data: ReportData) -> str:
    total = data.header.failed_rows
    if not total:
        return '<h2>Failures</h2>\n<p class="note">none</p>'
    shown = f" (the first {MAX_FAILURES})" if total > MAX_FAILURES else ""
    table = _table(data.failures, [
        ("row_id", "row id", ""), ("error", "error", "text"), ("attempts", "attempts", "num"),
        ("tier", "tier", ""), ("model", "model", ""),
    ])
    return f"<h2>Failures</h2>\n<p>{total:,} failed row(s){shown}</p>\n{table}"


def _sample(data: ReportData) -> str:
    sample = data.sample
    if sample is None:
        return f'<h2>Sample outputs</h2>\n<p class="note">{escape(data.sample_note or "")}</p>'
    head = "".join(f"<th>{escape(name)}</th>" for name in
                   [sample.id_column, *sample.input_columns, sample.output_column, "served by"])
    body = "".join(
        "<tr>" + _cell(row["id"])
        + "".join(_cell(row["inputs"][name], "text") for name in sample.input_columns)
        + _cell(row["output"], "text") + _cell(row["served"]) + "</tr>"
        for row in sample.rows
    )
    notes = "".join(f'<p class="note">{escape(note)}</p>' for note in sample.notes)
    return (
        f"<h2>Sample outputs beside their inputs</h2>\n<p>{len(sample.rows)} row(s) of the "
        f"run's outputs; long values are cut.</p>\n{notes}"
        f'<table class="sample"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def render(data: ReportData, specs: dict[str, dict[str, Any]], bundle: str,
           generated: dt.datetime | None = None) -> str:
    """The whole page. `specs` has the Vega-Lite specs waterfall, models and days; `bundle` is
    the vega-embed JavaScript (with Vega and Vega-Lite) to inline."""
    h = data.header
    generated = generated or dt.datetime.now(dt.UTC)
    title = f"batchopt report · {h.pipeline} · {h.run_id}"
    sections = [
        _header(data),
        _waterfall(data, specs["waterfall"]),
        _models(data, specs["models"]),
        _days(data, specs["days"]),
        _failures(data),
        _sample(data),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n"
        f"<script>{script_code(bundle)}</script>\n</head>\n<body>\n"
        + "\n".join(sections)
        + f'\n<p class="meta">Written by batchopt at '
        f"{escape(generated.strftime('%Y-%m-%d %H:%M:%S UTC'))}; opens offline.</p>\n"
        f'<script type="application/json" id="embed-options">{script_json(EMBED_OPTIONS)}'
        f"</script>\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )
