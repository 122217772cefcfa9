"""Evaluation plots as matplotlib Figures (no pyplot state, Agg canvas), logged as run artifacts."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from training.evaluate import ECE_BINS

Scores = Mapping[str, np.ndarray]


def _figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def roc(y, scores: Scores) -> Figure:
    fig, ax = _figure("ROC on the hold-out", "false positive rate", "true positive rate")
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="random")
    ax.legend(loc="lower right")
    return fig


def precision_recall(y, scores: Scores) -> Figure:
    fig, ax = _figure("Precision-recall on the hold-out", "recall", "precision")
    for name, p in scores.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
    ax.axhline(np.mean(y), color="k", ls=":", lw=1, label="random")
    ax.legend(loc="upper right")
    return fig


def calibration(y, scores: Scores, bins: int = ECE_BINS) -> Figure:
    fig, ax = _figure("Calibration (hold-out)", "mean predicted probability", "observed churn rate")
    y = np.asarray(y, dtype=float)
    for name, p in scores.items():
        p = np.asarray(p, dtype=float)
        which = np.minimum((p * bins).astype(int), bins - 1)
        count = np.bincount(which, minlength=bins)
        seen = count > 0
        mean_p = np.bincount(which, p, bins)[seen] / count[seen]
        rate = np.bincount(which, y, bins)[seen] / count[seen]
        ax.plot(mean_p, rate, "o-", label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    ax.legend(loc="upper left")
    return fig


def cumulative_gains(y, scores: Scores) -> Figure:
    fig, ax = _figure("Cumulative gains", "share of users targeted", "share of churners reached")
    y = np.asarray(y, dtype=float)
    share = np.arange(1, len(y) + 1) / len(y)
    for name, p in scores.items():
        ax.plot(
            share, np.cumsum(y[np.argsort(-np.asarray(p), kind="stable")]) / y.sum(), label=name
        )
    ax.plot(share, np.cumsum(np.sort(y)[::-1]) / y.sum(), "k--", lw=1, label="perfect")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="random")
    ax.legend(loc="lower right")
    return fig


def score_distribution(y, p, thresholds: tuple[tuple[str, float], ...]) -> Figure:
    fig, ax = _figure("Churn probability by outcome", "churn probability", "users")
    y = np.asarray(y, dtype=bool)
    edges = np.linspace(0, 1, 41)
    ax.hist(np.asarray(p)[~y], bins=edges, alpha=0.6, label="stayed")
    ax.hist(np.asarray(p)[y], bins=edges, alpha=0.6, label="churned")
    for name, threshold in thresholds:
        ax.axvline(threshold, color="k", ls="--", lw=1)
        ax.annotate(name, (threshold, 0.95), xycoords=("data", "axes fraction"), rotation=90)
    ax.set_yscale("log")
    ax.legend(loc="upper right")
    return fig


def feature_importance(model, top: int = 20) -> Figure:
    """Total split gain per feature of the LightGBM model."""
    booster = model.pipeline_[-1].booster_
    gain = pd.Series(
        booster.feature_importance(importance_type="gain"), index=booster.feature_name()
    )
    gain = gain.sort_values().tail(top)
    fig, ax = _figure("Feature importance (gain)", "total gain", "")
    ax.barh(gain.index, gain.to_numpy())
    return fig


def contribution_summary(contributions: pd.DataFrame, X: pd.DataFrame, top: int = 15) -> Figure:
    """SHAP-style summary: each user's log-odds contribution per feature, coloured by the
    feature's value rank (categoricals by their code), features by mean |contribution|."""
    contrib = contributions.drop(columns="bias")
    order = contrib.abs().mean().sort_values().tail(top).index
    fig, ax = _figure("Per-user contributions (pred_contrib)", "log-odds contribution", "")
    rng = np.random.default_rng(0)
    for row, name in enumerate(order):
        values = contrib[name].to_numpy()
        raw = X[name] if name in X.columns else pd.Series(np.nan, index=X.index)
        if not pd.api.types.is_numeric_dtype(raw.dtype):
            raw = pd.Series(pd.factorize(raw)[0], index=X.index).where(raw.notna())
        color = pd.to_numeric(raw, errors="coerce").rank(pct=True).to_numpy(dtype=float)
        jitter = rng.uniform(-0.3, 0.3, len(values))
        ax.scatter(values, row + jitter, c=color, cmap="coolwarm", s=4, vmin=0, vmax=1)
    ax.set_yticks(range(len(order)), list(order))
    ax.axvline(0, color="k", lw=1)
    return fig


def all_plots(
    y, scores: Scores, model, X: pd.DataFrame, contributions: pd.DataFrame
) -> dict[str, Figure]:
    """Every evaluation figure, by artifact file name; ``scores`` starts with the model's own."""
    main = next(iter(scores.values()))
    return {
        "roc.png": roc(y, scores),
        "precision_recall.png": precision_recall(y, scores),
        "calibration.png": calibration(y, scores),
        "cumulative_gains.png": cumulative_gains(y, scores),
        "score_distribution.png": score_distribution(y, main, model.bucket_policy_.cuts),
        "feature_importance.png": feature_importance(model),
        "contributions.png": contribution_summary(contributions, X.loc[contributions.index]),
    }


# --- monitoring: a model's scores against what happened, over scoring days ---------------------


def over_time(
    series: Mapping[str, pd.Series],
    title: str,
    ylabel: str,
    references: Mapping[str, float] | None = None,
) -> Figure:
    """One line per named series (values indexed by day), with optional dashed reference
    levels (e.g. each model's hold-out AUC at training)."""
    fig, ax = _figure(title, "scoring day", ylabel)
    days: set[pd.Timestamp] = set()
    for name, values in series.items():
        when = pd.to_datetime(values.index)
        days |= set(when)
        ax.plot(when, values.to_numpy(dtype=float), "o-", label=name)
    if len(days) == 1:  # matplotlib would span a single day over four years: show its week
        (day,) = days
        ax.set_xlim(day - pd.Timedelta(days=7), day + pd.Timedelta(days=7))
    for i, (name, level) in enumerate((references or {}).items()):
        ax.axhline(level, color=f"C{i}", ls="--", lw=1, label=name)
    if series or references:
        ax.legend(loc="best", fontsize="small")
    fig.autofmt_xdate()
    return fig


def predicted_vs_realised(table: pd.DataFrame, title: str) -> Figure:
    """Per risk decile (``training.evaluate.decile_table``): mean predicted probability next to
    the realised churn rate."""
    fig, ax = _figure(title, "risk decile (1 = riskiest tenth)", "churn rate")
    x = np.asarray(table.index, dtype=float)
    ax.bar(x - 0.2, table["mean_probability"], width=0.4, label="predicted (mean probability)")
    ax.bar(x + 0.2, table["realised_churn_rate"], width=0.4, label="realised churn rate")
    ax.set_xticks(x)
    ax.legend(loc="upper right")
    return fig
