"""training.compare: the metric table of a run (model, baselines, oracle), two runs side by side,
and a run's figures read back from MLflow; runs logged in the test, no training."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from training import compare


def _metrics(model_auc: float, oracle: bool = True) -> dict[str, float]:
    out = {}
    for i, name in enumerate(compare.METRICS):
        out[f"holdout_{name}"] = model_auc if name == "roc_auc" else 0.1 * (i + 1)
        out[f"baseline_rule_{name}"] = 0.6 if name == "roc_auc" else 0.2
        out[f"baseline_logreg_{name}"] = 0.7 if name == "roc_auc" else 0.3
        if oracle:
            out[f"oracle_{name}"] = 0.9 if name == "roc_auc" else 0.4
    out["oracle_ratio"] = (model_auc - 0.5) / 0.4 if oracle else math.nan
    return out


def test_the_metric_table_is_metric_by_scorer() -> None:
    table = compare.metrics_table(_metrics(0.8))
    assert table.index.tolist() == list(compare.METRICS)
    assert table.columns.tolist() == ["model", "crm_rule", "logistic_regression", "oracle"]
    assert table.loc["roc_auc"].tolist() == [0.8, 0.6, 0.7, 0.9]
    assert table.loc["brier", "model"] == pytest.approx(0.4)


def test_a_run_without_ground_truth_has_no_oracle_column() -> None:
    table = compare.metrics_table(_metrics(0.8, oracle=False))
    assert "oracle" not in table.columns


def _record(run_id: str, auc: float, **params: str) -> compare.RunRecord:
    return compare.RunRecord(run_id, "FINISHED", _metrics(auc), params, {})


def test_two_runs_show_their_metrics_the_difference_and_the_params_that_differ() -> None:
    a = _record("a1", 0.75, **{"optuna.n_trials": "3", "features.windows": "[7, 14, 28]"})
    b = _record("b2", 0.80, **{"optuna.n_trials": "3", "features.windows": "[7]", "new": "x"})
    both = compare.compare(a, b)
    assert (both.a, both.b) == ("a1", "b2")
    assert both.metrics.loc["holdout_roc_auc"].tolist() == pytest.approx([0.75, 0.80, 0.05])
    assert both.metrics.loc["oracle_ratio", "b_minus_a"] == pytest.approx(0.125)
    assert "valid_roc_auc" not in both.metrics.index  # neither run logged it
    assert both.params.index.tolist() == ["features.windows", "new"]
    assert both.params.loc["new"].tolist() == [None, "x"]


def _log_run(experiment: str, auc: float, plots: bool = True) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_metrics(_metrics(auc))
        mlflow.log_params({"optuna.n_trials": 3, "seed": auc})
        if plots:
            for name in ("roc.png", "calibration.png"):
                figure, ax = plt.subplots()
                ax.plot([0, 1], [0, auc])
                mlflow.log_figure(figure, f"plots/{name}")
                plt.close(figure)
    return run.info.run_id


def test_runs_and_their_figures_are_read_back_from_mlflow(mlflow_env, tmp_path) -> None:
    uri, _ = mlflow_env
    first, second = _log_run("compare-a", 0.7), _log_run("compare-a", 0.8, plots=False)
    record = compare.read_run(uri, first)
    assert record.status == "FINISHED"
    assert record.metrics["holdout_roc_auc"] == pytest.approx(0.7)
    assert record.params["optuna.n_trials"] == "3"
    plots = compare.run_plots(uri, first, tmp_path / "plots")
    assert list(plots) == ["calibration.png", "roc.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots.values())
    both = compare.compare_runs(uri, first, second)
    assert both.metrics.loc["holdout_roc_auc", "b_minus_a"] == pytest.approx(0.1)
    assert both.params.index.tolist() == ["seed"]
    assert isinstance(both.params, pd.DataFrame)
    with pytest.raises(compare.RunError, match="no figures under plots/"):
        compare.run_plots(uri, second, tmp_path / "none")
    with pytest.raises(compare.RunError, match="run 'f00': not found in sqlite"):
        compare.read_run(uri, "f00")
