"""The synthetic Adjust export: determinism, spec conformance, mess, shares, calibrated truth."""

import csv
import gzip
import hashlib
import io
import json
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import schema as s
from features.synthetic import GenerationError, SyntheticConfig, generate
from features.synthetic.adjust_files import (
    CURRENT_DEFINITION,
    LEGACY_DEFINITION,
    definition_hash,
)
from features.synthetic.calibration import check_truth

START = date(2026, 1, 5)
CURRENT_NAME = re.compile(
    r"^(?P<token>\w+)_(?P<hour>\d{4}-\d\d-\d\dT\d{6})_(?P<hash>[0-9a-f]+)_[a-z0-9]{8}"
    r"\.csv\.gz$"
)
LEGACY_NAME = re.compile(
    r"^(?P<token>\w+)_(?P<hour>\d{4}-\d\d-\d\dT\d{6})_(?P<hash>[0-9a-f]+)\.csv\.gz$"
)
#: Subscription events per 1,000 subscription rows at the defaults (docs/synthetic-data.md).
DOCUMENTED_SHARES = {
    "renewal": 365,
    "activation": 119,
    "cancellation": 107,
    "trial_started": 102,
    "price_accepted": 94,
    "expiration": 87,
    "grace_period": 25,
    "first_conversion": 23,
    "discounted_offer": 17,
    "renewal_from_billing_retry": 15,
    "reactivation": 14,
}
IOS_ONLY = {"billing_retry", "refund", "price_declined", "reactivation"}
ANDROID_ONLY = {"on_hold", "revoked"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """2,000 users over the default 120 days (a few seconds)."""
    out = tmp_path_factory.mktemp("synthetic")
    summary = generate(SyntheticConfig(users=2000, seed=5, start=START, days=120), out)
    return out, summary


def read_export(folder: Path):
    """Every file of the export as (name, header, rows) with Python's RFC 4180 reader."""
    for path in sorted((folder / "raw").glob("*.csv.gz")):
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
        lines = list(csv.reader(io.StringIO(text, newline="")))
        yield path.name, lines[0], lines[1:]


def row_defect(values: dict, legacy: bool) -> str | None:
    """The spec violation of one parsed row, if any; the slow, obvious validator."""
    if not values["{created_at}"].isdigit():
        return "bad_created_at"
    user = values.get("[user_id]" if legacy else "user_id")
    if not values["{adid}"] and not user:
        return "missing_identity"
    if values["{activity_kind}"] != s.ACTIVITY_SUBSCRIPTION:
        return None
    event = values["{subscription_event_type}"]
    if legacy:
        known = (event, values["{subscription_event_subtype}"]) in s.LEGACY_TO_CURRENT
    else:
        known = event in s.CURRENT_EVENTS
    if not known:
        return "unknown_event"
    if values["{revenue_float}"] and float(values["{revenue_float}"]) < 0:
        return "negative_price"
    expiry, bought = values["{subscription_expiration_time}"], values["{subscription_purchased_at}"]
    if expiry and bought and int(expiry) < int(bought):
        return "expiry_before_purchase"
    return None


@pytest.fixture(scope="module")
def parsed(dataset):
    """All rows as dicts with their file, line, era and defect (found by ``row_defect``)."""
    out, _ = dataset
    rows, found = [], set()
    for name, header, data in read_export(out):
        legacy = LEGACY_NAME.match(name) is not None
        definition = LEGACY_DEFINITION if legacy else CURRENT_DEFINITION
        assert tuple(header) == definition, name
        for line, fields in enumerate(data, start=2):
            if len(fields) != len(header):
                found.add((name, line, "truncated_row"))
                continue
            values = dict(zip(header, fields, strict=True))
            defect = row_defect(values, legacy)
            if defect:
                found.add((name, line, defect))
            rows.append(
                {
                    **values,
                    "_file": name,
                    "_legacy": legacy,
                    "_defect": defect,
                    "_user": values.get("[user_id]" if legacy else "user_id"),
                }
            )
    return rows, found


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_the_same_bytes(tmp_path):
    """Two runs with one seed write identical files; another seed writes different ones."""
    config = SyntheticConfig(users=300, seed=9, start=START, days=40)
    generate(config, tmp_path / "a")
    generate(config, tmp_path / "b")
    generate(SyntheticConfig(users=300, seed=10, start=START, days=40), tmp_path / "c")
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert len(a) > 100
    assert a["truth/churn_truth.parquet"] != c["truth/churn_truth.parquet"]


def test_file_names_and_headers_follow_adjust(dataset):
    """Current files carry a part token, legacy ones the older pattern; the hash names the CSV."""
    out, summary = dataset
    names = [p.name for p in (out / "raw").glob("*.csv.gz")]
    assert len(names) == summary.files
    legacy = [n for n in names if LEGACY_NAME.match(n)]
    current = [n for n in names if CURRENT_NAME.match(n)]
    assert len(legacy) + len(current) == len(names)
    assert len(legacy) == summary.legacy_files > 0
    assert {LEGACY_NAME.match(n)["hash"] for n in legacy} == {definition_hash(LEGACY_DEFINITION)}
    assert {CURRENT_NAME.match(n)["hash"] for n in current} == {definition_hash(CURRENT_DEFINITION)}
    # the legacy recording covers the first quarter of the period, on the hour
    last_legacy = max(
        datetime.strptime(LEGACY_NAME.match(n)["hour"], "%Y-%m-%dT%H%M%S") for n in legacy
    )
    assert last_legacy == datetime(2026, 1, 5) + timedelta(days=30, hours=-1)


def test_every_malformed_row_is_listed_and_no_other(dataset, parsed):
    """The spec validator finds exactly the defects the generator says it injected."""
    out, summary = dataset
    _, found = parsed
    injected = pd.read_parquet(out / "truth" / "injected.parquet")
    listed = set(injected.itertuples(index=False, name=None))
    assert found == listed
    assert Counter(d for _, _, d in listed) == Counter(summary.injected)
    assert set(summary.injected) == {
        "bad_created_at",
        "missing_identity",
        "truncated_row",
        "unknown_event",
        "negative_price",
        "expiry_before_purchase",
    }


def test_clean_rows_are_well_formed(parsed):
    """Times are epoch seconds in the period, identifiers have Adjust's shapes, stores match."""
    rows, _ = parsed
    start = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp())
    end = start + 120 * 86400
    store = {"ios": s.STORE_APPLE, "android": s.STORE_GOOGLE}
    for r in (r for r in rows if r["_defect"] is None):
        assert start <= int(r["{created_at}"]) < end
        assert re.fullmatch(r"[0-9a-f]{32}", r["{adid}"])
        assert r["{os_name}"] in store
        if r["{activity_kind}"] == s.ACTIVITY_SUBSCRIPTION:
            assert r["{subscription_store}"] == store[r["{os_name}"]]
            assert r["{subscription_environment}"] == r["{environment}"]
            assert r["{subscription_original_transaction_id}"]
        if r["_legacy"]:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dUTC", r["{installed_at}"])
        else:
            assert r["{installed_at}"].isdigit()
            if r["{os_name}"] == "ios":
                assert r["{idfv}"] and not r["{gps_adid}"]
            else:
                assert r["{gps_adid}"] and not r["{idfv}"]


def test_platform_differences(parsed):
    """billing_retry, refund, price_declined and reactivation are iOS-only; on_hold and revoked
    Android-only; the legacy vocabulary has no price or refund events."""
    rows, _ = parsed
    events = {"ios": set(), "android": set()}
    legacy_events = set()
    for r in rows:
        if r["{activity_kind}"] == s.ACTIVITY_SUBSCRIPTION and r["_defect"] is None:
            if r["_legacy"]:
                legacy_events.add(r["{subscription_event_type}"])
            else:
                events[r["{os_name}"]].add(r["{subscription_event_type}"])
    assert not events["android"] & IOS_ONLY
    assert not events["ios"] & ANDROID_ONLY
    assert events["ios"] >= {
        "trial_started",
        "renewal",
        "cancellation",
        "expiration",
        "grace_period",
        "price_accepted",
    }
    assert events["android"] >= {"activation", "renewal", "on_hold", "cancellation"}
    assert legacy_events <= {
        "activation",
        "first_conversion",
        "entered_billing_retry",
        "renewal",
        "cancellation",
        "renewal_from_billing_retry",
        "reactivation",
    }
    assert {"first_conversion", "entered_billing_retry"} <= legacy_events


def test_sandbox_and_duplicates_are_present(dataset, parsed):
    """QA testers renew every five minutes in the sandbox; re-sent callbacks repeat rows exactly."""
    _, summary = dataset
    rows, _ = parsed
    sandbox = [r for r in rows if r["{environment}"] == s.ENV_SANDBOX]
    assert {r["_user"] for r in sandbox} == {"qa-tester-1", "qa-tester-2"}
    renewals = sorted(
        int(r["{created_at}"])
        for r in sandbox
        if r["_user"] == "qa-tester-1"
        and r["{subscription_event_type}"] in ("renewal", "activation")
    )
    assert set(np.diff(renewals)) <= {300}
    fingerprint = Counter(tuple(v for k, v in r.items() if not k.startswith("_")) for r in rows)
    repeated = sum(n - 1 for n in fingerprint.values())
    assert abs(repeated - summary.duplicates) <= 0.03 * summary.duplicates + 5


def test_event_shares_are_where_the_docs_say(dataset):
    """Each event's share of subscription rows is within 35% of the documented share."""
    _, summary = dataset
    total = sum(summary.subscription_events.values())
    for event, per_mille in DOCUMENTED_SHARES.items():
        share = 1000 * summary.subscription_events.get(event, 0) / total
        assert abs(share - per_mille) <= 0.35 * per_mille, (event, share, per_mille)
    assert 0.08 <= summary.realised_churn_rate <= 0.13
    assert 0.8 <= summary.subscribers / summary.users <= 0.9


def test_ground_truth_rows_and_outcomes(dataset, parsed):
    """Truth covers active subscribers at each weekly cut-off; outcomes exist only when observed."""
    out, summary = dataset
    truth = pd.read_parquet(out / "truth" / "churn_truth.parquet")
    assert len(truth) == summary.truth_rows
    assert truth[s.CHURN_PROBABILITY].between(0, 1).all()
    as_of = truth[s.AS_OF].dt.date
    assert sorted(set(as_of.astype(str))) == summary.cutoffs
    observed = as_of + timedelta(days=30) <= START + timedelta(days=120)
    assert truth.loc[observed, s.CHURNED].notna().all()
    assert truth.loc[~observed, s.CHURNED].isna().all()
    assert not truth.duplicated([s.USER_ID, s.PLATFORM, s.AS_OF]).any()
    assert set(truth[s.STATE]) == {
        "trial",
        "offer",
        "paid",
        "trial_auto_renew_off",
        "offer_auto_renew_off",
        "paid_auto_renew_off",
        "grace_period",
        "billing_retry",
        "on_hold",
    }
    # invisible subscribers (bought before the export began, no row yet) are flagged, not dropped
    assert 0.8 < truth["observable"].mean() < 1.0
    rows, _ = parsed
    seen = {
        r["_user"] or r["{adid}"] for r in rows if r["{activity_kind}"] == s.ACTIVITY_SUBSCRIPTION
    }
    visible = set(truth.loc[truth["observable"], s.USER_ID])
    # only a malformed or late-dropped row can hide a visible subscriber
    assert len(visible - seen) <= 0.002 * len(visible)


def test_truth_is_calibrated_on_a_small_run(dataset):
    """Even 2,000 users' outcomes sit within 4 standard errors of the oracle's Brier score."""
    out, _ = dataset
    check = check_truth(pd.read_parquet(out / "truth" / "churn_truth.parquet"))
    assert abs(check.brier_z) < 4
    assert check.oracle_roc_auc > 0.8


@pytest.mark.slow
def test_truth_is_calibrated_against_realised_outcomes(tmp_path):
    """30,000 users: Brier near its expectation, and every probability decile matches its rate."""
    generate(SyntheticConfig(users=30_000, seed=21, start=START, days=120), tmp_path)
    check = check_truth(pd.read_parquet(tmp_path / "truth" / "churn_truth.parquet"))
    assert check.observed > 50_000
    assert abs(check.brier_z) < 4
    for row in check.bins.itertuples():
        assert abs(row.realised - row.probability) < 4 * row.se + 0.001, row


def test_manifest_records_the_run(dataset):
    """manifest.json holds the parameters and every file written, with row counts."""
    out, summary = dataset
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["users"] == 2000
    assert manifest["settings"]["legacy_end"] == "2026-02-04"
    assert len(manifest["files_written"]) == summary.files
    assert sum(f["rows"] for f in manifest["files_written"]) == summary.rows


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": 0}, r"users: .*greater than or equal to 1 \(got 0\)"),
        ({"days": 5}, r"days: .*greater than or equal to 8 \(got 5\)"),
        ({"legacy_share": 1.5}, r"legacy_share: .*less than or equal to 1 \(got 1.5\)"),
        ({"seed": -1}, r"seed: .*greater than or equal to 0 \(got -1\)"),
        ({"cutoffs": (date(2025, 1, 1),)}, "cut-off 2025-01-01 is outside"),
        ({"shape": "weekly"}, "unknown shape 'weekly'; choose one of default, no-trials"),
        ({"renewal_delay_minutes": -5}, "renewal_delay_minutes: .*greater than or equal to 0"),
        ({"app_events": {"like": {"rate": 0, "drive": 1}}}, "app_events.like.rate: .*than 0"),
        ({"app_events": {"paywall_viewed": {"rate": 1, "drive": 1}}}, "'paywall_viewed' is taken"),
    ],
)
def test_bad_parameters_are_named(tmp_path, change, message):
    """Impossible requests fail before any work, naming the parameter and the value."""
    with pytest.raises(GenerationError, match=message):
        generate(
            SyntheticConfig(**{**dict(users=10, seed=1, start=START, days=30), **change}), tmp_path
        )
    assert not any(tmp_path.iterdir())


def test_refuses_to_mix_two_data_sets(tmp_path):
    """A second run into the same folder needs ``overwrite=True`` and then replaces the first."""
    config = SyntheticConfig(users=50, seed=1, start=START, days=20)
    generate(config, tmp_path)
    with pytest.raises(GenerationError, match="overwrite"):
        generate(config, tmp_path)
    before = digest(tmp_path)
    generate(config, tmp_path, overwrite=True)
    assert digest(tmp_path) == before
