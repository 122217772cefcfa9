# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Train a model and explain its scores
#
# The snapshots training learns from, a quick model trained by the same job as `lapse train`,
# what its MLflow run recorded (the model against a CRM rule, a logistic regression and the
# oracle, and the plots), why one subscriber scores as they do, and two runs side by side.
#
# The sample app is the one of `01-explore` (`<store.path>/notebooks`), made here if that
# notebook has not run. It has its own MLflow registry, so nothing trained
# here becomes a real deployment's champion.

# %%
import matplotlib.pyplot as plt
from IPython.display import Image, display

from features import explore
from features import schema as s
from lapse import jobs
from lapse.settings import Settings
from training import compare
from training.reasons import explain

settings = jobs.sample_settings(Settings.load("../lapse.toml"))
app = jobs.sample_app(settings)
tracking_uri = settings.mlflow.tracking_uri
print(f"store: {settings.store.path}\nMLflow: {tracking_uri}")

# %% [markdown]
# ## Snapshots at cut-offs
#
# At each cut-off, the features of every active subscriber from the events before it, and the
# label: not entitled `labels.horizon_days` later. The cut-offs are those of the generator's
# ground truth, so the oracle (the true churn probability) can be scored on the same rows.

# %%
frame = jobs.training_snapshots(settings)
print(f"{len(frame):,} rows, {frame.shape[1] - 1} features")
explore.churn_by(frame, s.AS_OF)

# %% [markdown]
# ## Train
#
# `jobs.train` is what `lapse train` runs: a time split (train on early cut-offs, validate
# later, hold out the latest labelled one), an Optuna search over LightGBM (here a few trials:
# `optuna.n_trials`), calibration, the bucket bounds, the evaluation, one MLflow run, and the
# registry's `champion` alias moved only if the model beats the CRM rule and the champion.

# %%
first = jobs.train(settings)
print(f"run {first.run_id}: {first.tuning.finished} trials, champion moved: {first.gate.moved}")
auc, ratio = first.metrics["holdout_roc_auc"], first.metrics["oracle_ratio"]
print(f"hold-out ROC AUC {auc:.3f}, oracle ratio {ratio:.2f}")

# %% [markdown]
# ## The run in MLflow
#
# Everything below is read back from the tracking store (`mlflow ui --backend-store-uri
# <tracking uri>` shows the same). The hold-out metrics, per scorer; `oracle_ratio` is
# (AUC − 0.5) / (oracle AUC − 0.5): the share of the achievable signal the model finds.

# %%
run = compare.read_run(tracking_uri, first.run_id)
print(f"status {run.status}, oracle ratio {run.metrics['oracle_ratio']:.2f}")
compare.metrics_table(run.metrics).round(3)

# %% [markdown]
# Read it by row: higher is better for the AUCs and the lift, lower for log loss, Brier and
# ECE. The oracle is the ceiling on this data. On a small app with a few trials the logistic
# regression can beat the tuned LightGBM: the run is still registered, but `champion` moves
# only past the CRM rule and the current champion; more subscribers and `optuna.n_trials` are
# the levers. The bucket table: each bucket's users, the churn the model expected and the churn
# that came.

# %%
first.buckets

# %%
plots = compare.run_plots(tracking_uri, first.run_id, settings.store.path / "plots" / first.run_id)
print(", ".join(plots))
for name in (
    "calibration.png",
    "cumulative_gains.png",
    "score_distribution.png",
    "contributions.png",
):
    display(Image(filename=str(plots[name]), width=520))

# %% [markdown]
# ## Why one subscriber scores high
#
# The riskiest subscriber of the hold-out cut-off: the calibrated probability, the bucket, the
# reasons a marketer sees (per-feature LightGBM contributions summed by reason group), and the
# features that pushed the score most.

# %%
model = first.model
holdout = first.split.part(frame, "holdout").drop(columns=s.CHURNED)
probability = model.predict_proba(holdout)[:, 1]
riskiest = holdout.iloc[[probability.argmax()]]
reasons, grouped = explain(model, riskiest)
as_of, user_id, platform = riskiest.index[0]
print(f"subscriber {user_id} ({platform}) at {as_of:%Y-%m-%d}")
print(
    f"P(churn within {settings.labels.horizon_days} days) = {probability.max():.2f}, "
    f"bucket {model.buckets(probability.max(keepdims=True))[0]}, reasons {reasons.iloc[0]}"
)
grouped.iloc[0].rename("log-odds of churn, by reason group").sort_values(ascending=False).to_frame()

# %%
contributions = model.contributions(riskiest).drop(columns="bias").iloc[0]
strongest = contributions[contributions.abs().sort_values().index[-10:]]
ax = strongest.plot.barh(
    color=["#d62728" if v > 0 else "#1f77b4" for v in strongest], figsize=(7, 4)
)
ax.set_xlabel("contribution to the log-odds of churn")
ax.set_title("The ten features that moved this score most")
plt.show()
riskiest.reindex(columns=strongest.index[::-1]).T.set_axis(["value"], axis=1)

# %% [markdown]
# ## Two runs side by side
#
# A second run that counts engagement over the last 7 days only (`features.windows`, default
# 7, 14 and 28): do the longer windows help? The comparison lists the hold-out metrics of both
# and every param that differs. The champion moves only if the second model beats the first on
# the same hold-out rows.

# %%
second = jobs.train(settings.updated(features={"windows": [7]}))
comparison = compare.compare_runs(tracking_uri, first.run_id, second.run_id)
print(f"a = {comparison.a}\nb = {comparison.b}; champion moved to b: {second.gate.moved}")
comparison.metrics.round(4)

# %%
comparison.params
