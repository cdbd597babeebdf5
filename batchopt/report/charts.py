"""The report's charts as Vega-Lite specs (dicts), built with Altair from the report's data.

Data goes in as inline values with labels already formatted, so a spec needs no network and no
data frame library on the page.
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import polars as pl

from batchopt.report.data import Step

COLORS = {"total": "#4c78a8", "saving": "#54a24b", "extra": "#e45756"}
WIDTH = 860
AXIS_USD = "$.2~g"  # d3-format: $0.0004, $1.5, $1200


def usd(value: float) -> str:
    """Dollars with as many digits as a small amount needs: $1,234, $12.35, $0.0001234.

    Under a ten-billionth of a dollar is float noise and shows as $0.
    """
    if abs(value) < 5e-11:
        return "$0"
    sign = "−" if value < 0 else ""
    value = abs(value)
    if value >= 100:
        return f"{sign}${value:,.0f}"
    if value >= 1:
        return f"{sign}${value:,.2f}"
    digits = 3 - math.floor(math.log10(value))  # four significant digits
    whole, _, fraction = f"{value:.{digits}f}".partition(".")
    return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _spec(chart: alt.TopLevelMixin) -> dict[str, Any]:
    spec = chart.to_dict()
    spec.pop("$schema", None)  # a URL the page never loads; left out so the file names none
    return spec


def waterfall(steps: list[Step]) -> dict[str, Any]:
    """Floating bars from the baseline down through each lever to the actual cost."""
    order = [s.step for s in steps]
    values = []
    for s in steps:
        label = usd(s.amount) if s.kind == "total" else usd(-s.amount)
        values.append({"step": s.step, "kind": s.kind, "start": s.start, "end": s.end,
                       "top": max(s.start, s.end), "label": label, "amount": s.amount})
    base = alt.Chart(alt.Data(values=values)).encode(
        x=alt.X("step:N", sort=order, title=None,
                axis=alt.Axis(labelAngle=0, labelLimit=120)),
    )
    bars = base.mark_bar().encode(
        y=alt.Y("start:Q", title="USD", axis=alt.Axis(format=AXIS_USD)),
        y2="end:Q",
        color=alt.Color("kind:N", legend=None, scale=alt.Scale(
            domain=list(COLORS), range=list(COLORS.values()))),
        tooltip=[alt.Tooltip("step:N"), alt.Tooltip("label:N", title="amount")],
    )
    text = base.mark_text(baseline="bottom", dy=-4).encode(y="top:Q", text="label:N")
    return _spec((bars + text).properties(width=WIDTH, height=320))


def by_model(frame: pl.DataFrame) -> dict[str, Any]:
    """Horizontal bars: what each tier's model cost in this run."""
    values = [
        {"label": f"{r['tier'] or '–'} · {r['provider'] or '–'}/{r['model'] or '–'}",
         "tier": r["tier"] or "–", "cost_usd": r["cost_usd"], "rows": r["rows"],
         "text": usd(r["cost_usd"])}
        for r in frame.iter_rows(named=True)
    ]
    base = alt.Chart(alt.Data(values=values)).encode(
        y=alt.Y("label:N", sort="-x", title=None, axis=alt.Axis(labelLimit=320)),
    )
    bars = base.mark_bar().encode(
        x=alt.X("cost_usd:Q", title="USD", axis=alt.Axis(format=AXIS_USD)),
        color=alt.Color("tier:N", title="tier"),
        tooltip=[alt.Tooltip("label:N", title="model"), alt.Tooltip("rows:Q"),
                 alt.Tooltip("text:N", title="cost")],
    )
    text = base.mark_text(align="left", dx=4).encode(x="cost_usd:Q", text="text:N")
    height = max(60, 28 * len(values))
    return _spec((bars + text).properties(width=WIDTH - 320, height=height))


def by_day(frame: pl.DataFrame) -> dict[str, Any]:
    """Spent per day (bars) against the baseline (line), over every run of the pipeline.

    A day's spend is what its runs paid; its baseline counts each row answered that day once,
    so a $0 re-run from the response cache adds nothing. The tooltip says how many of the
    day's runs were such cache re-runs.
    """
    values = [
        {"day": r["day"], "cost_usd": r["cost_usd"], "baseline_cost_usd": r["baseline_cost_usd"],
         "runs": r["runs"], "cache_reruns": r["cache_reruns"], "rows": r["distinct_rows"],
         "cost": usd(r["cost_usd"]), "baseline": usd(r["baseline_cost_usd"])}
        for r in frame.iter_rows(named=True)
    ]
    base = alt.Chart(alt.Data(values=values)).encode(
        x=alt.X("day:O", title="day of run (UTC)", axis=alt.Axis(labelAngle=0)),
        tooltip=[alt.Tooltip("day:O"), alt.Tooltip("runs:Q"),
                 alt.Tooltip("cache_reruns:Q", title="of which cache re-runs"),
                 alt.Tooltip("rows:Q", title="rows answered"),
                 alt.Tooltip("cost:N", title="spent"), alt.Tooltip("baseline:N")],
    )
    spent = base.mark_bar().encode(
        y=alt.Y("cost_usd:Q", title="USD", axis=alt.Axis(format=AXIS_USD)),
        color=alt.datum("spent"),
    )
    line = base.mark_line(point=True).encode(
        y="baseline_cost_usd:Q", color=alt.datum("baseline"))
    chart = alt.layer(spent, line).encode().resolve_scale(color="shared").configure_range(
        category=[COLORS["total"], "#f58518"])
    width = min(WIDTH, max(200, 70 * len(values)))
    return _spec(chart.properties(width=width, height=260))
