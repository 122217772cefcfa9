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
# # 3. Score today's subscribers and see what a sync would send
#
# What the scheduled job does each day (`lapse rescore`): score every active subscriber with the
# champion, bucket them, and work out what Braze must be told; here as a dry run, so nothing is
# sent. Then the same model over HTTP: the service started from Python, asked by
# `/score_events` (a subscriber's Adjust callbacks) and `/lookup` (the latest scores file).
#
# The sample app is the one of the other notebooks (`<store.path>/notebooks`); a champion is
# trained here if `02-train-and-explain` has not made one.

# %%
from datetime import timedelta

import httpx
import matplotlib.pyplot as plt
import pandas as pd

from features import schema as s
from features.ingest.callbacks import stored_callbacks
from lapse import jobs, serve
from lapse.settings import Settings

settings = jobs.sample_settings(Settings.load("../lapse.toml"))
app = jobs.sample_app(settings, champion=True)
print(f"store: {settings.store.path}")

# %% [markdown]
# ## Score today's subscribers
#
# "Today" is the day after the sample app's data ends. `jobs.rescore` loads
# `models:/lapse-churn@champion`, builds the features of every subscriber active at the start of
# the day with the model's own feature definition, scores and buckets them, writes the scores
# file (`<store>/scores/scores-<date>.parquet`, which `/lookup` reads) and, with `dry_run=True`,
# plans the sync without sending it.

# %%
today = settings.synthetic.start + timedelta(days=settings.synthetic.days)
outcome = jobs.rescore(settings, today, out=jobs.default_scores_path(settings, today), dry_run=True)
scores = outcome.result.scores
print(
    f"{len(scores):,} subscribers scored on {today} by {outcome.model.label}; file {outcome.path}"
)
scores.sort_values(s.CHURN_PROBABILITY, ascending=False).head(8)

# %%
summary = scores.groupby(s.BUCKET, observed=True)[s.CHURN_PROBABILITY].agg(
    ["size", "mean", "min", "max"]
)
summary.sort_values("mean", ascending=False)

# %%
ax = scores[s.CHURN_PROBABILITY].plot.hist(bins=40, color="#6baed6", figsize=(7, 3))
for _bucket, bound in outcome.sync.config.policy.cuts:
    ax.axvline(bound, color="#d62728", linestyle="--")
ax.set_xlabel("P(churn within 30 days); dashed: the bucket bounds")
ax.set_ylabel("subscribers")
plt.show()
# %%
scores[s.REASONS].explode().value_counts().rename("subscribers with this reason").to_frame()

# %% [markdown]
# ## What a sync would send
#
# The sync pushes only what differs from what Braze acknowledged (the ledger, empty here: every
# scored user is new). `jobs.sync(settings, file, dry_run=True)` is `lapse sync --scores FILE
# --dry-run`: it reads the ledger, sends nothing, and shows the bucket moves, the data points it
# would cost and a sample request (the API key masked).

# %%
dry = jobs.sync(settings, outcome.path, dry_run=True).report
print(
    f"{dry.changed:,} users would change, {dry.nulled:,} set to null, "
    f"{dry.data_points:,} data points, {dry.batches} requests of at most "
    f"{settings.braze.batch_size}"
)
pd.Series(dry.transitions, name="users").rename_axis(["from", "to"]).to_frame()

# %%
print({k: v for k, v in dry.headers.items()})
dry.sample[:3]

# %% [markdown]
# ## The service, called from Python
#
# `serve.start_server` runs `bentoml serve lapse.service:LapseChurn` on the champion on a free
# loopback port and waits until `/readyz` answers. `/score_events` takes a subscriber's Adjust
# callbacks (here: the rows of their export that ingest stored) and scores them at `as_of`
# through ingest's normalisation and the model's feature definition; `/lookup` answers from the
# newest scores file. Both agree with the rescore above.

# %%
server = serve.start_server(settings, "127.0.0.1", serve.free_port())
print(f"service on {server.url}, model {server.info.label}")

# %%
subscriber = scores.sort_values(s.CHURN_PROBABILITY).iloc[-1]
callbacks = stored_callbacks(settings.store.path, [subscriber[s.USER_ID]])
with httpx.Client(base_url=server.url, timeout=60) as http:
    by_events = http.post("/score_events", json={"as_of": str(today), "events": callbacks})
    by_lookup = http.post("/lookup", json={"user_ids": [subscriber[s.USER_ID]]})
print(f"{len(callbacks)} callbacks of subscriber {subscriber[s.USER_ID]} sent to /score_events")
answers = {
    "rescore (the scores file)": subscriber,
    "POST /score_events": by_events.raise_for_status().json()["scores"][0],
    "POST /lookup": by_lookup.raise_for_status().json()["results"][0],
}
pd.DataFrame({k: pd.Series(v) for k, v in answers.items()}).loc[
    [s.USER_ID, s.PLATFORM, s.CHURN_PROBABILITY, s.BUCKET, s.REASONS]
]

# %%
by_events.json()

# %%
server.stop()
print(f"stopped (exit code {server.process.returncode})")
