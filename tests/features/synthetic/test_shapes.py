"""Apps shaped unlike the default: no trials, one plan, late renewals, the app's own events."""

import gzip
import hashlib
import io
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from scipy.stats import spearmanr

from base import LapseError
from features import schema as s
from features.settings import LabelSettings
from features.synthetic import (
    SHAPES,
    GenerationError,
    SyntheticConfig,
    SyntheticSettings,
    generate,
)
from features.synthetic.calibration import check_truth
from features.synthetic.catalog import event_token
from features.synthetic.settings import SOCIAL_EVENTS, STATE_EVENTS

START = date(2026, 1, 5)
USERS = 1500
#: sha256 over (path, sha256 of bytes) of every file of the tiny default app below, as written
#: before shapes existed: the default app must stay byte-identical.
TINY_DEFAULT_DIGEST = "ea6d43100d9b3cf05f2adc37bfe04b4c4e11852a626d702c5cb27a55acd91258"
TRIAL_EVENTS = {"trial_started", "discounted_offer", "first_conversion"}


def folder_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """Generate each shape once per module: ``app(shape)`` -> (folder, summary)."""
    made: dict[str, tuple[Path, object]] = {}

    def make(shape: str) -> tuple[Path, object]:
        if shape not in made:
            out = tmp_path_factory.mktemp(shape)
            config = SyntheticConfig(shape=shape, users=USERS, seed=5, start=START, days=120)
            made[shape] = (out, generate(config, out))
        return made[shape]

    return make


def export_rows(folder: Path) -> pd.DataFrame:
    """Every row of the raw export (both CSV definitions), columns named without braces.

    The files of one definition are read as one CSV (headers dropped after the first), fast;
    injected truncated rows and unparseable times are left out.
    """
    bodies: dict[bytes, list[bytes]] = {}
    for path in sorted((folder / "raw").glob("*.csv.gz")):
        header, _, body = gzip.decompress(path.read_bytes()).partition(b"\n")
        bodies.setdefault(header, []).append(
            body if body.endswith(b"\n") or not body else body + b"\n"
        )
    parts = []
    for header, chunks in bodies.items():
        table = pacsv.read_csv(
            io.BytesIO(header + b"\n" + b"".join(chunks)),
            parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
            convert_options=pacsv.ConvertOptions(
                column_types={c.strip('"'): pa.string() for c in header.decode().split(",")},
                strings_can_be_null=True,
            ),
        )
        parts.append(table.rename_columns([c.strip('"{}[]') for c in table.column_names]))
    rows = pa.concat_tables(parts, promote_options="default").to_pandas()
    rows = rows[rows["created_at"].str.fullmatch(r"\d+", na=False)]  # drop injected bad times
    rows["created"] = rows["created_at"].astype("int64")
    rows["who"] = rows["user_id"].fillna(rows["adid"])
    return rows


def test_default_output_is_byte_identical_to_before_shapes(tmp_path):
    """A tiny default app (and the same with ``shape="default"``) has the pinned bytes."""
    config = dict(users=60, seed=3, start=START, days=10)
    generate(SyntheticConfig(**config), tmp_path / "a")
    generate(SyntheticConfig(shape="default", **config), tmp_path / "b")
    assert folder_digest(tmp_path / "a") == TINY_DEFAULT_DIGEST
    assert folder_digest(tmp_path / "b") == TINY_DEFAULT_DIGEST


def test_settings_own_the_defaults_and_presets_validate():
    """One place for every default; each preset is a valid section; the config extends it."""
    default = SyntheticSettings()
    assert (default.users, default.seed, default.start, default.days) == (5000, 7, START, 120)
    assert default.legacy_share == 0.25
    assert (default.trials, default.offers, default.plans) == (True, True, "monthly+annual")
    assert default.renewal_delay_minutes == 0 and default.app_events == {}
    assert SyntheticSettings(shape="default") == default.model_copy(update={"shape": "default"})
    for name, preset in SHAPES.items():
        shaped = SyntheticSettings(shape=name)
        assert shaped.model_dump(include=set(preset)) == SyntheticSettings(**preset).model_dump(
            include=set(preset)
        )
    # explicit keys win over the preset
    assert SyntheticSettings(shape="no-trials", offers=True).offers is True
    config = SyntheticConfig(users=10, seed=1, start=START, days=30)
    assert isinstance(config, SyntheticSettings)
    assert config.horizon_days == LabelSettings().horizon_days
    assert issubclass(GenerationError, LapseError) and issubclass(GenerationError, ValueError)
    for field in SyntheticSettings.model_fields.values():
        assert field.description, field


def test_no_trials_app_has_no_trial_or_offer(app):
    """Without trials and offers every first period is paid: no such rows, states or products."""
    out, summary = app("no-trials")
    assert not TRIAL_EVENTS & set(summary.subscription_events)
    rows = export_rows(out)
    sub = rows[rows["activity_kind"] == s.ACTIVITY_SUBSCRIPTION]
    assert not TRIAL_EVENTS & set(sub["subscription_event_type"].dropna())
    subtypes = set(sub["subscription_event_subtype"].dropna())
    assert subtypes and not {t for t in subtypes if "trial" in t or "offer" in t}
    truth = pd.read_parquet(out / "truth" / "churn_truth.parquet")
    assert not truth[s.STATE].str.startswith(("trial", "offer")).any()
    assert "paid" in set(truth[s.STATE])
    subscribers = pd.read_parquet(out / "truth" / "subscribers.parquet")
    assert set(subscribers["first_period"].dropna()) == {"paid"}
    assert set(subscribers["product"]) == {"monthly", "annual"}
    assert summary.subscription_events["activation"] > 500


@pytest.mark.parametrize(
    ("shape", "product", "ids"),
    [
        ("annual", "annual", {"com.lapsedemo.premium.annual", "premium_annual"}),
        ("monthly", "monthly", {"com.lapsedemo.premium.monthly", "premium_monthly"}),
    ],
)
def test_single_plan_apps_sell_one_product(app, shape, product, ids):
    """Every subscriber (and every subscription row, sandbox included) has the one plan."""
    out, summary = app(shape)
    subscribers = pd.read_parquet(out / "truth" / "subscribers.parquet")
    assert set(subscribers["product"]) == {product}
    rows = export_rows(out)
    sub = rows[rows["activity_kind"] == s.ACTIVITY_SUBSCRIPTION]
    assert set(sub["subscription_product_id"].dropna()) == ids
    renewal = sub[sub["subscription_event_type"] == "renewal"].dropna(
        subset=["subscription_purchased_at", "subscription_expiration_time"]
    )
    renewal = renewal[renewal["environment"] == s.ENV_PRODUCTION]
    days = (
        renewal["subscription_expiration_time"].astype("int64")
        - renewal["subscription_purchased_at"].astype("int64")
    ) / 86400
    days = days[days > 0]  # injected defects put some expiries before the purchase
    assert len(days) > 20
    assert set(days.round()) == {365.0 if product == "annual" else 30.0}
    if product == "annual":  # only monthly prices increase
        assert "price_accepted" not in summary.subscription_events


def renewal_delays(folder: Path) -> pd.DataFrame:
    """Each current-vocabulary renewal: delivery minus the expiry of the period it continues."""
    rows = export_rows(folder)
    sub = rows[
        (rows["activity_kind"] == s.ACTIVITY_SUBSCRIPTION)
        & (rows["environment"] == s.ENV_PRODUCTION)
        & rows["subscription_expiration_time"].notna()
        & rows["subscription_transaction_id"].notna()
    ]
    # injected defects move some expiries before the purchase: leave those rows out
    sub = sub[
        sub["subscription_expiration_time"].astype("int64")
        > sub["subscription_purchased_at"].astype("int64")
    ]
    expiry = (
        sub[sub["subscription_event_type"].isin(["activation", "trial_started", "renewal"])]
        .drop_duplicates("subscription_transaction_id")
        .set_index("subscription_transaction_id")["subscription_expiration_time"]
        .astype("int64")
    )
    renewals = sub[
        (sub["subscription_event_type"] == "renewal")
        & sub["subscription_expired_transaction_id"].isin(expiry.index)
    ].drop_duplicates("subscription_transaction_id")
    previous = expiry.loc[renewals["subscription_expired_transaction_id"]].to_numpy()
    return pd.DataFrame(
        {
            "delay": renewals["created"].to_numpy() - previous,
            "purchased": renewals["subscription_purchased_at"].astype("int64").to_numpy(),
            "previous_expiry": previous,
        }
    )


def test_renewals_arrive_after_the_expiry_in_the_late_app_only(app):
    """Default: a renewal is delivered at the expiry it continues; late-renewals: 0-90 minutes
    after it, spread over the range, while the reported purchase time stays the expiry."""
    on_time = renewal_delays(app("default")[0])
    late = renewal_delays(app("late-renewals")[0])
    assert len(on_time) > 300 and len(late) > 300
    assert (on_time["delay"] == 0).all()
    assert (late["purchased"] == late["previous_expiry"]).all()
    minutes = late["delay"] / 60
    assert minutes.between(0, 90).all()
    assert 35 < minutes.mean() < 55 and minutes.std() > 20  # uniform: mean 45, sd 26
    assert (minutes < 30).mean() > 0.25 and (minutes > 60).mean() > 0.25
    assert (late["delay"] == 0).mean() < 0.01


def test_late_delivery_leaves_the_hidden_process_and_truth_unchanged(app):
    """The delay is delivery only: the same seed gives the same truth as the default app."""
    default = pd.read_parquet(app("default")[0] / "truth" / "churn_truth.parquet")
    late = pd.read_parquet(app("late-renewals")[0] / "truth" / "churn_truth.parquet")
    columns = [s.USER_ID, s.PLATFORM, s.AS_OF, s.CHURN_PROBABILITY, s.CHURNED, s.STATE]
    pd.testing.assert_frame_equal(default[columns], late[columns])


def event_rates_before_cutoffs(folder: Path, days: int = 28) -> pd.DataFrame:
    """Per truth row (subscriber and cut-off): events of each kind per day in the prior days."""
    rows = export_rows(folder)
    events = rows[rows["activity_kind"] == s.ACTIVITY_EVENT][["who", "created", "event_name"]]
    truth = pd.read_parquet(folder / "truth" / "churn_truth.parquet")
    truth = truth[truth["observable"] & truth[s.CHURNED].notna()]
    start = int(pd.Timestamp(START, tz="UTC").timestamp())
    parts = []
    for as_of, group in truth.groupby(s.AS_OF):
        end = int(as_of.timestamp())
        if end - days * 86400 < start:
            continue
        window = events[events["created"].between(end - days * 86400, end - 1)]
        counts = window.groupby(["who", "event_name"]).size().unstack(fill_value=0) / days
        parts.append(group.join(counts, on=s.USER_ID).fillna(0.0))
    return pd.concat(parts, ignore_index=True)


def test_social_events_carry_the_hidden_churn_drive(app):
    """Named kinds are exported with their tokens; likes, messages, comments and posts are rarer
    ahead of churn, unfriends and blocks more frequent: by the oracle and by realised churn."""
    out, summary = app("social")
    rows = export_rows(out)
    events = rows[rows["activity_kind"] == s.ACTIVITY_EVENT]
    names = dict(zip(events["event_name"], events["event"], strict=True))
    assert set(names) == set(SOCIAL_EVENTS) | set(STATE_EVENTS)
    assert all(names[n] == event_token(n) for n in SOCIAL_EVENTS)
    frame = event_rates_before_cutoffs(out)
    churned = frame[s.CHURNED].astype(bool)
    assert 300 < churned.sum() < len(frame)
    for name, spec in SOCIAL_EVENTS.items():
        rho = spearmanr(frame[name], frame[s.CHURN_PROBABILITY]).statistic
        ratio = frame.loc[churned, name].mean() / frame.loc[~churned, name].mean()
        if spec["drive"] > 0:
            assert rho < -0.05 and ratio < 0.9, (name, rho, ratio)
        else:
            assert rho > 0.05 and ratio > 1.1, (name, rho, ratio)


def test_default_events_are_the_fitness_apps(app):
    """Without app events the export keeps the workout events."""
    rows = export_rows(app("default")[0])
    names = set(rows.loc[rows["activity_kind"] == s.ACTIVITY_EVENT, "event_name"])
    assert "workout_completed" in names and not names & set(SOCIAL_EVENTS)


@pytest.mark.parametrize("shape", [name for name in SHAPES if name != "default"])
def test_truth_is_calibrated_on_every_shape(app, shape):
    """The oracle stays exact: realised outcomes sit within 4 standard errors of its Brier
    score, and it ranks churners well."""
    out, summary = app(shape)
    check = check_truth(pd.read_parquet(out / "truth" / "churn_truth.parquet"))
    assert check.observed > 3000
    assert abs(check.brier_z) < 4, check
    assert check.oracle_roc_auc > 0.8
    assert np.isfinite(summary.mean_churn_probability)
