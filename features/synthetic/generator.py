"""Generate a synthetic subscription app as Adjust delivers it, with the true churn probabilities.

Output layout under ``out``::

    raw/*.csv.gz                 hourly Adjust raw-export uploads (current and legacy definitions)
    truth/churn_truth.parquet    per subscriber and cut-off: the oracle's churn probability and the
                                 realised outcome (null where the horizon runs past the data)
    truth/subscribers.parquet    each subscriber's hidden drivers and first purchase
    truth/injected.parquet       every malformed row written: file, line, defect
    manifest.json                the parameters, counts and file list of this run
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationError, model_validator

from base import LapseError
from features import schema as s
from features.settings import LabelSettings
from features.synthetic import catalog
from features.synthetic.adjust_files import write_export
from features.synthetic.adjust_rows import Calendar, sandbox_steps, subscription_rows
from features.synthetic.dynamics import PRICE_CONSENT_DAYS, Dynamics
from features.synthetic.identity import draw_identities
from features.synthetic.oracle import churn_probability
from features.synthetic.population import NOT_SUBSCRIBED, draw_population
from features.synthetic.settings import SHAPE_OPTIONS, SyntheticSettings
from features.synthetic.simulate import Phase, Step, simulate

#: Called as progress(stage, completed, total).
Progress = Callable[[str, int, int], None]
#: Whether the export holds a subscription row of this subscriber before the cut-off. Annual
#: subscribers who bought before the export began stay invisible until their renewal.
OBSERVABLE = "observable"
TRUTH_SCHEMA = pa.schema(
    [
        (s.USER_ID, pa.string()),
        (s.PLATFORM, pa.string()),
        (s.ADID, pa.string()),
        (s.AS_OF, pa.timestamp("us", tz="UTC")),
        (s.HORIZON_DAYS, pa.int32()),
        (s.CHURN_PROBABILITY, pa.float64()),
        (s.CHURNED, pa.bool_()),
        (s.STATE, pa.string()),
        (OBSERVABLE, pa.bool_()),
    ]
)


class GenerationError(LapseError, ValueError):
    """The requested synthetic data cannot be generated as asked."""


class SyntheticConfig(SyntheticSettings):
    """What to generate: the ``[synthetic]`` settings, the label horizon and the cut-offs.

    ``cutoffs`` default to weekly from day 28 to the last day. An impossible value raises
    ``GenerationError`` naming the parameter and the value.
    """

    horizon_days: int = Field(
        default_factory=lambda: LabelSettings().horizon_days,
        ge=1,
        description="Churn horizon of the ground truth, in days.",
    )
    cutoffs: tuple[date, ...] | None = Field(
        None, description="Cut-off days of the ground truth (default: weekly from day 28)."
    )
    burn_in_days: int = Field(
        60, ge=0, description="Days simulated before the export starts (not exported)."
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise GenerationError(_describe(exc)) from None

    @model_validator(mode="after")
    def _cutoffs_inside(self) -> SyntheticConfig:
        self.cutoff_days()
        return self

    def cutoff_days(self) -> list[int]:
        """Cut-offs as day offsets from ``start``, checked to lie inside the data."""
        if self.cutoffs is None:
            return list(range(28, self.days, 7))
        days = sorted({(c - self.start).days for c in self.cutoffs})
        outside = [str(self.start + timedelta(d)) for d in days if not 0 <= d < self.days]
        if outside:
            raise GenerationError(
                f"cut-off {', '.join(outside)} is outside the generated period "
                f"{self.start} .. {self.start + timedelta(self.days - 1)}"
            )
        return days

    def observed_cutoff_days(self) -> list[int]:
        """Cut-offs whose whole horizon lies inside the data, so their outcome is known."""
        return [d for d in self.cutoff_days() if d + self.horizon_days <= self.days]


def _describe(exc: ValidationError) -> str:
    """One line per invalid value: ``name: reason (got value)``."""
    lines = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"])
        reason = error["msg"]
        if error["type"] == "value_error":
            reason = str(error["ctx"]["error"])
        value = error.get("input")
        got = f" (got {value!r})" if isinstance(value, (str, int, float, date)) else ""
        lines.append(f"{name}: {reason}{got}" if name else reason)
    return "; ".join(lines)


@dataclass
class GenerationSummary:
    """Counts from one run, also written to ``manifest.json``."""

    out: str
    users: int
    subscribers: int
    sandbox_testers: int
    files: int
    legacy_files: int
    header_only_files: int
    rows: int
    rows_by_activity: dict[str, int]
    subscription_events: dict[str, int]
    duplicates: int
    late_rows: int
    injected: dict[str, int]
    cutoffs: list[str]
    truth_rows: int
    mean_churn_probability: float
    realised_churn_rate: float | None
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)


def generate(
    config: SyntheticConfig, out: Path, overwrite: bool = False, progress: Progress | None = None
) -> GenerationSummary:
    """Simulate, write the raw export and the ground truth under ``out``; same seed, same bytes."""
    cutoffs = config.cutoff_days()
    started = time.perf_counter()
    out = Path(out)
    _prepare(out, overwrite)
    report = progress or (lambda stage, done, total: None)

    seeds = np.random.SeedSequence(config.seed)
    rng_pop, rng_chain, rng_activity, rng_ids, rng_files = (
        np.random.default_rng(seq) for seq in seeds.spawn(5)
    )
    first_day = -config.burn_in_days
    shift = {}
    if config.drift == "acquisition":  # its own random stream: every other draw is unchanged
        shift = {
            "shift_day": config.days // 2,
            "rng_shift": np.random.default_rng([config.seed, 1]),
        }
    pop = draw_population(
        rng_pop,
        config.users,
        first_day,
        max(config.days - 7, 1),
        trials=config.trials,
        offers=config.offers,
        plans=config.plans,
        **shift,
    )
    legacy_end = round(config.legacy_share * config.days)
    increase = round(0.6 * config.days)
    price_increase_day = increase if increase - PRICE_CONSENT_DAYS >= legacy_end else None
    dyn = Dynamics(pop, price_increase_day)
    total_days = config.days - first_day
    sim = simulate(
        dyn,
        first_day,
        config.days,
        cutoffs,
        config.horizon_days,
        rng_chain,
        rng_activity,
        on_day=lambda d: report("simulate", d - first_day + 1, total_days),
        app_events=tuple((e.rate, e.drive) for e in config.app_events.values()),
    )

    testers = max(2, config.users // 5000)
    ids = draw_identities(rng_ids, pop, testers)
    annual_only = config.plans == "annual"
    sandbox = sandbox_steps(
        rng_files,
        pop.n,
        testers,
        config.days,
        catalog.SANDBOX_RENEW_SECONDS_ANNUAL if annual_only else catalog.SANDBOX_RENEW_SECONDS,
    )
    steps = {k: np.concatenate([v, sandbox[k]]) for k, v in sim.steps.items()}
    if config.renewal_delay_minutes > 0:  # its own random stream: every other draw is unchanged
        rng_delay = np.random.default_rng(seeds.spawn(1)[0])
        late = (steps["step"] == Step.RENEW) & (steps["sub"] < pop.n)
        minutes = rng_delay.random(len(late)) * config.renewal_delay_minutes
        steps["delay"] = np.where(late, np.round(minutes * 60.0), 0.0)
    start_epoch = int(
        datetime(config.start.year, config.start.month, config.start.day, tzinfo=UTC).timestamp()
    )
    cal = Calendar(start_epoch, config.days, legacy_end, price_increase_day)
    subs = subscription_rows(
        pop, ids, steps, cal, catalog.ANNUAL if annual_only else catalog.MONTHLY
    )
    result = write_export(
        pop,
        ids,
        subs,
        sim.activity,
        cal,
        out / "raw",
        rng_files,
        on_file=lambda done, total: report("write", done, total),
        events=catalog.in_app_events(config.app_events),
    )

    legacy_era = subs["created"] < legacy_end * 86400.0
    sent = np.where(legacy_era, subs["legacy"] != None, subs["current"] != None)  # noqa: E711
    first_seen = np.full(len(ids.sandbox), np.inf)
    np.minimum.at(first_seen, subs["sub"][sent], subs["created"][sent])
    truth = _truth_table(dyn, sim.snapshots, ids, first_seen, config, start_epoch, report)
    (out / "truth").mkdir(exist_ok=True)
    pq.write_table(truth, out / "truth" / "churn_truth.parquet")
    pq.write_table(_subscribers_table(pop, ids, start_epoch), out / "truth" / "subscribers.parquet")
    pq.write_table(result.injected, out / "truth" / "injected.parquet")

    observed = truth.filter(truth[s.CHURNED].is_valid())
    defects = result.injected.column("defect").to_pylist()
    summary = GenerationSummary(
        out=str(out),
        users=config.users,
        subscribers=int((pop.start_day < NOT_SUBSCRIBED).sum()),
        sandbox_testers=testers,
        files=len(result.files),
        legacy_files=sum(f["legacy"] for f in result.files),
        header_only_files=sum(f["rows"] == 0 for f in result.files),
        rows=result.rows_written,
        rows_by_activity=result.rows_by_activity,
        subscription_events=result.subscription_events,
        duplicates=result.duplicates,
        late_rows=result.late,
        injected={d: defects.count(d) for d in sorted(set(defects))},
        cutoffs=[str(config.start + timedelta(d)) for d in cutoffs],
        truth_rows=truth.num_rows,
        mean_churn_probability=float(np.mean(truth[s.CHURN_PROBABILITY]))
        if truth.num_rows
        else 0.0,
        realised_churn_rate=(
            float(np.mean(observed[s.CHURNED].to_numpy(zero_copy_only=False)))
            if observed.num_rows
            else None
        ),
        settings={
            **_recorded_settings(config),
            "start": str(config.start),
            "cutoffs": [str(config.start + timedelta(d)) for d in cutoffs],
            "legacy_end": str(config.start + timedelta(legacy_end)),
            "price_increase": (
                str(config.start + timedelta(price_increase_day))
                if price_increase_day is not None
                else None
            ),
        },
    )
    manifest = {**asdict(summary), "files_written": result.files}
    for volatile in ("seconds", "out"):  # the same seed gives the same bytes, wherever and whenever
        manifest.pop(volatile)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    summary.seconds = time.perf_counter() - started
    return summary


def _recorded_settings(config: SyntheticConfig) -> dict[str, Any]:
    """The parameters for manifest.json: shape options and the drift switch only where they
    differ from the default, so the default app's manifest (and every other byte) is what it
    was before shapes existed."""
    shape = {*SHAPE_OPTIONS, "drift"}
    recorded = config.model_dump(exclude=shape)
    recorded.update(config.model_dump(include=shape, exclude_defaults=True))
    return recorded


def _prepare(out: Path, overwrite: bool) -> None:
    """Refuse to mix two data sets in one folder unless asked to replace the old one."""
    ours = [out / "raw", out / "truth", out / "manifest.json"]
    if any(p.exists() for p in ours):
        if not overwrite:
            raise GenerationError(
                f"{out} already holds generated data (raw/, truth/ or manifest.json); "
                "pass --overwrite to replace it or choose another --out"
            )
        for p in ours:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _truth_table(
    dyn: Dynamics,
    snapshots: list,
    ids,
    first_seen: np.ndarray,
    config: SyntheticConfig,
    start_epoch: int,
    report: Progress,
) -> pa.Table:
    """One row per (subscriber active at a cut-off): oracle probability and realised outcome."""
    parts = []
    platform = np.array(catalog.PLATFORM_NAMES, object)
    for i, snap in enumerate(snapshots):
        prob = churn_probability(dyn, snap, config.horizon_days)
        observed = snap.day + config.horizon_days <= config.days
        state = _states(dyn, snap)
        idx = pa.array(snap.idx)
        parts.append(
            pa.table(
                {
                    s.USER_ID: ids.subscriber_id.take(idx),
                    s.PLATFORM: pa.array(platform[dyn.pop.platform[snap.idx]], pa.string()),
                    s.ADID: ids.adid.take(idx),
                    s.AS_OF: pa.array(
                        np.full(len(snap.idx), (start_epoch + snap.day * 86400) * 1_000_000),
                        pa.timestamp("us", tz="UTC"),
                    ),
                    s.HORIZON_DAYS: pa.array(np.full(len(snap.idx), config.horizon_days, np.int32)),
                    s.CHURN_PROBABILITY: pa.array(prob),
                    s.CHURNED: pa.array(
                        snap.churned if observed else np.zeros(len(snap.idx), bool),
                        mask=None if observed else np.ones(len(snap.idx), bool),
                    ),
                    s.STATE: pa.array(state, pa.string()),
                    OBSERVABLE: pa.array(first_seen[snap.idx] < snap.day * 86400.0),
                },
                schema=TRUTH_SCHEMA,
            )
        )
        report("truth", i + 1, len(snapshots))
    return pa.concat_tables(parts) if parts else TRUTH_SCHEMA.empty_table()


def _states(dyn: Dynamics, snap) -> np.ndarray:
    """Readable hidden state at the cut-off: period kind and auto-renew, or the billing stage."""
    kind = np.array(["trial", "offer", "paid"], object)[snap.kind]
    state = np.where(snap.auto_renew, kind, kind + "_auto_renew_off")
    grace = snap.retry_day < dyn.grace_days[snap.idx]
    trouble = np.where(dyn.pop.platform[snap.idx] == catalog.IOS, "billing_retry", "on_hold")
    return np.where(snap.phase == Phase.RETRY, np.where(grace, "grace_period", trouble), state)


def _subscribers_table(pop, ids, start_epoch: int) -> pa.Table:
    """Each subscriber's identity, first purchase and hidden drivers (for analysis only)."""
    n = pop.n
    idx = pa.array(np.arange(n))
    started = pop.start_day < NOT_SUBSCRIBED
    start_ts = np.where(started, pop.start_ts, np.nan)
    return pa.table(
        {
            s.USER_ID: ids.subscriber_id.take(idx),
            s.PLATFORM: pa.array(
                np.array(catalog.PLATFORM_NAMES, object)[pop.platform], pa.string()
            ),
            s.ADID: ids.adid.take(idx),
            s.COUNTRY: ids.country.take(idx),
            "network": pa.array(
                np.array([nw[0] for nw in catalog.NETWORKS], object)[pop.network], pa.string()
            ),
            "product": pa.array(np.array(["monthly", "annual"], object)[pop.product], pa.string()),
            "first_period": pa.array(
                np.array(["trial", "offer", "paid"], object)[pop.first_kind], pa.string()
            ),
            "switched_from_other_platform": pa.array(pop.is_twin),
            "first_purchase_at": pa.array(
                np.where(
                    started, (start_epoch + np.floor(np.nan_to_num(start_ts))) * 1_000_000, 0
                ).astype("int64"),
                pa.timestamp("us", tz="UTC"),
                mask=~started,
            ),
            "intent": pa.array(pop.intent),
            "price_sensitivity": pa.array(pop.price_sensitivity),
            "payment_failure_logit": pa.array(pop.pay_logit),
            "recovery_rate": pa.array(pop.recovery_rate),
            "engagement0": pa.array(pop.engagement0),
            "engagement_trend": pa.array(pop.engagement_trend),
        }
    )
