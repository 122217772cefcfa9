"""Push churn buckets to Braze: scores -> buckets -> diff vs the ledger -> outbox -> send -> ack.

`sync(scores, config, api_key)` is the whole job. The desired state of each scored user is their
bucket (plus the optional 0-100 score and top reason); the ledger holds what Braze acknowledged;
only the difference is sent, and users no longer scored get their attributes set to null once.
A run first writes its whole outbox, then sends it batch by batch, committing each batch's answer
with the values it acknowledges. Killed at any point, the next run with the same scores resumes
the outbox, so only the batch in flight (`concurrency` batches, if raised) can be sent twice; a
run with the same scores after a finished one sends nothing. A run with other scores supersedes
an unfinished one: users of its batches in flight (sent, never answered) are sent their new
values whatever the ledger says, since Braze may hold what was in flight. The ledger's lock
keeps two runs from sending at once.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd

from base import sqlite_file
from features.schema import BUCKET, CHURN_PROBABILITY, REASONS, USER_ID
from serving.braze_client import (
    BatchResult,
    BrazeAuthError,
    BrazeClient,
    billable_keys,
    mask_key,
    request_headers,
)
from serving.ledger import ATTRIBUTE, VALUE, Ledger, OutboxRow
from serving.scores import NOTES, ScoresFileError, prepare_scores
from serving.settings import BrazeSettings, LedgerSettings, api_key_problem
from training.buckets import BucketPolicy, assign_buckets

__all__ = [
    "NEW",
    "REMOVED",
    "UNCERTAIN",
    "SyncConfig",
    "SyncReport",
    "plan_updates",
    "sync",
]

#: Transition labels for users Braze has no value for yet, for a value set to null, and for users
#: whose value is unknown (sent, never acknowledged: sent again whatever the ledger says).
NEW, REMOVED, UNCERTAIN = "(none)", "(null)", "(unknown)"
_SCORE_MAX = 100

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SyncConfig:
    """What to send and where: the ``[braze]`` and ``[ledger]`` sections and the bucket policy
    (``[buckets]``, or the champion's own bounds when rescoring)."""

    braze: BrazeSettings
    ledger: LedgerSettings
    policy: BucketPolicy

    @classmethod
    def from_settings(cls, settings: Any, policy: BucketPolicy | None = None) -> SyncConfig:
        """The sync's slice of a ``lapse.settings.Settings``; ``policy`` replaces ``[buckets]``."""
        return cls(settings.braze, settings.ledger, policy or settings.buckets.policy())

    @property
    def attributes(self) -> tuple[str, ...]:
        """Every Braze attribute Lapse writes, the bucket first."""
        extra = (self.braze.score_attribute, self.braze.reason_attribute)
        return (self.braze.attribute, *(a for a in extra if a))


@dataclass
class SyncReport:
    """What one sync did; every count is users (one attributes object per user)."""

    dry_run: bool
    users_scored: int = 0
    changed: int = 0
    nulled: int = 0
    sent: int = 0
    acknowledged: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    unknown: int = 0
    data_points: int = 0
    requests: int = 0
    rate_limited: int = 0
    waited_s: float = 0.0
    seconds: float = 0.0
    batches: int = 0
    run_id: int | None = None
    resumed: bool = False
    transitions: dict[tuple[str, str], int] = field(default_factory=dict)
    sample: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    #: Things the user should be told that did not stop the run (e.g. float user ids that were
    #: converted to text); one line each.
    notes: list[str] = field(default_factory=list)


# --- desired state and the diff -----------------------------------------------------------------


@dataclass
class Plan:
    """Each user's update (changed attributes only), in send order, and the bucket moves."""

    updates: list[OutboxRow]
    transitions: dict[tuple[str, str], int]
    nulled: int


def plan_updates(
    scores: pd.DataFrame,
    acknowledged: pd.DataFrame,
    rejected: pd.DataFrame,
    config: SyncConfig,
    uncertain: pd.DataFrame | None = None,
) -> Plan:
    """Diff the desired attributes of the scored users against what Braze acknowledged.

    ``uncertain`` (user_id, attribute, value) lists values sent but never acknowledged: Braze
    holds either them or the acknowledged ones, so those attributes are sent whatever the diff
    says (a user no longer scored gets them set to null).
    """
    ack = acknowledged.set_index([USER_ID, ATTRIBUTE])[VALUE]
    prev_bucket = (
        acknowledged.loc[acknowledged[ATTRIBUTE] == config.braze.attribute]
        .set_index(USER_ID)[VALUE]
        .reindex(scores[USER_ID])
    )
    prev_bucket.index = scores.index
    desired = pd.DataFrame({USER_ID: scores[USER_ID]})
    desired[config.braze.attribute] = _buckets(scores, config.policy, prev_bucket)
    if config.braze.score_attribute:
        desired[config.braze.score_attribute] = (
            np.rint(scores[CHURN_PROBABILITY].to_numpy() * _SCORE_MAX).astype(int).tolist()
        )
    if config.braze.reason_attribute:
        reasons = scores[REASONS] if REASONS in scores.columns else None
        desired[config.braze.reason_attribute] = (
            reasons.to_numpy() if reasons is not None else [None] * len(scores)
        )
    long = desired.melt(id_vars=[USER_ID], var_name=ATTRIBUTE, value_name=VALUE)
    long[VALUE] = long[VALUE].astype(object).where(long[VALUE].notna(), None)

    # Users Braze holds a value for who are not scored any more: set each value to null once.
    if config.braze.null_unscored and len(acknowledged):
        gone = acknowledged.loc[
            ~acknowledged[USER_ID].isin(scores[USER_ID])
            & acknowledged[ATTRIBUTE].isin(config.attributes)
            & acknowledged[VALUE].notna()
        ]
        long = pd.concat([long, gone.assign(**{VALUE: None})], ignore_index=True)
    unsure = pd.MultiIndex.from_tuples([], names=[USER_ID, ATTRIBUTE])
    if uncertain is not None and len(uncertain):
        unsure = pd.MultiIndex.from_frame(uncertain[[USER_ID, ATTRIBUTE]])
        if config.braze.null_unscored:  # Braze may hold what was sent: null it
            extra = uncertain.loc[
                ~uncertain[USER_ID].isin(scores[USER_ID])
                & uncertain[ATTRIBUTE].isin(config.attributes)
            ]
            known = pd.MultiIndex.from_frame(long[[USER_ID, ATTRIBUTE]])
            extra = extra.loc[~pd.MultiIndex.from_frame(extra[[USER_ID, ATTRIBUTE]]).isin(known)]
            long = pd.concat(
                [long, extra[[USER_ID, ATTRIBUTE]].assign(**{VALUE: None})], ignore_index=True
            )

    key = pd.MultiIndex.from_frame(long[[USER_ID, ATTRIBUTE]])
    before = ack.reindex(key)
    held = key.isin(ack.index)
    new_enc = long[VALUE].map(_enc).to_numpy()
    old_enc = before.map(_enc).to_numpy()
    changed = np.where(held, new_enc != old_enc, pd.notna(new_enc))
    if len(rejected):
        rej = rejected.set_index([USER_ID, ATTRIBUTE])[VALUE].reindex(key)
        same_as_rejected = key.isin(rejected.set_index([USER_ID, ATTRIBUTE]).index) & (
            rej.map(_enc).to_numpy() == new_enc
        )
        changed &= ~same_as_rejected
    forced = key.isin(unsure) if len(unsure) else np.zeros(len(key), dtype=bool)
    changed |= forced
    todo = long.loc[changed].sort_values([USER_ID, ATTRIBUTE], kind="stable")
    payloads: dict[str, dict[str, Any]] = {}
    for user, name, value in zip(
        todo[USER_ID].tolist(), todo[ATTRIBUTE].tolist(), todo[VALUE].tolist(), strict=True
    ):
        payloads.setdefault(str(user), {})[name] = _plain(value)
    updates = [OutboxRow(user, payload) for user, payload in payloads.items()]
    is_bucket = changed & (long[ATTRIBUTE] == config.braze.attribute).to_numpy()
    moves = long.loc[is_bucket]
    old = before.loc[is_bucket]
    transitions = Counter(
        zip(
            [
                UNCERTAIN if unsure_ else NEW if _enc(v) is None else str(v)
                for v, unsure_ in zip(old.to_numpy(), forced[is_bucket], strict=True)
            ],
            [REMOVED if v is None else str(v) for v in moves[VALUE].to_numpy()],
            strict=True,
        )
    )
    scored = set(scores[USER_ID])
    nulled = sum(1 for u in updates if u.user_id not in scored)
    return Plan(updates, dict(transitions), nulled)


def _buckets(scores: pd.DataFrame, policy: BucketPolicy, previous: pd.Series) -> pd.Series:
    if policy.mode != "given":
        return assign_buckets(scores[CHURN_PROBABILITY], policy, previous)
    fix = "write buckets into the scores file or use mode 'probability' or 'share'"
    if BUCKET not in scores.columns:
        raise ScoresFileError(
            f"buckets.mode is 'given' but the scores have no {BUCKET!r} column; {fix}"
        )
    given = scores[BUCKET]
    missing = scores.loc[given.isna(), USER_ID]
    if len(missing):
        raise ScoresFileError(
            f"buckets.mode is 'given' but the scores have {len(missing)} user(s) without a "
            f"{BUCKET!r} (first: user {missing.iloc[0]!r}); {fix}"
        )
    return given.astype(object)


def _plain(value: Any) -> Any:
    """A JSON-ready Python value (numpy scalars become int/float/str)."""
    return value.item() if isinstance(value, np.generic) else value


def _enc(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return json.dumps(value, sort_keys=True)


def _digest(scores: pd.DataFrame, config: SyncConfig) -> str:
    """Identifies a run's input: the scores and everything in the config that shapes updates."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(scores, index=False).to_numpy().tobytes())
    h.update(
        repr(
            (
                config.attributes,
                config.policy,
                config.braze.null_unscored,
                config.braze.update_existing_only,
                config.braze.id_field,
                config.braze.batch_size,
            )
        ).encode()
    )
    return h.hexdigest()


def _objects(rows: list[OutboxRow], config: SyncConfig) -> list[dict[str, Any]]:
    flag = {"_update_existing_only": True} if config.braze.update_existing_only else {}
    return [{config.braze.id_field: r.user_id, **flag, **r.payload} for r in rows]


def _batches(rows: list[OutboxRow], size: int) -> list[list[OutboxRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


# --- the run ----------------------------------------------------------------------------------


def sync(
    scores: pd.DataFrame,
    config: SyncConfig,
    api_key: str | None,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> SyncReport:
    """Send every changed bucket to Braze and record what it acknowledged (see module doc).

    `scores` is a scores frame (USER_ID, CHURN_PROBABILITY, optional REASONS); it is checked and
    deduplicated here too. `dry_run` reads the ledger, sends and writes nothing, and returns the
    planned transitions and a sample request. Raises BrazeAuthError (401/403),
    BrazeUnavailableError, LedgerLockedError; whatever was acknowledged before stays recorded.
    """
    started = time.perf_counter()
    if not dry_run and api_key and (problem := api_key_problem(api_key)):
        raise BrazeAuthError(f"the Braze API key (BRAZE_API_KEY) {problem}")  # before any write
    report_progress = progress or (lambda stage, done, total: None)
    scores = prepare_scores(scores)  # idempotent: a frame from read_scores passes unchanged
    report = SyncReport(
        dry_run=dry_run, users_scored=len(scores), notes=list(scores.attrs.get(NOTES, []))
    )
    url = config.ledger.url
    if dry_run and (file := sqlite_file(url)) is not None and not file.exists():
        url = "sqlite://"  # nothing acknowledged yet: plan against an empty ledger, create no file
    ledger = Ledger(url, config.ledger.table_prefix)
    try:
        target = (config.braze.url, config.braze.id_field)
        if dry_run:
            ledger.bind_target(*target, record=False)
            plan = _checked_plan(scores, ledger, config)
            _fill_plan(report, plan)
            report.batches = len(_batches(plan.updates, config.braze.batch_size))
            report.sample = _objects(plan.updates[: min(3, len(plan.updates))], config)
            report.headers = request_headers(mask_key(api_key))
            report.data_points = sum(billable_keys(o) for o in _objects(plan.updates, config))
            return report
        holder = ledger.acquire(config.ledger.lock_ttl_s)
        try:
            ledger.bind_target(*target)
            _run(scores, config, api_key or "", ledger, holder, report, report_progress)
        finally:
            ledger.release(holder)
    finally:
        ledger.close()
        report.seconds = time.perf_counter() - started
    return report


def _checked_plan(scores: pd.DataFrame, ledger: Ledger, config: SyncConfig) -> Plan:
    """The plan against what the ledger says Braze holds, refused if it nulls too many."""
    acknowledged = ledger.acknowledged()
    plan = plan_updates(scores, acknowledged, ledger.rejected(), config, ledger.uncertain())
    check_nulls(plan, acknowledged, config)
    return plan


def check_nulls(plan: Plan, acknowledged: pd.DataFrame, config: SyncConfig) -> None:
    """Refuse a plan that would null more than `max_null_share` of the users Braze holds a
    bucket for: a truncated or wrong scores file, not a day's churn."""
    held = acknowledged.loc[
        (acknowledged[ATTRIBUTE] == config.braze.attribute) & acknowledged[VALUE].notna(), USER_ID
    ].nunique()
    share, attribute = config.braze.max_null_share, config.braze.attribute
    if held and plan.nulled > share * held:
        raise ScoresFileError(
            f"scores: {plan.nulled:,} of the {held:,} users Braze holds a {attribute!r} "
            f"for are not in this scores file, and would be set to null "
            f"({plan.nulled / held:.0%}, over braze.max_null_share = {share:g}); "
            "is the file complete? Raise braze.max_null_share to allow it"
        )


def _fill_plan(report: SyncReport, plan: Plan) -> None:
    report.changed = len(plan.updates)
    report.nulled = plan.nulled
    report.transitions = plan.transitions


def _run(
    scores: pd.DataFrame,
    config: SyncConfig,
    api_key: str,
    ledger: Ledger,
    holder: str,
    report: SyncReport,
    progress: Progress,
) -> None:
    digest = _digest(scores, config)
    run = ledger.open_run()
    if run is not None and run.digest == digest:
        run_id, report.resumed = run.run_id, True
    else:
        plan = _checked_plan(scores, ledger, config)  # its batches in flight count as unknown
        if run is not None:  # acks so far stand; its batches in flight become uncertain
            ledger.supersede(run.run_id)
        _fill_plan(report, plan)
        run_id = ledger.start_run(digest, _batches(plan.updates, config.braze.batch_size))
    report.run_id = run_id
    pending = list(ledger.pending_batches(run_id))
    if report.resumed:  # the plan is the outbox; the bucket moves were reported by the first try
        users = ledger.outbox_users(run_id)
        report.changed = len(users)
        report.nulled = len(set(users).difference(scores[USER_ID]))
    report.batches = len(pending)
    progress("batches", 0, len(pending))
    if pending:
        with BrazeClient(config.braze, api_key) as client:
            try:
                _send(pending, config, client, ledger, run_id, holder, report, progress)
            finally:
                stats = client.stats
                report.data_points = stats.data_points
                report.requests = stats.requests
                report.rate_limited = stats.rate_limited
                report.waited_s = stats.waited_s
    ledger.finish_run(run_id)
    counts = ledger.outbox_counts(run_id)
    report.acknowledged = counts.get("acked", 0)
    report.unknown = counts.get("unknown", 0)
    report.failed = ledger.failures(run_id)


def _send(
    pending: list[tuple[int, list[OutboxRow]]],
    config: SyncConfig,
    client: BrazeClient,
    ledger: Ledger,
    run_id: int,
    holder: str,
    report: SyncReport,
    progress: Progress,
) -> None:
    """Send the pending batches, `config.braze.concurrency` at a time, recording each answer.

    Answers are recorded in this thread, one transaction per batch, as they arrive. On an error
    no new batch starts; those already in flight finish and are recorded, then it is raised.
    """
    done = 0

    def send(rows: list[OutboxRow]) -> tuple[list[OutboxRow], BatchResult]:
        return rows, client.track(_objects(rows, config))

    def sending(number: int, rows: list[OutboxRow]) -> list[OutboxRow]:
        ledger.mark_sending(run_id, number)  # from here its outcome is unknown until recorded
        return rows

    def record(rows: list[OutboxRow], result: BatchResult) -> None:
        nonlocal done
        report.sent += len(rows)
        ledger.record_batch(
            run_id,
            acked=[rows[i] for i in result.accepted],
            failed=[(rows[i], message) for i, message in result.errors.items()],
            unknown=[rows[i] for i in result.unknown],
        )
        done += 1
        progress("batches", done, len(pending))

    if config.braze.concurrency == 1:
        for number, rows in pending:
            ledger.heartbeat(holder)
            record(*send(sending(number, rows)))
        return
    queue = iter(pending)
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=config.braze.concurrency) as pool:
        in_flight = {
            pool.submit(send, sending(number, rows))
            for number, rows in islice(queue, config.braze.concurrency)
        }
        while in_flight:
            finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    record(*future.result())
                except Exception as exc:  # noqa: BLE001 - re-raised once the others landed
                    error = error or exc
            if error is None:
                ledger.heartbeat(holder)
                in_flight |= {
                    pool.submit(send, sending(number, rows))
                    for number, rows in islice(queue, len(finished))
                }
    if error is not None:
        raise error
