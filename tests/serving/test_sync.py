"""serving.sync end to end against the real emulator: diff, null-out, failures, crashes, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.schema import BUCKET, CHURN_PROBABILITY, PLATFORM, REASONS, USER_ID
from lapse.cli import main
from serving.braze_client import BrazeAuthError, BrazeUnavailableError
from serving.emulator import MSG_BLOCKLISTED, MSG_ID_TOO_LARGE, Emulator, EmulatorConfig
from serving.ledger import ATTRIBUTE, VALUE, Ledger, LedgerError, LedgerLockedError
from serving.scores import ScoresFileError, prepare_scores, read_scores, read_scores_policy
from serving.settings import BrazeSettings, LedgerSettings
from serving.sync import NEW, REMOVED, UNCERTAIN, SyncConfig, plan_updates, sync
from tests.serving.conftest import HTTP, KEY, inspect
from tests.training.test_buckets import reference_bucket
from training.buckets import BucketPolicy

LAPSE = [sys.executable, "-c", "from lapse.cli import main; main()"]
POLICY = BucketPolicy.of("probability", {"high": 0.5, "medium": 0.2}, "low", hysteresis=0.05)


def make_config(
    emu: Emulator, ledger_url: str, policy: BucketPolicy = POLICY, **braze: object
) -> SyncConfig:
    fast = {"url": emu.url, "max_rps": 1000.0, "backoff_s": 0.01, "backoff_max_s": 0.05}
    return SyncConfig(BrazeSettings(**{**fast, **braze}), LedgerSettings(url=ledger_url), policy)


def with_braze(config: SyncConfig, **braze: object) -> SyncConfig:
    """The config with some [braze] keys changed."""
    return replace(config, braze=config.braze.model_copy(update=braze))


def with_ledger(config: SyncConfig, url: str) -> SyncConfig:
    return replace(config, ledger=config.ledger.model_copy(update={"url": url}))


def scores(probabilities: dict[str, float], **extra: list) -> pd.DataFrame:
    return pd.DataFrame(
        {USER_ID: list(probabilities), CHURN_PROBABILITY: list(probabilities.values()), **extra}
    )


def bucket_profiles(emu: Emulator) -> dict[str, object]:
    return {user: p.get("churn_risk") for user, p in inspect(emu, "profiles").items()}


def first_buckets(users: dict[str, float]) -> dict[str, str]:
    """POLICY by the slow obvious rule, for users Braze holds nothing for yet (no hysteresis)."""
    return {u: reference_bucket(p, [0.5, 0.2], ["high", "medium", "low"]) for u, p in users.items()}


def track_requests(emu: Emulator) -> int:
    return inspect(emu, "stats")["track_requests"]


@pytest.fixture
def config(emulator: Emulator, sqlite_url: str) -> SyncConfig:
    return make_config(emulator, sqlite_url)


# --- the scores file ---------------------------------------------------------------------------


def test_read_scores_parquet_and_csv_keep_the_riskiest_row_per_user(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            USER_ID: ["a", "a", "b", "c"],
            PLATFORM: ["ios", "android", "ios", "ios"],
            CHURN_PROBABILITY: [0.2, 0.7, 0.1, 0.4],
            REASONS: [["trial_ending"], ["billing_trouble", "price_change"], [], None],
        }
    )
    frame.to_parquet(tmp_path / "s.parquet")
    got = read_scores(tmp_path / "s.parquet").set_index(USER_ID)
    assert got[CHURN_PROBABILITY].to_dict() == {"a": 0.7, "c": 0.4, "b": 0.1}
    assert got[REASONS].to_dict() == {"a": "billing_trouble", "b": None, "c": None}
    csv = tmp_path / "s.csv"
    csv.write_text("user_id,churn_probability,reasons\n007,0.3,auto_renew_off;trial_ending\n")
    got = read_scores(csv)
    assert got.to_dict("records") == [
        {USER_ID: "007", CHURN_PROBABILITY: 0.3, REASONS: "auto_renew_off"}
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("user_id,score\na,0.1\n", "no 'churn_probability' column"),
        (
            "user_id,churn_probability\na,0.1\nb,1.2\n",
            "line 3, column 'churn_probability': .*found 1.2$",
        ),
        ("user_id,churn_probability\na,0.1\nb,high\n", "found 'high'"),
        ("user_id,churn_probability\na,0.1\nb,\n", "line 3, column 'churn_probability'"),
        ("user_id,churn_probability\n,0.1\n", "line 2, column 'user_id': empty user id"),
    ],
)
def test_bad_scores_files_name_file_row_and_column(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "scores.csv"
    path.write_text(text)
    with pytest.raises(ScoresFileError, match=needle) as exc:
        read_scores(path)
    assert str(path) in str(exc.value)


def test_reasons_in_any_written_form_reduce_to_the_top_one(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text(
        "user_id,churn_probability,reasons\n"
        'a,0.1,"[""trial_ending"", ""context""]"\n'
        "b,0.2,billing_trouble;context\n"
        "c,0.3,auto_renew_off|price_change\n"
        "d,0.4,\n"
        "e,0.5,[not json\n"
    )
    got = read_scores(path).set_index(USER_ID)[REASONS].to_dict()
    assert got == {
        "a": "trial_ending",
        "b": "billing_trouble",
        "c": "auto_renew_off",
        "d": None,
        "e": "[not json",
    }


def test_float_user_ids_are_text_or_an_error(emulator: Emulator, config, tmp_path: Path) -> None:
    """A Parquet writer that made the id column float: whole numbers are sent as "1", not
    "1.0", and the report says so; any other float is an error naming the column and row."""
    path = tmp_path / "floats.parquet"
    pd.DataFrame({USER_ID: [1.0, 2.0, 30.0], CHURN_PROBABILITY: [0.9, 0.1, 0.3]}).to_parquet(path)
    frame = read_scores(path)
    assert frame[USER_ID].tolist() == ["1", "30", "2"]
    emulator.add_profiles(["1", "2", "30"])
    report = sync(frame, config, KEY)
    assert report.acknowledged == 3
    assert bucket_profiles(emulator) == {"1": "high", "2": "low", "30": "medium"}
    (note,) = report.notes
    assert f"{path}: column 'user_id' holds 3 user id(s) as floats" in note and "1.0 -> '1'" in note
    for bad, row in (([1.0, 2.5], 2), ([float(2**60), 1.0], 1), ([1.0, float("inf")], 2)):
        pd.DataFrame({USER_ID: bad, CHURN_PROBABILITY: [0.5, 0.5]}).to_parquet(path)
        with pytest.raises(ScoresFileError, match=rf"floats.parquet: row {row}, column 'user_id'"):
            read_scores(path)
    assert sync(scores({"1": 0.9, "2": 0.1, "30": 0.3}), config, KEY).notes == []  # text ids


def test_a_corrupt_scores_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "s.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ScoresFileError, match=r"s.parquet: cannot read"):
        read_scores(tmp_path / "s.parquet")


def test_bad_scores_paths(tmp_path: Path) -> None:
    with pytest.raises(ScoresFileError, match="not found"):
        read_scores(tmp_path / "missing.parquet")
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(ScoresFileError, match="expected a .parquet or .csv"):
        read_scores(tmp_path / "s.json")
    pd.DataFrame({USER_ID: ["a"], CHURN_PROBABILITY: [-0.1]}).to_parquet(tmp_path / "s.parquet")
    with pytest.raises(ScoresFileError, match="row 1, column 'churn_probability'"):
        read_scores(tmp_path / "s.parquet")


# --- the sync ----------------------------------------------------------------------------------


def test_first_run_sends_every_bucket_in_full_batches(emulator: Emulator, config) -> None:
    users = {f"u{i:03d}": i / 200 for i in range(200)}
    emulator.add_profiles(list(users))
    report = sync(scores(users), config, KEY)
    assert bucket_profiles(emulator) == first_buckets(users)
    assert (report.changed, report.sent, report.acknowledged, report.batches) == (200, 200, 200, 3)
    assert (
        report.requests == 3
        and report.data_points == 200 == inspect(emulator, "stats")["data_points"]
    )
    assert report.transitions == {(NEW, "low"): 40, (NEW, "medium"): 60, (NEW, "high"): 100}
    assert [s for _, s in inspect(emulator, "log")] == [201, 201, 201]


def test_a_second_run_with_the_same_scores_sends_nothing(emulator: Emulator, config) -> None:
    users = {f"u{i}": (i * 37 % 100) / 100 for i in range(100)}
    emulator.add_profiles(list(users))
    sync(scores(users), config, KEY)
    before = track_requests(emulator)
    again = sync(scores(users), config, KEY)
    assert (again.changed, again.sent, again.requests) == (0, 0, 0)
    assert track_requests(emulator) == before


def test_only_changed_buckets_are_sent_and_hysteresis_holds_near_bounds(
    emulator: Emulator, config
) -> None:
    day1 = {"a": 0.52, "b": 0.10, "c": 0.30, "d": 0.90}
    emulator.add_profiles(list(day1))
    sync(scores(day1), config, KEY)
    # a: 0.52 -> 0.47 (inside the 0.05 margin: stays high); b: 0.10 -> 0.12 (no change);
    # c: 0.30 -> 0.60 (medium -> high); d: 0.90 -> 0.10 (high -> low)
    day2 = {"a": 0.47, "b": 0.12, "c": 0.60, "d": 0.10}
    report = sync(scores(day2), config, KEY)
    assert report.changed == 2 and report.data_points == 2
    assert report.transitions == {("medium", "high"): 1, ("high", "low"): 1}
    assert bucket_profiles(emulator) == {"a": "high", "b": "low", "c": "high", "d": "low"}
    day3 = {"a": 0.44, "b": 0.12, "c": 0.60, "d": 0.10}  # a leaves the margin
    assert sync(scores(day3), config, KEY).transitions == {("high", "medium"): 1}


def test_users_no_longer_scored_are_nulled_once(emulator: Emulator, config, sqlite_url) -> None:
    config = with_braze(config, max_null_share=1.0)  # 2 of 3 leave: over the default guard
    users = {"a": 0.9, "b": 0.1, "c": 0.3}
    emulator.add_profiles(list(users))
    sync(scores(users), config, KEY)
    report = sync(scores({"a": 0.9}), config, KEY)
    assert (report.changed, report.nulled) == (2, 2)
    assert report.transitions == {("low", REMOVED): 1, ("medium", REMOVED): 1}
    assert inspect(emulator, "profiles") == {"a": {"churn_risk": "high"}, "b": {}, "c": {}}
    assert sync(scores({"a": 0.9}), config, KEY).sent == 0  # once
    back = sync(scores({"a": 0.9, "b": 0.6}), config, KEY)  # b is scored again
    assert back.transitions == {(NEW, "high"): 1}
    keep = make_config(emulator, sqlite_url, null_unscored=False)
    assert sync(scores({"a": 0.9}), keep, KEY).sent == 0
    assert bucket_profiles(emulator)["b"] == "high"


def test_a_scores_file_missing_most_users_is_refused_before_anything_is_sent(
    emulator: Emulator, config, sqlite_url, tmp_path
) -> None:
    """An empty or truncated file would null the bucket of everyone Braze holds: refused, in a
    dry run too; an ordinary day's leavers pass; max_null_share = 1 allows it."""
    users = {f"u{i:02d}": 0.9 for i in range(20)}
    emulator.add_profiles(list(users))
    sync(scores(users), config, KEY)
    truncated = scores(dict(list(users.items())[:5]))
    for dry_run in (True, False):
        with pytest.raises(ScoresFileError, match=r"15 of the 20 users .* \(75%, over braze"):
            sync(truncated, config, KEY, dry_run=dry_run)
    assert track_requests(emulator) == 1 and Ledger(sqlite_url).open_run() is None
    (tmp_path / "empty.csv").write_text("user_id,churn_probability\n")
    with pytest.raises(ScoresFileError, match="empty.csv: no scored users"):
        read_scores(tmp_path / "empty.csv")
    leavers = scores(dict(list(users.items())[:15]))  # 5 of 20 leave: an ordinary day
    assert sync(leavers, config, KEY).nulled == 5
    assert sync(truncated, with_braze(config, max_null_share=1.0), KEY).nulled == 10


def test_a_ledger_speaks_for_one_braze_instance(emulator: Emulator, config, sqlite_url) -> None:
    """Pointed at another Braze (the emulator first, production next) with the same ledger, the
    sync refuses instead of sending nothing because the other instance 'already has' it all."""
    users = {"a": 0.9, "b": 0.1}
    emulator.add_profiles(list(users))
    sync(scores(users), config, KEY)
    with Emulator(EmulatorConfig(api_keys=frozenset({KEY}))) as other:
        other.add_profiles(list(users))
        elsewhere = with_braze(config, url=other.url + "/")
        for dry_run in (True, False):
            with pytest.raises(LedgerError, match=f"records what {emulator.url} acknowledged"):
                sync(scores(users), elsewhere, KEY, dry_run=dry_run)
        assert other.stats()["track_requests"] == 0
        fresh = with_ledger(elsewhere, f"{sqlite_url}-other")
        assert sync(scores(users), fresh, KEY).acknowledged == 2
    by_braze_id = with_braze(config, id_field="braze_id")
    with pytest.raises(LedgerError, match="users by external_id"):
        sync(scores(users), by_braze_id, KEY)


def test_a_mistyped_braze_url_that_never_answered_does_not_claim_the_ledger(
    emulator: Emulator, config, sqlite_url
) -> None:
    """The first run goes to a typo (nothing listens there): the ledger stays unbound, so the
    run with the fixed braze.url sends, and only then is the ledger bound to it."""
    users = {"a": 0.9, "b": 0.1}
    emulator.add_profiles(list(users))
    with Emulator(EmulatorConfig(api_keys=frozenset({KEY}))) as gone:
        typo = gone.url
    mistyped = with_braze(config, url=typo, max_attempts=1, timeout_s=1.0)
    with pytest.raises(BrazeUnavailableError):
        sync(scores(users), mistyped, KEY)
    assert sync(scores(users), config, KEY).acknowledged == 2
    assert Ledger(sqlite_url).bound_target() == (emulator.url, "external_id")
    with pytest.raises(LedgerError, match=f"records what {emulator.url} acknowledged"):
        sync(scores(users), mistyped, KEY)


def test_update_existing_only_and_extra_attributes(emulator: Emulator, sqlite_url: str) -> None:
    emulator.add_profiles(["known"])
    users = scores({"known": 0.456, "stranger": 0.9}, **{REASONS: [["trial_ending"], None]})
    extra = {"score_attribute": "churn_score", "reason_attribute": "churn_reason"}
    report = sync(users, make_config(emulator, sqlite_url, **extra), KEY)
    assert inspect(emulator, "profiles") == {
        "known": {"churn_risk": "medium", "churn_score": 46, "churn_reason": "trial_ending"}
    }
    assert report.acknowledged == 2 and report.data_points == 5  # null reason is not sent
    other = make_config(emulator, f"{sqlite_url}2", update_existing_only=False)
    sync(scores({"stranger": 0.9}), other, KEY)
    assert bucket_profiles(emulator)["stranger"] == "high"
    # only the score moved: only the score is sent (one data point)
    moved = scores({"known": 0.47, "stranger": 0.9}, **{REASONS: [["trial_ending"], None]})
    again = sync(moved, make_config(emulator, sqlite_url, **extra), KEY)
    assert (again.changed, again.data_points) == (1, 1)
    assert inspect(emulator, "profiles")["known"]["churn_score"] == 47


def test_partial_errors_are_recorded_and_not_resent(emulator: Emulator, config) -> None:
    emulator.reconfigure(blocklisted_ids=frozenset({"dummy"}))
    long_id = "x" * 1000
    users = {"a": 0.9, "dummy": 0.9, long_id: 0.1}
    emulator.add_profiles(["a"])
    report = sync(scores(users), config, KEY)
    assert report.acknowledged == 1
    assert report.failed == {MSG_BLOCKLISTED: 1, MSG_ID_TOO_LARGE: 1}
    assert sync(scores(users), config, KEY).sent == 0  # the same bad values are not re-billed
    changed = sync(scores({**users, "dummy": 0.1}), config, KEY)  # the data changed: try again
    assert changed.sent == 1 and changed.failed == {MSG_BLOCKLISTED: 1}


def test_concurrent_batches_land_once_and_stop_together_on_401(emulator, sqlite_url) -> None:
    users = {f"u{i:03d}": (i % 100) / 100 for i in range(600)}
    emulator.add_profiles(list(users))
    config = make_config(emulator, sqlite_url, concurrency=4)
    with pytest.raises(BrazeAuthError):
        sync(scores(users), config, "wrong-key-0123")
    assert track_requests(emulator) <= 4  # no new batch after the 401
    report = sync(scores(users), config, KEY)
    assert (report.sent, report.acknowledged, report.requests) == (600, 600, 8)
    assert bucket_profiles(emulator) == first_buckets(users)
    assert inspect(emulator, "stats")["attribute_writes"] == 600
    assert sync(scores(users), config, KEY).sent == 0


def test_401_stops_the_run_and_the_next_run_resumes(emulator: Emulator, config) -> None:
    users = {f"u{i:03d}": 0.9 for i in range(150)}
    emulator.add_profiles(list(users))
    with pytest.raises(BrazeAuthError, match="401") as exc:
        sync(scores(users), config, "wrong-key-0123")
    assert "wrong-key-0123" not in str(exc.value)
    assert track_requests(emulator) == 1  # stopped at once
    report = sync(scores(users), config, KEY)
    assert report.resumed and (report.sent, report.acknowledged) == (150, 150)
    assert set(bucket_profiles(emulator).values()) == {"high"}


def test_a_resumed_run_still_reports_the_users_it_nulls(emulator: Emulator, config) -> None:
    config = with_braze(config, max_null_share=1.0)
    users = {"a": 0.9, "b": 0.1, "c": 0.3}
    emulator.add_profiles(list(users))
    sync(scores(users), config, KEY)
    with pytest.raises(BrazeAuthError):
        sync(scores({"a": 0.9}), config, "wrong-key-0123")
    report = sync(scores({"a": 0.9}), config, KEY)
    assert report.resumed and (report.changed, report.nulled, report.acknowledged) == (2, 2, 2)


def test_a_failed_batch_among_concurrent_ones_is_all_that_is_sent_again(
    emulator: Emulator, sqlite_url
) -> None:
    """With 4 batches in flight, one that fails for good stops the run after the others land;
    the next run sends exactly that batch."""
    users = {f"u{i:03d}": 0.9 for i in range(300)}
    emulator.add_profiles(list(users))
    config = make_config(emulator, sqlite_url, concurrency=4, max_attempts=1)
    HTTP.post(f"{emulator.url}/_emulator/force", json={"status": 503, "count": 1})
    with pytest.raises(BrazeUnavailableError):
        sync(scores(users), config, KEY)
    assert len(Ledger(sqlite_url).acknowledged()) == 225
    report = sync(scores(users), config, KEY)
    # acknowledged counts the whole run (its outbox), sent only this attempt
    assert report.resumed and (report.sent, report.acknowledged, report.requests) == (75, 300, 1)
    assert inspect(emulator, "stats")["attribute_writes"] == 300  # nothing twice


def test_an_outage_stops_the_run_and_nothing_is_lost(emulator: Emulator, sqlite_url) -> None:
    users = {f"u{i:03d}": i / 150 for i in range(150)}
    emulator.add_profiles(list(users))
    config = make_config(
        emulator, sqlite_url, max_attempts=2, backoff_s=0.01, max_rps=50.0, backoff_max_s=30.0
    )
    # the first batch goes through, then the second fails twice in a row
    with pytest.raises(BrazeUnavailableError, match="failed 2 times"):
        _send_with_outage_after_first_batch(emulator, scores(users), config)
    assert inspect(emulator, "stats")["attribute_writes"] == 75
    report = sync(scores(users), config, KEY)
    assert report.resumed and report.acknowledged == 150
    assert bucket_profiles(emulator) == first_buckets(users)
    assert inspect(emulator, "stats")["attribute_writes"] == 150  # nothing sent twice


def _send_with_outage_after_first_batch(emu: Emulator, frame: pd.DataFrame, config) -> None:
    """Run a sync whose second request starts a 503 outage (forced from the progress hook)."""

    def progress(stage: str, done: int, total: int) -> None:
        if done == 1:
            HTTP.post(f"{emu.url}/_emulator/force", json={"status": 503, "count": 2})

    sync(frame, config, KEY, progress=progress)


def test_new_scores_supersede_an_unfinished_run_instead_of_resuming_it(
    emulator: Emulator, config, sqlite_url
) -> None:
    """A run stopped by a 401 leaves its outbox open; different scores next time re-plan from
    what Braze acknowledged rather than replaying the old plan."""
    users = {f"u{i:03d}": 0.1 for i in range(150)}
    emulator.add_profiles(list(users))
    with pytest.raises(BrazeAuthError):
        sync(scores(users), config, "wrong-key-0123")
    assert Ledger(sqlite_url).open_run() is not None
    newer = {u: 0.9 for u in users}
    report = sync(scores(newer), config, KEY)
    assert not report.resumed and (report.changed, report.acknowledged) == (150, 150)
    assert set(bucket_profiles(emulator).values()) == {"high"}
    assert inspect(emulator, "stats")["attribute_writes"] == 150  # the old plan never went out
    assert Ledger(sqlite_url).open_run() is None


def test_a_run_whose_lock_is_taken_over_stops_sending(emulator: Emulator, config, sqlite_url):
    """Another run that takes the lock over (ours looked dead) wins: ours stops at its next
    heartbeat, and what it had sent stays acknowledged."""
    users = {f"u{i:03d}": 0.9 for i in range(300)}
    emulator.add_profiles(list(users))

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "batches" and done == 1:
            Ledger(sqlite_url).acquire(ttl_s=-1)  # stale at once: taken over

    with pytest.raises(LedgerLockedError):
        sync(scores(users), config, KEY, progress=progress)
    assert track_requests(emulator) == 1  # nothing after the heartbeat that lost the lock
    assert len(Ledger(sqlite_url).acknowledged()) == 75


def test_an_answer_that_names_no_object_is_unknown_and_sent_again(emulator, config) -> None:
    """A 201 whose error cannot be matched to an object: nobody is marked acknowledged or
    failed; the next run sends those users again."""
    users = {f"u{i:02d}": 0.9 for i in range(10)}
    emulator.add_profiles(list(users))
    HTTP.post(f"{emulator.url}/_emulator/force", json={"status": "garbled", "count": 1})
    first = sync(scores(users), config, KEY)
    assert (first.sent, first.acknowledged, first.unknown, first.failed) == (10, 0, 10, {})
    again = sync(scores(users), config, KEY)
    assert (again.sent, again.acknowledged, again.unknown) == (10, 10, 0)
    assert sync(scores(users), config, KEY).sent == 0
    assert set(bucket_profiles(emulator).values()) == {"high"}


def test_a_value_of_unknown_outcome_is_sent_again_even_if_the_ledger_already_agrees(
    emulator, config
) -> None:
    """low acknowledged; high sent but the answer names no object (Braze applied it); the next
    scores say low again: the ledger's low is no proof of what Braze holds, so low is sent."""
    users = {f"u{i:02d}": 0.1 for i in range(10)}
    emulator.add_profiles(list(users))
    sync(scores(users), config, KEY)
    HTTP.post(f"{emulator.url}/_emulator/force", json={"status": "garbled", "count": 1})
    assert sync(scores({u: 0.9 for u in users}), config, KEY).unknown == 10
    assert set(bucket_profiles(emulator).values()) == {"high"}
    dry = sync(scores(users), config, KEY, dry_run=True)
    assert dry.changed == 10 and dry.transitions == {("(unknown)", "low"): 10}
    assert UNCERTAIN == "(unknown)"
    assert sync(scores(users), config, KEY).acknowledged == 10
    assert set(bucket_profiles(emulator).values()) == {"low"}
    assert sync(scores(users), config, KEY).sent == 0


def test_dry_run_sends_and_records_nothing(emulator: Emulator, config, sqlite_url) -> None:
    users = {"a": 0.9, "b": 0.1}
    emulator.add_profiles(list(users))
    report = sync(scores(users), config, KEY, dry_run=True)
    assert report.transitions == {(NEW, "high"): 1, (NEW, "low"): 1}
    assert report.sample[0] == {
        "external_id": "a",
        "_update_existing_only": True,
        "churn_risk": "high",
    }
    assert report.headers["Authorization"] == "Bearer ********"
    assert KEY not in repr(report)
    assert track_requests(emulator) == 0
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # a dry run writes nothing


def test_a_held_lock_keeps_a_second_run_from_sending(emulator: Emulator, config, sqlite_url):
    ledger = Ledger(sqlite_url)
    holder = ledger.acquire(ttl_s=600)
    with pytest.raises(LedgerLockedError):
        sync(scores({"a": 0.9}), config, KEY)
    assert track_requests(emulator) == 0
    ledger.release(holder)
    assert sync(scores({"a": 0.9}), config, KEY).sent == 1


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def cli_env(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.upper().startswith("LAPSE_") or name.upper() == "BRAZE_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LAPSE_BRAZE__URL", emulator.url)
    monkeypatch.setenv("LAPSE_LEDGER__URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    monkeypatch.setenv("NO_COLOR", "1")
    path = tmp_path / "scores.csv"
    path.write_text("user_id,churn_probability\na,0.9\nb,0.1\nc,0.3\n")
    emulator.add_profiles(["a", "b", "c"])
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def test_cli_dry_run_prints_changes_and_a_masked_sample(cli_env, emulator, capsys) -> None:
    code, out, err = run_cli(capsys, "sync", "--scores", str(cli_env), "--dry-run")
    assert code in (0, None)
    assert "(none) -> high" in out and "Bearer ********" in out and '"churn_risk": "high"' in out
    assert KEY not in out + err
    assert track_requests(emulator) == 0


def test_cli_sync_then_nothing_to_send(cli_env, emulator, capsys) -> None:
    code, out, _ = run_cli(capsys, "sync", "--scores", str(cli_env))
    assert code in (0, None) and "acknowledged" in out
    assert bucket_profiles(emulator) == {"a": "high", "b": "low", "c": "medium"}
    code, out, _ = run_cli(capsys, "sync", "--scores", str(cli_env))
    assert code in (0, None) and track_requests(emulator) == 1
    code, out, _ = run_cli(capsys, "sync", "--scores", str(cli_env), "--dry-run")
    assert "Nothing would be sent" in out and "Sample request" not in out
    for path in cli_env.parent.glob("ledger.db*"):  # the key is never stored
        assert KEY.encode() not in path.read_bytes()


def test_cli_errors_are_one_line(cli_env, emulator, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BRAZE_API_KEY", "not-the-key-987")
    code, out, err = run_cli(capsys, "sync", "--scores", str(cli_env))
    assert code == 1 and "401" in err and "not-the-key-987" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().endswith("the run stopped")  # after the progress bar
    bad = cli_env.with_name("bad.csv")
    bad.write_text("user_id,churn_probability\na,2\n")
    code, _, err = run_cli(capsys, "sync", "--scores", str(bad))
    assert code == 1 and "bad.csv: line 2, column 'churn_probability'" in err


def test_cli_sync_of_a_rescore_file_uses_the_model_bounds_it_records(
    cli_env, emulator, capsys
) -> None:
    """The documented retry after a failed push: `lapse sync` on rescore's file sends the
    buckets rescore would have sent (the model's bounds), not [buckets]' defaults."""
    from serving.scores import write_scores

    model_policy = BucketPolicy.of("probability", {"high": 0.8, "medium": 0.6}, "low")
    frame = scores({"a": 0.9, "b": 0.1, "c": 0.7})
    path = write_scores(frame, cli_env.with_suffix(".parquet"), model_policy)
    code, out, _ = run_cli(capsys, "sync", "--scores", str(path))
    assert code in (0, None) and "high >= 0.8, medium >= 0.6" in " ".join(out.split())
    assert bucket_profiles(emulator) == {"a": "high", "b": "low", "c": "medium"}
    plain = write_scores(scores({"c": 0.7}), cli_env.with_name("plain.parquet"))
    assert read_scores_policy(plain) is None and read_scores_policy(cli_env) is None
    # a CSV scores file keeps the bounds beside it; rewritten without a policy, they go
    as_csv = write_scores(frame.assign(reasons=[[]] * 3), cli_env.with_name("s.csv"), model_policy)
    assert read_scores_policy(as_csv) == model_policy
    write_scores(frame.assign(reasons=[[]] * 3), as_csv)
    assert read_scores_policy(as_csv) is None


# --- crashes -------------------------------------------------------------------------------------


def _days(n_users: int, n_days: int, seed: int) -> list[pd.DataFrame]:
    """Drifting scores; each day about 5% of users are not scored (and come back later)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 3.0, n_users)
    ids = np.array([f"user{i:05d}" for i in range(n_users)])
    days = []
    for _ in range(n_days):
        p = np.clip(p + rng.normal(0, 0.07, n_users), 0, 1)
        scored = rng.random(n_users) > 0.05
        days.append(pd.DataFrame({USER_ID: ids[scored], CHURN_PROBABILITY: p[scored]}))
    return days


@pytest.mark.slow
def test_chaos_eight_runs_killed_at_random_then_resumed(tmp_path: Path) -> None:
    """Each day's `lapse sync` is SIGKILLed at a random moment, then resumed; at the end Braze
    holds exactly what a crash-free sequence of runs gives, and duplicates stay under one batch
    per kill. The emulator also drops connections and answers 5xx now and then."""
    from serving.emulator import parse_faults

    # eight days: each is a CLI process killed and resumed (~15 s on a loaded machine)
    n_users, n_days, batch = 2000, 8, 75
    days = _days(n_users, n_days, seed=5)
    rng = np.random.default_rng(17)
    faults = parse_faults("seed=3,5xx=0.03,drop=0.02")
    chaos = Emulator(EmulatorConfig(api_keys=frozenset({KEY}), faults=faults)).start()
    clean = Emulator(EmulatorConfig(api_keys=frozenset({KEY}))).start()
    try:
        for emu in (chaos, clean):
            emu.add_profiles([f"user{i:05d}" for i in range(n_users)])
        env = {
            **{k: v for k, v in os.environ.items() if not k.upper().startswith("LAPSE_")},
            "BRAZE_API_KEY": KEY,
            "LAPSE_BRAZE__URL": chaos.url,
            "LAPSE_BRAZE__MAX_RPS": "40",
            "LAPSE_BRAZE__BACKOFF_S": "0.01",
            "LAPSE_LEDGER__URL": f"sqlite:///{tmp_path / 'chaos.db'}",
            "LAPSE_BUCKETS__HYSTERESIS": "0.05",
        }
        reference = make_config(clean, f"sqlite:///{tmp_path / 'clean.db'}")
        chaos_config = with_ledger(with_braze(reference, url=chaos.url), env["LAPSE_LEDGER__URL"])
        interrupted = mid_send = 0
        for day, frame in enumerate(days):
            path = tmp_path / f"day{day:02d}.parquet"
            frame.to_parquet(path)
            batches = -(-sync(frame, reference, KEY).sent // batch)  # what the day has to send
            before = chaos.stats()["track_requests"]
            proc = subprocess.Popen(
                [*LAPSE, "sync", "--scores", str(path)],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if batches >= 2 and rng.random() >= 0.3:
                # while sending, by progress rather than by clock: after the k-th request, with
                # at least one batch still to go, so the run is certainly still alive
                k = int(rng.integers(1, batches))
                deadline = time.monotonic() + 60
                while chaos.stats()["track_requests"] < before + k and proc.poll() is None:
                    assert time.monotonic() < deadline
                    time.sleep(0.002)
                mid_send += 1
            else:  # anywhere: start-up, planning, writing the outbox, sending, or after the end
                time.sleep(rng.uniform(0.5, 2.5))
            proc.kill()
            interrupted += proc.wait() == -9
            for _ in range(5):  # resume (an outage may stop a run: run again)
                try:
                    sync(read_scores(path), chaos_config, KEY)
                    break
                except BrazeUnavailableError:
                    continue
            assert chaos.profiles() == clean.profiles(), f"day {day}"
        assert mid_send >= 4 and interrupted >= mid_send  # every mid-send kill hit a live run
        duplicates = chaos.stats()["attribute_writes"] - clean.stats()["attribute_writes"]
        assert 0 <= duplicates <= interrupted * batch
        final = days[-1].set_index(USER_ID)[CHURN_PROBABILITY]
        landed = pd.Series({u: p.get("churn_risk") for u, p in chaos.profiles().items()})
        assert landed[final.index].notna().all()
        assert landed.drop(final.index).isna().all()  # not scored on the last day: nulled
        raw = pd.Series(first_buckets(final.to_dict()))
        assert (landed[final.index] == raw).mean() > 0.9  # hysteresis keeps the rest
    finally:
        chaos.stop()
        clean.stop()


# --- the diff as a property ---------------------------------------------------------------------

_probs = st.floats(0, 1, allow_nan=False)
_users = st.dictionaries(st.sampled_from([f"u{i}" for i in range(12)]), _probs, max_size=12)
_acked = st.dictionaries(
    st.sampled_from([f"u{i}" for i in range(16)]),
    st.sampled_from(["high", "medium", "low", None]),
    max_size=16,
)


def _ack_frame(values: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_ID: pd.Series(list(values), dtype=object),
            ATTRIBUTE: pd.Series(["churn_risk"] * len(values), dtype=object),
            VALUE: pd.Series(list(values.values()), dtype=object),
        }
    )


@settings(deadline=None, max_examples=60)
@given(_users, _acked, st.booleans())
def test_applying_a_plan_leaves_nothing_to_send(users, acked, null_unscored) -> None:
    config = SyncConfig(
        BrazeSettings(url="http://unused", null_unscored=null_unscored),
        LedgerSettings(url="sqlite://"),
        POLICY,
    )
    # (an empty scores file is refused by prepare_scores; the plan itself must still hold)
    frame = prepare_scores(scores(users)) if users else scores({}).astype({USER_ID: str})
    empty = _ack_frame({})
    plan = plan_updates(frame, _ack_frame(acked), empty, config)
    after = dict(acked)
    for row in plan.updates:
        after[row.user_id] = row.payload["churn_risk"]
        assert row.user_id in users or (null_unscored and acked.get(row.user_id) is not None)
        assert row.payload["churn_risk"] != acked.get(row.user_id) or row.user_id not in acked
    for user in users:  # every scored user ends with a bucket
        assert after[user] in POLICY.names
    if null_unscored:
        assert all(after[u] is None for u in after if u not in users)
    assert plan_updates(frame, _ack_frame(after), empty, config).updates == []


def test_given_buckets_are_sent_as_the_scores_file_says(emulator: Emulator, sqlite_url) -> None:
    given = BucketPolicy.of("given", {}, "low")
    config = make_config(emulator, sqlite_url, policy=given)
    emulator.add_profiles(["a", "b"])
    sync(scores({"a": 0.9, "b": 0.1}, **{BUCKET: ["watch", "fine"]}), config, KEY)
    assert bucket_profiles(emulator) == {"a": "watch", "b": "fine"}
    with pytest.raises(ScoresFileError, match="no 'bucket' column"):
        sync(scores({"a": 0.9}), config, KEY)
    with pytest.raises(ScoresFileError, match="1 user.s. without a 'bucket' .first: user 'b'."):
        sync(scores({"a": 0.9, "b": 0.1}, **{BUCKET: ["watch", None]}), config, KEY)


def test_a_user_scored_twice_is_kept_once_with_a_note() -> None:
    """Regression (hostile review): conflicting rows of one user were reduced silently."""
    frame = prepare_scores(
        scores({"a": 0.1, "b": 0.5}).pipe(lambda f: pd.concat([f, scores({"a": 0.9})]))
    )
    assert dict(zip(frame[USER_ID], frame[CHURN_PROBABILITY], strict=True)) == {"a": 0.9, "b": 0.5}
    (note,) = frame.attrs["lapse.notes"]
    assert note.startswith("1 user(s) appear more than once (first: 'a'), 1 of them with different")
