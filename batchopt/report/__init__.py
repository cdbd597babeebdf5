"""`batchopt report`: one run's costs and savings as a single HTML file that opens offline.

`data` reads the ledger, `charts` turns it into Vega-Lite specs with Altair, and `page`
assembles the page with the Vega scripts (bundled by vl-convert-python) inlined.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from batchopt.errors import ConfigError
from batchopt.report.data import ReportData, load


def javascript_bundle() -> str:
    """vega-embed with Vega and Vega-Lite, for the Vega-Lite version this Altair writes.

    ConfigError if the installed vl-convert-python does not bundle that version.
    """
    import altair as alt
    import vl_convert

    version = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])  # "v6.4.1" -> "6.4"
    known = vl_convert.get_vegalite_versions()
    if version not in known:
        raise ConfigError(
            f"vl-convert-python bundles Vega-Lite {', '.join(known)} but Altair "
            f"{alt.__version__} writes {version}; upgrade: pip install -U vl-convert-python"
        )
    return vl_convert.javascript_bundle(vl_version=version)


def render_report(data: ReportData, bundle: str | None = None) -> str:
    """The page for `data`; `bundle` defaults to the vl-convert JavaScript bundle."""
    from batchopt.report import charts
    from batchopt.report.page import render

    specs = {
        "waterfall": charts.waterfall(data.waterfall),
        "models": charts.by_model(data.by_model),
        "days": charts.by_day(data.by_day),
    }
    return render(data, specs, javascript_bundle() if bundle is None else bundle)


def write_report(
    ledger: Path,
    run_id: str,
    out: Path,
    *,
    pipeline: str | None = None,
    outputs: Path | None = None,
    sample_size: int = 10,
) -> Path:
    """Write the report of run `run_id` to `out` atomically (temp file, then rename)."""
    text = render_report(load(ledger, run_id, pipeline, outputs, sample_size))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep the page from whoever it is shared with
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["ReportData", "javascript_bundle", "load", "render_report", "write_report"]
