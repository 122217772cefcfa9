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
# # 1. Explore the event store
#
# What Lapse holds about subscribers once Adjust's export is ingested: the events, one
# subscriber's lifecycle, who churns (by product, platform and tenure), how long subscribers stay
# (Kaplan–Meier by cohort), and the rows ingest refused.
#
# Every cell calls the packages (`features`, `lapse.jobs`); the notebook holds no logic of its
# own. The data is a small synthetic app made by `lapse generate` and stored by `lapse ingest`,
# in `<store.path>/notebooks` (`data/notebooks` by the repository's `lapse.toml`; the
# environment variable `LAPSE_STORE__PATH` moves it); the three notebooks share it, and
# whichever runs first makes it.

# %%
import matplotlib.pyplot as plt
import pandas as pd

from features import explore, load_events, load_quarantine, snapshots
from features import schema as s
from lapse import jobs
from lapse.settings import Settings

settings = jobs.sample_settings(Settings.load("../lapse.toml"))
app = jobs.sample_app(settings)
store = settings.store.path
print(f"store: {store} ({'reused' if app.reused else 'generated and ingested now'})")

# %% [markdown]
# ## The events
#
# `load_events(store, start, end, columns)` reads the canonical events (one row per Adjust
# activity, typed, UTC, legacy names mapped, duplicates dropped). Store-sandbox purchases (a
# tester's renewals every few minutes) are kept in the store but left out here, as features and
# labels leave them out.

# %%
events = load_events(store, include_sandbox=False)
print(f"{len(events):,} events from {events[s.TS].min():%Y-%m-%d} to {events[s.TS].max():%Y-%m-%d}")
events.groupby([s.KIND, s.EVENT], observed=True).size().rename("rows").to_frame()

# %% [markdown]
# ## One subscriber's lifecycle
#
# A subscriber is a (user id, platform). Their periods (trial, offer, paid) run from the charge to
# the expiry; cancellations, billing trouble and expirations are marked; below, their daily
# sessions and in-app events. Here: a subscriber with many subscription events.

# %%
subscription_rows = events[events[s.KIND] == s.KIND_SUBSCRIPTION]
busiest = subscription_rows.groupby([s.USER_ID, s.PLATFORM], observed=True).size().idxmax()
timeline = explore.subscriber_timeline(events, *busiest)
timeline.periods

# %%
explore.plot_timeline(timeline)
plt.show()
# %% [markdown]
# ## Who churns: by product, platform and tenure
#
# Snapshots are what training learns from: the features of every active subscriber at each
# cut-off, with `churned` = not entitled 30 days later (DESIGN.md's label). The rate is over
# labelled snapshot rows, with a 95% Wilson interval.

# %%
cutoffs = pd.date_range(
    events[s.TS].min().normalize() + pd.Timedelta(days=28), periods=6, freq="14D"
)
frame = snapshots(events, cutoffs, horizon_days=settings.labels.horizon_days)
print(f"{len(frame):,} snapshot rows, {int(frame[s.CHURNED].notna().sum()):,} labelled")
explore.churn_by(frame, s.PRODUCT_ID)

# %%
explore.churn_by(frame, s.PLATFORM)

# %%
by_tenure = explore.churn_by(frame, "tenure_days", bins=[0, 7, 30, 60, 90, 365])
by_tenure

# %%
ax = by_tenure["churn_rate"].plot.bar(
    yerr=[by_tenure["churn_rate"] - by_tenure["low"], by_tenure["high"] - by_tenure["churn_rate"]],
    rot=0,
    color="#6baed6",
    figsize=(7, 3),
)
ax.set_xlabel("tenure (days)")
ax.set_ylabel("30-day churn rate")
plt.show()
# %% [markdown]
# ## How long subscribers stay: Kaplan–Meier by cohort
#
# `explore.lifetimes` gives each subscriber the days from their first period to their first
# lapse (not entitled, by the label's rule), censored at the end of the data for those still
# subscribed; `explore.survival_curves` fits a `lifelines` Kaplan–Meier estimate per group.

# %%
lives = explore.lifetimes(events)
print(f"{len(lives):,} subscribers, {lives[explore.LAPSED].mean():.0%} lapsed within the data")
curves = explore.survival_curves(lives, explore.COHORT)
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for curve in curves.values():
    curve.plot_survival_function(ax=left)
left.set_title("by month of the first period")
left.set_xlabel("days since the first period")
left.set_ylabel("still subscribed")
for curve in explore.survival_curves(lives, explore.FIRST_PRODUCT).values():
    curve.plot_survival_function(ax=right)
right.set_title("by first product")
right.set_xlabel("days since the first period")
plt.show()
# %%
pd.DataFrame(
    {
        name: curve.survival_function_at_times([7, 30, 60]).to_numpy()
        for name, curve in curves.items()
    },
    index=pd.Index([7, 30, 60], name="still subscribed after (days)"),
).T

# %% [markdown]
# ## The quarantine
#
# Rows ingest could not store are kept with a reason (`load_quarantine`): what was wrong, in
# which file and line, and the raw text. After a rule or setting is fixed,
# `lapse ingest --reprocess-quarantine` runs them again.

# %%
quarantine = load_quarantine(store)
print(f"{len(quarantine):,} rows quarantined beside {len(events):,} stored events")
explore.quarantine_summary(quarantine)
