"""training.plots: every figure renders to PNG from a fitted model and hold-out scores."""

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from features import schema
from training.pipeline import ChurnModel
from training.plots import all_plots
from training.splits import time_split


@pytest.fixture(scope="module")
def fitted(snapshots):
    frame, _ = snapshots
    split = time_split(frame.index.get_level_values(schema.AS_OF).unique(), horizon_days=14)
    train, valid, hold = (split.part(frame, n) for n in ("train", "valid", "holdout"))
    model = ChurnModel({"num_leaves": 7}, seed=0).fit(
        train.drop(columns=schema.CHURNED),
        train[schema.CHURNED].astype(int),
        X_valid=valid.drop(columns=schema.CHURNED),
        y_valid=valid[schema.CHURNED].astype(int),
    )
    return model, hold.drop(columns=schema.CHURNED), hold[schema.CHURNED].astype(int).to_numpy()


def test_all_plots_render(fitted) -> None:
    model, X, y = fitted
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
