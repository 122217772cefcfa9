"""Log the ChurnModel as one MLflow model, register it, and move ``champion`` only if it wins.

The current champion is scored on the new model's hold-out rows, so both are compared on the
same users with the same metric; both values are logged on the run. A model refitted on every
labelled cut-off (``training.refit``) has seen the hold-out, so the gate compares like with like:
the time-split model it came from (logged on the run as ``evaluation_model``) against the
champion's own time-split model when the champion is such a refit.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from base import LapseError, safe_url, sqlite_file
from training.evaluate import score_metrics
from training.pipeline import ChurnModel, ModelVersionError

CHAMPION = "champion"
MODEL_NAME = "model"
#: The time-split model of a refitted run: logged, never registered.
EVALUATION_MODEL = "evaluation_model"
#: Run tag holding that model's URI.
EVALUATION_TAG = "lapse.evaluation_model_uri"
#: What the logged model needs at load time (pinned to what trained it).
RUNTIME_PACKAGES = (
    "lightgbm",
    "feature-engine",
    "scikit-learn",
    "pandas",
    "numpy",
    "scipy",
    "skops",
)


@dataclass(frozen=True)
class GateDecision:
    """Whether the new version took the alias, and the numbers behind it."""

    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    version: str
    moved: bool
    reason: str


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in RUNTIME_PACKAGES]


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version the alias points to, or None when there is no champion yet."""
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(exc).lower():
            return None
        raise


def score_champion(name: str, X: pd.DataFrame, y, metric: str) -> tuple[float | None, str]:
    """The champion's ``metric`` on (X, y), or (None, why not). A refitted champion is
    represented by its time-split model: the refit may have been fitted on these very rows.
    When that model is gone (its artifacts deleted), the champion itself scores, and the reason
    says so: a missing twin must not hand the alias to a new model that is no better."""
    fallback = ""
    try:
        client = MlflowClient()
        run_id = client.get_model_version_by_alias(name, CHAMPION).run_id
        evaluation = (client.get_run(run_id).data.tags if run_id else {}).get(EVALUATION_TAG)
        if evaluation:
            try:
                p = mlflow.sklearn.load_model(evaluation).predict_proba(X)[:, 1]
            except Exception as exc:  # noqa: BLE001 - fall back on the champion itself
                fallback = (
                    f"; its time-split model {evaluation} could not score them "
                    f"({type(exc).__name__}: {exc}), so the champion itself did (it may have "
                    "been fitted on these rows)"
                )
            else:
                value = score_metrics(y, p, "holdout")[metric]
                return value, "the champion's time-split model scored on the same hold-out rows"
        champion = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
        p = champion.predict_proba(X)[:, 1]
    except Exception as exc:  # noqa: BLE001 - an unusable champion must not block a new model
        return None, f"the champion could not score the hold-out ({type(exc).__name__}: {exc})"
    return score_metrics(y, p, "holdout")[metric], f"scored on the same hold-out rows{fallback}"


def _log(model, X: pd.DataFrame, artifact: str):
    """Log the ChurnModel (signature, input example, pinned requirements) on the active run."""
    sample = X.head(200)
    import skops.io  # here: it imports every scikit-learn estimator (~1.5 s), scoring needs none

    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    return mlflow.sklearn.log_model(
        sk_model=model,
        name=artifact,
        signature=infer_signature(sample, model.predict_proba(sample)),
        input_example=X.head(3),
        pyfunc_predict_fn="predict_proba",
        skops_trusted_types=trusted,
        pip_requirements=pip_requirements(),
    )


def log_model(model, X: pd.DataFrame, name: str) -> str:
    """Log the ChurnModel on the active run and register it as a new version of ``name``;
    returns the version."""
    info = _log(model, X, MODEL_NAME)
    client = MlflowClient()  # the client API registers without printing to stderr
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    created = client.create_model_version(
        name, source=info.model_uri, run_id=mlflow.active_run().info.run_id, model_id=info.model_id
    )
    return str(created.version)


def publish(
    model,
    X_holdout: pd.DataFrame,
    y_holdout,
    name: str,
    metric: str,
    floor: float | None = None,
    evaluation=None,
) -> GateDecision:
    """Inside an active run: score the champion, log and register ``model``, gate the alias.

    ``metric`` is a ``holdout_*`` name from ``score_metrics`` where higher is better. ``floor``
    is the same metric of the CRM rule on the same rows: a model that does not beat it is
    registered but never made champion (a flat or broken model must not be served).
    ``evaluation``: when ``model`` is a refit that saw the hold-out, the time-split model it came
    from; it stands for ``model`` at the gate and is logged on the run (not registered).
    """
    y = np.asarray(y_holdout, dtype=int)
    judged = model if evaluation is None else evaluation
    candidate = score_metrics(y, judged.predict_proba(X_holdout)[:, 1], "holdout")[metric]
    client = MlflowClient()
    previous = champion_version(client, name)
    champion, why = (None, "no champion yet")
    if previous is not None:
        champion, why = score_champion(name, X_holdout, y, metric)
    if evaluation is not None:
        mlflow.set_tag(EVALUATION_TAG, _log(evaluation, X_holdout, EVALUATION_MODEL).model_uri)
    run_id = mlflow.active_run().info.run_id
    try:
        new_version = log_model(model, X_holdout, name)
        beats_floor = floor is None or not np.isfinite(floor) or candidate > floor
        moved = beats_floor and (champion is None or candidate > champion)
        if not beats_floor:
            why = (
                f"it does not beat the CRM rule on the same hold-out ({metric} {candidate:.4f} vs "
                f"{floor:.4f}), so it is not served"
            )
        decision = GateDecision(
            metric=metric,
            candidate=candidate,
            champion=champion,
            champion_version=previous,
            version=new_version,
            moved=moved,
            reason=why,
        )
        mlflow.log_metric(f"gate_candidate_{metric}", candidate)
        if champion is not None:
            mlflow.log_metric(f"gate_champion_{metric}", champion)
        mlflow.set_tags(
            {
                "gate.metric": metric,
                "gate.moved": str(moved).lower(),
                "gate.reason": why,
                "gate.previous_champion_version": previous or "",
                "registered_model_version": new_version,
            }
        )
        if moved:  # last: the alias never points at a version that could still be removed
            client.set_registered_model_alias(name, CHAMPION, new_version)
    except BaseException:
        # never leave a half-registered model: the version goes (even one registered by a
        # log_model interrupted before it returned), the alias stays where it was
        for left in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"):
            client.delete_model_version(name, left.version)
        raise
    return decision


def experiment_id(tracking_uri: str, name: str, artifact_location: str) -> str:
    """The id of MLflow experiment ``name``, created with its artifacts under
    ``artifact_location`` (a folder or a URI) when it does not exist yet."""
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifact_location
    if "://" not in location and not location.startswith("file:"):
        location = Path(location).resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


class ModelNotFoundError(LapseError):
    """No model at the MLflow URI asked for (nothing trained yet, or a wrong name or alias)."""


def champion_uri(name: str) -> str:
    """The MLflow URI of the served model: ``models:/<name>@champion``."""
    return f"models:/{name}@{CHAMPION}"


def load_model(tracking_uri: str, uri: str):
    """The ``ChurnModel`` at an MLflow model URI (``models:/name@alias``, ``runs:/...``), checked
    to carry its feature definition; ModelNotFoundError or ModelVersionError otherwise."""
    _registry(tracking_uri, uri)
    try:
        model = mlflow.sklearn.load_model(uri)
    except (MlflowException, OSError) as exc:
        raise _not_found(tracking_uri, uri, exc) from None
    return _checked(model, uri)


def check_model(tracking_uri: str, uri: str) -> None:
    """Refuse a URI with no model behind it with load_model's ModelNotFoundError, reading only
    the model's MLmodel file (a missing name, alias, version, run or folder answers in
    milliseconds once MLflow is up; loading the model is what takes time)."""
    from mlflow.models import get_model_info

    _registry(tracking_uri, uri)
    try:
        get_model_info(uri)
    except (MlflowException, OSError) as exc:
        raise _not_found(tracking_uri, uri, exc) from None


def _registry(tracking_uri: str, uri: str) -> None:
    """Point MLflow at the registry, refusing a SQLite one that does not exist."""
    database = sqlite_file(tracking_uri)
    if database is not None and not database.is_file():  # MLflow would create an empty one
        raise ModelNotFoundError(
            f"{uri}: no MLflow database at {database} (mlflow.tracking_uri); "
            "run `lapse train` first"
        )
    mlflow.set_tracking_uri(tracking_uri)


def _not_found(tracking_uri: str, uri: str, exc: Exception) -> ModelNotFoundError:
    message = getattr(exc, "message", str(exc)).splitlines()[0]
    return ModelNotFoundError(
        f"{uri}: no model to score with at {safe_url(tracking_uri)} ({message}); "
        "run `lapse train` first"
    )


def load_model_at(path: str | Path):
    """The ``ChurnModel`` of an MLflow model folder (one a Bento carries), checked as above."""
    return _checked(mlflow.sklearn.load_model(str(path)), str(path))


def _checked(model, where: str):
    if not isinstance(model, ChurnModel):
        raise ModelVersionError(f"{where}: not a Lapse churn model ({type(model).__name__})")
    model.feature_definition  # noqa: B018 - refuses a model saved by an older Lapse
    return model


@dataclass(frozen=True)
class ModelInfo:
    """Who a loaded model is: its URI, registered name and version, run, and hold-out metrics."""

    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    trained_at: str | None = None
    metrics: dict[str, float] | None = None

    @property
    def label(self) -> str:
        """``name version N`` when registered, else the URI."""
        return f"{self.name} version {self.version}" if self.version else self.uri


def model_info(tracking_uri: str, uri: str) -> ModelInfo:
    """What the registry knows of ``uri`` (``models:/name@alias``, ``models:/name/N`` or
    ``runs:/id/...``): version, run and the run's hold-out metrics; what it cannot tell is None."""
    import re
    from datetime import UTC, datetime

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    name = version = run_id = None
    try:
        if m := re.fullmatch(r"models:/([^/@]+)@(.+)", uri):
            found = client.get_model_version_by_alias(m[1], m[2])
            name, version, run_id = m[1], str(found.version), found.run_id
        elif m := re.fullmatch(r"models:/([^/@]+)/(\d+)", uri):
            found = client.get_model_version(m[1], m[2])
            name, version, run_id = m[1], str(found.version), found.run_id
        elif m := re.match(r"runs:/([^/]+)/", uri):
            run_id = m[1]
        if run_id is None:
            return ModelInfo(uri, name, version)
        run = client.get_run(run_id)
    except MlflowException:
        return ModelInfo(uri, name, version, run_id)
    metrics = {
        k: float(v)
        for k, v in run.data.metrics.items()
        if k.startswith(("holdout_", "baseline_", "oracle_")) and k != "oracle_rows"
    }
    started = datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds")
    return ModelInfo(uri, name, version, run_id, started, dict(sorted(metrics.items())))
