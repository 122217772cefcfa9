"""training.plots: every figure renders to PNG from a fitted model and hold-out scores."""

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from training.plots import all_plots


def test_all_plots_render(fitted_on_snapshots) -> None:
    model, X, y = fitted_on_snapshots
    p = model.predict_proba(X)[:, 1]
    scores = {"model": p, "random": np.random.default_rng(0).random(len(p))}
    figures = all_plots(y, scores, model, X, model.contributions(X.head(100)))
    assert set(figures) == {
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "cumulative_gains.png",
        "score_distribution.png",
        "feature_importance.png",
        "contributions.png",
    }
    for name, fig in figures.items():
        assert isinstance(fig, Figure)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n", name
    roc_lines = figures["roc.png"].axes[0].get_lines()
    assert [line.get_label() for line in roc_lines] == ["model", "random", "random"]
    bars = figures["feature_importance.png"].axes[0].patches
    assert len(bars) == len(model.pipeline_[-1].feature_name_)


def test_over_time_with_one_scoring_day_spans_its_fortnight_not_years() -> None:
    from matplotlib.dates import num2date

    from training.plots import over_time

    one = {"m v1": pd.Series([0.8], index=[pd.Timestamp("2026-03-09").date()])}
    fig = over_time(one, "t", "auc", {"m v1 hold-out": 0.79})
    low, high = (num2date(x).date().isoformat() for x in fig.axes[0].get_xlim())
    assert (low, high) == ("2026-03-02", "2026-03-16")
