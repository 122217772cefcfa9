"""The settings sections the training package reads: ``[mlflow]``, ``[optuna]``, ``[training]``,
``[buckets]``; each default is written here once (``lapse.settings.Settings`` composes them).

``TrainConfig`` is a training run's slice of the settings: the same section objects, so a
notebook builds one without a file (``TrainConfig()``, defaults) or takes it from the settings
(``TrainConfig.of(settings)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from base import DatabaseUrl, Section
from features.settings import FeatureConfig, LabelSettings, feature_definition
from training.buckets import BucketPolicy


class MlflowSettings(Section):
    """Tracking server, artifact root and registry names."""

    tracking_uri: DatabaseUrl = Field(
        "sqlite:///mlflow.db",
        description="MLflow tracking store: SQLite, or an MLflow server URL (http://host:5000).",
    )

    artifact_location: str = Field(
        "mlruns",
        min_length=1,
        description="Artifact root of new experiments: a folder or an object-store URI (s3://...).",
    )
    experiment: str = Field(
        "lapse-churn", min_length=1, description="MLflow experiment of the training runs."
    )
    registered_model: str = Field(
        "lapse-churn",
        min_length=1,
        description="Registered model name; the served model is models:/<name>@champion.",
    )


class OptunaSettings(Section):
    """Hyper-parameter search storage and budget."""

    storage: DatabaseUrl = Field(
        "sqlite:///optuna.db",
        description="Optuna study storage: SQLite, or PostgreSQL to share trials between workers.",
    )

    n_trials: int = Field(30, ge=1, description="Trials per tuning run.")
    timeout_s: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Wall-clock budget for tuning; unset: none."
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes running trials side by side on the one study (> 1 needs a "
        "shared RDB storage such as PostgreSQL; SQLite is refused).",
    )
    selection_se: float = Field(
        1.0,
        ge=0,
        le=5,
        allow_inf_nan=False,
        description="Trial kept: among trials within this many standard errors of the best "
        "validation ROC AUC, the one with the fewest leaves (then the best of those); 0: the "
        "best one.",
    )


class TrainingSettings(Section):
    """How `lapse train` cuts snapshots, splits them in time and gates the champion."""

    cutoff_every_days: int = Field(7, ge=1, description="Days between snapshot cut-offs.")
    first_cutoff_days: int = Field(
        28, ge=0, description="Days of history before the first cut-off (data start + this)."
    )
    valid_cutoffs: int = Field(
        1,
        ge=1,
        description="Latest cut-offs used for validation (tuning, calibration): eligible ones "
        "(label window ending by the hold-out), or with valid_share and valid_until = "
        "labels_end any before the hold-out; with valid_share, the fewest, more being taken "
        "until they hold min_churners churners.",
    )
    valid_share: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of subscribers held out of training for validation at the latest "
        "cut-offs it may reach (valid_until), their rows whose label window overlaps "
        "validation purged (0: validate on the latest valid_cutoffs eligible cut-offs, every "
        "subscriber).",
    )
    valid_until: Literal["holdout", "labels_end"] = Field(
        "labels_end",
        description="Where validation may reach (with valid_share > 0; ignored at 0): labels_end, "
        "the held-out subscribers at the latest labelled cut-offs before the hold-out, left out "
        "of the hold-out (nearest it, sharing its calendar weeks); holdout, only cut-offs whose "
        "label window ends by the hold-out cut-off.",
    )
    refit: bool = Field(
        True,
        description="After the time split has chosen the parameters and measured the hold-out, "
        "fit the registered model again on every cut-off with complete labels (the hold-out's "
        "included) and calibrate it on the latest; the gate compares the time-split models.",
    )
    seed: int = Field(
        42,
        description="Seed of LightGBM, the sampler and the calibrator split: same data and "
        "seed, same model.",
    )
    min_churners: int = Field(50, ge=1, description="Churners needed in each split.")
    min_non_churners: int = Field(50, ge=1, description="Non-churners needed in each split.")
    gate_metric: str = Field(
        "holdout_pr_auc", min_length=1, description="Hold-out metric the champion gate compares."
    )
    early_stopping_rounds: int = Field(
        50,
        ge=1,
        description="LightGBM rounds without a gain in early_stopping_metric before it stops.",
    )
    early_stopping_metric: Literal["binary_logloss", "auc"] = Field(
        "binary_logloss",
        description="The validation metric LightGBM's early stopping watches: log loss, a smooth "
        "proper score, or ROC AUC, which plateaus early where churners are rare.",
    )
    max_age_days: int = Field(
        30,
        ge=1,
        description="`lapse train --if-due` retrains a champion trained this many days ago.",
    )
    truth_path: Path | None = Field(
        None, description="Generator ground truth; default <store>/synthetic/truth/… if present."
    )
    max_rows: int = Field(
        2_000_000,
        ge=0,
        description="Snapshot rows trained on at most: a larger app's snapshots are sampled, "
        "the same share of every cut-off's rows (0: all rows).",
    )

    @property
    def valid_reach(self) -> Literal["holdout", "labels_end"]:
        """Where validation reaches in effect: ``valid_until``, or "holdout" without a
        validation share (the time split alone, every subscriber in the hold-out)."""
        return self.valid_until if self.valid_share > 0 else "holdout"


class BucketSettings(Section):
    """How churn probabilities become the bucket values marketers see in Braze."""

    mode: Literal["probability", "share", "given"] = Field(
        "probability",
        description="probability: fixed bounds (thresholds); share: bounds giving each bucket its "
        "share of users; given: the scores file's own bucket column.",
    )
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"high": 0.5, "medium": 0.2},
        description="mode probability: bucket -> lowest churn probability in it, riskiest first.",
    )
    shares: dict[str, float] = Field(
        default_factory=lambda: {"high": 0.10, "medium": 0.20},
        description="mode share: bucket -> share of the scored users, riskiest first.",
    )
    rest: str = Field("low", min_length=1, description="Bucket for everyone else.")
    hysteresis: float = Field(
        0.03, ge=0, lt=0.5, description="Probability margin to cross before leaving a bucket."
    )

    @model_validator(mode="after")
    def _policy(self) -> BucketSettings:
        self.policy()
        return self

    def policy(self) -> BucketPolicy:
        """The bucket policy these settings describe (training fits it; the sync applies it)."""
        cuts = self.thresholds if self.mode == "probability" else self.shares
        return BucketPolicy.of(self.mode, cuts, self.rest, self.hysteresis)


class TrainConfig(BaseModel):
    """The sections of the settings one training run reads (each with its own defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    optuna: OptunaSettings = Field(default_factory=OptunaSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    buckets: BucketSettings = Field(default_factory=BucketSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    features: FeatureConfig = Field(default_factory=FeatureConfig)

    @classmethod
    def of(cls, settings: Any) -> TrainConfig:
        """The training slice of a ``lapse.settings.Settings`` (or anything with these sections)."""
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})

    @property
    def definition(self) -> FeatureConfig:
        """``[features]`` with the label rule the state features share (the leeway): what
        snapshots are built with and the model keeps."""
        return feature_definition(self.features, self.labels)

    def replace(self, **sections: dict[str, Any]) -> TrainConfig:
        """A copy with some keys of some sections changed and checked, e.g.
        ``config.replace(optuna={"n_trials": 5})``."""
        data = self.model_dump()
        for section, values in sections.items():
            data[section] = {**data[section], **values}
        return type(self).model_validate(data)
