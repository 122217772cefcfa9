"""The backtest: realised metrics equal a slow reference on a hand-built case, unfinished days
are pending, the realised AUC on generator data matches the hold-out's, and the HTML report
renders in headless Chromium with its plots."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from features import schema as s
from features.from_store import read_events
from features.settings import FeatureConfig, feature_definition
from serving.backtest import backtest, epoch_day, stepped_metrics
from serving.backtest_report import report_html
from serving.history import append_history, read_history
from tests.features.conftest import History, day
from training.evaluate import auc_standard_error

#: Scoring day 10 of the hand-built app: churners and each user's score (distinct, no ties).
CHURNS = {"u0": 1, "u1": 1, "u2": 1, "u3": 0, "u4": 0, "u5": 1, "u6": 0, "u7": 0, "u8": 0, "u9": 0}
SCORES = {
    "u0": 0.9,
    "u1": 0.8,
    "u2": 0.35,
    "u3": 0.7,
    "u4": 0.1,
    "u5": 0.2,
    "u6": 0.05,
    "u7": 0.3,
    "u8": 0.15,
    "u9": 0.25,
}


def _bucket(p: float) -> str:
    return "high" if p >= 0.5 else "medium" if p >= 0.2 else "low"


def _events(renewal_delay_days: float = 0.0) -> pd.DataFrame:
    """Ten monthly subscribers from day 0 (expiring day 30): the churners do not renew (the
    others renew ``renewal_delay_days`` after the expiry); a late starter (day 20) is not
    active on day 10; the store's newest event is on day 45."""
    h = History()
    for user, churns in CHURNS.items():
        h.sub(user, 0, "activation", expires=30)
        if not churns:
            h.sub(user, 30 + renewal_delay_days, "renewal", expires=60)
    h.sub("late", 20, "activation", expires=50)
    h.add("u3", 45, s.KIND_SESSION, s.KIND_SESSION)
    return h.frame()


def _scores(scores: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            s.USER_ID: list(scores),
            s.PLATFORM: "ios",
            s.CHURN_PROBABILITY: list(scores.values()),
            s.BUCKET: [_bucket(p) for p in scores.values()],
        }
    )


@pytest.fixture
def hand_built(tmp_path: Path) -> pd.DataFrame:
    """The history: day 10 scored by versions 1 (with the late starter) and 2, day 20 by 1."""
    append_history(tmp_path, _scores({**SCORES, "late": 0.6}), day(10), "m", "1")
    flipped = {user: round(1 - p, 2) for user, p in SCORES.items()}  # version 2 ranks backwards
    append_history(tmp_path, _scores(flipped), day(10), "m", "2")
    append_history(tmp_path, _scores(SCORES), day(20), "m", "1")
    return read_history(tmp_path)


def _ece_reference(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE the slow way: every bin's |churners - expected churners|, over all users."""
    total = 0.0
    for b in range(bins):
        inside = [(yi, pi) for yi, pi in zip(y, p, strict=True) if min(int(pi * bins), 9) == b]
        total += abs(sum(yi for yi, _ in inside) - sum(pi for _, pi in inside))
    return total / len(y)


def test_realised_metrics_equal_sklearn_and_a_slow_reference(hand_built: pd.DataFrame) -> None:
    result = backtest(hand_built, _events(), 30, FeatureConfig())
    assert len(result.days) == 2  # day 10 by versions 1 and 2; day 20 is pending
    v1 = result.days[result.days[s.MODEL_VERSION] == "1"].iloc[0]
    y = np.array(list(CHURNS.values()))
    p = np.array(list(SCORES.values()))
    assert v1[s.AS_OF] == day(10).date()
    assert (v1["scored"], v1["labelled"], v1["not_active_by_the_label"]) == (11, 10, 1)
    assert v1["churners"] == 4 and v1["realised_churn_rate"] == pytest.approx(0.4)
    assert v1["realised_roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert v1["realised_pr_auc"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert v1["realised_brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert v1["realised_ece"] == pytest.approx(_ece_reference(y, p), abs=1e-12)
    # no ties: Braze's lift quality is 2 AUC - 1; the riskiest tenth (u0) churned, at 40% churn
    assert v1["realised_lift_quality"] == pytest.approx(2 * roc_auc_score(y, p) - 1)
    assert v1["realised_top10_lift"] == pytest.approx(1 / 0.4)
    v2 = result.days[result.days[s.MODEL_VERSION] == "2"].iloc[0]
    assert v2["realised_roc_auc"] == pytest.approx(1 - roc_auc_score(y, p), abs=1e-12)
    assert any("1 of 11 scored" in note and "v1" in note for note in result.notes)

    buckets = result.buckets[result.buckets[s.MODEL_VERSION] == "1"].set_index(s.BUCKET)
    assert list(buckets.index) == ["high", "medium", "low"]  # riskiest first
    assert buckets["users"].to_dict() == {"high": 3, "medium": 4, "low": 3}
    assert buckets["realised_churn_rate"].to_dict() == pytest.approx(
        {"high": 2 / 3, "medium": 2 / 4, "low": 0.0}
    )
    assert buckets.loc["high", "mean_probability"] == pytest.approx((0.9 + 0.8 + 0.7) / 3)

    deciles = result.deciles[result.deciles[s.MODEL_VERSION] == "1"].set_index("decile")
    assert deciles["users"].tolist() == [1] * 10
    assert deciles["realised_churn_rate"].tolist() == [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]

    (pending,) = result.pending
    assert (pending.as_of, pending.model_version, pending.scored) == (day(20).date(), "1", 10)
    # the 30-day horizon and the 24-hour renewal leeway after it: day 51
    assert pending.complete_on == day(51)
    assert result.observed_until == day(45)


@pytest.mark.parametrize(
    ("delay_days", "churners"),
    [(45 / 1440, 4), (23 / 24, 4), (2.0, 10)],
    ids=["45 minutes late", "23 hours late", "two days late"],
)
def test_renewals_that_arrive_late_are_labelled_as_training_labels_them(
    hand_built: pd.DataFrame, delay_days: float, churners: int
) -> None:
    """Stores deliver renewals minutes after the expiry: with a 20-day horizon, day 10's label
    is read at day 30, the very expiry. Within `labels.renewal_leeway_hours` (24) the stayers
    stay non-churners and the realised metrics do not move; renewed two days late, every
    subscriber's entitlement had lapsed at the horizon, and all ten count as churned."""
    y = np.array(list(CHURNS.values()))
    p = np.array(list(SCORES.values()))
    result = backtest(hand_built, _events(delay_days), 20, FeatureConfig())
    days = result.days[result.days[s.MODEL_VERSION] == "1"].set_index(s.AS_OF)
    v1 = days.loc[day(10).date()]
    assert v1["churners"] == churners
    if churners == 4:
        assert v1["realised_roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    else:
        assert "realised_roc_auc" not in v1 or pd.isna(v1["realised_roc_auc"])


def test_a_day_with_one_outcome_shows_its_rates_and_says_why_no_metric(tmp_path: Path) -> None:
    stayers = {u: SCORES[u] for u, churns in CHURNS.items() if not churns}
    append_history(tmp_path, _scores(stayers), day(10), "m", "1")
    result = backtest(read_history(tmp_path), _events(), 30, FeatureConfig())
    (row,) = result.days.to_dict("records")
    assert row["churners"] == 0 and row["realised_churn_rate"] == 0.0
    assert "realised_roc_auc" not in row
    assert any("0 churner(s)" in note for note in result.notes)


def test_when_every_day_is_pending_the_report_says_so(tmp_path: Path) -> None:
    append_history(tmp_path, _scores(SCORES), day(20), "m", "1")
    result = backtest(read_history(tmp_path), _events(), 30, FeatureConfig())
    assert result.days.empty and result.newest is None and stepped_metrics(result) == []
    (pending,) = result.pending
    assert pending.complete_on == day(51)
    page = report_html(result)
    assert "Pending: horizon not yet over" in page and "2026-02-21 00:00 UTC" in page
    assert page.count("data:image/png;base64,") == 3  # no decile plot without a complete day
    # the wide tables scroll inside their own box rather than widening the page
    assert '<div class="scroll"><table' in page and ".scroll { overflow-x: auto; }" in page


def test_steps_are_days_since_the_epoch(hand_built: pd.DataFrame) -> None:
    result = backtest(hand_built, _events(), 30, FeatureConfig())
    assert epoch_day(day(10)) == (day(10) - pd.Timestamp(0, tz="UTC")).days == 20_464
    stepped = {(name, step): value for name, value, step in stepped_metrics(result)}
    assert stepped[("v1/realised_roc_auc", 20_464)] == pytest.approx(
        result.days.iloc[0]["realised_roc_auc"]
    )
    assert stepped[("v2/realised_churn_rate_high", 20_464)] == pytest.approx(
        float(np.mean([CHURNS[u] for u, p in SCORES.items() if 1 - p >= 0.5]))
    )


# --- on the generator's data -------------------------------------------------------------------


@pytest.mark.slow
def test_the_realised_auc_matches_the_holdout_auc(rescored_app) -> None:
    """Rescored at the champion's hold-out cut-off, the backtest sees the hold-out's own rows:
    the same AUC (to the scores file's 6 decimals). One and two weeks earlier (days no training
    or validation row comes from) it lies within 3 standard errors (Hanley-McNeil, at that
    day's churners and non-churners) of the hold-out AUC."""
    from training.registry import champion_uri, model_info

    settings, outcomes, holdout = rescored_app
    config = feature_definition(settings.features, settings.labels)
    result = backtest(
        read_history(settings.store.path),
        read_events(settings.store.path, config),
        settings.labels.horizon_days,
        config,
    )
    info = model_info(settings.mlflow.tracking_uri, champion_uri(settings.mlflow.registered_model))
    auc = info.metrics["holdout_roc_auc"]
    assert auc > 0.65, "the fixture's model should have signal, else this test proves little"
    days = result.days.set_index(s.AS_OF)
    assert list(days.index) == sorted(outcomes)[:3]
    on_holdout = days.loc[holdout]
    assert on_holdout["labelled"] == on_holdout["scored"] == len(outcomes[holdout].result.scores)
    assert on_holdout["realised_roc_auc"] == pytest.approx(auc, abs=2e-3)
    for when in sorted(outcomes)[:2]:
        row = days.loc[when]
        se = auc_standard_error(auc, int(row["churners"]), int(row["labelled"] - row["churners"]))
        assert abs(row["realised_roc_auc"] - auc) < 3 * se, (when, row["realised_roc_auc"], auc)
    (pending,) = result.pending
    assert pending.as_of == holdout + timedelta(days=21)
    assert pending.complete_on > result.observed_until


# --- the HTML report in a real browser ---------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's headless Chromium, installed with apt-get when missing (skipped, with the reason,
    only when it cannot be installed)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and there is no apt-get to install it")
    why = ""
    for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"chromium is not installed and `{' '.join(command)}` failed: {exc}")
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        if command[1] == "update" and done.returncode == 0:
            retry = subprocess.run(
                ["apt-get", "install", "-y", "chromium"], capture_output=True, text=True
            )
            why = (retry.stderr.strip().splitlines() or [f"exit {retry.returncode}"])[-1]
        found = shutil.which("chromium")
        if found:
            return found
    pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {why}")


@pytest.mark.slow  # Chromium takes 5 s to start on a quiet machine, over 30 s on a busy one
def test_the_report_is_self_contained_and_renders_its_plots(
    hand_built: pd.DataFrame, chromium: str, tmp_path: Path
) -> None:
    result = backtest(hand_built, _events(), 30, FeatureConfig())
    page = report_html(result, {"m v1": 0.75})
    sources = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', page)
    assert [name for name, _ in sources] == [
        "roc_auc_over_time.png",
        "ece_over_time.png",
        "bucket_churn_over_time.png",
        "deciles_newest_day.png",
    ]
    for _, data in sources:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 300
    assert len(re.findall(r"<img ", page)) == len(sources)  # every image is embedded
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<script" not in page
    assert "2026-01-21" in page  # the pending day, with when its labels complete
    assert "2026-02-21 00:00 UTC" in page

    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,2000",
            f"--screenshot={shot}",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1280)
    drawn = (pixels < 235).any(axis=2).mean()  # anything but white and the faintest greys
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert drawn > 0.02 and colours > 200, (drawn, colours)  # text alone is a few greys
    # the plots' own colours (matplotlib's blue and orange lines and bars) are on screen
    blue = (np.abs(pixels.astype(int) - [31, 119, 180]).sum(axis=2) < 30).mean()
    orange = (np.abs(pixels.astype(int) - [255, 127, 14]).sum(axis=2) < 30).mean()
    assert blue > 1e-4 and orange > 1e-4, (blue, orange)
