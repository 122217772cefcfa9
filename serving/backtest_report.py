"""The backtest's HTML report: one self-contained file (plots as embedded PNG, no script, no
server, no network) that opens in any browser and travels as an MLflow artifact.

Plots come from ``training.plots`` (one implementation of each): ROC AUC and calibration error
over scoring days, realised churn by bucket over time, predicted against realised churn per risk
decile on the newest complete day; then the per-day table, the buckets and the pending days.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from features import schema as s
from serving.backtest import BacktestResult
from training import plots

__all__ = ["figures", "report_html"]

#: The per-day table's columns, with their headings.
DAY_COLUMNS = {
    s.AS_OF: "scoring day",
    s.MODEL_VERSION: "version",
    "scored": "scored",
    "labelled": "labelled",
    "mean_probability": "predicted churn",
    "realised_churn_rate": "realised churn",
    "realised_roc_auc": "ROC AUC",
    "realised_pr_auc": "PR AUC",
    "realised_brier": "Brier",
    "realised_ece": "ECE",
    "realised_lift_quality": "lift quality",
    "realised_top10_lift": "top-decile lift",
}


def _series(days: pd.DataFrame, column: str) -> dict[str, pd.Series]:
    out = {}
    if column not in days.columns:
        return out
    for (name, version), rows in days.groupby([s.MODEL_NAME, s.MODEL_VERSION], sort=True):
        values = rows.set_index(s.AS_OF)[column].astype(float).dropna().sort_index()
        if len(values):
            out[f"{name} v{version}"] = values
    return out


def figures(
    result: BacktestResult, references: Mapping[str, float] | None = None
) -> dict[str, Figure]:
    """The report's figures by file name; ``references`` are hold-out ROC AUCs by series name
    (``<model> v<version>``), drawn as dashed levels on the AUC plot."""
    days = result.days
    found = {
        "roc_auc_over_time.png": plots.over_time(
            _series(days, "realised_roc_auc"),
            "Realised ROC AUC by scoring day",
            "ROC AUC",
            {f"{k} hold-out": v for k, v in (references or {}).items()},
        ),
        "ece_over_time.png": plots.over_time(
            _series(days, "realised_ece"),
            "Calibration error (ECE) by scoring day",
            "expected calibration error",
        ),
    }
    buckets = result.buckets
    by_bucket: dict[str, pd.Series] = {}
    grouped = buckets.groupby([s.BUCKET, s.MODEL_VERSION], sort=False) if len(buckets) else []
    for (bucket, version), rows in grouped:
        by_bucket[f"{bucket} (v{version})"] = (
            rows.set_index(s.AS_OF)["realised_churn_rate"].astype(float).sort_index()
        )
    found["bucket_churn_over_time.png"] = plots.over_time(
        by_bucket, "Realised churn by bucket", "realised churn rate"
    )
    newest = result.newest
    if newest is not None:
        deciles = result.deciles[
            (result.deciles[s.AS_OF] == newest[s.AS_OF])
            & (result.deciles[s.MODEL_VERSION] == newest[s.MODEL_VERSION])
        ].set_index("decile")
        found["deciles_newest_day.png"] = plots.predicted_vs_realised(
            deciles,
            f"Predicted vs realised per decile, {newest[s.AS_OF]} (v{newest[s.MODEL_VERSION]})",
        )
    return found


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(frame: pd.DataFrame, headings: Mapping[str, str] | None = None) -> str:
    if frame.empty:
        return "<p class='none'>none</p>"
    shown = frame[[c for c in (headings or {c: c for c in frame.columns}) if c in frame.columns]]
    shown = shown.rename(columns=dict(headings or {}))
    table = shown.to_html(
        index=False, border=0, classes="grid", float_format=lambda v: f"{v:.4f}", na_rep="-"
    )
    return f'<div class="scroll">{table}</div>'  # a wide table scrolls, not the whole page


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(30rem, 1fr)); gap: 1rem; }
.plots img { width: 100%; border: 1px solid #ddd; }
table.grid { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.grid th, table.grid td { padding: .25rem .6rem; border-bottom: 1px solid #e4e4e4;
  text-align: right; white-space: nowrap; }
.summary td:first-child { font-weight: 600; padding-right: 1rem; }
.none, .notes { color: #666; }
.scroll { overflow-x: auto; }
"""


def report_html(
    result: BacktestResult,
    references: Mapping[str, float] | None = None,
    title: str = "Lapse backtest",
) -> str:
    """The whole report as one HTML document."""
    newest = result.newest
    summary = [
        ("label horizon", f"{result.horizon_days} days"),
        (
            "newest stored event",
            f"{result.observed_until:%Y-%m-%d %H:%M} UTC" if result.observed_until else "none",
        ),
        ("scoring days backtested", f"{len(result.days)}"),
        ("scoring days pending", f"{len(result.pending)}"),
    ]
    if newest is not None:
        summary += [
            (
                "newest complete day",
                f"{newest[s.AS_OF]} ({newest[s.MODEL_NAME]} v{newest[s.MODEL_VERSION]})",
            ),
            ("its realised ROC AUC", f"{newest.get('realised_roc_auc', float('nan')):.4f}"),
            ("its calibration error (ECE)", f"{newest.get('realised_ece', float('nan')):.4f}"),
        ]
    images = "\n".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{_png(fig)}"></figure>'
        for name, fig in figures(result, references).items()
    )
    pending = pd.DataFrame(
        [
            {
                "scoring day": d.as_of,
                "version": d.model_version,
                "scored": d.scored,
                "labels complete on": f"{d.complete_on:%Y-%m-%d %H:%M} UTC",
            }
            for d in result.pending
        ]
    )
    bucket_headings = {
        s.AS_OF: "scoring day",
        s.MODEL_VERSION: "version",
        s.BUCKET: "bucket",
        "users": "users",
        "share": "share",
        "mean_probability": "predicted churn",
        "realised_churn_rate": "realised churn",
        "expected_churners": "expected churners",
        "realised_churners": "realised churners",
    }
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in summary
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Every past scoring day whose {result.horizon_days}-day horizon has ended, set against the churn
the event store now shows (the label code training uses). Metrics are training's own.</p>
<table class="summary">{rows}</table>
<h2>Over time</h2>
<div class="plots">{images}</div>
<h2>Per scoring day and model version</h2>
{_table(result.days, DAY_COLUMNS)}
<h2>Realised against predicted churn per bucket</h2>
{_table(result.buckets, bucket_headings)}
<h2>Pending: horizon not yet over</h2>
{_table(pending)}
{f'<h2>Notes</h2><ul class="notes">{notes}</ul>' if notes else ""}
</body></html>
"""
